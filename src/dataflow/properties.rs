//! Item properties: PIO's aggregation of `$set`, `$unset` and `$delete`.
//!
//! Events of an item are applied in `eventTime` order: `$set` adds or
//! replaces keys (creating the item), `$unset` removes keys of an existing
//! item, `$delete` removes the item and all its properties (a later `$set`
//! creates it again). Events with the same time are applied `$delete`,
//! `$set`, `$unset`, and same-kind events by their JSON text, so the result
//! does not depend on file order. Values are kept as given. An item whose
//! last word is `$delete` is deleted from the model: it gets no document,
//! whatever its events (the UR's `$delete` never removed anything).

use crate::model::{Properties, PropertyEvent, PropertyOp};
use serde_json::{Map, Value};

/// The items with properties at the end, and the items deleted at the end.
pub struct Aggregated {
    pub items: Vec<(u32, Properties)>,
    pub deleted: Vec<u32>,
}

/// Aggregates events (any order) into the items that exist at the end.
pub fn aggregate(mut events: Vec<PropertyEvent>) -> Aggregated {
    events.sort_unstable();
    let mut out = Vec::new();
    let mut deleted = Vec::new();
    for group in events.chunk_by(|a, b| a.item == b.item) {
        let mut state: Option<Properties> = None;
        for e in group {
            match e.op {
                PropertyOp::Delete => state = None,
                PropertyOp::Set => {
                    let props: Map<String, Value> = serde_json::from_str(&e.properties).unwrap_or_default();
                    state.get_or_insert_with(Properties::new).extend(props);
                }
                PropertyOp::Unset => {
                    if let Some(s) = state.as_mut() {
                        let props: Map<String, Value> = serde_json::from_str(&e.properties).unwrap_or_default();
                        for key in props.keys() {
                            s.remove(key);
                        }
                    }
                }
            }
        }
        match state {
            Some(s) => out.push((group[0].item, s)),
            None if group.last().is_some_and(|e| e.op == PropertyOp::Delete) => deleted.push(group[0].item),
            None => {}
        }
    }
    Aggregated { items: out, deleted }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(item: u32, time: i64, op: PropertyOp, props: Value) -> PropertyEvent {
        PropertyEvent { item, time, op, properties: props.to_string() }
    }

    #[test]
    fn latest_set_wins_by_time_not_file_order() {
        let events = vec![
            ev(1, 20, PropertyOp::Set, json!({"categories": ["Phones"], "countries": ["US"]})),
            ev(1, 10, PropertyOp::Set, json!({"categories": ["Cameras"], "price": 7.0})),
        ];
        let out = aggregate(events).items;
        assert_eq!(out.len(), 1);
        let p = &out[0].1;
        assert_eq!(p["categories"], json!(["Phones"]));
        assert_eq!(p["countries"], json!(["US"]));
        assert_eq!(p["price"], json!(7.0));
    }

    #[test]
    fn unset_and_delete_by_time() {
        let events = vec![
            ev(1, 10, PropertyOp::Set, json!({"a": 1, "b": 2})),
            ev(1, 30, PropertyOp::Unset, json!({"a": null})),
            ev(2, 10, PropertyOp::Set, json!({"a": 1})),
            ev(2, 20, PropertyOp::Delete, json!({})),
            ev(3, 10, PropertyOp::Delete, json!({})),
            ev(3, 20, PropertyOp::Set, json!({"c": "x"})),
            ev(4, 5, PropertyOp::Unset, json!({"a": null})),
            ev(1, 5, PropertyOp::Unset, json!({"b": null})),
        ];
        let aggregated = aggregate(events);
        assert_eq!(aggregated.deleted, vec![2]);
        let out = aggregated.items;
        let items: Vec<u32> = out.iter().map(|(i, _)| *i).collect();
        assert_eq!(items, vec![1, 3]);
        assert_eq!(out[0].1, Properties::from([("b".to_string(), json!(2))]));
        assert_eq!(out[1].1["c"], json!("x"));
    }

    #[test]
    fn same_time_is_deterministic() {
        let a = ev(1, 10, PropertyOp::Set, json!({"k": "a"}));
        let b = ev(1, 10, PropertyOp::Set, json!({"k": "b"}));
        let d = ev(1, 10, PropertyOp::Delete, json!({}));
        let one = aggregate(vec![a.clone(), b.clone(), d.clone()]).items;
        let two = aggregate(vec![d, b, a]).items;
        assert_eq!(one, two);
        assert_eq!(one[0].1["k"], json!("b"));
    }
}
