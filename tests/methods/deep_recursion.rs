// expect: method-trap
// Unbounded recursion: the wasm stack overflows and traps; the host's stack is untouched.
use batos_sdk::prelude::*;

fn depth(n: u64) -> u64 {
    if n == u64::MAX { 0 } else { 1 + depth(std::hint::black_box(n + 1)) }
}

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    Ok(json!(depth(0)))
}
