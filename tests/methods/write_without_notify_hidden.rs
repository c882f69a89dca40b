// expect: covenant-violation
// Notifies only on a path that is not taken. The source gate reads source order, sees the notify
// before the exit and lets it through; the run-time gate sees the write without the notify.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    me.set("count", json!(999))?;
    if args.len() > 5 {
        me.notify_changed();
    }
    Ok(json!(999))
}
