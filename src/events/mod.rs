//! `ur events`: an event server with PredictionIO's REST API, storing
//! events as append-only partitions of PIO event JSON that `ur-train`
//! reads.
//!
//! [`validate`] holds PIO's event rules, [`apps`] the apps and access keys,
//! [`log`] the durable partitions (group commit, roll-over, recovery),
//! [`read`] reading them back, [`api`] the HTTP routes, [`live`] the
//! query-time history in Elasticsearch, [`ship`] the copy of closed
//! partitions to HDFS (`--ship`); [`serve`] starts it all. [`import`] and
//! [`export`] move files of events in and out. The live log is a local
//! directory: HDFS is reached by shipping closed partitions, not written
//! live.

pub mod api;
pub mod apps;
pub mod export;
pub mod import;
pub mod live;
pub mod log;
pub mod read;
pub mod ship;
pub mod validate;

use apps::{Registry, registry_path};
use log::{EventLog, LogConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Why an event command failed.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// Bad input from the command line: names, addresses, unknown apps.
    #[error("{0}")]
    Usage(String),
    /// Storage or the network failed.
    #[error("{0}")]
    Storage(String),
    /// The input had more bad events than allowed; nothing was stored.
    #[error("{0}")]
    Refused(String),
}

impl From<log::LogError> for EventsError {
    fn from(e: log::LogError) -> Self {
        EventsError::Storage(e.to_string())
    }
}

/// `n` random bytes from the kernel, as hex.
pub fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).expect("/dev/urandom is readable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Standard base64 (padding optional) → text; `None` if it is not.
pub fn base64_decode(s: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8(out).ok()
}

/// How `ur events` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub root: PathBuf,
    pub listen: SocketAddr,
    pub roll_after: Duration,
    pub roll_bytes: u64,
    pub limits: api::Limits,
    /// Header timeout, connection limit, shutdown deadline.
    pub connections: crate::serving::ConnectionLimits,
    /// Query-time history in Elasticsearch (`--es-url`).
    pub live: Option<live::LiveOptions>,
    /// Closed partitions copied to HDFS or another store (`--ship`).
    pub ship: Option<ship::ShipOptions>,
}

/// Recovers the partitions left by a crash, then serves until SIGTERM or
/// Ctrl-C, and closes the open files.
pub async fn serve(options: ServeOptions) -> Result<(), EventsError> {
    let stop = crate::runtime::shutdown_signal();
    let root = options.root.clone();
    let recovered = log::recover(&root)?;
    if recovered.files > 0 {
        tracing::warn!(
            files = recovered.files,
            torn_lines = recovered.torn_lines,
            torn_bytes = recovered.torn_bytes,
            "closed the files a stopped server left open; torn lines (never acknowledged) were dropped"
        );
    }
    let registry = Registry::load(&root)?;
    let log = EventLog::start(LogConfig {
        root: root.clone(),
        roll_after: options.roll_after,
        roll_bytes: options.roll_bytes,
    })?;
    let shipper = match options.ship {
        Some(o) => {
            tracing::info!(to = %o.dest, "shipping closed partitions");
            Some(
                ship::Shipper::start(root.clone(), o, log.stats.clone())
                    .map_err(|e| EventsError::Usage(e.to_string()))?,
            )
        }
        None => None,
    };
    let (live, live_task) = match options.live {
        Some(o) => {
            let (live, task) = live::Live::start_replaying(o, &root, options.listen.port())
                .await
                .map_err(|e| EventsError::Storage(e.to_string()))?;
            (Some(live), Some(task))
        }
        None => (None, None),
    };
    let server = Arc::new(api::EventServer::new(root.clone(), log, registry, live));
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| EventsError::Usage(format!("cannot listen on {}: {e}", options.listen)))?;
    let local = listener.local_addr().map_err(|e| EventsError::Storage(e.to_string()))?;
    tracing::info!(root = %root.display(), "listening on http://{local}");
    let reload = tokio::spawn(reload_registry(server.clone()));
    let router = api::router(server.clone(), options.limits);
    let served = crate::serving::serve(listener, router, options.connections, stop).await;
    reload.abort();
    let closing = server.clone();
    let _ = tokio::task::spawn_blocking(move || closing.log.close()).await;
    if let Some(shipper) = shipper {
        // The files just closed too, if the store answers soon.
        let _ = tokio::task::spawn_blocking(move || shipper.stop(Duration::from_secs(10))).await;
    }
    if let Some(task) = live_task {
        // The handlers are gone: dropping the handle ends the queue; the task
        // writes what is pending (a failing cluster: what it could).
        drop(server);
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    served.map_err(|e| EventsError::Storage(format!("server: {e}")))?;
    tracing::info!("stopped; every open file is closed");
    Ok(())
}

/// Picks up `ur app` / `ur accesskey` changes within half a second.
async fn reload_registry(server: Arc<api::EventServer>) {
    let path = registry_path(&server.root);
    let stamp = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
    let mut seen = stamp(&path);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        match Registry::load(&server.root) {
            Ok(r) => {
                *server.registry.write().expect("registry lock") = Arc::new(r);
                seen = now;
                tracing::info!("reloaded apps and access keys");
            }
            Err(e) => tracing::warn!("{e}; keeping the apps loaded before"),
        }
    }
}

/// `ur app new`: the new app's first access key.
pub fn app_new(root: &Path, name: &str) -> Result<String, EventsError> {
    let mut r = Registry::load(root)?;
    let key = r.new_app(name, crate::time::format_iso8601(log::now_millis()))?;
    r.save(root)?;
    Ok(key)
}

/// `ur app delete`: the number of keys removed with the app.
pub fn app_delete(root: &Path, name: &str) -> Result<usize, EventsError> {
    let mut r = Registry::load(root)?;
    let keys = r.delete_app(name)?;
    r.save(root)?;
    Ok(keys)
}

/// `ur accesskey new`.
pub fn key_new(root: &Path, app: &str, events: Vec<String>) -> Result<String, EventsError> {
    let mut r = Registry::load(root)?;
    let key = r.new_key(app, events)?;
    r.save(root)?;
    Ok(key)
}

/// `ur accesskey delete`.
pub fn key_delete(root: &Path, key: &str) -> Result<apps::AccessKey, EventsError> {
    let mut r = Registry::load(root)?;
    let k = r.delete_key(key)?;
    r.save(root)?;
    Ok(k)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_of_basic_auth() {
        assert_eq!(super::base64_decode("a2V5Og==").as_deref(), Some("key:"));
        assert_eq!(super::base64_decode("a2V5").as_deref(), Some("key"));
        assert_eq!(super::base64_decode("*"), None);
        assert_eq!(super::random_hex(4).len(), 8);
    }
}
