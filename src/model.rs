//! Records shared by several layers: the dense ids of items and users, item
//! property events and an item's properties.
//!
//! They are read by the source side, kept in the training state, aggregated
//! by the workers and written into documents, so they live below all of
//! those; how they are computed stays with the code that computes them
//! (`dataflow::properties` aggregates the events, for instance).

use crate::time::Millis;
use serde_json::Value;
use std::collections::BTreeMap;

/// An item's dense id: its position in the sorted item dictionary
/// (`intern::SortedIds`), so comparing ids compares the id strings.
/// While a worker reads its files, before the dictionary is agreed, item ids
/// are positions in that worker's own interner instead.
pub type ItemId = u32;

/// A user's dense id: its position in one worker's user interner
/// (`intern::Interner`): the reading worker's while it reads its files, then
/// that of the user's owner worker (chosen by a hash of the user id). It
/// means nothing on another worker.
pub type UserId = u32;

/// An item's properties, by name, values as given (key order).
pub type Properties = BTreeMap<String, Value>;

/// `$set`, `$unset` or `$delete` (ordered as applied within one instant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum PropertyOp {
    Delete,
    Set,
    Unset,
}

/// An item property event; `properties` is canonical JSON (sorted keys).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct PropertyEvent {
    pub item: ItemId,
    pub time: Millis,
    pub op: PropertyOp,
    pub properties: String,
}

/// A JSON value's kind as messages name it ("a number", "an object", ...):
/// the engine.json reader and the event validator say it alike.
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
