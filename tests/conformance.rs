//! The UR's own integration data and engine files.

use crate::util::*;
use serde_json::Value;
use std::collections::BTreeMap;

/// The handmade model equals the UR's expected model. Correlator order is
/// free only within groups of equal LLR (the expected `_llr` gives them).
#[test]
fn handmade_model_equals_the_urs() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    train_ok(&handmade_engine(), &handmade_events(), &model, &["--now", HANDMADE_NOW, "--workers", "2"]);
    assert_is_the_expected_handmade_model(&model);
}

/// The model at `model` equals data/handmade/expected-model.jsonl, up to
/// the order of correlators of equal LLR.
pub fn assert_is_the_expected_handmade_model(model: &std::path::Path) {
    let got: BTreeMap<String, _> =
        documents(model).into_iter().map(|d| (d["id"].as_str().unwrap().to_string(), d)).collect();
    let expected_text = std::fs::read_to_string(repo().join("data/handmade/expected-model.jsonl")).unwrap();
    let mut expected_ids = Vec::new();
    for line in expected_text.lines() {
        let Value::Object(mut exp) = serde_json::from_str(line).unwrap() else { panic!() };
        let llr = exp.remove("_llr").unwrap();
        let id = exp["id"].as_str().unwrap().to_string();
        expected_ids.push(id.clone());
        let doc = got.get(&id).unwrap_or_else(|| panic!("no document for {id}"));
        let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<std::collections::BTreeSet<_>>();
        assert_eq!(keys(doc), keys(&exp), "{id}: fields");
        for (field, value) in &exp {
            match llr.get(field) {
                Some(scores) => assert_same_up_to_ties(&id, field, &doc[field], value, scores),
                None => assert_eq!(&doc[field], value, "{id}.{field}"),
            }
        }
    }
    let mut got_ids: Vec<_> = got.keys().cloned().collect();
    got_ids.sort();
    expected_ids.sort();
    assert_eq!(got_ids, expected_ids);
}

/// Same items; position p holds an item whose expected LLR equals the LLR
/// of the expected item at p.
fn assert_same_up_to_ties(id: &str, field: &str, got: &Value, expected: &Value, scores: &Value) {
    let got: Vec<&str> = got.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let exp: Vec<&str> = expected.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let scores: Vec<f64> = scores.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(got.len(), exp.len(), "{id}.{field}: {got:?} vs {exp:?}");
    let score_of = |item: &str| {
        scores[exp.iter().position(|e| *e == item).unwrap_or_else(|| panic!("{id}.{field}: unexpected {item}"))]
    };
    for (p, item) in got.iter().enumerate() {
        assert_eq!(score_of(item), scores[p], "{id}.{field}: {got:?} is not in LLR order {exp:?} {scores:?}");
    }
}

/// Every engine.json the UR ships loads as-is, with its settings understood.
#[test]
fn shipped_engines_load() {
    let dir = repo().join("tests/engines");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let l = ur::config::Engine::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!l.engine.indicators.is_empty(), "{}", path.display());
        for w in &l.warnings {
            assert!(!w.contains("unknown key"), "{}: {w}", path.display());
        }
        loaded += 1;
    }
    assert_eq!(loaded, 13);

    let load = |name: &str| ur::config::Engine::load(&dir.join(name)).unwrap();
    let e = load("handmade-engine-downsample.json").engine;
    assert_eq!(e.min_events_per_user, 6);
    assert_eq!(e.indicators.iter().map(|i| i.max_items_per_user).collect::<Vec<_>>(), vec![500, 500]);
    let rank = load("rank-engine.json");
    let names: Vec<&str> = rank.engine.rankings.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["popularRank", "defaultRank", "uniqueRank"]);
    assert!(rank.warnings.iter().any(|w| w.contains("endDate")), "{:?}", rank.warnings);
    let hot = load("hot-3-day-engine.json").engine;
    assert_eq!((hot.rankings[0].name.as_str(), hot.rankings[0].duration_secs), ("hotRank", 259_200));
    let pop = load("pop-engine-4-days-ago.json").engine;
    assert_eq!(pop.rankings[0].offset_date, ur::time::parse_iso8601("2016-01-19T11:55:07Z"));
    assert_eq!(pop.recs_model, ur::config::RecsModel::Backfill);
    let sets = load("handmade-engine-item-sets.json").engine;
    assert_eq!(sets.recs_model, ur::config::RecsModel::CollabFiltering);
    let names = load("event-names-test-engine.json").engine;
    assert_eq!(names.query.blacklist_events, Some(vec![]));
}

/// The shipped engines that use the handmade event names train on it.
#[test]
fn shipped_engines_train_on_handmade_events() {
    let root = tempfile::tempdir().unwrap();
    for name in [
        "handmade-engine.json",
        "engine-template.json",
        "pop-engine.json",
        "trend-engine.json",
        "hot-3-day-engine.json",
        "handmade-engine-item-sets.json",
    ] {
        let model = root.path().join(name);
        train_ok(&repo().join("tests/engines").join(name), &handmade_events(), &model, &["--now", HANDMADE_NOW, "-q"]);
        let docs = documents(&model);
        assert!(!docs.is_empty(), "{name}");
        match name {
            // backfill: rankings and properties, no indicators
            "pop-engine.json" | "trend-engine.json" => {
                assert!(docs.iter().all(|d| !d.contains_key("purchase")), "{name}")
            }
            // collabFiltering: indicators only
            "handmade-engine-item-sets.json" => {
                assert!(docs.iter().all(|d| d.keys().all(|k| k == "id" || k == "purchase")), "{name}")
            }
            _ => assert!(docs.iter().any(|d| d.contains_key("purchase")), "{name}"),
        }
    }
}
