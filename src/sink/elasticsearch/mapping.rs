//! The UR's index layout: indicator fields `keyword`, ranking fields
//! `float`, the configured date names `date`, every other property
//! `keyword` (by dynamic templates, since properties are free-form), `id`
//! `keyword`. The companion user-history index holds, per user, one
//! `keyword` array per indicator.
//!
//! The mapping tolerates what a property value may be that reading lets
//! through (`source::event` rejects the rest): strings too long for a
//! keyword term are kept in `_source` but not indexed (`ignore_above`), a
//! date ES does not parse is not indexed (`ignore_malformed`), and where the
//! server allows it (Elasticsearch 8.13+) property names beyond the field
//! limit are kept in `_source` only.

use crate::config::Engine;
use crate::es::ServerInfo;
use serde_json::{Map, Value, json};

/// The longest keyword indexed, in characters: 32,766 bytes (Lucene's term
/// limit) of 4-byte UTF-8.
pub const IGNORE_ABOVE: u32 = 32_766 / 4;

/// The field limit of a model index where names beyond it cannot be ignored
/// (Elasticsearch before 8.13, OpenSearch): property names past it fail
/// the run, naming the document.
pub const FIELD_LIMIT_WITHOUT_IGNORE: u32 = 20_000;

/// What the server lets a mapping tolerate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tolerance {
    /// `index.mapping.total_fields.ignore_dynamic_beyond_limit` (Elasticsearch 8.13+).
    pub ignore_dynamic_beyond_limit: bool,
}

impl Tolerance {
    pub fn of(info: &ServerInfo) -> Tolerance {
        let mut numbers = info.version.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
        let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
        let elasticsearch = info.distribution != "opensearch";
        Tolerance { ignore_dynamic_beyond_limit: elasticsearch && (major, minor) >= (8, 13) }
    }
}

/// Index settings: shards, replicas; refresh off while bulk loading.
pub fn settings(shards: u32, replicas: u32) -> Value {
    json!({
        "number_of_shards": shards,
        "number_of_replicas": replicas,
        "refresh_interval": "-1",
    })
}

/// The model index.
pub fn model_index(engine: &Engine, shards: u32, replicas: u32, meta: Value, tolerance: Tolerance) -> Value {
    let mut properties = Map::new();
    properties.insert("id".into(), json!({"type": "keyword"}));
    for indicator in &engine.indicators {
        properties.insert(indicator.name.clone(), json!({"type": "keyword"}));
    }
    for ranking in &engine.rankings {
        properties.insert(ranking.name.clone(), json!({"type": "float"}));
    }
    for date in engine.date_names() {
        properties.insert(date, json!({"type": "date", "ignore_malformed": true}));
    }
    let keyword = |t: &str| {
        json!({ format!("{t}s_as_keywords"):
            {"match_mapping_type": t, "mapping": {"type": "keyword", "ignore_above": IGNORE_ABOVE}} })
    };
    let mut settings = settings(shards, replicas);
    settings["mapping"] = match tolerance.ignore_dynamic_beyond_limit {
        true => json!({"total_fields": {"ignore_dynamic_beyond_limit": true}}),
        // Older Elasticsearch and OpenSearch fail a document past the field
        // limit: raise it so thousands of property names fit.
        false => json!({"total_fields": {"limit": FIELD_LIMIT_WITHOUT_IGNORE}}),
    };
    json!({
        "settings": settings,
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
        let body = model_index(&engine, 1, 0, json!({}), Tolerance::default());
        let p = &body["mappings"]["properties"];
        assert_eq!(p["purchase"]["type"], "keyword");
        assert_eq!(p["category-pref"]["type"], "keyword");
        assert_eq!(p["popRank"]["type"], "float");
        assert_eq!(p["expires"]["type"], "date");
        assert_eq!(p["available"]["type"], "date");
        assert_eq!(p["available"]["ignore_malformed"], true);
        let strings = &body["mappings"]["dynamic_templates"][0]["strings_as_keywords"]["mapping"];
        assert_eq!(strings["ignore_above"], IGNORE_ABOVE);
        assert_eq!(body["settings"]["number_of_replicas"], 0);
        let users = users_index(&engine, 1, 0, json!({}));
        assert_eq!(users["mappings"]["properties"]["view"]["index"], false);
    }
}
