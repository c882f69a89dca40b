// expect: guardian-rejected
// Smuggles `include_str!` in under the name of an allowed macro.
use batos_sdk::prelude::*;
use std::include_str as json;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    Ok(Value::String(json!("/etc/passwd").to_string()))
}
