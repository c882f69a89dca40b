use batos_sdk::prelude::*; // Obj, Value, json!, log

/// object.describe: answer the receiver's id, its parents' ids and, if args[0] names a slot,
/// that slot's value through delegation (null if absent). Changes nothing.
pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {
    let parents: Vec<u64> = me.parents().iter().map(|p| p.id()).collect();
    let mut answer = json!({ "id": me.id(), "parents": parents });
    match args.first() {
        None | Some(Value::Null) => {}
        Some(Value::String(slot)) => {
            answer["slot"] = json!(slot);
            answer["value"] = me.get(slot).unwrap_or(Value::Null);
        }
        Some(other) => return Err(format!("describe: args[0] must be a slot name, not {other}")),
    }
    Ok(answer)
}
