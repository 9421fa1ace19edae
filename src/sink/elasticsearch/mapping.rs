//! The UR's index layout: indicator fields `keyword`, ranking fields
//! `float`, the configured date names `date`, every other property
//! `keyword` (by dynamic templates, since properties are free-form), `id`
//! `keyword`. The companion user-history index holds, per user, one
//! `keyword` array per indicator.

use crate::config::Engine;
use serde_json::{Map, Value, json};

/// Index settings: shards, replicas; refresh off while bulk loading.
pub fn settings(shards: u32, replicas: u32) -> Value {
    json!({
        "number_of_shards": shards,
        "number_of_replicas": replicas,
        "refresh_interval": "-1",
    })
}

/// The model index.
pub fn model_index(engine: &Engine, shards: u32, replicas: u32, meta: Value) -> Value {
    let mut properties = Map::new();
    properties.insert("id".into(), json!({"type": "keyword"}));
    for indicator in &engine.indicators {
        properties.insert(indicator.name.clone(), json!({"type": "keyword"}));
    }
    for ranking in &engine.rankings {
        properties.insert(ranking.name.clone(), json!({"type": "float"}));
    }
    for date in engine.date_names() {
        properties.insert(date, json!({"type": "date"}));
    }
    let keyword =
        |t: &str| json!({ format!("{t}s_as_keywords"): {"match_mapping_type": t, "mapping": {"type": "keyword"}} });
    json!({
        "settings": settings(shards, replicas),
        "mappings": {
            "_meta": meta,
            "dynamic_templates": [keyword("string"), keyword("long"), keyword("double"), keyword("boolean")],
            "properties": properties,
        }
    })
}

/// The user-history index.
pub fn users_index(engine: &Engine, shards: u32, replicas: u32, meta: Value) -> Value {
    let mut properties = Map::new();
    properties.insert("user".into(), json!({"type": "keyword"}));
    for indicator in &engine.indicators {
        properties.insert(indicator.name.clone(), json!({"type": "keyword", "index": false}));
    }
    json!({
        "settings": settings(shards, replicas),
        "mappings": { "_meta": meta, "dynamic": false, "properties": properties }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handmade_mapping() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/handmade.json")).unwrap();
        let engine = Engine::from_json(&text).unwrap().engine;
        let body = model_index(&engine, 1, 0, json!({}));
        let p = &body["mappings"]["properties"];
        assert_eq!(p["purchase"]["type"], "keyword");
        assert_eq!(p["category-pref"]["type"], "keyword");
        assert_eq!(p["popRank"]["type"], "float");
        assert_eq!(p["expires"]["type"], "date");
        assert_eq!(p["available"]["type"], "date");
        assert_eq!(body["settings"]["number_of_replicas"], 0);
        let users = users_index(&engine, 1, 0, json!({}));
        assert_eq!(users["mappings"]["properties"]["view"]["index"], false);
    }
}
