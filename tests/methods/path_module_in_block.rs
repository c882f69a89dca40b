// expect: guardian-rejected
// `#[path]` inside a block makes rustc read (and quote) a host file as a module.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    {
        #[path = "/etc/passwd"]
        mod m;
    }
    Ok(json!(1))
}
