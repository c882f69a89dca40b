// expect: guardian-rejected
// Reads a host file at compile time.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    Ok(json!(include_str!("/etc/passwd")))
}
