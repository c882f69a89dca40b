// expect: compile-failed
// The gate bypassed: an endless file fills rustc's memory until the address-space limit stops it.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    Ok(json!(include_bytes!("/dev/zero").len()))
}
