// expect: guardian-rejected
// Unsafe code.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    let x = 5u32;
    let p = &x as *const u32;
    Ok(json!(unsafe { *p }))
}
