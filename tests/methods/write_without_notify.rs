// expect: guardian-rejected
// Breaks the covenant in plain sight (it notifies the lobby, not the object it wrote): the
// source gate refuses it. Compiled anyway (a test bypasses gate 1), the run-time gate catches it.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    me.set("count", json!(999))?;
    if let Some(lobby) = Obj::named("lobby") {
        lobby.notify_changed();
    }
    Ok(json!(999))
}
