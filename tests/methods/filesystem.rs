// expect: guardian-rejected
// Reads a file at run time: the component imports wasi:filesystem, which the component gate refuses.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    let text = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
    Ok(json!(text))
}
