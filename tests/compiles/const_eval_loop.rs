// expect: compile-failed
// Const evaluation that never ends: the compile's time limit kills it.
use batos_sdk::prelude::*;

const fn spin() -> u64 {
    let mut i: u64 = 0;
    loop {
        i = i.wrapping_add(1);
        if i == 0 {
            return i;
        }
    }
}

const N: u64 = spin();

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    Ok(json!(N))
}
