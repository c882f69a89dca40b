// expect: guardian-rejected
// Sleeps: waiting burns no fuel and would hold the call's transaction open, so the component gate
// refuses a component that imports the clock's subscriptions.
use batos_sdk::prelude::*;

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    std::thread::sleep(std::time::Duration::from_secs(3600));
    Ok(json!("rested"))
}
