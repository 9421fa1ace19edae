//! Live `$unset`: the keys are removed from the item's document, as the
//! next training's document has none of them. A partial update can only
//! set a key (to `null` at best), and scripts are not used (some
//! distributions have no Painless), so an item with an `$unset` among the
//! pending changes is read, changed in memory by all of its pending
//! changes in order and written back whole, only if no one wrote it since
//! (`if_seq_no`/`if_primary_term`; a conflict, 409, has it read again and
//! written again at once, in the flush's next round). Items without an
//! `$unset` keep the partial updates of [`super::ops::write_bulk`], which
//! need no read.

use super::LiveError;
use super::ops::{ItemOp, LiveOp, Stored};
use crate::es::{Es, HttpMethod, error_reason};
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::collections::HashMap;

/// The items of a batch to read-modify-write, as read.
#[derive(Debug, Default)]
pub struct Unsets {
    /// Each such item, in first-seen order, with its document if it exists.
    items: Vec<(String, Option<Stored>)>,
}

fn is_unset(op: &LiveOp) -> bool {
    matches!(op, LiveOp::Item { op: ItemOp::Unset(_), .. })
}

impl Unsets {
    /// Reads the documents in `index` (the live model) of the items that
    /// `ops` unset keys of; none without a model or an `$unset`.
    pub async fn read(es: &Es, index: Option<&str>, ops: &[LiveOp]) -> Result<Unsets, LiveError> {
        let Some(index) = index else { return Ok(Unsets::default()) };
        let mut ids: Vec<&str> = Vec::new();
        for op in ops.iter().filter(|op| is_unset(op)) {
            let LiveOp::Item { item, .. } = op else { continue };
            if !ids.contains(&item.as_str()) {
                ids.push(item);
            }
        }
        if ids.is_empty() {
            return Ok(Unsets::default());
        }
        let body = serde_json::to_vec(&json!({ "ids": ids })).expect("JSON");
        let (status, reply) =
            es.call(HttpMethod::Post, &format!("/{index}/_mget"), Some(body)).await.map_err(LiveError)?;
        if status != 200 {
            return Err(LiveError(format!("reading {index}: {status}: {}", error_reason(&reply))));
        }
        let mut found: HashMap<String, Stored> = HashMap::new();
        for doc in reply["docs"].as_array().into_iter().flatten() {
            if let Some(e) = doc.get("error") {
                return Err(LiveError(format!("reading {index}: {}", error_reason(&json!({ "error": e })))));
            }
            let (Some(id), Some(source)) = (doc["_id"].as_str(), doc["_source"].as_object()) else { continue };
            let version = |k: &str| doc[k].as_u64().unwrap_or(0);
            let stored =
                Stored { source: source.clone(), seq_no: version("_seq_no"), primary_term: version("_primary_term") };
            found.insert(id.to_string(), stored);
        }
        Ok(Unsets { items: ids.into_iter().map(|id| (id.to_string(), found.remove(id))).collect() })
    }

    /// `ops` less the changes of the items written here (all of `ops`,
    /// not copied, if there are none).
    pub fn rest<'a>(&self, ops: &'a [LiveOp]) -> Cow<'a, [LiveOp]> {
        if self.items.is_empty() {
            return Cow::Borrowed(ops);
        }
        let mine = |op: &LiveOp| matches!(op, LiveOp::Item { item, .. } if self.items.iter().any(|(i, _)| i == item));
        Cow::Owned(ops.iter().filter(|op| !mine(op)).cloned().collect())
    }

    /// Appends one action per item (the result of its changes in `ops`, in
    /// order, on the document read) to `out`; returns the items written, in
    /// order (an `$unset` of a missing item needs no action).
    pub fn bulk_body(&self, out: &mut Vec<u8>, index: &str, ops: &[LiveOp]) -> Vec<&str> {
        let mut written = Vec::new();
        for (item, stored) in &self.items {
            let changes = ops.iter().filter_map(|op| match op {
                LiveOp::Item { item: i, op } if i == item => Some(op),
                _ => None,
            });
            let doc = changed(item, stored.as_ref().map(|s| s.source.clone()), changes);
            let action = match (stored, doc) {
                (Some(s), Some(doc)) => Some((
                    json!({"index": {"_index": index, "_id": item, "if_seq_no": s.seq_no, "if_primary_term": s.primary_term}}),
                    Some(doc),
                )),
                (Some(s), None) => Some((
                    json!({"delete": {"_index": index, "_id": item, "if_seq_no": s.seq_no, "if_primary_term": s.primary_term}}),
                    None,
                )),
                (None, Some(doc)) => Some((json!({"create": {"_index": index, "_id": item}}), Some(doc))),
                // Unset keys of an item that is not there (nor set here): nothing to do.
                (None, None) => None,
            };
            let Some((head, doc)) = action else { continue };
            line(out, &head);
            if let Some(doc) = doc {
                line(out, &Value::Object(doc));
            }
            written.push(item.as_str());
        }
        written
    }
}

/// An item's document after `changes`, in order (`None`: no document).
fn changed<'a>(
    item: &str,
    mut doc: Option<Map<String, Value>>,
    changes: impl Iterator<Item = &'a ItemOp>,
) -> Option<Map<String, Value>> {
    for change in changes {
        match change {
            ItemOp::Set(properties) => {
                let d = doc.get_or_insert_with(Map::new);
                d.extend(properties.iter().map(|(k, v)| (k.clone(), v.clone())));
                d.insert("id".into(), json!(item));
            }
            ItemOp::Unset(keys) => {
                if let Some(d) = doc.as_mut() {
                    for k in keys {
                        d.remove(k);
                    }
                }
            }
            ItemOp::Delete => doc = None,
        }
    }
    doc
}

fn line(out: &mut Vec<u8>, v: &Value) {
    serde_json::to_writer(&mut *out, v).expect("JSON");
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn lines(out: Vec<u8>) -> Vec<Value> {
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn unset_removes_the_keys_in_order_with_the_other_changes() {
        let ops = vec![
            LiveOp::Item { item: "a".into(), op: ItemOp::Set(map(json!({"color": ["red"], "size": ["L"]}))) },
            LiveOp::Usage { user: "u".into(), field: 0, item: "a".into() },
            LiveOp::Item { item: "b".into(), op: ItemOp::Set(map(json!({"color": ["blue"]}))) },
            LiveOp::Item { item: "a".into(), op: ItemOp::Unset(vec!["color".into(), "absent".into()]) },
            LiveOp::Item { item: "c".into(), op: ItemOp::Unset(vec!["k".into()]) },
            LiveOp::Item { item: "d".into(), op: ItemOp::Unset(vec!["k".into()]) },
            LiveOp::Item { item: "d".into(), op: ItemOp::Delete },
        ];
        let stored = |source: Value| Stored { source: map(source), seq_no: 3, primary_term: 2 };
        let unsets = Unsets {
            items: vec![
                ("a".into(), Some(stored(json!({"id": "a", "purchase": ["x"], "color": ["green"], "k": 1})))),
                ("c".into(), None),
                ("d".into(), Some(stored(json!({"id": "d", "k": 1})))),
            ],
        };
        let rest = unsets.rest(&ops);
        assert_eq!(rest.len(), 2, "the usage event and b's $set stay with ops::write_bulk: {rest:?}");
        let mut out = Vec::new();
        assert_eq!(unsets.bulk_body(&mut out, "model", &ops), ["a", "d"], "a missing item unset: no action");
        let lines = lines(out);
        assert_eq!(lines[0], json!({"index": {"_index": "model", "_id": "a", "if_seq_no": 3, "if_primary_term": 2}}));
        assert_eq!(lines[1], json!({"id": "a", "purchase": ["x"], "size": ["L"], "k": 1}), "no `color` key, not null");
        assert_eq!(lines[2], json!({"delete": {"_index": "model", "_id": "d", "if_seq_no": 3, "if_primary_term": 2}}));
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn without_unset_nothing_is_read_or_copied() {
        let ops = vec![LiveOp::Item { item: "a".into(), op: ItemOp::Delete }];
        let unsets = Unsets::default();
        assert!(matches!(unsets.rest(&ops), Cow::Borrowed(_)));
        let mut out = Vec::new();
        assert!(unsets.bulk_body(&mut out, "model", &ops).is_empty());
        assert!(out.is_empty());
    }
}
