use batos_sdk::prelude::*; // Obj, Value, json!, log

/// counter.increment: add one to `count` and answer the new value.
pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    let n = me.get("count").and_then(|v| v.as_i64()).unwrap_or(0) + 1;
    me.set("count", json!(n))?;
    me.notify_changed();
    Ok(json!(n))
}
