//! Shipping closed partitions to a second store (`ur events --ship
//! hdfs://…`, or any storage path): the live log stays local (a local
//! `fdatasync` makes the 201), and a background thread copies each closed
//! `part-<this host>-….jsonl` to the same relative path under the ship
//! root, where trainings on the cluster read it.
//!
//! A file is written as `_shipping-<name>` (a name `ur-train` skips), closed
//! and renamed to its final name: the rename is the commit, so a reader
//! never sees a partial file and a shipped file never changes. Each shipped
//! file is then recorded in `<root>/_shipped@<host>` (one fsynced line:
//! relative path, tab, ship root), so a restart ships each file once. A crash
//! before the rename leaves a temporary file, overwritten by the next try; a
//! crash between the rename and the record is found by the final name
//! already there with the same length, and recorded. Failures (the store
//! down or unreachable) are retried with back-off; the request path never
//! waits on it. With `keep_local`, shipped local files older than that are
//! deleted.

use super::log::{LogStats, subdirs};
use crate::storage::owner::Machine;
use crate::storage::{Store, join, parent};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// The temporary name prefix of a file being shipped.
pub const SHIPPING: &str = "_shipping-";
/// Set (to anything) only by tests: the process aborts after writing the
/// first temporary file, before its rename, as a crash would.
pub const ABORT_BEFORE_RENAME_ENV: &str = "UR_EVENTS_SHIP_TEST_ABORT_BEFORE_RENAME";

/// Shipping failed; it is retried.
#[derive(Debug, Clone, thiserror::Error)]
#[error("shipping: {0}")]
pub struct ShipError(pub String);

/// Where closed partitions go, and how long local copies stay.
#[derive(Debug, Clone)]
pub struct ShipOptions {
    /// The ship root: `hdfs://namenode:port/path`, `file://…` or a path.
    pub dest: String,
    /// Delete a shipped local file once it is this old (`None`: keep).
    pub keep_local: Option<Duration>,
}

impl ShipOptions {
    /// Checks the ship root's form (without contacting it: it may be down).
    pub fn check(&self, root: &Path) -> Result<(), ShipError> {
        let dest = self.dest.trim_end_matches('/');
        if dest.starts_with("hdfs://") || dest.starts_with("viewfs://") {
            return crate::storage::hdfs::split_url(dest).map(drop).map_err(ShipError);
        }
        if let Some(i) = dest.find("://").filter(|_| !dest.starts_with("file://")) {
            return Err(ShipError(format!("--ship {dest}: `{}://` is not supported", &dest[..i])));
        }
        let local = Path::new(dest.strip_prefix("file://").unwrap_or(dest));
        let (a, b) = (absolute(local), absolute(root));
        if a.starts_with(&b) || b.starts_with(&a) {
            return Err(ShipError(format!("--ship {dest} overlaps the event root {}", root.display())));
        }
        Ok(())
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// What the shipper has done, for logs and tests.
#[derive(Debug, Default)]
pub struct ShipStats {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    pub failures: AtomicU64,
    pub deleted_local: AtomicU64,
}

/// The running shipper thread.
pub struct Shipper {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    pub stats: Arc<ShipStats>,
}

impl Shipper {
    /// Starts shipping the closed files under `root`; `log` tells when the
    /// log closed a file.
    pub fn start(root: PathBuf, options: ShipOptions, log: Arc<LogStats>) -> Result<Shipper, ShipError> {
        options.check(&root)?;
        let manifest = Manifest::open(&root)?;
        let stats = Arc::new(ShipStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut shipping = Shipping {
            root,
            dest: options.dest.trim_end_matches('/').to_string(),
            keep_local: options.keep_local,
            manifest,
            store: None,
            conflicts: HashSet::new(),
            stats: stats.clone(),
        };
        let halt = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ur-event-ship".into())
            .spawn(move || shipping.run(&log, &halt))
            .map_err(|e| ShipError(format!("cannot start the shipper: {e}")))?;
        Ok(Shipper { stop, thread, stats })
    }

    /// Ships what is closed (one last pass), waiting at most `deadline`;
    /// what is left is shipped at the next start.
    pub fn stop(self, deadline: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let until = Instant::now() + deadline;
        while !self.thread.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        } else {
            tracing::warn!("shipping did not finish in {}s; the rest is shipped at the next start", deadline.as_secs());
        }
    }
}

/// First wait after a failure; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A full scan this often even when the log closed nothing (files closed by
/// `ur import` or at recovery).
const RESCAN: Duration = Duration::from_secs(60);

struct Shipping {
    root: PathBuf,
    dest: String,
    keep_local: Option<Duration>,
    manifest: Manifest,
    store: Option<Store>,
    /// Final names already at the destination with other contents.
    conflicts: HashSet<String>,
    stats: Arc<ShipStats>,
}

impl Shipping {
    fn run(&mut self, log: &LogStats, stop: &AtomicBool) {
        let mut backoff: Option<Duration> = None;
        let mut seen_closed = u64::MAX;
        let mut last_scan = Instant::now();
        let mut wait_until = Instant::now();
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            let closed = log.files_closed.load(Ordering::Relaxed);
            let due = closed != seen_closed || last_scan.elapsed() >= RESCAN || stopping;
            if due && (Instant::now() >= wait_until || stopping) {
                seen_closed = closed;
                last_scan = Instant::now();
                match self.pass() {
                    Ok(()) => backoff = None,
                    Err(e) => {
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                        let next = backoff.map_or(MIN_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
                        tracing::warn!("{e}; retrying in {} ms", next.as_millis());
                        backoff = Some(next);
                        wait_until = Instant::now() + next;
                        seen_closed = u64::MAX;
                    }
                }
            }
            if stopping {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ships every closed file not shipped yet, then prunes local copies.
    fn pass(&mut self) -> Result<(), ShipError> {
        let todo: Vec<String> = closed_files(&self.root)?
            .into_iter()
            .filter(|rel| !self.manifest.has(rel, &self.dest) && !self.conflicts.contains(rel))
            .collect();
        if !todo.is_empty() {
            let store = self.store()?;
            for rel in todo {
                self.ship(&store, &rel)?;
            }
        }
        if let Some(keep) = self.keep_local {
            self.prune(keep);
        }
        Ok(())
    }

    fn store(&mut self) -> Result<Store, ShipError> {
        if let Some(s) = &self.store {
            return Ok(s.clone());
        }
        let (store, _) = Store::resolve(&self.dest).map_err(ShipError)?;
        self.store = Some(store.clone());
        Ok(store)
    }

    /// Copies one file under its temporary name, renames it, records it.
    fn ship(&mut self, store: &Store, rel: &str) -> Result<(), ShipError> {
        let local = self.root.join(rel);
        let dest = join(&self.dest, rel);
        let len = fs::metadata(&local).map_err(|e| ShipError(format!("{}: {e}", local.display())))?.len();
        if let Some(there) = store.stat(&dest).map_err(ShipError)? {
            if there.len != len {
                tracing::error!(
                    "{dest} exists with {} bytes, not the {len} of {}: not shipped",
                    there.len,
                    local.display()
                );
                self.conflicts.insert(rel.to_string());
                return Ok(());
            }
            // Renamed by an earlier run that stopped before recording it.
            return self.manifest.record(rel, &self.dest);
        }
        let dir = parent(&dest);
        let tmp = join(&dir, &format!("{SHIPPING}{}", crate::storage::file_name(&dest)));
        store.create_dir_all(&dir).map_err(ShipError)?;
        // A temporary file of a crashed run may still be held open (an HDFS
        // lease): delete it rather than wait for the lease to expire.
        store.remove_all(&tmp).map_err(ShipError)?;
        let mut w = store.create(&tmp).map_err(ShipError)?;
        let fail = |e: std::io::Error| ShipError(format!("cannot ship {} to {tmp}: {e}", local.display()));
        let mut f = File::open(&local).map_err(fail)?;
        let copied = std::io::copy(&mut f, &mut w).map_err(fail)?;
        w.finish().map_err(fail)?;
        if std::env::var_os(ABORT_BEFORE_RENAME_ENV).is_some() {
            std::process::abort();
        }
        store.rename(&tmp, &dest).map_err(ShipError)?;
        store.sync_dir(&dir).map_err(ShipError)?;
        self.manifest.record(rel, &self.dest)?;
        self.stats.files.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(copied, Ordering::Relaxed);
        tracing::debug!(bytes = copied, "shipped {rel} to {dest}");
        Ok(())
    }

    /// Deletes the shipped local files older than `keep`.
    fn prune(&mut self, keep: Duration) {
        let now = SystemTime::now();
        for rel in self.manifest.shipped_to(&self.dest) {
            let path = self.root.join(&rel);
            let Ok(meta) = fs::metadata(&path) else { continue };
            let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
            if age < keep {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    self.stats.deleted_local.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!("cannot delete the shipped {}: {e}", path.display()),
            }
        }
    }
}

/// The closed files of this host under `root`, relative to it:
/// `<app>/date=…/hour=…/part-<host>-….jsonl`, in path order.
pub fn closed_files(root: &Path) -> Result<Vec<String>, ShipError> {
    let host = &Machine::this().host;
    let err = |e: super::log::LogError| ShipError(e.0);
    let mut out = Vec::new();
    for app in subdirs(root).map_err(err)? {
        for date in subdirs(&app).map_err(err)? {
            for hour in subdirs(&date).map_err(err)? {
                let entries = fs::read_dir(&hour).map_err(|e| ShipError(format!("{}: {e}", hour.display())))?;
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    if written_by(&name, host) {
                        let rel = e.path().strip_prefix(root).expect("under the root").to_string_lossy().to_string();
                        out.push(rel);
                    }
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// True if `name` is a closed file of `host`: `part-<host>-<start>-<pid>-<seq>.jsonl`
/// (host `node` does not own `part-node-1-…`, whose rest has four numbers).
fn written_by(name: &str, host: &str) -> bool {
    let rest = name.strip_prefix("part-").and_then(|r| r.strip_prefix(host)).and_then(|r| r.strip_prefix('-'));
    let Some(numbers) = rest.and_then(|r| r.strip_suffix(".jsonl")) else { return false };
    let fields: Vec<&str> = numbers.split('-').collect();
    fields.len() == 3 && fields.iter().all(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// `<root>/_shipped@<host>`: one line per shipped file, `rel\tship root`,
/// appended and fsynced after each rename.
struct Manifest {
    path: PathBuf,
    file: File,
    /// (relative path, ship root).
    lines: HashSet<(String, String)>,
}

impl Manifest {
    /// Opens the manifest, dropping the lines of files deleted locally
    /// (rewritten atomically) and ending a torn last line.
    fn open(root: &Path) -> Result<Manifest, ShipError> {
        fs::create_dir_all(root).map_err(|e| ShipError(format!("{}: {e}", root.display())))?;
        let path = root.join(format!("_shipped@{}", Machine::this().host));
        let io = |e: std::io::Error| ShipError(format!("{}: {e}", path.display()));
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        let lines: HashSet<(String, String)> = complete
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(rel, _)| root.join(rel).is_file())
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        if complete.lines().count() != lines.len() || complete.len() != text.len() {
            let mut kept: Vec<String> = lines.iter().map(|(r, d)| format!("{r}\t{d}\n")).collect();
            kept.sort();
            let tmp = root.join(format!(".{}.tmp", path.file_name().expect("a name").to_string_lossy()));
            let mut f = File::create(&tmp).map_err(io)?;
            f.write_all(kept.concat().as_bytes()).and_then(|()| f.sync_all()).map_err(io)?;
            fs::rename(&tmp, &path).map_err(io)?;
            File::open(root).and_then(|d| d.sync_all()).map_err(io)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        Ok(Manifest { path, file, lines })
    }

    fn has(&self, rel: &str, dest: &str) -> bool {
        self.lines.contains(&(rel.to_string(), dest.to_string()))
    }

    fn record(&mut self, rel: &str, dest: &str) -> Result<(), ShipError> {
        let line = format!("{rel}\t{dest}\n");
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| ShipError(format!("{}: {e}", self.path.display())))?;
        self.lines.insert((rel.to_string(), dest.to_string()));
        Ok(())
    }

    fn shipped_to(&self, dest: &str) -> Vec<String> {
        self.lines.iter().filter(|(_, d)| d == dest).map(|(r, _)| r.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::log::{EventLog, LogConfig};

    const LINE: &str = r#"{"event":"view","entityType":"user","entityId":"u","targetEntityType":"item","targetEntityId":"i","eventTime":"2026-01-15T12:00:00.000Z"}"#;

    fn write_closed(root: &Path) {
        let log = EventLog::start(LogConfig {
            root: root.to_path_buf(),
            roll_after: Duration::from_secs(600),
            roll_bytes: 1 << 30,
        })
        .unwrap();
        log.append_blocking("shop", vec![LINE.into(), LINE.into()]).unwrap();
        log.close();
    }

    fn shipping(root: &Path, dest: &Path, keep_local: Option<Duration>) -> Shipping {
        Shipping {
            root: root.to_path_buf(),
            dest: dest.to_string_lossy().into_owned(),
            keep_local,
            manifest: Manifest::open(root).unwrap(),
            store: None,
            conflicts: HashSet::new(),
            stats: Arc::default(),
        }
    }

    #[test]
    fn ships_each_closed_file_once_under_its_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let (root, dest) = (dir.path().join("events"), dir.path().join("shipped"));
        write_closed(&root);
        let files = closed_files(&root).unwrap();
        assert_eq!(files.len(), 1);
        let mut s = shipping(&root, &dest, None);
        s.pass().unwrap();
        s.pass().unwrap();
        assert_eq!(s.stats.files.load(Ordering::Relaxed), 1);
        let shipped = fs::read(dest.join(&files[0])).unwrap();
        assert_eq!(shipped, fs::read(root.join(&files[0])).unwrap());
        let hour = dest.join(&files[0]).parent().unwrap().to_path_buf();
        assert_eq!(fs::read_dir(&hour).unwrap().count(), 1, "no temporary file left");

        // A restart ships nothing again; a lost record is found at the destination.
        let mut again = shipping(&root, &dest, None);
        again.pass().unwrap();
        assert_eq!(again.stats.files.load(Ordering::Relaxed), 0);
        fs::remove_file(root.join(format!("_shipped@{}", Machine::this().host))).unwrap();
        let mut lost = shipping(&root, &dest, None);
        lost.pass().unwrap();
        assert_eq!(lost.stats.files.load(Ordering::Relaxed), 0);
        assert!(lost.manifest.has(&files[0], &lost.dest));
    }

    #[test]
    fn a_half_shipped_file_is_shipped_again_and_old_local_copies_go() {
        let dir = tempfile::tempdir().unwrap();
        let (root, dest) = (dir.path().join("events"), dir.path().join("shipped"));
        write_closed(&root);
        let rel = closed_files(&root).unwrap().remove(0);
        let final_path = dest.join(&rel);
        let tmp = final_path.with_file_name(format!("{SHIPPING}{}", final_path.file_name().unwrap().to_string_lossy()));
        fs::create_dir_all(tmp.parent().unwrap()).unwrap();
        fs::write(&tmp, b"{\"half").unwrap();
        // A torn manifest line.
        fs::write(root.join(format!("_shipped@{}", Machine::this().host)), "shop/x").unwrap();
        let mut s = shipping(&root, &dest, Some(Duration::ZERO));
        s.pass().unwrap();
        assert!(!tmp.exists());
        assert_eq!(fs::read(&final_path).unwrap().len(), LINE.len() * 2 + 2);
        assert!(!root.join(&rel).exists(), "deleted locally once shipped");
        assert_eq!(s.stats.deleted_local.load(Ordering::Relaxed), 1);
        let mut restarted = shipping(&root, &dest, None);
        restarted.pass().unwrap();
        assert!(restarted.manifest.lines.is_empty(), "a deleted file's line is dropped");
    }

    #[test]
    fn each_host_ships_its_own_files() {
        assert!(written_by("part-node-1700-42-000003.jsonl", "node"));
        assert!(written_by("part-node-1-1700-42-000003.jsonl", "node-1"));
        assert!(!written_by("part-node-1-1700-42-000003.jsonl", "node"));
        assert!(!written_by("part-node-1700-42-000003.jsonl.gz", "node"));
        assert!(!written_by("_inprogress-42-1700-000003@node@abc", "node"));
    }

    #[test]
    fn ship_roots_are_checked_without_contacting_them() {
        let root = Path::new("/tmp/ur-events-root");
        let check = |d: &str| ShipOptions { dest: d.into(), keep_local: None }.check(root);
        assert!(check("hdfs://nn:9000/events").is_ok());
        assert!(check("/tmp/elsewhere").is_ok());
        assert!(check("s3://bucket/x").is_err());
        assert!(check("hdfs:///events").is_err());
        assert!(check("/tmp/ur-events-root/shipped").is_err());
    }
}
