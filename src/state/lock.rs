//! One run at a time per state: a second run (cron overlap) is refused with
//! a message naming the holder.
//!
//! Locally the lock is an `flock` on `.<state>.lock` next to the state
//! directory, released by the kernel even if the run is killed. On HDFS it
//! is the exclusive creation of that file, holding a lease: the holder (host,
//! boot, pid, since when) and when the lease expires. A thread of the
//! holder renews the lease while it runs, and the file is deleted at the end
//! (or by [`release_all`] when the process ends mid-run). A run killed on
//! HDFS leaves the file behind; a later run breaks it once its lease has
//! expired, or at once when it is its own host's (same boot) and the holder's
//! process is gone, and says so. Only an existing lock file means another
//! run; any other failure to create it is reported as what it is.
//!
//! Holding the lock, a run first completes a publish of the state that a
//! crash interrupted (see [`crate::sink::directory::recover`]), so it reads
//! the state as last published rather than none.

use crate::storage::owner::{Machine, process_alive};
use crate::storage::{CreateError, Store, file_name, join, parent};
use std::io::{Read, Write};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

/// How long an HDFS lock lasts without being renewed.
const LEASE: Duration = Duration::from_secs(300);

pub struct StateLock {
    store: Store,
    path: String,
    /// The locked file (local), closed — and unlocked — on drop.
    _file: Option<std::fs::File>,
    /// Dropped to stop renewing the lease (HDFS).
    _renewing: Option<mpsc::Sender<()>>,
}

/// HDFS lock files held by this process, for [`release_all`].
static HELD: Mutex<Vec<(Store, String)>> = Mutex::new(Vec::new());

/// Deletes the HDFS lock files this process holds: for a process about to
/// exit without unwinding (a lost peer, a signal, a panic). Local locks are
/// released by the kernel.
pub fn release_all() {
    release(|_| true);
}

/// Deletes the held lock files whose path `which` selects.
fn release(which: impl Fn(&str) -> bool) {
    let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
    for (store, path) in held.iter().filter(|(_, p)| which(p)) {
        let _ = store.remove_all(path);
    }
    held.retain(|(_, p)| !which(p));
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("pid {} on {} since {}", std::process::id(), host.trim(), crate::time::format_iso8601(now_ms()))
}
impl StateLock {
    /// Takes the lock of the state directory `dir`.
    pub fn acquire(store: &Store, dir: &str) -> Result<StateLock, String> {
        let dir = dir.trim_end_matches('/');
        let path = join(&parent(dir), &format!(".{}.lock", file_name(dir)));
        store.create_dir_all(&parent(dir))?;
        let lock = match store {
            Store::Local => {
                let mut file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(|e| format!("{path}: {e}"))?;
                use std::os::fd::AsRawFd;
                // SAFETY: flock on a file descriptor we own.
                let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
                if rc != 0 {
                    let mut who = String::new();
                    let _ = file.read_to_string(&mut who);
                    return Err(format!(
                        "another ur-train run is using the state {dir} ({}): wait for it to finish",
                        who.trim()
                    ));
                }
                file.set_len(0).map_err(|e| format!("{path}: {e}"))?;
                let _ = write!(file, "{}", holder());
                Ok(StateLock { store: store.clone(), path, _file: Some(file), _renewing: None })
            }
            Store::Hdfs(_) => exclusive(store, &path, dir, LEASE),
        }?;
        if let Some(restored) = crate::sink::directory::recover(store, dir).map_err(|e| format!("--state {e}"))? {
            tracing::warn!("state {dir}: restored from {restored} (a run was interrupted while publishing it)");
        }
        Ok(lock)
    }
}

/// What an HDFS lock file holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Lease {
    host: String,
    /// The holder's boot (see [`Machine`]).
    boot: String,
    pid: u32,
    /// When the holder took the lock (ISO-8601).
    since: String,
    /// When the lease ends unless renewed (ms since the epoch).
    expires: i64,
}

impl Lease {
    /// This process's lease, for `lease` from now.
    fn mine(since: &str, lease: Duration) -> Lease {
        let m = Machine::this();
        Lease {
            host: m.host.clone(),
            boot: m.boot.clone(),
            pid: std::process::id(),
            since: since.to_string(),
            expires: now_ms() + lease.as_millis() as i64,
        }
    }

    fn is_mine(&self) -> bool {
        let m = Machine::this();
        self.host == m.host && self.boot == m.boot && self.pid == std::process::id()
    }

    /// Why the lease may be broken, if it may: expired, or held by a gone
    /// process of this host.
    fn broken_because(&self, now: i64, this: &Machine, alive: impl Fn(u32) -> bool) -> Option<String> {
        if self.expires < now {
            return Some(format!("its lease expired at {}", crate::time::format_iso8601(self.expires)));
        }
        let same_boot = self.host == this.host && !self.boot.is_empty() && self.boot == this.boot;
        (same_boot && !alive(self.pid)).then(|| format!("process {} of this host is gone", self.pid))
    }

    fn describe(&self) -> String {
        format!(
            "pid {} on {} since {}, lease until {}",
            self.pid,
            self.host,
            self.since,
            crate::time::format_iso8601(self.expires)
        )
    }
}

fn read_text(store: &Store, path: &str) -> Option<String> {
    let mut text = String::new();
    store.open(path, 0).ok()?.read_to_string(&mut text).ok()?;
    Some(text)
}

fn write_lease(store: &Store, path: &str, lease: &Lease, create: bool) -> Result<(), CreateError> {
    let mut f = match create {
        true => store.create_new(path)?,
        false => store.create(path).map_err(CreateError::Other)?,
    };
    let text = serde_json::to_string(lease).expect("a lease serialises");
    f.write_all(text.as_bytes()).map_err(|e| CreateError::Other(format!("{path}: {e}")))?;
    f.finish().map_err(|e| CreateError::Other(format!("{path}: {e}")))
}

/// The lock as an exclusive creation of `path` holding a lease of `lease`
/// (HDFS, which has no `flock`), renewed by a thread until dropped.
fn exclusive(store: &Store, path: &str, dir: &str, lease: Duration) -> Result<StateLock, String> {
    let since = crate::time::format_iso8601(now_ms());
    let mut broke = false;
    loop {
        match write_lease(store, path, &Lease::mine(&since, lease), true) {
            Ok(()) => break,
            Err(CreateError::Exists(_)) if !broke => {
                break_stale(store, path, dir)?;
                broke = true;
            }
            Err(CreateError::Exists(_)) => return Err(refusal(store, path, dir)),
            Err(e @ CreateError::Other(_)) => return Err(format!("cannot take the lock of the state {dir}: {e}")),
        }
    }
    HELD.lock().unwrap_or_else(|p| p.into_inner()).push((store.clone(), path.to_string()));
    let (renewing, stop) = mpsc::channel::<()>();
    let (s, p) = (store.clone(), path.to_string());
    std::thread::Builder::new()
        .name("ur:state-lock".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(lease / 4) {
                if let Err(e) = renew(&s, &p, &since, lease) {
                    tracing::error!("{e}");
                    return;
                }
            }
        })
        .map_err(|e| format!("cannot take the lock of the state {dir}: {e}"))?;
    Ok(StateLock { store: store.clone(), path: path.to_string(), _file: None, _renewing: Some(renewing) })
}

/// Extends this process's lease on `path`, if it still holds it.
fn renew(store: &Store, path: &str, since: &str, lease: Duration) -> Result<(), String> {
    let held = read_text(store, path).and_then(|t| serde_json::from_str::<Lease>(&t).ok());
    match held {
        Some(l) if l.is_mine() => write_lease(store, path, &Lease::mine(since, lease), false)
            .map_err(|e| format!("cannot renew the lock {path}: {e}")),
        Some(l) => Err(format!("the lock {path} was taken over ({}): another run may use the state", l.describe())),
        None => Err(format!("the lock {path} is gone or unreadable: another run may use the state")),
    }
}

/// Deletes the lock file at `path` if its lease may be broken (saying so);
/// otherwise refuses, naming the holder.
fn break_stale(store: &Store, path: &str, dir: &str) -> Result<(), String> {
    let Some(text) = read_text(store, path) else { return Err(refusal(store, path, dir)) };
    let Ok(lease) = serde_json::from_str::<Lease>(&text) else { return Err(refusal(store, path, dir)) };
    let Some(why) = lease.broken_because(now_ms(), Machine::this(), process_alive) else {
        return Err(refusal(store, path, dir));
    };
    // Moved aside first, so that of two runs breaking it only one succeeds.
    let aside = format!("{path}.broken-{}-{}", std::process::id(), now_ms());
    store.rename(path, &aside).map_err(|_| refusal(store, path, dir))?;
    if read_text(store, &aside).as_deref() != Some(text.as_str()) {
        // Another run took the lock in between: give it back.
        let _ = store.rename(&aside, path);
        return Err(refusal(store, path, dir));
    }
    let _ = store.remove_all(&aside);
    tracing::warn!("state {dir}: broke the lock {path} of an earlier run ({}): {why}", lease.describe());
    Ok(())
}

fn refusal(store: &Store, path: &str, dir: &str) -> String {
    let text = read_text(store, path).unwrap_or_default();
    let who = match serde_json::from_str::<Lease>(&text) {
        Ok(l) => l.describe(),
        Err(_) => text.trim().to_string(),
    };
    format!(
        "another ur-train run is using the state {dir} ({who}); if none is running (a run was killed), \
         wait for its lease to expire or delete {path}"
    )
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // An exclusively created lock file (HDFS) is deleted; an flock'd
        // one (local) is unlocked by closing it.
        if self._file.is_none() {
            self._renewing.take();
            HELD.lock().unwrap_or_else(|p| p.into_inner()).retain(|(_, p)| *p != self.path);
            let _ = self.store.remove_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let state = state.to_str().unwrap();
        let first = StateLock::acquire(&Store::Local, state).unwrap();
        let err = StateLock::acquire(&Store::Local, state).err().unwrap();
        assert!(err.contains("another ur-train run") && err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        assert!(StateLock::acquire(&Store::Local, state).is_ok());
    }

    #[test]
    fn only_an_existing_lock_file_means_another_run() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let path = join(d, ".state.lock");
        let first = exclusive(&Store::Local, &path, &join(d, "state"), LEASE).unwrap();
        let err = exclusive(&Store::Local, &path, &join(d, "state"), LEASE).err().unwrap();
        assert!(err.contains("another ur-train run") && err.contains("delete"), "{err}");
        drop(first);
        std::fs::write(join(d, "file"), "").unwrap();
        let err = exclusive(&Store::Local, &join(d, "file/.state.lock"), &join(d, "file/state"), LEASE).err().unwrap();
        assert!(!err.contains("another ur-train run") && err.contains("cannot take the lock"), "{err}");
    }

    #[test]
    fn taking_the_lock_restores_an_interrupted_publish() {
        let dir = tempfile::tempdir().unwrap();
        let tag = crate::storage::owner::Machine::this().tag("999999999");
        let old = dir.path().join(format!(".state.tmp-{tag}.old"));
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("state.json"), "{}").unwrap();
        let state = dir.path().join("state");
        let _lock = StateLock::acquire(&Store::Local, state.to_str().unwrap()).unwrap();
        assert!(state.join("state.json").exists() && !old.exists());
    }

    fn lease_of(host: &str, boot: &str, pid: u32, expires: i64) -> String {
        let lease = Lease { host: host.into(), boot: boot.into(), pid, since: "then".into(), expires };
        serde_json::to_string(&lease).unwrap()
    }

    fn held_lease(path: &str) -> Lease {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn an_expired_lease_is_broken_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let path = join(d, ".state.lock");
        // Another host's run, alive: refused, naming it.
        std::fs::write(&path, lease_of("elsewhere", "b007", 42, now_ms() + 60_000)).unwrap();
        let err = exclusive(&Store::Local, &path, &join(d, "state"), LEASE).err().unwrap();
        assert!(err.contains("pid 42 on elsewhere") && err.contains("lease"), "{err}");
        // Its lease expired (a killed run): broken, and the lock is ours.
        std::fs::write(&path, lease_of("elsewhere", "b007", 42, now_ms() - 1)).unwrap();
        let lock = exclusive(&Store::Local, &path, &join(d, "state"), LEASE).unwrap();
        assert!(held_lease(&path).is_mine());
        let files: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files, [".state.lock"], "nothing set aside is left");
        drop(lock);
        assert!(!std::path::Path::new(&path).exists());
    }

    #[test]
    fn a_lock_of_a_gone_process_of_this_host_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let path = join(d, ".state.lock");
        let m = Machine::this();
        std::fs::write(&path, lease_of(&m.host, &m.boot, 999_999_999, now_ms() + 60_000)).unwrap();
        let _lock = exclusive(&Store::Local, &path, &join(d, "state"), LEASE).unwrap();
        assert!(held_lease(&path).is_mine());
        // A lock of a live process of this host stands.
        let err = exclusive(&Store::Local, &path, &join(d, "state"), LEASE).err().unwrap();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
    }

    #[test]
    fn the_holder_renews_its_lease_and_releasing_deletes_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let path = join(d, ".state.lock");
        let lock = exclusive(&Store::Local, &path, &join(d, "state"), LEASE).unwrap();
        let first = held_lease(&path).expires;
        // Renewing extends the lease (the thread does it every quarter lease).
        renew(&Store::Local, &path, "then", LEASE * 2).unwrap();
        assert!(held_lease(&path).expires > first);
        // A lease taken over is not renewed.
        std::fs::write(&path, lease_of("elsewhere", "b007", 42, now_ms() + 60_000)).unwrap();
        assert!(renew(&Store::Local, &path, "then", LEASE).unwrap_err().contains("taken over"));
        std::fs::remove_file(&path).unwrap();
        let _lock = exclusive(&Store::Local, &path, &join(d, "state"), LEASE).unwrap();
        // What release_all does for every held lock (other tests hold some).
        release(|p| p == path);
        assert!(!std::path::Path::new(&path).exists());
        drop(lock);
    }
}
