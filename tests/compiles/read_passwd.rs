// expect: compile-failed
// The gate bypassed: rustc is asked for a host file at compile time; the jail has no /etc.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    Ok(json!(include_str!("/etc/passwd")))
}
