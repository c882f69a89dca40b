use batos_sdk::prelude::*; // Obj, Value, json!, log

/// lobby.ping_counter: send `increment` to the object named `counter` and answer its result.
/// Changes nothing itself: `counter.increment` notifies what it changes.
pub fn run(_me: Obj, _args: Vec<Value>) -> Result<Value, String> {
    let counter = Obj::named("counter").ok_or("no object named counter")?;
    let n = counter.send("increment", vec![])?;
    log(&format!("counter is now {n}"));
    Ok(n)
}
