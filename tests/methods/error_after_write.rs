// expect: method-error
// Writes, then answers Err: everything it changed is rolled back.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    me.set("count", json!(999))?;
    me.notify_changed();
    Err("changed my mind".into())
}
