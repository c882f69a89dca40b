// expect: out-of-fuel
// A runaway loop: fuel metering stops it.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    let mut n: u64 = 0;
    loop {
        n = n.wrapping_add(std::hint::black_box(1));
        if n == u64::MAX {
            break;
        }
    }
    Ok(json!(n))
}
