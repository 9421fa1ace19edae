//! One line of PIO event JSON → [`Event`], or the reason it is rejected.
//!
//! The fields are those of PIO's event API (`event`, `entityType`,
//! `entityId`, `targetEntityType`, `targetEntityId`, `properties`,
//! `eventTime`); others (`eventId`, `creationTime`, `prId`, `tags`) are
//! ignored. Strings are borrowed from the line unless they contain escapes,
//! and `properties` stays raw JSON until a property event needs it. The
//! line is scanned by [`super::json`]; a wrong type is reported with the
//! field's name.
//!
//! What becomes an Elasticsearch document is checked where it is used, so
//! one event cannot fail a run: user and item ids are at most 512 bytes
//! (ES `_id`), and a `$set` holds at most 1000 properties, none an object
//! (an object and a scalar under one name cannot share a mapping), with
//! dates in the engine's date properties.

use super::json::{Field, scan_event};
use crate::time::{Millis, parse_iso8601};
use std::borrow::Cow;
use std::fmt;

/// The longest user or item id: Elasticsearch's limit on a document `_id`.
pub const MAX_ID_BYTES: usize = 512;

/// The most properties one `$set` may hold (Elasticsearch's default field limit).
pub const MAX_PROPERTIES: usize = 1000;

/// A parsed event; strings borrow from the line.
#[derive(Debug)]
pub struct Event<'a> {
    pub event: Cow<'a, str>,
    pub entity_type: Cow<'a, str>,
    pub entity_id: Cow<'a, str>,
    pub target_entity_type: Option<Cow<'a, str>>,
    pub target_entity_id: Option<Cow<'a, str>>,
    /// Raw JSON text of `properties`.
    pub properties: Option<&'a str>,
    pub event_time: Millis,
}

/// Why a line is not an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Reject {
    /// Not JSON, or not an object.
    MalformedJson(String),
    MissingField(&'static str),
    WrongType {
        field: &'static str,
        found: &'static str,
    },
    EmptyField(&'static str),
    BadEventTime(String),
    /// `properties` of a property event is not an object.
    BadProperties(&'static str),
    /// Longer than the limit (`--max-line-bytes`); not read.
    LineTooLong(usize),
    /// A user or item id longer than [`MAX_ID_BYTES`].
    IdTooLong(&'static str),
    /// A date property (`dateName`, ...) that is not a date.
    NotADate {
        property: String,
        value: String,
    },
    /// A property value that is an object (or holds one).
    ObjectProperty(String),
    /// More than [`MAX_PROPERTIES`] properties in one event.
    TooManyProperties(usize),
}

impl Reject {
    /// The counting key: a few stable categories, no per-line detail.
    pub fn reason(&self) -> String {
        match self {
            Reject::MalformedJson(_) => "malformed JSON".into(),
            Reject::MissingField(f) => format!("missing field {f}"),
            Reject::WrongType { field, .. } => format!("wrong type of field {field}"),
            Reject::EmptyField(f) => format!("empty field {f}"),
            Reject::BadEventTime(_) => "bad eventTime".into(),
            Reject::BadProperties(_) => "bad properties".into(),
            Reject::LineTooLong(limit) => format!("line longer than {limit} bytes"),
            Reject::IdTooLong(_) => format!("id longer than {MAX_ID_BYTES} bytes"),
            Reject::NotADate { .. } => "non-date in a date property".into(),
            Reject::ObjectProperty(_) => "object property value".into(),
            Reject::TooManyProperties(_) => format!("more than {MAX_PROPERTIES} properties"),
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reject::MalformedJson(e) => write!(f, "malformed JSON: {e}"),
            Reject::MissingField(field) => write!(f, "missing field {field}"),
            Reject::WrongType { field, found } => {
                write!(f, "field {field}: expected a string, found {found}")
            }
            Reject::EmptyField(field) => write!(f, "field {field} is empty"),
            Reject::BadEventTime(s) => {
                write!(f, "field eventTime: `{s}` is not an ISO-8601 date-time")
            }
            Reject::BadProperties(found) => {
                write!(f, "field properties: expected an object, found {found}")
            }
            Reject::LineTooLong(limit) => write!(f, "line longer than {limit} bytes (--max-line-bytes)"),
            Reject::IdTooLong(field) => {
                write!(f, "field {field} is longer than {MAX_ID_BYTES} bytes (an Elasticsearch document id)")
            }
            Reject::NotADate { property, value } => write!(f, "property {property}: {value} is not a date"),
            Reject::ObjectProperty(property) => write!(
                f,
                "property {property}: an object (property values are strings, numbers, booleans or arrays of them)"
            ),
            Reject::TooManyProperties(n) => write!(f, "{n} properties, more than {MAX_PROPERTIES}"),
        }
    }
}

fn required<'a>(f: Option<Field<'a>>, name: &'static str) -> Result<Cow<'a, str>, Reject> {
    match f {
        None | Some(Field::Null) => Err(Reject::MissingField(name)),
        Some(Field::Other(found)) => Err(Reject::WrongType { field: name, found }),
        Some(Field::Str(s)) if s.is_empty() => Err(Reject::EmptyField(name)),
        Some(Field::Str(s)) => Ok(s),
    }
}

fn optional<'a>(f: Option<Field<'a>>, name: &'static str) -> Result<Option<Cow<'a, str>>, Reject> {
    match f {
        None | Some(Field::Null) => Ok(None),
        Some(Field::Other(found)) => Err(Reject::WrongType { field: name, found }),
        Some(Field::Str(s)) => Ok(Some(s)),
    }
}

/// A line that is not an event, with the event name if it had one.
#[derive(Debug)]
pub struct Rejected<'a> {
    pub event: Option<Cow<'a, str>>,
    pub reason: Reject,
}

/// Parses one line. Checks what every event needs; what a particular use
/// needs (a target for usage events) is checked by the caller.
pub fn parse_event(line: &[u8]) -> Result<Event<'_>, Rejected<'_>> {
    let raw = scan_event(line).map_err(|e| Rejected { event: None, reason: Reject::MalformedJson(e) })?;
    let event = required(raw.event, "event").map_err(|reason| Rejected { event: None, reason })?;
    let fail = |reason| Rejected { event: Some(event.clone()), reason };
    let entity_type = required(raw.entity_type, "entityType").map_err(fail)?;
    let entity_id = required(raw.entity_id, "entityId").map_err(fail)?;
    let target_entity_type = optional(raw.target_entity_type, "targetEntityType").map_err(fail)?;
    let target_entity_id = optional(raw.target_entity_id, "targetEntityId").map_err(fail)?;
    let time = required(raw.event_time, "eventTime").map_err(fail)?;
    let event_time = parse_iso8601(&time).ok_or_else(|| fail(Reject::BadEventTime(truncate(&time, 60))))?;
    Ok(Event {
        event,
        entity_type,
        entity_id,
        target_entity_type,
        target_entity_id,
        properties: raw.properties,
        event_time,
    })
}

impl<'a> Event<'a> {
    /// The target of a usage event, which must be present, non-empty and
    /// short enough to be an id.
    pub fn target(&self) -> Result<&str, Reject> {
        match &self.target_entity_id {
            None => Err(Reject::MissingField("targetEntityId")),
            Some(s) if s.is_empty() => Err(Reject::EmptyField("targetEntityId")),
            Some(s) if s.len() > MAX_ID_BYTES => Err(Reject::IdTooLong("targetEntityId")),
            Some(s) => Ok(s),
        }
    }

    /// The entity (a user, or the item of a property event), short enough to be an id.
    pub fn entity(&self) -> Result<&str, Reject> {
        match self.entity_id.len() > MAX_ID_BYTES {
            true => Err(Reject::IdTooLong("entityId")),
            false => Ok(&self.entity_id),
        }
    }

    /// The `properties` of a `$set`: at most [`MAX_PROPERTIES`], no
    /// objects, and the properties named in `dates` dates (or null).
    pub fn set_properties(&self, dates: &[String]) -> Result<serde_json::Map<String, serde_json::Value>, Reject> {
        let properties = self.properties_object()?;
        if properties.len() > MAX_PROPERTIES {
            return Err(Reject::TooManyProperties(properties.len()));
        }
        for (name, value) in &properties {
            let values = match value {
                serde_json::Value::Array(values) => values.as_slice(),
                value => std::slice::from_ref(value),
            };
            if values.iter().any(holds_object) {
                return Err(Reject::ObjectProperty(truncate(name, 60)));
            }
            if dates.contains(name)
                && let Some(bad) = values.iter().find(|v| !is_date(v))
            {
                return Err(Reject::NotADate { property: truncate(name, 60), value: truncate(&bad.to_string(), 60) });
            }
        }
        Ok(properties)
    }

    /// `properties` as a JSON object (absent or null: empty).
    pub fn properties_object(&self) -> Result<serde_json::Map<String, serde_json::Value>, Reject> {
        let Some(raw) = self.properties else {
            return Ok(serde_json::Map::new());
        };
        match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(serde_json::Value::Object(m)) => Ok(m),
            Ok(serde_json::Value::Null) => Ok(serde_json::Map::new()),
            Ok(serde_json::Value::Array(_)) => Err(Reject::BadProperties("an array")),
            Ok(serde_json::Value::String(_)) => Err(Reject::BadProperties("a string")),
            Ok(_) => Err(Reject::BadProperties("a scalar")),
            Err(e) => Err(Reject::MalformedJson(short_error(&e))),
        }
    }
}

fn holds_object(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(_) => true,
        serde_json::Value::Array(values) => values.iter().any(holds_object),
        _ => false,
    }
}

/// A value Elasticsearch reads as a date (`strict_date_optional_time` or
/// `epoch_millis`), or null; what slips through is not indexed
/// (`ignore_malformed`).
fn is_date(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Number(n) => n.is_i64() || n.is_u64(),
        serde_json::Value::String(s) => {
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            let millis = s.strip_prefix('-').unwrap_or(s);
            let year_month = s
                .split_once('-')
                .map_or(s.len() == 4 && digits(s), |(y, m)| y.len() == 4 && digits(y) && m.len() == 2 && digits(m));
            digits(millis) || year_month || parse_iso8601(s).is_some()
        }
        _ => false,
    }
}

fn short_error(e: &serde_json::Error) -> String {
    // serde_json reports "line 1 column N"; within one line only the column matters.
    let msg = e.to_string();
    match msg.rfind(" at line ") {
        Some(i) => format!("{} at column {}", &msg[..i], e.column()),
        None => msg,
    }
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"event": "purchase", "entityType": "user", "entityId": "u1", "targetEntityType": "item", "targetEntityId": "Iphone 6", "properties": {}, "eventTime": "2026-01-15T12:00:00.000Z"}"#;

    #[test]
    fn parses_pio_event() {
        let e = parse_event(GOOD.as_bytes()).unwrap();
        assert_eq!(e.event, "purchase");
        assert_eq!(e.entity_id, "u1");
        assert_eq!(e.target().unwrap(), "Iphone 6");
        assert_eq!(e.event_time, 1_768_478_400_000);
        assert!(matches!(e.entity_id, Cow::Borrowed(_)));
    }

    #[test]
    fn escapes_and_extra_fields() {
        let line = r#"{"eventId":"x","event":"view","entityType":"user","entityId":"u\"1","targetEntityType":"item","targetEntityId":"caf\u00e9","eventTime":"2026-01-15T12:00:00+01:00","tags":[],"prId":null}"#;
        let e = parse_event(line.as_bytes()).unwrap();
        assert_eq!(e.entity_id, "u\"1");
        assert_eq!(e.target().unwrap(), "café");
    }

    #[test]
    fn rejects_name_the_field() {
        let cases = [
            ("{not json", "malformed JSON"),
            ("[1,2]", "malformed JSON"),
            (
                r#"{"event":"view","entityType":"user","entityId":"u1","eventTime":"2026-01-15"} trailing"#,
                "malformed JSON",
            ),
            (r#"{"entityType":"user","entityId":"u1","eventTime":"2026-01-15"}"#, "missing field event"),
            (
                r#"{"event":"view","entityType":"user","entityId":7,"eventTime":"2026-01-15"}"#,
                "wrong type of field entityId",
            ),
            (r#"{"event":"view","entityType":"user","entityId":"","eventTime":"2026-01-15"}"#, "empty field entityId"),
            (r#"{"event":"view","entityType":"user","entityId":"u","eventTime":"last tuesday"}"#, "bad eventTime"),
            (r#"{"event":"view","entityType":"user","entityId":"u"}"#, "missing field eventTime"),
            (
                r#"{"event":"view","entityType":"user","entityId":"u","targetEntityId":["a"],"eventTime":"2026-01-15"}"#,
                "wrong type of field targetEntityId",
            ),
        ];
        for (line, reason) in cases {
            let err = parse_event(line.as_bytes()).unwrap_err();
            assert_eq!(err.reason.reason(), reason, "{line}");
        }
        let err = parse_event(br#"{"event":"view","entityType":"user","entityId":5,"eventTime":"x"}"#).unwrap_err();
        assert_eq!(err.reason.to_string(), "field entityId: expected a string, found a number");
        assert_eq!(err.event.as_deref(), Some("view"));
    }

    #[test]
    fn ids_and_properties_fit_elasticsearch() {
        let usage = |user: &str, item: &str| {
            serde_json::json!({"event": "buy", "entityType": "user", "entityId": user,
                "targetEntityType": "item", "targetEntityId": item, "eventTime": "2026-01-15"})
            .to_string()
        };
        let long = "é".repeat(257);
        let line = usage(&long, "i");
        let e = parse_event(line.as_bytes()).unwrap();
        assert_eq!(e.entity().unwrap_err().reason(), "id longer than 512 bytes");
        assert_eq!(e.target(), Ok("i"));
        let line = usage("u", &"x".repeat(513));
        let e = parse_event(line.as_bytes()).unwrap();
        assert_eq!(e.target().unwrap_err().reason(), "id longer than 512 bytes");
        assert_eq!(e.entity(), Ok("u"));
        assert!(parse_event(usage(&"x".repeat(512), "i").as_bytes()).unwrap().entity().is_ok());

        let set = |props: serde_json::Value| {
            serde_json::json!({"event": "$set", "entityType": "item", "entityId": "i",
                "properties": props, "eventTime": "2026-01-15"})
            .to_string()
        };
        let dates = ["expires".to_string()];
        let check = |props: serde_json::Value| {
            parse_event(set(props).as_bytes()).unwrap().set_properties(&dates).map_err(|e| e.reason())
        };
        let good = serde_json::json!({"a": ["x", 1, true, null], "expires": ["2026-01-15T12:00:00Z", "2026",
            "2026-02", "1700000000000", 1700000000000_i64, null], "date": "whenever"});
        assert_eq!(check(good.clone()).unwrap().len(), 3);
        assert_eq!(check(serde_json::json!({"expires": "soon"})).unwrap_err(), "non-date in a date property");
        assert_eq!(check(serde_json::json!({"expires": [true]})).unwrap_err(), "non-date in a date property");
        assert_eq!(check(serde_json::json!({"expires": 1.5})).unwrap_err(), "non-date in a date property");
        assert_eq!(check(serde_json::json!({"a": {"b": 1}})).unwrap_err(), "object property value");
        assert_eq!(check(serde_json::json!({"a": [[{}]]})).unwrap_err(), "object property value");
        assert!(check(serde_json::json!({"a": [[1]]})).is_ok());
        let many: serde_json::Map<String, serde_json::Value> =
            (0..=MAX_PROPERTIES).map(|i| (format!("k{i}"), serde_json::json!(i))).collect();
        assert_eq!(check(serde_json::Value::Object(many)).unwrap_err(), "more than 1000 properties");
    }

    #[test]
    fn properties() {
        let e = parse_event(br#"{"event":"$set","entityType":"item","entityId":"i","properties":{"a":["x"],"n":7.0},"eventTime":"2026-01-15"}"#).unwrap();
        let p = e.properties_object().unwrap();
        assert_eq!(p["a"], serde_json::json!(["x"]));
        let e = parse_event(
            br#"{"event":"$set","entityType":"item","entityId":"i","properties":[1],"eventTime":"2026-01-15"}"#,
        )
        .unwrap();
        assert_eq!(e.properties_object().unwrap_err().reason(), "bad properties");
    }
}

/// The serde_json reading of an event line, kept as the reference the fast
/// scanner is tested against.
#[cfg(test)]
pub mod tests_support {
    use super::Field;
    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::borrow::Cow;
    use std::fmt;

    /// The longest user or item id: Elasticsearch's limit on a document `_id`.
    pub const MAX_ID_BYTES: usize = 512;

    /// The most properties one `$set` may hold (Elasticsearch's default field limit).
    pub const MAX_PROPERTIES: usize = 1000;

    pub struct SerdeField<'a>(pub Field<'a>);

    impl<'de: 'a, 'a> de::Deserialize<'de> for SerdeField<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<'a>(std::marker::PhantomData<&'a ()>);
            impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
                type Value = SerdeField<'a>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                    Ok(SerdeField(Field::Str(Cow::Borrowed(v))))
                }
                fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                    Ok(SerdeField(Field::Str(Cow::Owned(v.to_owned()))))
                }
                fn visit_unit<E>(self) -> Result<Self::Value, E> {
                    Ok(SerdeField(Field::Null))
                }
                fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                    Ok(SerdeField(Field::Other("a boolean")))
                }
                fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                    Ok(SerdeField(Field::Other("a number")))
                }
                fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                    Ok(SerdeField(Field::Other("a number")))
                }
                fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                    Ok(SerdeField(Field::Other("a number")))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(SerdeField(Field::Other("an array")))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(SerdeField(Field::Other("an object")))
                }
            }
            d.deserialize_any(V(std::marker::PhantomData))
        }
    }

    #[derive(serde::Deserialize)]
    pub struct RawEventRef<'a> {
        #[serde(borrow)]
        pub event: Option<SerdeField<'a>>,
        #[serde(borrow, rename = "entityType")]
        pub entity_type: Option<SerdeField<'a>>,
        #[serde(borrow, rename = "entityId")]
        pub entity_id: Option<SerdeField<'a>>,
        #[serde(borrow, rename = "targetEntityType")]
        pub target_entity_type: Option<SerdeField<'a>>,
        #[serde(borrow, rename = "targetEntityId")]
        pub target_entity_id: Option<SerdeField<'a>>,
        #[serde(borrow)]
        pub properties: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow, rename = "eventTime")]
        pub event_time: Option<SerdeField<'a>>,
    }

    /// Random lines near valid events: the scanner and serde must agree on
    /// acceptance and on every member.
    #[test]
    fn scanner_agrees_with_serde_json() {
        let seeds = [
            r#"{"event": "purchase", "entityType": "user", "entityId": "u1", "targetEntityType": "item", "targetEntityId": "Iphone 6", "properties": {"a": [1, -2.5e-3, true, null, {"x": "y\n"}]}, "eventTime": "2026-01-15T12:00:00.000Z"}"#,
            r#"{"event":"$set","entityType":"item","entityId":"caf\u00e9 \"x\"","properties":{"categories":["a","b"],"n":0},"eventTime":"2026-01-15T12:00:00Z","tags":[]}"#,
            r#"{"eventId":"e","event":"view","entityType":"user","entityId":7,"targetEntityId":null,"properties":null,"eventTime":"x"}"#,
            r#"{"event":"view","entityType":"user","entityId":"ü-ser \ud83d\ude00 long enough to span words","targetEntityId":"i","properties":{"d":[[[[1e5,-0.25]]]],"s":"ß\u00e9"},"eventTime":"2026-01-15T12:00:00.000Z"}"#,
        ];
        let alphabet = b"{}[]\":,\\ u0123456789.eE+-tfnrl\"ab\x01\xc3\xa9";
        let mut state = 0x1234_5678_u64;
        let mut next = |n: usize| {
            state = crate::hash::mix(state.wrapping_add(0x9e37_79b9_7f4a_7c15));
            (state % n as u64) as usize
        };
        let mut agreed = (0, 0);
        for round in 0..40_000 {
            let mut line = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..1 + next(3) {
                let pos = next(line.len() + 1);
                match next(3) {
                    0 if pos < line.len() => {
                        line.remove(pos);
                    }
                    1 => line.insert(pos, alphabet[next(alphabet.len())]),
                    _ if pos < line.len() => line[pos] = alphabet[next(alphabet.len())],
                    _ => {}
                }
            }
            let ours = super::scan_event(&line);
            if std::str::from_utf8(&line).is_err() {
                // Stricter than serde_json, which lets invalid UTF-8 pass in ignored values.
                assert!(ours.is_err());
                continue;
            }
            let theirs = serde_json::from_slice::<RawEventRef>(&line);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => {
                    // serde reads `null` into an Option as None; both mean "missing".
                    fn f<'x>(x: &Option<SerdeField<'x>>) -> Option<Field<'x>> {
                        x.as_ref().map(|v| v.0.clone())
                    }
                    fn g<'x>(x: &Option<Field<'x>>) -> Option<Field<'x>> {
                        x.clone().filter(|v| *v != Field::Null)
                    }
                    assert_eq!(g(&a.event), f(&b.event), "{}", String::from_utf8_lossy(&line));
                    assert_eq!(g(&a.entity_type), f(&b.entity_type));
                    assert_eq!(g(&a.entity_id), f(&b.entity_id));
                    assert_eq!(g(&a.target_entity_type), f(&b.target_entity_type));
                    assert_eq!(g(&a.target_entity_id), f(&b.target_entity_id));
                    assert_eq!(g(&a.event_time), f(&b.event_time));
                    assert_eq!(a.properties, b.properties.map(|r| r.get()).filter(|r| *r != "null"));
                    agreed.0 += 1;
                }
                (Err(_), Err(_)) => agreed.1 += 1,
                _ => panic!(
                    "disagree on {:?}: ours {:?}, serde {:?}",
                    String::from_utf8_lossy(&line),
                    ours.as_ref().map(|_| ()),
                    theirs.as_ref().map(|_| ())
                ),
            }
        }
        assert!(agreed.0 > 1000 && agreed.1 > 1000, "{agreed:?}");
    }
}
