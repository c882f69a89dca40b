//! The Data Guardian (the seed's chapter 9) checks an object's slots against a JSON Schema that
//! the object carries or inherits in its `schema` slot. The image calls it before every commit for
//! each object the transaction touched, so a refused write leaves nothing behind.

use serde_json::{Map, Value};

/// The slot that holds an object's schema; it is inherited through delegation like any slot and
/// is itself left out of the instance it validates.
pub const SCHEMA_SLOT: &str = "schema";

/// A refused write: which slot broke which rule of which schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("slot `{slot}` breaks the schema rule at `{rule}`: {message}")]
pub struct SchemaViolation {
    /// The slot at fault, or `(object)` for a rule about the object as a whole (`required`).
    pub slot: String,
    /// The JSON Pointer of the rule inside the schema, e.g. `/properties/count/type`.
    pub rule: String,
    pub message: String,
}

/// Checks an object's own value slots (without the `schema` slot) against `schema`.
///
/// `schema` must itself be a valid JSON Schema; if it is not, the refusal names the `schema` slot.
pub fn check_slots(schema: &Value, slots: &Map<String, Value>) -> Result<(), SchemaViolation> {
    let validator = jsonschema::validator_for(schema).map_err(|e| SchemaViolation {
        slot: SCHEMA_SLOT.to_owned(),
        rule: e.schema_path().to_string(),
        message: format!("the `schema` slot is not a valid JSON Schema: {e}"),
    })?;
    let mut instance = slots.clone();
    instance.remove(SCHEMA_SLOT);
    let instance = Value::Object(instance);
    let first = validator.iter_errors(&instance).next();
    match first {
        None => Ok(()),
        Some(error) => {
            let path = error.instance_path().to_string();
            // "/count/0" names slot `count`; an empty path is the object itself.
            let slot = path
                .trim_start_matches('/')
                .split('/')
                .next()
                .filter(|s| !s.is_empty())
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .unwrap_or_else(|| "(object)".to_owned());
            Err(SchemaViolation {
                slot,
                rule: error.schema_path().to_string(),
                message: error.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slots(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn accepts_conforming_slots() {
        let schema = json!({"properties": {"count": {"type": "integer"}}});
        assert_eq!(check_slots(&schema, &slots(json!({"count": 3}))), Ok(()));
    }

    #[test]
    fn names_slot_and_rule() {
        let schema = json!({"properties": {"count": {"type": "integer", "minimum": 0}}});
        let err = check_slots(&schema, &slots(json!({"count": -1})));
        let err = err.err().map(|e| (e.slot, e.rule));
        assert_eq!(
            err,
            Some(("count".into(), "/properties/count/minimum".into()))
        );
    }

    #[test]
    fn required_is_about_the_object() {
        let schema = json!({"required": ["name"]});
        let err = check_slots(&schema, &slots(json!({}))).err();
        assert_eq!(err.map(|e| e.slot), Some("(object)".into()));
    }

    #[test]
    fn schema_slot_is_not_part_of_the_instance() {
        let schema = json!({"additionalProperties": false, "properties": {"a": {}}});
        let with_schema = slots(json!({"a": 1, "schema": schema.clone()}));
        assert_eq!(check_slots(&schema, &with_schema), Ok(()));
    }

    #[test]
    fn invalid_schema_is_refused() {
        let schema = json!({"type": 12});
        let err = check_slots(&schema, &slots(json!({}))).err();
        assert_eq!(err.map(|e| e.slot), Some("schema".into()));
    }
}
