//! The event log: append-only partitions of PIO event lines on the local
//! file system, `<root>/<app>/date=YYYY-MM-DD/hour=HH/` by the hour the
//! events were written (UTC).
//!
//! One thread owns the open files. Requests hand it their lines and wait;
//! it takes every request waiting, appends each app's lines with one write,
//! syncs each file it wrote once (`fdatasync`), then answers them all: a
//! request is acknowledged only after its lines are on disk, and concurrent
//! requests share the sync (group commit). A file being written is named
//! `_inprogress-<pid>-<start>-<seq>@<host>@<boot>`, which `ur-train`
//! skips; after `roll_after`, `roll_bytes` or at the hour's end it is
//! renamed `part-<host>-<start>-<pid>-<seq>.jsonl` and never changes again.
//! At start, [`recover`] closes the in-progress files of this host's dead
//! writers: a torn last line (never acknowledged) is cut off and counted.
//! Several servers may share a root: their names differ by host and process.

use crate::source::event::parse_event;
use crate::storage::owner::{Machine, Writer, process_alive};
use crate::time::{Millis, format_iso8601};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The in-progress name prefix.
pub const IN_PROGRESS: &str = "_inprogress-";

/// Writing failed; nothing of the request is acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
#[error("event storage: {0}")]
pub struct LogError(pub String);

fn io_err(what: &Path) -> impl Fn(std::io::Error) -> LogError + '_ {
    move |e| LogError(format!("{}: {e}", what.display()))
}

/// Where and when files roll over.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub root: PathBuf,
    pub roll_after: Duration,
    pub roll_bytes: u64,
}

/// What the log has done, for logs and benchmarks.
#[derive(Debug, Default)]
pub struct LogStats {
    pub events: AtomicU64,
    pub commits: AtomicU64,
    pub syncs: AtomicU64,
    pub files_closed: AtomicU64,
}

struct Job {
    app: String,
    lines: Vec<String>,
    done: tokio::sync::oneshot::Sender<Result<(), LogError>>,
}

/// The handle requests append through.
pub struct EventLog {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub stats: Arc<LogStats>,
}

impl EventLog {
    /// Starts the writer thread.
    pub fn start(config: LogConfig) -> Result<EventLog, LogError> {
        fs::create_dir_all(&config.root).map_err(io_err(&config.root))?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(LogStats::default());
        let writer = PartWriter::new(config, stats.clone());
        let thread = std::thread::Builder::new()
            .name("ur-event-log".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError(format!("cannot start the writer: {e}")))?;
        Ok(EventLog { tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)), stats })
    }

    /// Appends `lines` (each one event, no newline) to `app`'s log;
    /// resolves once they are on disk.
    pub async fn append(&self, app: &str, lines: Vec<String>) -> Result<(), LogError> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.send(Job { app: app.to_string(), lines, done })?;
        rx.await.map_err(|_| LogError("the writer stopped".into()))?
    }

    /// [`EventLog::append`] from a thread outside the async runtime.
    pub fn append_blocking(&self, app: &str, lines: Vec<String>) -> Result<(), LogError> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.send(Job { app: app.to_string(), lines, done })?;
        rx.blocking_recv().map_err(|_| LogError("the writer stopped".into()))?
    }

    fn send(&self, job: Job) -> Result<(), LogError> {
        let tx = self.tx.lock().expect("log sender");
        let tx = tx.as_ref().ok_or_else(|| LogError("the log is closed".into()))?;
        tx.send(job).map_err(|_| LogError("the writer stopped".into()))
    }

    /// Closes every open file (renamed to its final name) and stops.
    pub fn close(&self) {
        self.tx.lock().expect("log sender").take();
        if let Some(t) = self.thread.lock().expect("log thread").take() {
            let _ = t.join();
        }
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.close();
    }
}

struct OpenPart {
    tmp: PathBuf,
    file: File,
    len: u64,
    opened: Instant,
    hour: String,
}

struct PartWriter {
    config: LogConfig,
    stats: Arc<LogStats>,
    /// `<pid>-<start ms>`: this process's part of the names.
    run: String,
    seq: u64,
    open: HashMap<String, OpenPart>,
}

/// The partition of a moment: `date=YYYY-MM-DD/hour=HH`.
pub fn partition_of(at: Millis) -> String {
    let t = format_iso8601(at);
    format!("date={}/hour={}", &t[..10], &t[11..13])
}

/// The final name of an in-progress file, from its name.
pub fn final_name(in_progress: &str) -> Option<String> {
    let tagged = in_progress.strip_prefix(IN_PROGRESS)?;
    match Writer::parse(tagged) {
        Writer::Tagged { run, machine } => {
            let mut f = run.splitn(3, '-');
            let (pid, start, seq) = (f.next()?, f.next()?, f.next()?);
            Some(format!("part-{}-{start}-{pid}-{seq}.jsonl", machine.host))
        }
        Writer::Untagged(_) => None,
    }
}

impl PartWriter {
    fn new(config: LogConfig, stats: Arc<LogStats>) -> PartWriter {
        let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
        PartWriter { config, stats, run: format!("{}-{start}", std::process::id()), seq: 0, open: HashMap::new() }
    }

    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let tick = Duration::from_millis(500).min(self.config.roll_after.max(Duration::from_millis(10)));
        loop {
            let first = match rx.recv_timeout(tick) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.roll_due(now_millis());
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut jobs = vec![first];
            let mut lines: usize = jobs[0].lines.len();
            while lines < 100_000 {
                match rx.try_recv() {
                    Ok(job) => {
                        lines += job.lines.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.commit(jobs);
            self.roll_due(now_millis());
        }
        let apps: Vec<String> = self.open.keys().cloned().collect();
        for app in apps {
            self.close(&app);
        }
    }

    /// Appends every job's lines, syncs each file once, answers every job.
    fn commit(&mut self, jobs: Vec<Job>) {
        let now = now_millis();
        self.roll_due(now);
        let mut buffers: Vec<(String, Vec<u8>)> = Vec::new();
        for job in &jobs {
            let i = match buffers.iter().position(|(a, _)| *a == job.app) {
                Some(i) => i,
                None => {
                    buffers.push((job.app.clone(), Vec::new()));
                    buffers.len() - 1
                }
            };
            for line in &job.lines {
                buffers[i].1.extend_from_slice(line.as_bytes());
                buffers[i].1.push(b'\n');
            }
        }
        let mut results: HashMap<String, Result<(), LogError>> = HashMap::new();
        for (app, bytes) in buffers {
            let r = self.write_synced(&app, &bytes, now);
            results.insert(app, r);
        }
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        for job in jobs {
            let r = results[&job.app].clone();
            if r.is_ok() {
                self.stats.events.fetch_add(job.lines.len() as u64, Ordering::Relaxed);
            }
            let _ = job.done.send(r);
        }
    }

    fn write_synced(&mut self, app: &str, bytes: &[u8], now: Millis) -> Result<(), LogError> {
        if !self.open.contains_key(app) {
            let part = self.open_part(app, now)?;
            self.open.insert(app.to_string(), part);
        }
        let part = self.open.get_mut(app).expect("just opened");
        let written = part.file.write_all(bytes).and_then(|()| part.file.sync_data());
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        match written {
            Ok(()) => {
                part.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut what may have been written and start a new file next time.
                let err = LogError(format!("{}: {e}", part.tmp.display()));
                let _ = part.file.set_len(part.len).and_then(|()| part.file.sync_all());
                self.close(app);
                Err(err)
            }
        }
    }

    fn open_part(&mut self, app: &str, now: Millis) -> Result<OpenPart, LogError> {
        let hour = partition_of(now);
        let app_dir = self.config.root.join(app);
        let dir = app_dir.join(&hour);
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            for d in [dir.parent().expect("date dir"), &app_dir, &self.config.root] {
                sync_dir(d)?;
            }
        }
        self.seq += 1;
        let run = format!("{}-{:06}", self.run, self.seq);
        let tmp = dir.join(format!("{IN_PROGRESS}{}", Machine::this().tag(&run)));
        let file = OpenOptions::new().append(true).create_new(true).open(&tmp).map_err(io_err(&tmp))?;
        sync_dir(&dir)?;
        Ok(OpenPart { tmp, file, len: 0, opened: Instant::now(), hour })
    }

    /// Closes the files that are old, big enough, or of a past hour.
    fn roll_due(&mut self, now: Millis) {
        let hour = partition_of(now);
        let due: Vec<String> = self
            .open
            .iter()
            .filter(|(_, p)| {
                p.hour != hour || p.len >= self.config.roll_bytes || p.opened.elapsed() >= self.config.roll_after
            })
            .map(|(a, _)| a.clone())
            .collect();
        for app in due {
            self.close(&app);
        }
    }

    fn close(&mut self, app: &str) {
        let Some(part) = self.open.remove(app) else { return };
        if let Err(e) = close_part(&part.tmp, part.file, part.len) {
            tracing::error!("{e}; the file is closed at the next start");
        } else {
            self.stats.files_closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Syncs, renames to the final name (an empty file is removed), syncs the
/// directory.
fn close_part(tmp: &Path, file: File, len: u64) -> Result<(), LogError> {
    file.sync_all().map_err(io_err(tmp))?;
    drop(file);
    let dir = tmp.parent().expect("a partition directory");
    if len == 0 {
        fs::remove_file(tmp).map_err(io_err(tmp))?;
    } else {
        let name = tmp.file_name().and_then(|n| n.to_str()).and_then(final_name);
        let name = name.ok_or_else(|| LogError(format!("{}: not an in-progress name", tmp.display())))?;
        fs::rename(tmp, dir.join(name)).map_err(io_err(tmp))?;
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

pub fn now_millis() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as Millis
}

/// What [`recover`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub files: usize,
    /// Lines cut off the end of files: torn or unreadable, never acknowledged.
    pub torn_lines: usize,
    pub torn_bytes: u64,
}

/// Closes the in-progress files left by this host's dead writers.
pub fn recover(root: &Path) -> Result<Recovery, LogError> {
    let mut done = Recovery::default();
    for file in in_progress_files(root)? {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let tagged = &name[IN_PROGRESS.len()..];
        if !Writer::parse(tagged).is_gone(Machine::this(), process_alive) {
            continue;
        }
        let f = OpenOptions::new().read(true).write(true).open(&file).map_err(io_err(&file))?;
        let bytes = fs::read(&file).map_err(io_err(&file))?;
        let keep = readable_prefix(&bytes);
        if keep < bytes.len() {
            let cut = &bytes[keep..];
            done.torn_lines += cut.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
            done.torn_bytes += cut.len() as u64;
            f.set_len(keep as u64).map_err(io_err(&file))?;
        }
        close_part(&file, f, keep as u64)?;
        done.files += 1;
    }
    Ok(done)
}

/// The length of the complete, readable lines at the start of `bytes`:
/// up to the last newline, less any unreadable lines at the end.
pub fn readable_prefix(bytes: &[u8]) -> usize {
    let mut keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    while keep > 0 {
        let start = bytes[..keep - 1].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if parse_event(&bytes[start..keep - 1]).is_ok() {
            break;
        }
        keep = start;
    }
    keep
}

/// `<root>/*/date=*/hour=*/_inprogress-*`.
fn in_progress_files(root: &Path) -> Result<Vec<PathBuf>, LogError> {
    let mut out = Vec::new();
    for app in subdirs(root)? {
        for date in subdirs(&app)? {
            for hour in subdirs(&date)? {
                for e in fs::read_dir(&hour).map_err(io_err(&hour))? {
                    let p = e.map_err(io_err(&hour))?.path();
                    if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(IN_PROGRESS)) {
                        out.push(p);
                    }
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The directories in `dir` whose names `ur-train` reads (not `_` or `.`).
pub fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for e in entries {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with(['_', '.']) && e.file_type().map_err(io_err(dir))?.is_dir() {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"event":"view","entityType":"user","entityId":"u","targetEntityType":"item","targetEntityId":"i","eventTime":"2026-01-15T12:00:00.000Z"}"#;

    #[test]
    fn names_and_partitions() {
        assert_eq!(partition_of(1_768_478_400_000), "date=2026-01-15/hour=12");
        assert_eq!(final_name("_inprogress-42-1700-000003@node-1@abc").unwrap(), "part-node-1-1700-42-000003.jsonl");
        assert_eq!(final_name("part-x"), None);
    }

    #[test]
    fn torn_and_unreadable_tails_are_cut() {
        let good = format!("{LINE}\n{LINE}\n");
        assert_eq!(readable_prefix(good.as_bytes()), good.len());
        assert_eq!(readable_prefix(format!("{good}{{\"event\":\"vi").as_bytes()), good.len());
        assert_eq!(readable_prefix(format!("{good}\0\0\0\n").as_bytes()), good.len());
        assert_eq!(readable_prefix(b"{\"ev"), 0);
    }

    #[test]
    fn appends_roll_over_and_recover() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let log = EventLog::start(LogConfig {
            root: root.clone(),
            roll_after: Duration::from_secs(600),
            roll_bytes: 1 << 30,
        })
        .unwrap();
        log.append_blocking("shop", vec![LINE.into(), LINE.into()]).unwrap();
        let open = in_progress_files(&root).unwrap();
        assert_eq!(open.len(), 1);
        log.close();
        assert!(in_progress_files(&root).unwrap().is_empty());
        // A dead writer's file with a torn line.
        let hour = root.join("shop").join(partition_of(now_millis()));
        let tagged = Machine::this().tag(&format!("{}-1-000001", u32::MAX - 1));
        std::fs::write(hour.join(format!("{IN_PROGRESS}{tagged}")), format!("{LINE}\n{{\"eve")).unwrap();
        let r = recover(&root).unwrap();
        assert_eq!(r, Recovery { files: 1, torn_lines: 1, torn_bytes: 5 });
        let mut parts: Vec<_> = std::fs::read_dir(&hour).unwrap().map(|e| e.unwrap().file_name()).collect();
        parts.sort();
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert!(parts.iter().all(|p| p.to_string_lossy().starts_with("part-")));
    }
}
