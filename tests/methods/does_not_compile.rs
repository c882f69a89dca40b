// expect: compile-failed
// A type error: the compiler's diagnostics come back, with this file's line numbers.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    let n: u32 = "seven";
    Ok(json!(n))
}
