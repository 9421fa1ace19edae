//! A recommendation query as the UR's PredictionServer takes it
//! (`POST /queries.json`), validated: wrong types and unknown fields are
//! errors that say which field. [`QueryLimits`] caps what one query may ask
//! for (sizes, offsets, list lengths, id lengths), so a client cannot make
//! Elasticsearch fail or work without bound.

use serde::Deserialize;

/// An item property rule: `bias` > 0 boosts, < 0 requires, 0 excludes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    pub name: String,
    pub values: Vec<String>,
    pub bias: f64,
}

/// `dateRange`: items whose date property `name` is after `after` and
/// before `before` (either may be absent).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateRange {
    pub name: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Query {
    pub user: Option<String>,
    pub user_bias: Option<f64>,
    pub item: Option<String>,
    pub item_bias: Option<f64>,
    pub item_set: Option<Vec<String>>,
    pub item_set_bias: Option<f64>,
    pub fields: Option<Vec<FieldRule>>,
    pub current_date: Option<String>,
    pub date_range: Option<DateRange>,
    pub blacklist_items: Option<Vec<String>>,
    pub return_self: Option<bool>,
    pub num: Option<u32>,
    pub from: Option<u32>,
    /// Indicators whose user history is used (default: all).
    pub event_names: Option<Vec<String>>,
    /// Add the ranking fields to each result.
    pub with_ranks: Option<bool>,
}

/// Caps on one query, each settable with a flag of `ur serve`.
#[derive(clap::Args, Debug, Clone, Copy, PartialEq, Eq)]
#[command(next_help_heading = "Query limits")]
pub struct QueryLimits {
    /// The largest `num` (results per query).
    #[arg(long, default_value_t = 1000)]
    pub max_num: u32,
    /// The largest `from` + `num` (Elasticsearch's default
    /// `index.max_result_window` is 10000).
    #[arg(long, default_value_t = 10_000)]
    pub max_window: u32,
    /// The most ids in `blacklistItems`.
    #[arg(long, default_value_t = 1000)]
    pub max_blacklist: usize,
    /// The most ids in `itemSet` (each is a search clause: Elasticsearch 7
    /// allows 1024 clauses in a query, later versions a few thousand).
    #[arg(long, default_value_t = 500)]
    pub max_item_set: usize,
    /// The most property rules in `fields`, and values over all of them.
    #[arg(long, default_value_t = 100)]
    pub max_field_values: usize,
    /// The most items of a user's history used per indicator.
    #[arg(long, default_value_t = 500)]
    pub max_history: usize,
    /// The longest user or item id, in bytes (Elasticsearch's limit on a
    /// document id is 512).
    #[arg(long, default_value_t = 512)]
    pub max_id_bytes: usize,
}

impl Default for QueryLimits {
    fn default() -> QueryLimits {
        QueryLimits {
            max_num: 1000,
            max_window: 10_000,
            max_blacklist: 1000,
            max_item_set: 500,
            max_field_values: 100,
            max_history: 500,
            max_id_bytes: 512,
        }
    }
}

impl QueryLimits {
    /// Whether a query stays within the caps; the error names the field and the cap.
    pub fn check(&self, q: &Query) -> Result<(), String> {
        let over = |what: &str, n: usize, cap: usize, flag: &str| {
            if n > cap {
                Err(format!("bad query: {what} has {n}, more than the {cap} allowed (--{flag})"))
            } else {
                Ok(())
            }
        };
        for (name, id) in [("user", &q.user), ("item", &q.item)] {
            if let Some(id) = id {
                if id.len() > self.max_id_bytes {
                    return Err(format!(
                        "bad query: {name} id has {} bytes, more than the {} allowed (--max-id-bytes)",
                        id.len(),
                        self.max_id_bytes
                    ));
                }
            }
        }
        let num = q.num.unwrap_or(0);
        if num > self.max_num {
            return Err(format!("bad query: num {num} is over the {} allowed (--max-num)", self.max_num));
        }
        let window = u64::from(q.from.unwrap_or(0)) + u64::from(num);
        if window > u64::from(self.max_window) {
            return Err(format!(
                "bad query: from + num is {window}, over the {} allowed (--max-window)",
                self.max_window
            ));
        }
        over("blacklistItems", q.blacklist_items.as_ref().map_or(0, Vec::len), self.max_blacklist, "max-blacklist")?;
        over("itemSet", q.item_set.as_ref().map_or(0, Vec::len), self.max_item_set, "max-item-set")?;
        let rules = q.fields.as_deref().unwrap_or_default();
        over("fields", rules.len(), self.max_field_values, "max-field-values")?;
        let values = rules.iter().map(|r| r.values.len()).sum();
        over("fields (values in all rules)", values, self.max_field_values, "max-field-values")?;
        for (name, ids) in [("blacklistItems", &q.blacklist_items), ("itemSet", &q.item_set)] {
            if let Some(long) = ids.iter().flatten().find(|i| i.len() > self.max_id_bytes) {
                return Err(format!(
                    "bad query: an id in {name} has {} bytes, more than the {} allowed (--max-id-bytes)",
                    long.len(),
                    self.max_id_bytes
                ));
            }
        }
        Ok(())
    }
}

impl Query {
    /// Parses and validates a query body.
    pub fn parse(body: &[u8]) -> Result<Query, String> {
        let q: Query = serde_json::from_slice(body).map_err(|e| format!("bad query: {e}"))?;
        if let Some(d) = &q.current_date {
            crate::time::parse_iso8601(d).ok_or_else(|| format!("bad query: currentDate `{d}` is not ISO-8601"))?;
        }
        if let Some(r) = &q.date_range {
            for (key, v) in [("before", &r.before), ("after", &r.after)] {
                if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                    crate::time::parse_iso8601(v)
                        .ok_or_else(|| format!("bad query: dateRange.{key} `{v}` is not ISO-8601"))?;
                }
            }
        }
        for (name, bias) in [("userBias", q.user_bias), ("itemBias", q.item_bias), ("itemSetBias", q.item_set_bias)] {
            if bias.is_some_and(|b| !b.is_finite()) {
                return Err(format!("bad query: {name} must be a number"));
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ur_queries() {
        let q = Query::parse(br#"{"user": "u1", "fields": [{"name": "categories", "values": ["Tablets"], "bias": -1}], "num": 4, "dateRange": {"name": "date", "after": "2026-01-14T12:00:00Z"}}"#).unwrap();
        assert_eq!(q.user.as_deref(), Some("u1"));
        assert_eq!(q.fields.unwrap()[0].bias, -1.0);
        assert_eq!(q.num, Some(4));
    }

    #[test]
    fn says_what_is_wrong() {
        assert!(Query::parse(br#"{"usr": "u1"}"#).unwrap_err().contains("unknown field `usr`"));
        assert!(Query::parse(br#"{"num": "four"}"#).unwrap_err().contains("invalid type"));
        assert!(Query::parse(br#"{"currentDate": "soon"}"#).unwrap_err().contains("currentDate"));
        assert!(Query::parse(b"not json").is_err());
    }

    #[test]
    fn limits_name_the_field_and_the_cap() {
        let limits = QueryLimits::default();
        let q = |text: &str| limits.check(&Query::parse(text.as_bytes()).unwrap());
        assert!(q(r#"{"user": "u1", "num": 1000, "from": 9000}"#).is_ok());
        assert!(q(r#"{"num": 1001}"#).unwrap_err().contains("--max-num"));
        assert!(q(r#"{"num": 10, "from": 9995}"#).unwrap_err().contains("from + num is 10005"));
        let long = format!(r#"{{"user": "{}"}}"#, "u".repeat(700));
        assert!(q(&long).unwrap_err().contains("user id has 700 bytes"), "{}", q(&long).unwrap_err());
        let set: Vec<String> = (0..501).map(|i| i.to_string()).collect();
        let set = serde_json::json!({ "itemSet": set }).to_string();
        assert!(q(&set).unwrap_err().contains("itemSet has 501, more than the 500 allowed (--max-item-set)"));
    }
}
