//! What one acknowledged event does to the live indices, and the bulk
//! request that does it.
//!
//! A usage event of an indicator (`user` → `item`) moves the item to the
//! front of the user's list for that indicator in the live users index,
//! drops an earlier occurrence (distinct items) and cuts the list at the
//! indicator's history cap — the training's "most recent distinct items,
//! at most the cap". `$set` merges properties into the item's document
//! (creating it, as the training's aggregation does), `$unset` removes
//! keys of an existing document, `$delete` deletes it. Property names the
//! model writes itself (`id`, indicator fields, ranking fields) are never
//! touched, as in the training's documents.

use crate::config::Engine;
use crate::events::validate::Accepted;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// A change to an item document.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemOp {
    Set(Map<String, Value>),
    Unset(Vec<String>),
    Delete,
}

/// One event's effect.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveOp {
    /// `item` used by `user` in the indicator with field `field`.
    Usage { user: String, field: usize, item: String },
    /// A property event of `item`.
    Item { item: String, op: ItemOp },
}

/// What of an engine the live updates need.
#[derive(Debug, Clone)]
pub struct LiveEngine {
    /// Indicator field names and their history caps.
    pub fields: Vec<(String, u32)>,
    /// Event name → indicator.
    indicator_of: HashMap<String, usize>,
    /// Names an item's properties may not take.
    reserved: Vec<String>,
    dates: Vec<String>,
}

impl LiveEngine {
    pub fn of(engine: &Engine) -> LiveEngine {
        let mut indicator_of = HashMap::new();
        for (k, i) in engine.indicators.iter().enumerate() {
            for name in &i.event_names {
                indicator_of.entry(name.clone()).or_insert(k);
            }
        }
        let mut reserved = vec!["id".to_string()];
        reserved.extend(engine.indicators.iter().map(|i| i.name.clone()));
        reserved.extend(engine.rankings.iter().map(|r| r.name.clone()));
        LiveEngine {
            fields: engine.indicators.iter().map(|i| (i.name.clone(), i.history_cap)).collect(),
            indicator_of,
            reserved,
            dates: engine.date_names(),
        }
    }

    /// The effect of an accepted event, if any (the training's rules: a
    /// usage event is `user` → `item`, property events are on items).
    pub fn op_of(&self, e: &Accepted) -> Option<LiveOp> {
        match e.event.as_str() {
            "$set" | "$unset" | "$delete" if e.entity_type == "item" => {
                let op = match e.event.as_str() {
                    "$set" => ItemOp::Set(self.settable(e)?),
                    "$unset" => {
                        ItemOp::Unset(e.properties.keys().filter(|k| !self.reserved.contains(k)).cloned().collect())
                    }
                    _ => ItemOp::Delete,
                };
                Some(LiveOp::Item { item: e.entity_id.clone(), op })
            }
            name => {
                let field = *self.indicator_of.get(name)?;
                let item = e.target_entity_id.clone()?;
                (e.entity_type == "user" && e.target_entity_type.as_deref() == Some("item")).then(|| LiveOp::Usage {
                    user: e.entity_id.clone(),
                    field,
                    item,
                })
            }
        }
    }

    /// The properties a `$set` writes, or `None` if the training would
    /// reject the event (objects, too many, a date property not a date).
    fn settable(&self, e: &Accepted) -> Option<Map<String, Value>> {
        let event = crate::source::event::parse_event(e.line.as_bytes()).ok()?;
        let checked = event.set_properties(&self.dates).ok()?;
        Some(checked.into_iter().filter(|(k, _)| !self.reserved.contains(k)).collect())
    }
}

/// A user's live document as read, with its version for a conditional write.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub source: Map<String, Value>,
    pub seq_no: u64,
    pub primary_term: u64,
}

/// The users whose live documents `ops` change, in first-seen order.
pub fn users_of(ops: &[LiveOp]) -> Vec<&str> {
    let mut seen = std::collections::HashSet::new();
    ops.iter()
        .filter_map(|op| match op {
            LiveOp::Usage { user, .. } => seen.insert(user.as_str()).then_some(user.as_str()),
            LiveOp::Item { .. } => None,
        })
        .collect()
}

/// Moves `item` to the front of `field` (distinct), cut at `cap`.
fn to_front(doc: &mut Map<String, Value>, field: &str, item: &str, cap: u32) {
    let list = doc.entry(field.to_string()).or_insert_with(|| Value::Array(Vec::new()));
    if !list.is_array() {
        *list = Value::Array(Vec::new());
    }
    let list = list.as_array_mut().expect("an array");
    list.retain(|v| v.as_str() != Some(item));
    list.insert(0, Value::String(item.to_string()));
    list.truncate(cap as usize);
}

/// The live documents of `ops`' users, in first-seen order: each as read
/// (`current`; a new one if absent) with all of its usage events of the
/// batch applied in order.
pub fn user_docs(
    engine: &LiveEngine,
    ops: &[LiveOp],
    current: &HashMap<String, Stored>,
) -> Vec<(String, Map<String, Value>)> {
    let mut docs: HashMap<&str, Map<String, Value>> = HashMap::new();
    for op in ops {
        if let LiveOp::Usage { user, field, item } = op {
            let doc = docs.entry(user).or_insert_with(|| match current.get(user.as_str()) {
                Some(s) => s.source.clone(),
                None => Map::from_iter([("user".to_string(), json!(user))]),
            });
            let (name, cap) = &engine.fields[*field];
            to_front(doc, name, item, *cap);
        }
    }
    users_of(ops).into_iter().map(|u| (u.to_string(), docs.remove(u).expect("a document per user"))).collect()
}

/// Appends the bulk actions of `ops` (in order): one write per user of
/// its live document in `users_index` — read as `current`, with all of
/// its usage events of the batch applied in order, written only if no one
/// wrote it since (`if_seq_no`; a new one with `create`) — then the item
/// changes that need no read against `items_index` in order (none if it is
/// `None`; `$unset`s are not written here: an item with one is read and
/// written whole by [`super::items::Unsets`], and `ops` are then to hold
/// none of its changes). Returns how many actions were written. No
/// scripts: the integ-test and minimal distributions have no scripting
/// module.
pub fn bulk_body(
    out: &mut Vec<u8>,
    engine: &LiveEngine,
    users_index: &str,
    items_index: Option<&str>,
    ops: &[LiveOp],
    current: &HashMap<String, Stored>,
) -> usize {
    let docs = user_docs(engine, ops, current);
    write_bulk(out, users_index, items_index, &docs, ops, current)
}

/// [`bulk_body`] of the documents [`user_docs`] made.
pub fn write_bulk(
    out: &mut Vec<u8>,
    users_index: &str,
    items_index: Option<&str>,
    docs: &[(String, Map<String, Value>)],
    ops: &[LiveOp],
    current: &HashMap<String, Stored>,
) -> usize {
    let mut actions = 0;
    for (user, doc) in docs {
        match current.get(user) {
            Some(s) => line(
                out,
                &json!({"index": {"_index": users_index, "_id": user, "if_seq_no": s.seq_no, "if_primary_term": s.primary_term}}),
            ),
            None => line(out, &json!({"create": {"_index": users_index, "_id": user}})),
        }
        serde_json::to_writer(&mut *out, doc).expect("JSON");
        out.push(b'\n');
        actions += 1;
    }
    let Some(index) = items_index else { return actions };
    for op in ops {
        let LiveOp::Item { item, op } = op else { continue };
        match op {
            ItemOp::Set(properties) => {
                let mut doc = properties.clone();
                doc.insert("id".into(), json!(item));
                line(out, &json!({"update": {"_index": index, "_id": item, "retry_on_conflict": 5}}));
                line(out, &json!({"doc": doc, "doc_as_upsert": true}));
            }
            ItemOp::Unset(_) => continue,
            ItemOp::Delete => line(out, &json!({"delete": {"_index": index, "_id": item}})),
        }
        actions += 1;
    }
    actions
}

/// The items of the item actions [`write_bulk`] writes of `ops`, in order
/// (one per `$set` or `$delete`).
pub fn partial_items(ops: &[LiveOp]) -> impl Iterator<Item = &str> {
    ops.iter().filter_map(|op| match op {
        LiveOp::Item { item, op: ItemOp::Set(_) | ItemOp::Delete } => Some(item.as_str()),
        _ => None,
    })
}

fn line(out: &mut Vec<u8>, v: &Value) {
    serde_json::to_writer(&mut *out, v).expect("JSON");
    out.push(b'\n');
}

/// Whether a failed bulk action is worth retrying (overload, a node
/// failing, another writer of the same history), not a refusal of the
/// action itself (a missing document).
pub fn retryable(status: u16) -> bool {
    status == 409 || status == 429 || status >= 500
}

/// How one action of a bulk request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Written, the document now at this version.
    Written { seq_no: u64, primary_term: u64 },
    /// Another writer changed (or created) the document since it was read
    /// (409): read it again and re-apply the events.
    Conflict,
    /// Worth trying again after a back-off (overload, a node failing).
    Retry(String),
    /// Refused for good (e.g. `$delete` of a missing item): not retried.
    Refused(u16, String),
}

/// The outcome of each action of a `_bulk` reply, in order.
pub fn outcomes(reply: &Value) -> Vec<Outcome> {
    let items = reply["items"].as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .map(|item| {
            let result = item.as_object().and_then(|o| o.values().next()).cloned().unwrap_or(Value::Null);
            let status = result["status"].as_u64().unwrap_or(0) as u16;
            if result.get("error").is_none() && (200..300).contains(&status) {
                let version = |k: &str| result[k].as_u64().unwrap_or(0);
                return Outcome::Written { seq_no: version("_seq_no"), primary_term: version("_primary_term") };
            }
            let reason = crate::es::error_reason(&result);
            match status {
                409 => Outcome::Conflict,
                s if retryable(s) => Outcome::Retry(format!("{s}: {reason}")),
                s => Outcome::Refused(s, reason),
            }
        })
        .collect()
}

/// What a bulk reply leaves to do.
#[derive(Debug, Default, PartialEq)]
pub struct Settled {
    /// The events still to apply, in order: those of the users whose write
    /// conflicted or is to be retried, and every change of an item one of
    /// whose actions conflicted or is to be retried.
    pub keep: Vec<LiveOp>,
    /// Events applied.
    pub applied: u64,
    /// Events of users whose document Elasticsearch refused for good
    /// (dropped, not retried).
    pub dropped: u64,
    /// The documents written, at their new versions.
    pub written: Vec<(String, Stored)>,
    /// Users whose document another writer changed: read again, at once.
    pub conflicts: Vec<String>,
    /// Items another writer changed meanwhile: read again (if written
    /// whole) and written again, at once.
    pub item_conflicts: Vec<String>,
    /// Why some are to be retried after a back-off, if any are.
    pub retry: Option<String>,
    /// Actions refused for good (not retried), with status and reason.
    pub refused: Vec<(u16, String)>,
}

/// Sorts a batch out by its bulk reply: `docs` are the user documents
/// written (the first actions, in order), then the item actions, one per
/// entry of `items` (the item it writes); `outcomes` the reply's, in the
/// same order. An item change with no action (no live model, nothing to
/// do) is done; an action with no outcome (a short reply) is retried.
pub fn settle(
    ops: &[LiveOp],
    docs: Vec<(String, Map<String, Value>)>,
    items: &[&str],
    outcomes: &[Outcome],
) -> Settled {
    let mut s = Settled::default();
    let outcome =
        |k: usize| outcomes.get(k).cloned().unwrap_or_else(|| Outcome::Retry("no reply for the action".into()));
    let mut keep_users = std::collections::HashSet::new();
    let mut refused_users = std::collections::HashSet::new();
    let n_users = docs.len();
    for (k, (user, source)) in docs.into_iter().enumerate() {
        match outcome(k) {
            Outcome::Written { seq_no, primary_term } => {
                s.written.push((user, Stored { source, seq_no, primary_term }))
            }
            Outcome::Conflict => {
                keep_users.insert(user.clone());
                s.conflicts.push(user);
            }
            Outcome::Retry(e) => {
                s.retry.get_or_insert(e);
                keep_users.insert(user);
            }
            Outcome::Refused(status, reason) => {
                s.refused.push((status, reason));
                refused_users.insert(user);
            }
        }
    }
    let mut keep_items = std::collections::HashSet::new();
    for (k, &item) in items.iter().enumerate() {
        match outcome(n_users + k) {
            Outcome::Written { .. } => {}
            Outcome::Conflict => {
                if keep_items.insert(item) {
                    s.item_conflicts.push(item.to_string());
                }
            }
            Outcome::Retry(e) => {
                s.retry.get_or_insert(e);
                keep_items.insert(item);
            }
            Outcome::Refused(status, reason) => s.refused.push((status, reason)),
        }
    }
    for op in ops {
        let (kept, refused) = match op {
            LiveOp::Usage { user, .. } => (keep_users.contains(user), refused_users.contains(user)),
            LiveOp::Item { item, .. } => (keep_items.contains(item.as_str()), false),
        };
        if kept {
            s.keep.push(op.clone());
        } else if refused {
            s.dropped += 1;
        } else {
            s.applied += 1;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::validate::accept;

    fn engine() -> LiveEngine {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/handmade.json")).unwrap();
        LiveEngine::of(&Engine::from_json(&text).unwrap().engine)
    }

    fn op(e: &LiveEngine, v: Value) -> Option<LiveOp> {
        e.op_of(&accept(&v, 0, "id".into()).unwrap())
    }

    #[test]
    fn usage_and_property_events() {
        let e = engine();
        let buy = json!({"event": "purchase", "entityType": "user", "entityId": "u1",
            "targetEntityType": "item", "targetEntityId": "Iphone 6"});
        assert_eq!(op(&e, buy), Some(LiveOp::Usage { user: "u1".into(), field: 0, item: "Iphone 6".into() }));
        let other = json!({"event": "rate", "entityType": "user", "entityId": "u1",
            "targetEntityType": "item", "targetEntityId": "x"});
        assert_eq!(op(&e, other), None);
        let set = json!({"event": "$set", "entityType": "item", "entityId": "i1",
            "properties": {"categories": ["Phones"], "purchase": ["x"], "id": "y"}});
        let Some(LiveOp::Item { op: ItemOp::Set(p), .. }) = op(&e, set) else { panic!() };
        assert_eq!(p.keys().collect::<Vec<_>>(), vec!["categories"], "model fields are not properties");
        let bad_date =
            json!({"event": "$set", "entityType": "item", "entityId": "i1", "properties": {"expires": "soon"}});
        assert_eq!(op(&e, bad_date), None, "the training rejects it too");
        let delete = json!({"event": "$delete", "entityType": "item", "entityId": "i1"});
        assert_eq!(op(&e, delete), Some(LiveOp::Item { item: "i1".into(), op: ItemOp::Delete }));
        let user_set = json!({"event": "$set", "entityType": "user", "entityId": "u1", "properties": {"a": 1}});
        assert_eq!(op(&e, user_set), None);
    }

    #[test]
    fn one_action_per_user_then_item_changes_in_order() {
        let e = engine();
        let ops = vec![
            LiveOp::Usage { user: "u1".into(), field: 0, item: "a".into() },
            LiveOp::Item { item: "a".into(), op: ItemOp::Delete },
            LiveOp::Usage { user: "u2".into(), field: 1, item: "b".into() },
            LiveOp::Usage { user: "u1".into(), field: 1, item: "c".into() },
            LiveOp::Item { item: "b".into(), op: ItemOp::Unset(vec!["k".into()]) },
        ];
        let stored = Stored {
            source: json!({"user": "u1", "purchase": ["b", "a", "x"], "view": ["c"]}).as_object().unwrap().clone(),
            seq_no: 7,
            primary_term: 1,
        };
        let current = HashMap::from([("u1".to_string(), stored)]);
        let mut out = Vec::new();
        assert_eq!(bulk_body(&mut out, &e, "live", Some("model"), &ops, &current), 3, "the $unset is items.rs's");
        let lines: Vec<Value> =
            String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["index"], json!({"_index": "live", "_id": "u1", "if_seq_no": 7, "if_primary_term": 1}));
        assert_eq!(
            lines[1],
            json!({"user": "u1", "purchase": ["a", "b", "x"], "view": ["c"]}),
            "distinct, to the front"
        );
        assert_eq!(lines[2], json!({"create": {"_index": "live", "_id": "u2"}}));
        assert_eq!(lines[3], json!({"user": "u2", "view": ["b"]}));
        assert_eq!(lines[4], json!({"delete": {"_index": "model", "_id": "a"}}));
        assert_eq!(lines.len(), 5, "no null update for the $unset: {lines:?}");
        let mut out = Vec::new();
        assert_eq!(bulk_body(&mut out, &e, "live", None, &ops, &current), 2, "no model index: users only");
    }

    #[test]
    fn histories_are_capped() {
        let mut doc = Map::new();
        for item in ["a", "b", "c", "a", "d"] {
            to_front(&mut doc, "view", item, 3);
        }
        assert_eq!(doc["view"], json!(["d", "a", "c"]));
    }

    fn usage(user: &str, item: &str) -> LiveOp {
        LiveOp::Usage { user: user.into(), field: 0, item: item.into() }
    }

    #[test]
    fn a_bulk_reply_read_action_by_action() {
        let reply = json!({"errors": true, "items": [
            {"index": {"_id": "u1", "status": 200, "_seq_no": 8, "_primary_term": 2}},
            {"create": {"_id": "u2", "status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "exists"}}},
            {"index": {"_id": "u3", "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "busy"}}},
            {"update": {"_id": "i", "status": 404, "error": {"type": "document_missing_exception", "reason": "gone"}}},
        ]});
        let got = outcomes(&reply);
        assert_eq!(got[0], Outcome::Written { seq_no: 8, primary_term: 2 });
        assert_eq!(got[1], Outcome::Conflict);
        assert!(matches!(&got[2], Outcome::Retry(e) if e.contains("429")));
        assert!(matches!(&got[3], Outcome::Refused(404, _)));
    }

    #[test]
    fn only_what_failed_stays_pending_in_order() {
        let e = engine();
        let ops = vec![
            usage("u1", "a"),
            usage("u2", "b"),
            LiveOp::Item { item: "i".into(), op: ItemOp::Delete },
            usage("u1", "c"),
            usage("u3", "d"),
            LiveOp::Item { item: "j".into(), op: ItemOp::Delete },
            usage("u2", "e"),
            usage("u4", "f"),
            LiveOp::Item { item: "i".into(), op: ItemOp::Unset(vec!["k".into()]) },
        ];
        let docs = user_docs(&e, &ops, &HashMap::new());
        assert_eq!(docs.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>(), ["u1", "u2", "u3", "u4"]);
        assert_eq!(docs[0].1["purchase"], json!(["c", "a"]));
        let outcomes = [
            Outcome::Written { seq_no: 3, primary_term: 1 },
            Outcome::Conflict,
            Outcome::Refused(400, "bad".into()),
            Outcome::Retry("429: busy".into()),
            // items: i (delete), j, i (unset)
            Outcome::Retry("503: unavailable".into()),
            Outcome::Written { seq_no: 1, primary_term: 1 },
            Outcome::Written { seq_no: 2, primary_term: 1 },
        ];
        let s = settle(&ops, docs.clone(), &["i", "j", "i"], &outcomes);
        assert_eq!(
            s.written,
            vec![("u1".to_string(), Stored { source: docs[0].1.clone(), seq_no: 3, primary_term: 1 })]
        );
        assert_eq!(s.conflicts, vec!["u2".to_string()]);
        assert_eq!(s.retry.as_deref(), Some("429: busy"), "the first retryable failure");
        assert_eq!(s.refused.len(), 1);
        let kept = vec![ops[1].clone(), ops[2].clone(), ops[6].clone(), ops[7].clone(), ops[8].clone()];
        assert_eq!(s.keep, kept, "the conflicted and retried users' events, every change of an item retried, in order");
        assert_eq!(s.applied, 3, "u1's two events and j's delete");
        assert_eq!(s.dropped, 1, "u3's event, its document refused");

        // A short reply: the actions without an outcome are retried.
        let s = settle(&ops, docs.clone(), &[], &outcomes[..1]);
        assert!(s.retry.is_some());
        assert_eq!(s.keep.iter().filter(|op| matches!(op, LiveOp::Item { .. })).count(), 0, "items not written: done");
        assert_eq!(s.applied, 2 + 3);
    }

    #[test]
    fn an_item_conflict_is_written_again_at_once() {
        let unset = |item: &str| LiveOp::Item { item: item.into(), op: ItemOp::Unset(vec!["k".into()]) };
        let ops = vec![usage("u1", "a"), unset("i"), LiveOp::Item { item: "j".into(), op: ItemOp::Delete }, unset("i")];
        let docs = user_docs(&engine(), &ops, &HashMap::new());
        let written = Outcome::Written { seq_no: 1, primary_term: 1 };
        // j's delete (no read), then i written whole: another writer changed i.
        let s = settle(&ops, docs, &["j", "i"], &[written.clone(), written, Outcome::Conflict]);
        assert_eq!(s.item_conflicts, vec!["i".to_string()]);
        assert_eq!(s.retry, None, "no back-off: read again and re-written in the next round");
        assert_eq!(s.keep, vec![ops[1].clone(), ops[3].clone()], "every change of i, in order");
        assert_eq!(s.applied, 2);
    }
}
