// expect: compile-failed
// The gate bypassed: rustc's parent is the host; its environment is in /proc/HOST_PID/environ.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    Ok(json!(include_bytes!("/proc/HOST_PID/environ").len()))
}
