// expect: compile-failed
// A 256 MiB static: rustc's memory and the output file are bounded.
use batos_sdk::prelude::*;

static BIG: [u8; 1 << 28] = [1; 1 << 28];

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    let i = args.len() * 7919 % BIG.len();
    Ok(json!(BIG[i] as u64 + BIG.iter().map(|b| *b as u64).sum::<u64>()))
}
