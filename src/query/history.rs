//! A user's query-time history: the training's document (users alias)
//! merged with the live one `ur events` keeps (`crate::events::live`).
//!
//! Per indicator: the live items first (they are the most recent events),
//! then the training's items not among them, at most the indicator's
//! history cap — the training's own rule (most recent distinct items, at
//! most the cap) applied to both. The live document is never written by a
//! training, so a model published without some recent events still
//! answers with them.

use crate::config::Engine;
use serde_json::{Map, Value};

/// The merged history; `None` if the user has neither document.
pub fn merge(
    engine: &Engine,
    trained: Option<Map<String, Value>>,
    live: Option<Map<String, Value>>,
) -> Option<Map<String, Value>> {
    let Some(live) = live else { return trained };
    let mut out = trained.unwrap_or_default();
    for indicator in &engine.indicators {
        let name = &indicator.name;
        let Some(Value::Array(recent)) = live.get(name) else { continue };
        let older = match out.remove(name) {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        };
        let mut merged: Vec<Value> = Vec::with_capacity(recent.len() + older.len());
        for item in recent.iter().chain(older.iter()) {
            if merged.len() >= indicator.history_cap as usize {
                break;
            }
            if !merged.contains(item) {
                merged.push(item.clone());
            }
        }
        out.insert(name.clone(), Value::Array(merged));
    }
    if let Some(user) = live.get("user") {
        out.entry("user").or_insert_with(|| user.clone());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn engine() -> Engine {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/handmade.json")).unwrap();
        let mut e = Engine::from_json(&text).unwrap().engine;
        e.indicators[0].history_cap = 3;
        e
    }

    fn map(v: Value) -> Option<Map<String, Value>> {
        v.as_object().cloned()
    }

    #[test]
    fn live_first_distinct_capped() {
        let e = engine();
        let trained = map(json!({"user": "u", "purchase": ["a", "b", "c"], "view": ["x"]}));
        let live = map(json!({"user": "u", "purchase": ["d", "b"]}));
        let merged = merge(&e, trained.clone(), live).unwrap();
        assert_eq!(merged["purchase"], json!(["d", "b", "a"]));
        assert_eq!(merged["view"], json!(["x"]));
        assert_eq!(merge(&e, trained.clone(), None), trained);
        let only_live = merge(&e, None, map(json!({"user": "n", "view": ["v"]}))).unwrap();
        assert_eq!(only_live, map(json!({"user": "n", "view": ["v"]})).unwrap());
    }
}
