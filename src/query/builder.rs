//! UR query → Elasticsearch query: a pure function of the query, the engine
//! settings, the user's recent items and the query item's document.
//!
//! The shape follows the UR (v0.7.3 `buildQuery`):
//! - `should`: the user's recent items of each indicator against that
//!   indicator field (boost `userBias`), the query item's correlators
//!   against the same fields (`itemBias`), the item set against the primary
//!   field (`itemSetBias`), property boosts; plus a boost-0 `match_all`, so
//!   every item matches and popularity backfills the list;
//! - `must`: required properties (bias < 0), a negative user/item bias
//!   turns those terms into requirements, and the date filter (`dateRange`,
//!   or availableDate ≤ currentDate < expireDate);
//! - `must_not`: blacklisted ids (the user's `blacklistEvents` items,
//!   `blacklistItems`, the item set, the query item unless `returnSelf`),
//!   excluded properties (bias 0);
//! - sort: `_score`, then the ranking fields.
//!
//! Two deliberate differences (docs/semantics.md): one `term` clause per
//! value instead of a `terms` clause — since Elasticsearch 6 `terms` scores
//! a constant, so a rare correlator would weigh no more than a common one;
//! and engine.json `fields` biases mean what query biases mean (the PIO UR
//! inverted their signs).

use super::request::{FieldRule, Query};
use crate::config::{Engine, RecsModel};
use serde_json::{Map, Value, json};

/// Results when neither the query nor the engine sets `num`.
pub const DEFAULT_NUM: u32 = 20;
/// Correlators of the query item used per indicator (the UR's default `maxQueryEvents`).
pub const DEFAULT_MAX_QUERY_EVENTS: usize = 100;

/// What the query is built from besides the query itself.
pub struct Context<'a> {
    pub engine: &'a Engine,
    /// The user's document in the user-history index (`_source`).
    pub history: Option<&'a Map<String, Value>>,
    /// The query item's document in the model index (`_source`).
    pub item: Option<&'a Map<String, Value>>,
    /// The current date when the query gives none (ISO-8601).
    pub now: String,
}

/// A group of term clauses on one field with one boost.
struct Terms {
    field: String,
    values: Vec<String>,
    /// `None`: Elasticsearch's default (1).
    boost: Option<f64>,
}

impl Terms {
    fn should_clauses(&self, out: &mut Vec<Value>) {
        for v in &self.values {
            let mut term = json!({ "value": v });
            if let Some(b) = self.boost {
                term["boost"] = json!(b);
            }
            out.push(json!({ "term": { self.field.clone(): term } }));
        }
    }

    /// A requirement that adds nothing to the score.
    fn filter(&self) -> Value {
        json!({ "terms": { self.field.clone(): self.values, "boost": 0 } })
    }

    fn exclusion(&self) -> Value {
        json!({ "terms": { self.field.clone(): self.values } })
    }
}

/// The UR's bias → boost: a bias of exactly 1, 0 or a negative one leaves
/// the default boost (negatives become filters elsewhere).
fn boost_of(bias: f64) -> Option<f64> {
    (bias > 0.0 && bias != 1.0).then_some(bias)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Builds the search body.
pub fn build(q: &Query, ctx: &Context) -> Value {
    let engine = ctx.engine;
    let params = &engine.query;
    let indicators: Vec<&str> = engine.indicators.iter().map(|i| i.name.as_str()).collect();
    let query_events: Vec<&str> = match &q.event_names {
        Some(names) => indicators.iter().copied().filter(|i| names.iter().any(|n| n == i)).collect(),
        None => indicators.clone(),
    };
    let mut should: Vec<Value> = Vec::new();
    let mut must: Vec<Value> = Vec::new();
    let mut must_not: Vec<Value> = Vec::new();

    // The user's recent items, per indicator.
    let user_bias = q.user_bias.or(params.user_bias).unwrap_or(1.0);
    if let Some(history) = ctx.history {
        for field in &query_events {
            let items = strings(history.get(*field));
            if items.is_empty() {
                continue;
            }
            let t = Terms { field: field.to_string(), values: items, boost: boost_of(user_bias) };
            if user_bias < 0.0 { must.push(t.filter()) } else { t.should_clauses(&mut should) }
        }
    }

    // The query item's correlators, against the same fields.
    let item_bias = q.item_bias.or(params.item_bias).unwrap_or(1.0);
    let max_query_events = params.max_query_events.map(|n| n as usize).unwrap_or(DEFAULT_MAX_QUERY_EVENTS);
    if let Some(doc) = ctx.item {
        for field in &indicators {
            let mut items = strings(doc.get(*field));
            if items.len() > max_query_events {
                items.truncate(max_query_events.saturating_sub(1));
            }
            if items.is_empty() {
                continue;
            }
            let t = Terms { field: field.to_string(), values: items, boost: boost_of(item_bias) };
            if item_bias < 0.0 { must.push(t.filter()) } else { t.should_clauses(&mut should) }
        }
    }

    // The item set, against the primary indicator.
    if let Some(set) = q.item_set.as_ref().filter(|s| !s.is_empty()) {
        let bias = q.item_set_bias.unwrap_or(1.0);
        let t = Terms { field: indicators[0].to_string(), values: set.clone(), boost: boost_of(bias) };
        if bias < 0.0 { must.push(t.filter()) } else { t.should_clauses(&mut should) }
    }

    // Property rules: the query's first, then the engine's.
    let rules: Vec<&FieldRule> = q.fields.iter().flatten().collect();
    let engine_rules: Vec<FieldRule> = params
        .fields
        .iter()
        .map(|f| FieldRule { name: f.name.clone(), values: f.values.clone(), bias: f.bias })
        .collect();
    for rule in rules.into_iter().chain(engine_rules.iter()) {
        let t = Terms { field: rule.name.clone(), values: rule.values.clone(), boost: Some(rule.bias) };
        if rule.bias > 0.0 {
            t.should_clauses(&mut should);
        } else if rule.bias < 0.0 {
            must.push(t.filter());
        } else {
            must_not.push(t.exclusion());
        }
    }
    should.push(json!({ "constant_score": { "filter": { "match_all": {} }, "boost": 0 } }));

    // Dates: a dateRange replaces the availability window.
    let current = q.current_date.clone().unwrap_or_else(|| ctx.now.clone());
    let range = q.date_range.as_ref().filter(|r| {
        r.before.as_deref().is_some_and(|s| !s.is_empty()) || r.after.as_deref().is_some_and(|s| !s.is_empty())
    });
    if let Some(r) = range {
        let mut bounds = Map::new();
        if let Some(after) = r.after.as_deref().filter(|s| !s.is_empty()) {
            bounds.insert("gt".into(), json!(after));
        }
        if let Some(before) = r.before.as_deref().filter(|s| !s.is_empty()) {
            bounds.insert("lt".into(), json!(before));
        }
        must.push(json!({ "constant_score": { "filter": { "range": { r.name.clone(): bounds } }, "boost": 0 } }));
    } else if let (Some(available), Some(expire)) = (&params.available_date_name, &params.expire_date_name) {
        must.push(json!({ "constant_score": { "filter": { "range": { available.clone(): { "lte": current } } }, "boost": 0 } }));
        must.push(
            json!({ "constant_score": { "filter": { "range": { expire.clone(): { "gt": current } } }, "boost": 0 } }),
        );
    }

    // Blacklist.
    let mut excluded: Vec<String> = Vec::new();
    let blacklist_events: Vec<String> =
        params.blacklist_events.clone().unwrap_or_else(|| vec![engine.indicators[0].name.clone()]);
    if let Some(history) = ctx.history {
        for event in &blacklist_events {
            excluded.extend(strings(history.get(event)));
        }
    }
    excluded.extend(q.blacklist_items.iter().flatten().cloned());
    excluded.extend(q.item_set.iter().flatten().cloned());
    if let Some(item) = &q.item
        && !q.return_self.or(params.return_self).unwrap_or(false)
    {
        excluded.push(item.clone());
    }
    let mut seen = std::collections::HashSet::new();
    // An empty id names no item (and Elasticsearch refuses it in `ids`).
    excluded.retain(|e| !e.is_empty() && seen.insert(e.clone()));
    must_not.insert(0, json!({ "ids": { "values": excluded } }));

    let mut sort = Vec::new();
    if engine.recs_model != RecsModel::CollabFiltering {
        sort.push(json!({ "_score": { "order": "desc" } }));
        for r in &engine.rankings {
            sort.push(json!({ r.name.clone(): { "unmapped_type": "double", "order": "desc" } }));
        }
    }
    let num = q.num.or(params.num).unwrap_or(DEFAULT_NUM);
    json!({
        "from": q.from.unwrap_or(0),
        "size": num,
        "query": { "bool": { "should": should, "must": must, "must_not": must_not, "minimum_should_match": 1 } },
        "sort": sort,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/handmade.json")).unwrap();
        Engine::from_json(&text).unwrap().engine
    }

    fn ctx<'a>(
        engine: &'a Engine,
        history: Option<&'a Map<String, Value>>,
        item: Option<&'a Map<String, Value>>,
    ) -> Context<'a> {
        Context { engine, history, item, now: "2026-01-15T12:00:00Z".into() }
    }

    #[test]
    fn user_query_uses_history_blacklists_purchases_and_filters_dates() {
        let e = engine();
        let history = json!({"user": "u1", "purchase": ["Iphone 6", "Galaxy"], "view": ["Soap"], "category-pref": []});
        let q = Query { user: Some("u1".into()), ..Default::default() };
        let body = build(&q, &ctx(&e, history.as_object(), None));
        let should = body["query"]["bool"]["should"].as_array().unwrap();
        assert_eq!(should[0], json!({"term": {"purchase": {"value": "Iphone 6"}}}));
        assert_eq!(should.len(), 4, "3 terms + match_all");
        assert_eq!(body["query"]["bool"]["must_not"][0]["ids"]["values"], json!(["Iphone 6", "Galaxy"]));
        let must = body["query"]["bool"]["must"].as_array().unwrap();
        assert_eq!(must[0]["constant_score"]["filter"]["range"]["available"]["lte"], "2026-01-15T12:00:00Z");
        assert_eq!(must[1]["constant_score"]["filter"]["range"]["expires"]["gt"], "2026-01-15T12:00:00Z");
        assert_eq!(body["size"], 4);
        assert_eq!(body["sort"][1]["popRank"]["order"], "desc");
    }

    #[test]
    fn field_biases_boost_require_and_exclude() {
        let e = engine();
        let q: Query = serde_json::from_value(json!({"fields": [
            {"name": "categories", "values": ["Tablets"], "bias": 20},
            {"name": "categories", "values": ["Phones"], "bias": -1},
            {"name": "countries", "values": ["Cuba"], "bias": 0}
        ]}))
        .unwrap();
        let body = build(&q, &ctx(&e, None, None));
        let b = &body["query"]["bool"];
        assert_eq!(b["should"][0], json!({"term": {"categories": {"value": "Tablets", "boost": 20.0}}}));
        assert_eq!(b["must"][0], json!({"terms": {"categories": ["Phones"], "boost": 0}}));
        assert_eq!(b["must_not"][1], json!({"terms": {"countries": ["Cuba"]}}));
    }

    #[test]
    fn item_query_excludes_itself_unless_return_self() {
        let e = engine();
        let doc = json!({"id": "Iphone 4", "purchase": ["Ipad-retina"], "view": ["Soap", "Tablets"]});
        let q = Query { item: Some("Iphone 4".into()), item_bias: Some(2.0), ..Default::default() };
        let body = build(&q, &ctx(&e, None, doc.as_object()));
        assert_eq!(body["query"]["bool"]["should"][1], json!({"term": {"view": {"value": "Soap", "boost": 2.0}}}));
        assert_eq!(body["query"]["bool"]["must_not"][0]["ids"]["values"], json!(["Iphone 4"]));
        let q = Query { return_self: Some(true), ..q };
        assert_eq!(
            build(&q, &ctx(&e, None, doc.as_object()))["query"]["bool"]["must_not"][0]["ids"]["values"],
            json!([])
        );
    }

    #[test]
    fn date_range_replaces_the_availability_window() {
        let e = engine();
        let q: Query = serde_json::from_value(
            json!({"dateRange": {"name": "date", "before": "2026-01-16T12:00:00Z", "after": "2026-01-14T12:00:00Z"}}),
        )
        .unwrap();
        let must = build(&q, &ctx(&e, None, None))["query"]["bool"]["must"].clone();
        assert_eq!(must.as_array().unwrap().len(), 1);
        assert_eq!(
            must[0]["constant_score"]["filter"]["range"]["date"],
            json!({"gt": "2026-01-14T12:00:00Z", "lt": "2026-01-16T12:00:00Z"})
        );
    }

    #[test]
    fn negative_user_bias_filters() {
        let e = engine();
        let history = json!({"purchase": ["A"]});
        let q = Query { user: Some("u".into()), user_bias: Some(-1.0), ..Default::default() };
        let b = build(&q, &ctx(&e, history.as_object(), None));
        assert_eq!(b["query"]["bool"]["must"][0], json!({"terms": {"purchase": ["A"], "boost": 0}}));
    }
}
