// expect: guardian-rejected
// A `use` group with a leading `::` is an item syn keeps as bare tokens: the rename inside it
// (include_str! under an allowed macro's name) must not pass unseen.
use batos_sdk::prelude::*;
use {::std::include_str as concat};

pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    Ok(json!(concat!("/proc/self/mountinfo")))
}
