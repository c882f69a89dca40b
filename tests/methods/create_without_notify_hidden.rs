// expect: covenant-violation
// Creates an object where the source gate cannot see it and never notifies it: a new object is
// a change, so the run-time gate rolls the call back.
use batos_sdk::prelude::*;

fn make(proto: &Obj) -> u64 {
    Obj::create(proto, json!({"made": true})).map(|o| o.id()).unwrap_or(0)
}

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    Ok(json!(make(&me)))
}
