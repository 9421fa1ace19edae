//! A recommendation query as the UR's PredictionServer takes it
//! (`POST /queries.json`), validated: wrong types and unknown fields are
//! errors that say which field.

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
}
