//! PIO's event rules, applied to one event of a request (or of an imported
//! file) before anything is stored, and the line that is stored.
//!
//! The rules are those of PIO's `EventValidation` and its JSON reading:
//! `event`, `entityType`, `entityId` required non-empty strings;
//! `targetEntityType` and `targetEntityId` both or neither, non-empty;
//! names starting with `$` or `pio_` reserved (only `$set`, `$unset` and
//! `$delete` are events, none with a target; `pio_pr` is the one reserved
//! entity type; no property may use the prefixes); `$unset` needs
//! properties; `properties` an object; `eventTime` ISO-8601, now when
//! absent. Ids and names longer than [`MAX_NAME_BYTES`] are refused. The
//! stored line is PIO's export format with the server's `eventId` and
//! `creationTime`, and is finally read back by the scanner `ur-train` uses
//! ([`crate::source::event::parse_event`]): a stored line is always one
//! `ur-train` reads.

use crate::model::json_kind;
use crate::source::event::parse_event;
use crate::time::{Millis, format_iso8601, parse_iso8601};
use serde_json::{Map, Value};

/// The longest id or name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 512;

/// Why an event is refused; the message is PIO's where PIO has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidEvent(pub String);

/// An accepted event: its stored line (no newline) and what serving needs.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub event_id: String,
    pub event: String,
    pub entity_type: String,
    pub entity_id: String,
    pub target_entity_type: Option<String>,
    pub target_entity_id: Option<String>,
    pub properties: Map<String, Value>,
    pub event_time: Millis,
    /// The line to store, without its newline.
    pub line: String,
}

fn invalid(msg: impl Into<String>) -> InvalidEvent {
    InvalidEvent(msg.into())
}

fn string_field(obj: &Map<String, Value>, name: &str, required: bool) -> Result<Option<String>, InvalidEvent> {
    match obj.get(name) {
        None | Some(Value::Null) if required => Err(invalid(format!("field {name} is required"))),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_NAME_BYTES => {
            Err(invalid(format!("field {name} is longer than {MAX_NAME_BYTES} bytes")))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(format!("field {name} must be a string, found {}", json_kind(other)))),
    }
}

/// `$` or `pio_`: PIO's reserved name prefixes.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with('$') || name.starts_with("pio_")
}

/// `$set`, `$unset`, `$delete`: the reserved names that are events.
pub fn is_special_event(name: &str) -> bool {
    matches!(name, "$set" | "$unset" | "$delete")
}

fn builtin_entity_type(name: &str) -> bool {
    name == "pio_pr"
}

/// Validates one event object received at `now` and gives it `event_id`.
pub fn accept(value: &Value, now: Millis, event_id: String) -> Result<Accepted, InvalidEvent> {
    let Value::Object(obj) = value else {
        return Err(invalid(format!("an event must be a JSON object, found {}", json_kind(value))));
    };
    let event = string_field(obj, "event", true)?.unwrap_or_default();
    let entity_type = string_field(obj, "entityType", true)?.unwrap_or_default();
    let entity_id = string_field(obj, "entityId", true)?.unwrap_or_default();
    let target_entity_type = string_field(obj, "targetEntityType", false)?;
    let target_entity_id = string_field(obj, "targetEntityId", false)?;
    let properties = match obj.get("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(invalid(format!("field properties must be a JSON object, found {}", json_kind(other))));
        }
    };
    let event_time = match obj.get("eventTime") {
        None | Some(Value::Null) => now,
        Some(Value::String(s)) => parse_iso8601(s).ok_or_else(|| invalid(format!("Fail to extract eventTime {s}")))?,
        Some(other) => return Err(invalid(format!("field eventTime must be a string, found {}", json_kind(other)))),
    };
    let pr_id = string_field(obj, "prId", false)?;
    let accepted = Accepted {
        event_id,
        event,
        entity_type,
        entity_id,
        target_entity_type,
        target_entity_id,
        properties,
        event_time,
        line: String::new(),
    };
    pio_rules(&accepted)?;
    let line = stored_line(&accepted, pr_id.as_deref(), now);
    if let Err(r) = parse_event(line.as_bytes()) {
        return Err(invalid(r.reason.to_string()));
    }
    Ok(Accepted { line, ..accepted })
}

/// PIO's `EventValidation.validate`, in its order and with its messages.
fn pio_rules(e: &Accepted) -> Result<(), InvalidEvent> {
    let require = |ok: bool, msg: String| if ok { Ok(()) } else { Err(InvalidEvent(msg)) };
    require(!e.event.is_empty(), "event must not be empty.".into())?;
    require(!e.entity_type.is_empty(), "entityType must not be empty string.".into())?;
    require(!e.entity_id.is_empty(), "entityId must not be empty string.".into())?;
    require(
        e.target_entity_type.as_ref().is_none_or(|t| !t.is_empty()),
        "targetEntityType must not be empty string".into(),
    )?;
    require(
        e.target_entity_id.as_ref().is_none_or(|t| !t.is_empty()),
        "targetEntityId must not be empty string.".into(),
    )?;
    require(
        e.target_entity_type.is_some() == e.target_entity_id.is_some(),
        "targetEntityType and targetEntityId must be specified together.".into(),
    )?;
    require(!(e.event == "$unset" && e.properties.is_empty()), "properties cannot be empty for $unset event".into())?;
    require(
        !is_reserved(&e.event) || is_special_event(&e.event),
        format!("{} is not a supported reserved event name.", e.event),
    )?;
    require(
        !is_special_event(&e.event) || e.target_entity_type.is_none(),
        format!("Reserved event {} cannot have targetEntity", e.event),
    )?;
    require(
        !is_reserved(&e.entity_type) || builtin_entity_type(&e.entity_type),
        format!("The entityType {} is not allowed. 'pio_' is a reserved name prefix.", e.entity_type),
    )?;
    if let Some(t) = &e.target_entity_type {
        require(
            !is_reserved(t) || builtin_entity_type(t),
            format!("The targetEntityType {t} is not allowed. 'pio_' is a reserved name prefix."),
        )?;
    }
    for k in e.properties.keys() {
        require(!is_reserved(k), format!("The property {k} is not allowed. 'pio_' is a reserved name prefix."))?;
    }
    Ok(())
}

/// PIO's export format, members in a fixed order.
fn stored_line(e: &Accepted, pr_id: Option<&str>, now: Millis) -> String {
    let string = |s: &str| Value::String(s.to_string());
    let mut members: Vec<(&str, Value)> = vec![
        ("eventId", string(&e.event_id)),
        ("event", string(&e.event)),
        ("entityType", string(&e.entity_type)),
        ("entityId", string(&e.entity_id)),
    ];
    if let (Some(t), Some(i)) = (&e.target_entity_type, &e.target_entity_id) {
        members.push(("targetEntityType", string(t)));
        members.push(("targetEntityId", string(i)));
    }
    members.push(("properties", Value::Object(e.properties.clone())));
    members.push(("eventTime", Value::String(format_iso8601(e.event_time))));
    if let Some(p) = pr_id {
        members.push(("prId", string(p)));
    }
    members.push(("creationTime", Value::String(format_iso8601(now))));
    let mut line = String::with_capacity(256);
    line.push('{');
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push('"');
        line.push_str(k);
        line.push_str("\":");
        line.push_str(&v.to_string());
    }
    line.push('}');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: Millis = 1_768_478_400_000;

    fn check(v: Value) -> Result<Accepted, String> {
        accept(&v, NOW, "id1".into()).map_err(|e| e.0)
    }

    #[test]
    fn python_sdk_shapes_are_accepted() {
        let a = check(json!({"event": "view", "entityType": "user", "entityId": "u1",
            "targetEntityType": "item", "targetEntityId": "i1", "properties": {},
            "eventTime": "2026-01-15T12:00:00.123+0000"}))
        .unwrap();
        assert_eq!(a.event_time, NOW + 123);
        assert!(a.line.starts_with(
            r#"{"eventId":"id1","event":"view","entityType":"user","entityId":"u1","targetEntityType":"item""#
        ));
        assert!(
            a.line.ends_with(r#""eventTime":"2026-01-15T12:00:00.123Z","creationTime":"2026-01-15T12:00:00.000Z"}"#)
        );
        let a = check(json!({"event": "$set", "entityType": "item", "entityId": "i1", "properties": {"c": ["a"]}}))
            .unwrap();
        assert_eq!(a.event_time, NOW);
        assert!(parse_event(a.line.as_bytes()).is_ok());
    }

    #[test]
    fn each_rule_has_its_reason() {
        let base = json!({"event": "view", "entityType": "user", "entityId": "u1"});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            check(b).unwrap_err()
        };
        assert_eq!(check(json!([1])).unwrap_err(), "an event must be a JSON object, found an array");
        assert_eq!(check(json!({"entityType": "user", "entityId": "u"})).unwrap_err(), "field event is required");
        assert_eq!(with("entityId", json!(5)), "field entityId must be a string, found a number");
        assert_eq!(with("event", json!("")), "event must not be empty.");
        assert_eq!(with("entityId", json!("")), "entityId must not be empty string.");
        assert_eq!(
            with("targetEntityType", json!("item")),
            "targetEntityType and targetEntityId must be specified together."
        );
        assert_eq!(
            with("targetEntityId", json!("i")),
            "targetEntityType and targetEntityId must be specified together."
        );
        assert_eq!(with("targetEntityId", json!("")), "targetEntityId must not be empty string.");
        assert_eq!(with("event", json!("$unset")), "properties cannot be empty for $unset event");
        assert_eq!(with("event", json!("$bogus")), "$bogus is not a supported reserved event name.");
        assert_eq!(with("event", json!("pio_x")), "pio_x is not a supported reserved event name.");
        assert_eq!(
            with("entityType", json!("pio_user")),
            "The entityType pio_user is not allowed. 'pio_' is a reserved name prefix."
        );
        assert_eq!(with("properties", json!([1])), "field properties must be a JSON object, found an array");
        assert_eq!(
            with("properties", json!({"pio_a": 1})),
            "The property pio_a is not allowed. 'pio_' is a reserved name prefix."
        );
        assert_eq!(with("eventTime", json!("yesterday")), "Fail to extract eventTime yesterday");
        assert_eq!(with("entityId", json!("x".repeat(513))), "field entityId is longer than 512 bytes");
        let mut t = base.clone();
        t["event"] = json!("$set");
        t["targetEntityType"] = json!("item");
        t["targetEntityId"] = json!("i");
        assert_eq!(check(t).unwrap_err(), "Reserved event $set cannot have targetEntity");
        let mut t = base.clone();
        t["targetEntityType"] = json!("pio_x");
        t["targetEntityId"] = json!("i");
        assert_eq!(
            check(t).unwrap_err(),
            "The targetEntityType pio_x is not allowed. 'pio_' is a reserved name prefix."
        );
        assert!(check(json!({"event": "e", "entityType": "pio_pr", "entityId": "x"})).is_ok());
    }
}
