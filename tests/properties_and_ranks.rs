//! Item properties ($set/$unset/$delete by time) and ranking fields.

use crate::util::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn by_id(docs: Vec<serde_json::Map<String, Value>>) -> BTreeMap<String, serde_json::Map<String, Value>> {
    docs.into_iter().map(|d| (d["id"].as_str().unwrap().to_string(), d)).collect()
}

#[test]
fn properties_aggregate_by_time_not_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_file(dir.path(), json!({"eventNames": ["buy"]}));
    let t = |d: u32| format!("2026-01-{d:02}T00:00:00Z");
    let events = vec![
        usage("buy", "u1", "R", &t(1)),
        usage("buy", "u2", "R", &t(1)),
        item_event("$set", "P", json!({"a": ["x"], "b": 1}), &t(1)),
        item_event("$unset", "P", json!({"b": null}), &t(2)),
        item_event("$set", "P", json!({"c": "2026-01-01T00:00:00Z", "a": ["y", "z"]}), &t(3)),
        item_event("$set", "Q", json!({"a": ["q"]}), &t(1)),
        item_event("$delete", "Q", json!({}), &t(2)),
        item_event("$set", "R", json!({"a": ["r"]}), &t(1)),
        item_event("$delete", "R", json!({}), &t(5)),
        item_event("$delete", "S", json!({}), &t(1)),
        item_event("$set", "S", json!({"n": 2.5}), &t(2)),
        json!({"event": "$set", "entityType": "user", "entityId": "u1", "properties": {"age": 3}, "eventTime": t(1)})
            .to_string(),
    ];
    // Newest first, split over files.
    let mut reversed = events.clone();
    reversed.reverse();
    write_lines(&dir.path().join("in/a.jsonl"), &reversed[..6]);
    write_lines(&dir.path().join("in/b.jsonl"), &reversed[6..]);
    let model = dir.path().join("model");
    train_ok(&engine, &dir.path().join("in"), &model, &["--workers", "2", "--now", &t(10), "-q"]);
    let docs = by_id(documents(&model));
    // R was bought, but its last word is $delete: it leaves the model.
    assert_eq!(docs.keys().collect::<Vec<_>>(), ["P", "S"]);
    assert_eq!(docs["P"]["a"], json!(["y", "z"]));
    assert_eq!(docs["P"]["c"], json!("2026-01-01T00:00:00Z"));
    assert!(!docs["P"].contains_key("b"));
    assert_eq!(docs["S"]["n"], json!(2.5));
    let m = manifest(&model);
    assert_eq!(m["input"]["ignoredByReason"]["property event on a non-item entity"], 1);
    assert_eq!(m["model"]["items_with_properties"], 2);
}

#[test]
fn ranking_windows_and_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_file(
        dir.path(),
        json!({
            "eventNames": ["buy", "view"],
            "rankings": [
                {"name": "popRank", "type": "popular", "eventNames": ["buy"], "duration": "10 days"},
                {"name": "trendRank", "type": "trending", "eventNames": ["buy"], "duration": "10 days"},
                {"name": "hotRank", "type": "hot", "eventNames": ["buy", "view"], "duration": "9 days"},
                {"name": "uniqueRank", "type": "random"},
                {"name": "defaultRank", "type": "userDefined"}
            ],
            "seed": 5
        }),
    );
    let t = |d: u32, h: u32| format!("2026-01-{d:02}T{h:02}:00:00Z");
    let mut events = vec![
        // A: window [01-01, 01-11] includes both ends.
        usage("buy", "u1", "A", &t(1, 0)),
        usage("buy", "u2", "A", &t(3, 0)),
        usage("buy", "u3", "A", &t(7, 0)),
        usage("buy", "u4", "A", &t(9, 0)),
        usage("buy", "u5", "A", &t(11, 0)),
        "2025-12-31T23:00:00Z".to_string(),
        // B: newer half only.
        usage("buy", "u1", "B", &t(8, 0)),
        usage("buy", "u2", "B", &t(10, 0)),
        // C: views only, thirds of [01-02, 01-11]: 1, 2, 1.
        usage("view", "u1", "C", &t(3, 0)),
        usage("view", "u2", "C", &t(6, 0)),
        usage("view", "u3", "C", &t(6, 0)),
        usage("view", "u4", "C", &t(9, 0)),
        item_event("$set", "D", json!({"defaultRank": 3.5}), &t(1, 0)),
    ];
    events[5] = usage("buy", "u6", "A", "2025-12-31T23:00:00Z");
    write_lines(&dir.path().join("events.jsonl"), &events);
    let mut runs = Vec::new();
    for workers in ["1", "2"] {
        let model = dir.path().join(format!("model-{workers}"));
        train_ok(&engine, &dir.path().join("events.jsonl"), &model, &["--workers", workers, "--now", &t(11, 0), "-q"]);
        runs.push(by_id(documents(&model)));
    }
    assert_eq!(runs[0], runs[1]);
    let docs = &runs[0];
    assert_eq!(docs.keys().collect::<Vec<_>>(), ["A", "B", "C", "D"]);
    assert_eq!(docs["A"]["popRank"], json!(5.0));
    assert_eq!(docs["A"]["trendRank"], json!(1.0)); // 3 newer − 2 older
    assert_eq!(docs["A"]["hotRank"], json!(1.0)); // (2 − 1) − (1 − 1)
    assert_eq!(docs["B"]["popRank"], json!(2.0));
    assert!(!docs["B"].contains_key("trendRank"), "no older events: the UR's join gives no value");
    assert!(!docs["B"].contains_key("hotRank"));
    assert!(!docs["C"].contains_key("popRank"));
    assert_eq!(docs["C"]["hotRank"], json!(-2.0)); // (1 − 2) − (2 − 1)
    assert!(!docs["C"].contains_key("buy"), "C has no primary events");
    assert_eq!(docs["D"]["defaultRank"], json!(3.5));
    for id in ["A", "B", "C", "D"] {
        let r = docs[id]["uniqueRank"].as_f64().unwrap();
        assert!((0.0..1.0).contains(&r), "{id}: {r}");
    }
    assert_ne!(docs["A"]["uniqueRank"], docs["B"]["uniqueRank"]);
}

#[test]
fn offset_date_moves_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_file(
        dir.path(),
        json!({"eventNames": ["buy"], "rankings": [{"type": "popular", "duration": 86400, "offsetDate": "2026-01-05T00:00:00Z"}]}),
    );
    let events = vec![
        usage("buy", "u1", "A", "2026-01-04T12:00:00Z"),
        usage("buy", "u2", "A", "2026-01-10T12:00:00Z"),
        usage("buy", "u2", "B", "2026-01-10T12:00:00Z"),
    ];
    write_lines(&dir.path().join("e.jsonl"), &events);
    let model = dir.path().join("model");
    train_ok(&engine, &dir.path().join("e.jsonl"), &model, &["--now", "2026-01-11T00:00:00Z", "-q"]);
    let docs = by_id(documents(&model));
    assert_eq!(docs["A"]["popRank"], json!(1.0));
    assert!(!docs["B"].contains_key("popRank"));
}
