// expect: send-too-deep
// Sends itself without end: the sandbox bounds the depth of nested sends.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    me.send("hostile", vec![]).map_err(|e| e)?;
    Ok(json!(0))
}
