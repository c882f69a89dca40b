// expect: out-of-memory
// Asks for a gigabyte: the store's memory limit refuses to grow.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for _ in 0..1024 {
        chunks.push(vec![1u8; 1 << 20]);
    }
    Ok(json!(chunks.len()))
}
