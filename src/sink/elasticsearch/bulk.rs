//! Bulk indexing from one worker: documents are appended to an NDJSON body
//! and sent when it reaches the batch size, with a bounded number of
//! requests in flight per process. A rejected request (429, 5xx, a lost
//! connection) is retried with exponential backoff and jitter; items the
//! cluster rejects for load (429) are retried alone; any other item error
//! (a mapping error) fails the run, naming the document.

use crate::es::{Es, HttpMethod, error_reason};
use crate::runtime::block_on;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A counting semaphore: requests in flight per process.
pub struct Permits {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Permits {
    pub fn new(n: usize) -> Permits {
        Permits { free: Mutex::new(n.max(1)), freed: Condvar::new() }
    }

    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        drop(free);
        let out = f();
        *self.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.freed.notify_one();
        out
    }
}

/// Backoff before attempt `n` (1-based): 200 ms doubling, at most 10 s, ×[0.5, 1.5).
pub fn backoff(n: u32, salt: u64) -> Duration {
    let base = 200u64.saturating_mul(1 << n.min(16)).min(10_000);
    let jitter = (crate::hash::mix(salt ^ n as u64) >> 11) as f64 / (1u64 << 53) as f64 + 0.5;
    Duration::from_millis((base as f64 * jitter) as u64)
}

/// Writes documents of one index from one worker.
pub struct BulkWriter<'a> {
    es: &'a Es,
    permits: &'a Permits,
    index: String,
    batch_bytes: usize,
    body: Vec<u8>,
    /// Per document in `body`: its id and the byte range of its two lines.
    docs: Vec<(String, usize, usize)>,
    pub written: u64,
    salt: u64,
    attempts: u32,
}

impl<'a> BulkWriter<'a> {
    /// `attempts`: tries per batch before giving up.
    pub fn new(
        es: &'a Es,
        permits: &'a Permits,
        index: &str,
        batch_bytes: usize,
        attempts: u32,
        salt: u64,
    ) -> BulkWriter<'a> {
        BulkWriter {
            es,
            permits,
            index: index.to_string(),
            batch_bytes,
            body: Vec::new(),
            docs: Vec::new(),
            written: 0,
            salt,
            attempts: attempts.max(1),
        }
    }

    /// Adds a document (one JSON object, with or without a final newline).
    pub fn add(&mut self, id: &str, doc: &[u8]) -> Result<(), String> {
        let start = self.body.len();
        self.body.extend_from_slice(b"{\"index\":{\"_index\":");
        serde_json::to_writer(&mut self.body, &self.index).expect("JSON");
        self.body.extend_from_slice(b",\"_id\":");
        serde_json::to_writer(&mut self.body, id).expect("JSON");
        self.body.extend_from_slice(b"}}\n");
        self.body.extend_from_slice(doc.strip_suffix(b"\n").unwrap_or(doc));
        self.body.push(b'\n');
        self.docs.push((id.to_string(), start, self.body.len()));
        if self.body.len() >= self.batch_bytes {
            self.flush()?;
            crate::hold::once(crate::hold::Point::Bulk);
        }
        Ok(())
    }

    /// Deletes a document.
    pub fn delete(&mut self, id: &str) -> Result<(), String> {
        let start = self.body.len();
        self.body.extend_from_slice(b"{\"delete\":{\"_index\":");
        serde_json::to_writer(&mut self.body, &self.index).expect("JSON");
        self.body.extend_from_slice(b",\"_id\":");
        serde_json::to_writer(&mut self.body, id).expect("JSON");
        self.body.extend_from_slice(b"}}\n");
        self.docs.push((id.to_string(), start, self.body.len()));
        if self.body.len() >= self.batch_bytes { self.flush() } else { Ok(()) }
    }

    /// Sends what is left.
    pub fn finish(mut self) -> Result<u64, String> {
        self.flush()?;
        Ok(self.written)
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.docs.is_empty() {
            return Ok(());
        }
        let mut body = std::mem::take(&mut self.body);
        let mut docs = std::mem::take(&mut self.docs);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = body.clone();
            let reply = self.permits.run(|| block_on(self.es.call(HttpMethod::Post, "/_bulk", Some(sent))));
            let retry_all = match &reply {
                Err(e) => Some(e.clone()),
                Ok((429, _)) => Some("429 Too Many Requests".into()),
                Ok((s, v)) if *s >= 500 => Some(format!("{s}: {}", error_reason(v))),
                Ok((s, v)) if *s != 200 => {
                    return Err(format!("bulk indexing into {}: {s}: {}", self.index, error_reason(v)));
                }
                Ok(_) => None,
            };
            if let Some(why) = retry_all {
                if attempt >= self.attempts {
                    return Err(format!("bulk indexing into {} failed {attempt} times, last: {why}", self.index));
                }
                tracing::debug!(attempt, %why, "bulk request retried");
                std::thread::sleep(backoff(attempt, self.salt));
                continue;
            }
            let (_, value) = reply.expect("checked");
            let items = value["items"].as_array().cloned().unwrap_or_default();
            if value["errors"] != serde_json::Value::Bool(true) {
                self.written += docs.len() as u64;
                return Ok(());
            }
            // Keep the documents rejected for load; any other error is fatal.
            let mut again = Vec::new();
            let mut again_docs = Vec::new();
            for (item, (id, start, end)) in items.iter().zip(&docs) {
                let result = item.as_object().and_then(|o| o.values().next()).cloned().unwrap_or_default();
                let status = result["status"].as_u64().unwrap_or(0);
                match status {
                    200..=299 => self.written += 1,
                    // Deleting a document that is not there is what was wanted.
                    404 if item.get("delete").is_some() => {}
                    429 => {
                        let s = again.len();
                        again.extend_from_slice(&body[*start..*end]);
                        again_docs.push((id.clone(), s, again.len()));
                    }
                    _ => {
                        return Err(format!(
                            "Elasticsearch rejected document `{id}` of {}: {}",
                            self.index,
                            error_reason(&result)
                        ));
                    }
                }
            }
            if again_docs.is_empty() {
                return Ok(());
            }
            if attempt >= self.attempts {
                return Err(format!("{} documents still rejected for load after {attempt} attempts", again_docs.len()));
            }
            std::thread::sleep(backoff(attempt, self.salt));
            body = again;
            docs = again_docs;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let a = backoff(1, 7);
        assert!(a >= Duration::from_millis(200) && a < Duration::from_millis(600), "{a:?}");
        let big = backoff(30, 7);
        assert!(big <= Duration::from_millis(15_000) && big >= Duration::from_millis(5_000), "{big:?}");
        assert_ne!(backoff(3, 1), backoff(3, 2));
    }

    #[test]
    fn permits_bound_concurrency() {
        let permits = std::sync::Arc::new(Permits::new(2));
        let inside = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (p, i, m) = (permits.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        p.run(|| {
                            let now = i.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                            m.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                            std::thread::yield_now();
                            i.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        })
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(most.load(std::sync::atomic::Ordering::SeqCst) <= 2);
    }
}
