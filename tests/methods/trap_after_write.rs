// expect: method-trap
// Writes, notifies, then panics: the trap rolls the write back.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    me.set("count", json!(999))?;
    me.notify_changed();
    let items: Vec<u32> = Vec::new();
    Ok(json!(items[std::hint::black_box(3)]))
}
