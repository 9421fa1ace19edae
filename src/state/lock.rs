//! One run at a time per state: a second run (cron overlap) is refused with
//! a message naming the holder.
//!
//! Locally the lock is an `flock` on `.<state>.lock` next to the state
//! directory, released by the kernel even if the run is killed. On HDFS it
//! is the exclusive creation of that file, deleted at the end; a run killed
//! on HDFS leaves it behind and the message says how to clear it; only an
//! existing lock file means another run, any other failure to create it is
//! reported as what it is.
//!
//! Holding the lock, a run first completes a publish of the state that a
//! crash interrupted (see [`crate::sink::directory::recover`]), so it reads
//! the state as last published rather than none.

use crate::storage::{CreateError, Store, file_name, join, parent};
use std::io::{Read, Write};

pub struct StateLock {
    store: Store,
    path: String,
    /// The locked file (local), closed — and unlocked — on drop.
    _file: Option<std::fs::File>,
}

fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    format!("pid {} on {} since {}", std::process::id(), host.trim(), crate::time::format_iso8601(now))
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
                Ok(StateLock { store: store.clone(), path, _file: Some(file) })
            }
            Store::Hdfs(_) => exclusive(store, &path, dir),
        }?;
        if let Some(restored) = crate::sink::directory::recover(store, dir).map_err(|e| format!("--state {e}"))? {
            tracing::warn!("state {dir}: restored from {restored} (a run was interrupted while publishing it)");
        }
        Ok(lock)
    }
}

/// The lock as an exclusive creation of `path` (HDFS, which has no `flock`).
fn exclusive(store: &Store, path: &str, dir: &str) -> Result<StateLock, String> {
    match store.create_new(path) {
        Ok(mut f) => {
            let _ = f.write_all(holder().as_bytes());
            f.finish().map_err(|e| format!("{path}: {e}"))?;
            Ok(StateLock { store: store.clone(), path: path.to_string(), _file: None })
        }
        Err(CreateError::Exists(_)) => {
            let mut who = String::new();
            if let Ok(mut r) = store.open(path, 0) {
                let _ = r.read_to_string(&mut who);
            }
            Err(format!(
                "another ur-train run is using the state {dir} ({}); if none is running (a run was killed), delete {path}",
                who.trim()
            ))
        }
        Err(e @ CreateError::Other(_)) => Err(format!("cannot take the lock of the state {dir}: {e}")),
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        if !self.store.is_local() {
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
        let first = exclusive(&Store::Local, &path, &join(d, "state")).unwrap();
        let err = exclusive(&Store::Local, &path, &join(d, "state")).err().unwrap();
        assert!(err.contains("another ur-train run") && err.contains("delete"), "{err}");
        drop(first);
        std::fs::write(join(d, "file"), "").unwrap();
        let err = exclusive(&Store::Local, &join(d, "file/.state.lock"), &join(d, "file/state")).err().unwrap();
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
}
