//! HDFS through `hdfs-native` (a pure-Rust client: no JVM, no libhdfs).
//!
//! `hdfs://namenode:port/path` talks to one NameNode; `hdfs://nameservice/path`
//! resolves the nameservice (HA) from `core-site.xml`/`hdfs-site.xml` in
//! `HADOOP_CONF_DIR`, as Hadoop clients do. The client is async; one small
//! tokio runtime per process runs it and the blocking calls here wait on it
//! with a deadline, so an unreachable NameNode is an error within seconds,
//! not a hang.
//!
//! Once the first contact succeeded, reads (stat, list, open, read) retry a
//! connection that fails, or a NameNode that asks for it (safe mode after a
//! restart, a standby during a failover), with backoff for up to
//! [`READ_RETRY_WINDOW`]: a NameNode restart mid-run is waited out, not a
//! failed run. Writes are not retried (a create or rename that may have
//! happened cannot be replayed blindly); they fail and the run with them.

use super::{CreateError, Entry, FileSink};
use crate::runtime::runtime;
use bytes::Bytes;
use hdfs_native::{Client, ClientBuilder, WriteOptions, file::FileReader, file::FileWriter};
use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Deadline of one metadata call (list, stat, rename...).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of the first contact with a NameNode.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reads retry through an unreachable NameNode or DataNode.
const READ_RETRY_WINDOW: Duration = Duration::from_secs(60);
/// The longest pause between two tries of a read.
const READ_RETRY_MAX_PAUSE: Duration = Duration::from_secs(2);
/// Bytes fetched per read request.
const READ_CHUNK: usize = 8 << 20;
/// Bytes buffered per write request.
const WRITE_CHUNK: usize = 4 << 20;

/// A connected HDFS file system (one per `scheme://authority`).
pub struct Hdfs {
    /// `hdfs://authority`, prefixed to paths to form URLs.
    prefix: String,
    client: Client,
}

/// Runs one HDFS call to its end or its deadline.
fn within<T>(
    what: &str,
    timeout: Duration,
    f: impl Future<Output = hdfs_native::Result<T>>,
) -> Result<hdfs_native::Result<T>, String> {
    // The deadline is made inside the runtime: a timer needs its context.
    runtime()
        .block_on(async { tokio::time::timeout(timeout, f).await })
        .map_err(|_| format!("{what}: no answer from HDFS within {}s", timeout.as_secs()))
}

fn wait<T>(what: &str, timeout: Duration, f: impl Future<Output = hdfs_native::Result<T>>) -> Result<T, String> {
    within(what, timeout, f)?.map_err(|e| format!("{what}: {e}"))
}

/// Whether a failed read may succeed if tried again: the connection failed
/// (a NameNode or DataNode restarting), or the NameNode asked for a retry.
fn transient(e: &hdfs_native::HdfsError) -> bool {
    use hdfs_native::HdfsError::*;
    match e {
        IOError(_) | DataTransferError(_) => true,
        RPCError(class, _) => {
            ["RetriableException", "SafeModeException", "StandbyException"].iter().any(|name| class.ends_with(name))
        }
        _ => false,
    }
}

/// [`wait`] for an idempotent read, retried while its errors are
/// [`transient`] and [`READ_RETRY_WINDOW`] lasts.
fn wait_read<T, F>(what: &str, mut read: impl FnMut() -> F) -> Result<T, String>
where
    F: Future<Output = hdfs_native::Result<T>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match within(what, CALL_TIMEOUT, read())? {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) && started.elapsed() + pause < READ_RETRY_WINDOW => {
                tracing::warn!("{what}: {e}; retrying in {} ms", pause.as_millis());
                std::thread::sleep(pause);
                pause = (pause * 2).min(READ_RETRY_MAX_PAUSE);
            }
            Err(e) if transient(&e) => {
                return Err(format!("{what}: {e} (still failing after {} s of retries)", started.elapsed().as_secs()));
            }
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

/// Splits `hdfs://authority/path` into (`hdfs://authority`, `/path`).
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let scheme_end = url.find("://").ok_or_else(|| format!("{url}: not a URL"))?;
    let rest = &url[scheme_end + 3..];
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url}: no NameNode or nameservice (hdfs://namenode:port/path)"));
    }
    Ok((format!("{}://{authority}", &url[..scheme_end]), path.to_string()))
}

/// `url` spelt one way per location: scheme and NameNode host in lower
/// case, the port as a number; a nameservice (no port) as written, since
/// Hadoop's configuration keys are case-sensitive; the path without `.`,
/// `..`, empty segments or a trailing slash.
pub fn normalize_url(url: &str) -> Result<String, String> {
    let (prefix, path) = split_url(url)?;
    let (scheme, authority) = prefix.split_once("://").expect("split_url gives scheme://authority");
    let authority = match host_port(authority) {
        Some((host, port)) => format!("{}:{port}", host.to_ascii_lowercase()),
        None => authority.to_string(),
    };
    Ok(format!("{}://{authority}{}", scheme.to_ascii_lowercase(), normalize_path(&path)))
}

/// `host:port` split, if the authority has a port.
fn host_port(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = authority.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

/// An absolute path without `.`, `..`, empty segments or a trailing slash.
fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

/// True if two normalised URLs name the same path on the same NameNode:
/// equal, or NameNode hosts spelt differently (`localhost`, `127.0.0.1`)
/// that resolve to a common address, with the same port.
pub fn same_location(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let (Ok((a_prefix, a_path)), Ok((b_prefix, b_path))) = (split_url(a), split_url(b)) else {
        return false;
    };
    let (Some((a_scheme, a_authority)), Some((b_scheme, b_authority))) =
        (a_prefix.split_once("://"), b_prefix.split_once("://"))
    else {
        return false;
    };
    let (Some((_, a_port)), Some((_, b_port))) = (host_port(a_authority), host_port(b_authority)) else {
        return false;
    };
    if a_scheme != b_scheme || a_path != b_path || a_port != b_port {
        return false;
    }
    let addresses = |authority: &str| -> Vec<std::net::IpAddr> {
        std::net::ToSocketAddrs::to_socket_addrs(authority).map(|a| a.map(|a| a.ip()).collect()).unwrap_or_default()
    };
    let b_addresses = addresses(b_authority);
    addresses(a_authority).iter().any(|ip| b_addresses.contains(ip))
}

impl Hdfs {
    /// The client for the file system of `url`, created once per process.
    pub fn connect(url: &str) -> Result<Arc<Hdfs>, String> {
        static CLIENTS: OnceLock<Mutex<HashMap<String, Arc<Hdfs>>>> = OnceLock::new();
        let (prefix, _) = split_url(url)?;
        let mut clients = CLIENTS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&prefix) {
            return Ok(c.clone());
        }
        // Fail fast on an unreachable NameNode: hdfs-native retries through its
        // failover loop (15 attempts with growing sleeps: about 3 minutes by
        // default). One failover attempt still reaches the second NameNode of
        // an HA pair.
        let config = [
            ("dfs.client.failover.max.attempts", "1"),
            ("dfs.client.failover.sleep.base.millis", "100"),
            ("dfs.client.failover.sleep.max.millis", "500"),
        ];
        let client = ClientBuilder::new()
            .with_url(prefix.clone())
            .with_config(config)
            .with_io_runtime(runtime().handle().clone())
            .build()
            .map_err(|e| format!("{prefix}: {e}"))?;
        let hdfs = Arc::new(Hdfs { prefix: prefix.clone(), client });
        // One call, to report an unreachable NameNode now, clearly.
        wait(&format!("cannot reach the NameNode of {prefix}"), CONNECT_TIMEOUT, hdfs.client.get_file_info("/"))?;
        clients.insert(prefix, hdfs.clone());
        Ok(hdfs)
    }

    fn path(&self, url: &str) -> Result<String, String> {
        let (prefix, path) = split_url(url)?;
        if prefix != self.prefix {
            return Err(format!("{url} is not on {}", self.prefix));
        }
        Ok(path)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    pub fn stat(&self, url: &str) -> Result<Option<Entry>, String> {
        let path = self.path(url)?;
        let found = wait_read(url, || async {
            match self.client.get_file_info(&path).await {
                Err(hdfs_native::HdfsError::FileNotFound(_)) => Ok(None),
                found => found.map(Some),
            }
        })?;
        Ok(found.map(|s| Entry {
            path: url.to_string(),
            len: s.length as u64,
            is_dir: s.isdir,
            mtime: s.modification_time as i64,
        }))
    }

    pub fn list_dir(&self, url: &str) -> Result<Vec<Entry>, String> {
        let path = self.path(url)?;
        let statuses = wait_read(url, || self.client.list_status(&path, false))?;
        Ok(statuses
            .into_iter()
            .map(|s| Entry {
                path: self.url(&s.path),
                len: s.length as u64,
                is_dir: s.isdir,
                mtime: s.modification_time as i64,
            })
            .collect())
    }

    pub fn open(&self, url: &str, offset: u64) -> Result<Box<dyn Read + Send>, String> {
        let path = self.path(url)?;
        let reader = wait_read(url, || self.client.read(&path))?;
        let len = reader.file_length();
        Ok(Box::new(HdfsRead { url: url.to_string(), reader, pos: offset as usize, len, buf: Bytes::new() }))
    }

    pub fn create(&self, url: &str) -> Result<Box<dyn FileSink>, String> {
        let path = self.path(url)?;
        let options = WriteOptions::default().overwrite(true).create_parent(true);
        let writer = wait(url, CALL_TIMEOUT, self.client.create(&path, options))?;
        Ok(Box::new(HdfsWrite { url: url.to_string(), writer, buf: Vec::with_capacity(WRITE_CHUNK) }))
    }

    /// Creates a file that must not exist yet (exclusive, for locks).
    pub fn create_new(&self, url: &str) -> Result<Box<dyn FileSink>, CreateError> {
        let path = self.path(url).map_err(CreateError::Other)?;
        let options = WriteOptions::default().overwrite(false).create_parent(true);
        let created =
            runtime().block_on(async { tokio::time::timeout(CALL_TIMEOUT, self.client.create(&path, options)).await });
        let writer = match created {
            Ok(Ok(w)) => w,
            Ok(Err(hdfs_native::HdfsError::AlreadyExists(_))) => return Err(CreateError::Exists(url.to_string())),
            Ok(Err(e)) => return Err(CreateError::Other(format!("cannot create {url}: {e}"))),
            Err(_) => {
                let secs = CALL_TIMEOUT.as_secs();
                return Err(CreateError::Other(format!("cannot create {url}: no answer from HDFS within {secs}s")));
            }
        };
        Ok(Box::new(HdfsWrite { url: url.to_string(), writer, buf: Vec::with_capacity(WRITE_CHUNK) }))
    }

    pub fn mkdirs(&self, url: &str) -> Result<(), String> {
        let path = self.path(url)?;
        wait(url, CALL_TIMEOUT, self.client.mkdirs(&path, 0o755, true))
    }

    pub fn rename(&self, from: &str, to: &str) -> Result<(), String> {
        let (a, b) = (self.path(from)?, self.path(to)?);
        wait(&format!("cannot rename {from} to {to}"), CALL_TIMEOUT, self.client.rename(&a, &b, false))
    }

    pub fn delete(&self, url: &str) -> Result<(), String> {
        let path = self.path(url)?;
        match runtime().block_on(async { tokio::time::timeout(CALL_TIMEOUT, self.client.delete(&path, true)).await }) {
            Ok(Ok(_)) | Ok(Err(hdfs_native::HdfsError::FileNotFound(_))) => Ok(()),
            Ok(Err(e)) => Err(format!("cannot remove {url}: {e}")),
            Err(_) => Err(format!("cannot remove {url}: no answer from HDFS within {}s", CALL_TIMEOUT.as_secs())),
        }
    }
}

/// Sequential reads in large positioned requests.
struct HdfsRead {
    url: String,
    reader: FileReader,
    pos: usize,
    len: usize,
    buf: Bytes,
}

impl Read for HdfsRead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.buf.is_empty() {
            if self.pos >= self.len {
                return Ok(0);
            }
            let n = READ_CHUNK.min(self.len - self.pos);
            let chunk = wait_read(&self.url, || self.reader.read_range(self.pos, n)).map_err(io::Error::other)?;
            self.pos += chunk.len();
            if chunk.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{}: short read", self.url)));
            }
            self.buf = chunk;
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        let _ = self.buf.split_to(n);
        Ok(n)
    }
}

struct HdfsWrite {
    url: String,
    writer: FileWriter,
    buf: Vec<u8>,
}

impl HdfsWrite {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(WRITE_CHUNK)));
        wait(&self.url, CALL_TIMEOUT, self.writer.write_bytes(chunk)).map(|_| ()).map_err(io::Error::other)
    }
}

impl Write for HdfsWrite {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WRITE_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FileSink for HdfsWrite {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.send()?;
        wait(&self.url, CALL_TIMEOUT, self.writer.close()).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        assert_eq!(split_url("hdfs://nn:9000/events/a"), Ok(("hdfs://nn:9000".into(), "/events/a".into())));
        assert_eq!(split_url("hdfs://ns"), Ok(("hdfs://ns".into(), "/".into())));
        assert!(split_url("hdfs:///x").is_err());
    }

    #[test]
    fn urls_are_normalised() {
        let n = |url: &str| normalize_url(url).unwrap();
        assert_eq!(n("HDFS://NameNode.Example:09000//events/./a/../b/"), "hdfs://namenode.example:9000/events/b");
        assert_eq!(n("hdfs://MyCluster/events"), "hdfs://MyCluster/events");
        assert_eq!(n("hdfs://[::1]:9000/"), "hdfs://[::1]:9000/");
        assert_eq!(n("hdfs://nn:8020"), "hdfs://nn:8020/");
        assert!(same_location("hdfs://localhost:9000/e", "hdfs://127.0.0.1:9000/e"));
        assert!(!same_location("hdfs://localhost:9000/e", "hdfs://127.0.0.1:9001/e"));
        assert!(!same_location("hdfs://localhost:9000/e", "hdfs://127.0.0.1:9000/f"));
        assert!(!same_location("hdfs://ns/e", "hdfs://127.0.0.1:9000/e"));
    }
}
