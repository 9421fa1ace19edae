//! User-history documents for the query-time user history: one per user,
//! `{"user": id, <indicator>: [item ids, most recent first], ...}`, sent to
//! the Elasticsearch users index. When the index is updated in place, only
//! documents whose bytes changed are sent.

use super::elasticsearch::EsTarget;
use super::part::SinkError;
use crate::intern::SortedIds;

/// What users' history documents are made of.
pub struct Histories<'a, R> {
    /// `recent(user, k)`: the user's items of indicator k, most recent first.
    pub recent: R,
    /// Field name of each indicator.
    pub indicators: &'a [String],
    pub dict: &'a SortedIds,
}

/// Sends the history documents of `users` (user index, user id) from
/// `worker`; `hashes` (by user index) hold the hash of each user's document
/// as last written and are updated. Returns how many documents were sent.
pub fn write_histories<'a, R: Fn(usize, usize) -> Vec<u32>>(
    es: &EsTarget,
    worker: usize,
    users: impl Iterator<Item = (usize, &'a str)>,
    histories: &Histories<R>,
    hashes: &mut [u64],
) -> Result<u64, SinkError> {
    let mut bulk = es.writer(&es.users_index, worker);
    let mut sent = 0;
    let mut line = Vec::with_capacity(1024);
    for (user, id) in users {
        let previous = &mut hashes[user];
        line.clear();
        encode(&mut line, id, histories, user);
        let hash = xxhash_rust::xxh3::xxh3_64(&line);
        if !es.in_place || *previous != hash {
            bulk.add(id, &line).map_err(SinkError::Elasticsearch)?;
            sent += 1;
        }
        *previous = hash;
    }
    bulk.finish().map_err(SinkError::Elasticsearch)?;
    Ok(sent)
}

/// Appends `user`'s history document.
fn encode<R: Fn(usize, usize) -> Vec<u32>>(line: &mut Vec<u8>, id: &str, histories: &Histories<R>, user: usize) {
    line.extend_from_slice(b"{\"user\":");
    serde_json::to_writer(&mut *line, id).expect("JSON");
    for (k, indicator) in histories.indicators.iter().enumerate() {
        line.push(b',');
        serde_json::to_writer(&mut *line, indicator).expect("JSON");
        line.extend_from_slice(b":[");
        for (n, &item) in (histories.recent)(user, k).iter().enumerate() {
            if n > 0 {
                line.push(b',');
            }
            serde_json::to_writer(&mut *line, histories.dict.get(item)).expect("JSON");
        }
        line.push(b']');
    }
    line.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_document() {
        let dict = SortedIds::from_unsorted(["a", "b\"", "c"]);
        let indicators = vec!["buy".to_string(), "view".to_string()];
        let histories = Histories {
            recent: |_: usize, k: usize| if k == 0 { vec![2, 0] } else { vec![1] },
            indicators: &indicators,
            dict: &dict,
        };
        let mut line = Vec::new();
        encode(&mut line, "u1", &histories, 0);
        assert_eq!(String::from_utf8(line).unwrap(), r#"{"user":"u1","buy":["c","a"],"view":["b\""]}"#);
    }
}
