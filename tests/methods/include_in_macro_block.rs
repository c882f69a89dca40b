// expect: guardian-rejected
// Renames `include_str!` to an allowed macro's name inside a block inside a macro's arguments,
// where a token denylist never looked for imports.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    Ok(json!(format!("{}", {
        use std::include_str as concat;
        concat!("/etc/passwd")
    })))
}
