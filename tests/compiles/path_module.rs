// expect: compile-failed
// The gate bypassed: `#[path]` makes rustc read a host file as a module (and quote it in errors).
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    #[path = "/etc/passwd"]
    mod m;
    Ok(json!(1))
}
