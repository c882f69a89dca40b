// expect: guardian-rejected
// Reads the build environment at compile time.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    Ok(json!(env!("HOME")))
}
