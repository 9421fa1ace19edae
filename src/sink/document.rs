//! One item → its Elasticsearch document, one JSON line, exactly as it will
//! be indexed: `id`, one array of item ids per indicator (best first; only on
//! items of the primary indicator), the ranking fields, then the item's
//! properties in key order.
//!
//! A property whose name is taken by the model is not written: `id`, an
//! indicator field, or a ranking field that has a value for the item (the
//! UR lets rankings override properties). Such clashes are counted and
//! reported.

use crate::intern::SortedIds;
use crate::model::{ItemId, Properties};
use std::collections::BTreeMap;
use std::io::Write;

/// Field names the model writes itself.
pub struct DocumentLayout {
    pub indicators: Vec<String>,
    pub rankings: Vec<String>,
}

/// What one document holds.
pub struct Document<'a> {
    pub id: &'a str,
    /// Per indicator: correlator item ids; `None` if the item is not a
    /// primary item (no indicator fields at all).
    pub correlators: Option<&'a [Vec<ItemId>]>,
    /// Per ranking: the value, if the item has one.
    pub ranks: &'a [Option<f64>],
    pub properties: Option<&'a Properties>,
}

impl DocumentLayout {
    /// The fields an engine's documents have.
    pub fn of(engine: &crate::config::Engine) -> DocumentLayout {
        DocumentLayout {
            indicators: engine.indicators.iter().map(|i| i.name.clone()).collect(),
            rankings: engine.rankings.iter().map(|r| r.name.clone()).collect(),
        }
    }

    /// Appends the document as one JSON line; counts skipped properties.
    pub fn write(&self, out: &mut Vec<u8>, doc: &Document, dict: &SortedIds, clashes: &mut BTreeMap<String, u64>) {
        out.extend_from_slice(b"{\"id\":");
        json_string(out, doc.id);
        if let Some(correlators) = doc.correlators {
            for (name, items) in self.indicators.iter().zip(correlators) {
                out.push(b',');
                json_string(out, name);
                out.extend_from_slice(b":[");
                for (n, &j) in items.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    json_string(out, dict.get(j));
                }
                out.push(b']');
            }
        }
        for (name, value) in self.rankings.iter().zip(doc.ranks) {
            if let Some(v) = value {
                out.push(b',');
                json_string(out, name);
                out.push(b':');
                json_number(out, *v);
            }
        }
        if let Some(props) = doc.properties {
            for (key, value) in props {
                let ranked = self.rankings.iter().zip(doc.ranks).any(|(n, v)| n == key && v.is_some());
                if key == "id" || self.indicators.contains(key) || ranked {
                    *clashes.entry(key.clone()).or_default() += 1;
                    continue;
                }
                out.push(b',');
                json_string(out, key);
                out.push(b':');
                serde_json::to_writer(&mut *out, value).expect("writing to a Vec cannot fail");
            }
        }
        out.extend_from_slice(b"}\n");
    }
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

/// Ranks are doubles in the UR (`8.0`, not `8`).
fn json_number(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        serde_json::to_writer(&mut *out, &v).expect("writing to a Vec cannot fail");
    } else {
        out.write_all(b"null").expect("writing to a Vec cannot fail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_fields_in_order_and_skips_clashes() {
        let dict = SortedIds::from_unsorted(["a", "b \"quoted\"", "c"]);
        let layout = DocumentLayout {
            indicators: vec!["buy".into(), "view".into()],
            rankings: vec!["popRank".into(), "defaultRank".into()],
        };
        let props = Properties::from([
            ("buy".to_string(), json!(["x"])),
            ("categories".to_string(), json!(["Phones"])),
            ("defaultRank".to_string(), json!(5.0)),
            ("popRank".to_string(), json!(99)),
        ]);
        let correlators = vec![vec![2, 0], vec![]];
        let mut out = Vec::new();
        let mut clashes = BTreeMap::new();
        layout.write(
            &mut out,
            &Document {
                id: "b \"quoted\"",
                correlators: Some(&correlators),
                ranks: &[Some(8.0), None],
                properties: Some(&props),
            },
            &dict,
            &mut clashes,
        );
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line,
            "{\"id\":\"b \\\"quoted\\\"\",\"buy\":[\"c\",\"a\"],\"view\":[],\"popRank\":8.0,\"categories\":[\"Phones\"],\"defaultRank\":5.0}\n"
        );
        assert_eq!(clashes, BTreeMap::from([("buy".to_string(), 1), ("popRank".to_string(), 1)]));
    }
}
