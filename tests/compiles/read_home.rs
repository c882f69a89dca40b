// expect: compile-failed
// The gate bypassed: the host user's home (the image's token lives beside the image).
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    Ok(json!(include_str!("HOST_HOME/.bashrc")))
}
