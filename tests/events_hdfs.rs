//! `ur events --ship hdfs://…` on a real HDFS (MiniDFS): events are
//! acknowledged while HDFS is down and shipped once it is up; the shipped
//! root trains to the model the local root gives; a crash between a
//! shipped file's temporary write and its rename, then a restart, ships
//! every file exactly once.

use crate::conformance::assert_is_the_expected_handmade_model;
use crate::events::{EventServer, new_app, stored};
use crate::hdfs::MiniDfs;
use crate::util::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use ur::storage::{Store, file_name};

/// Every file under `url`, recursively: (path relative to `url`, bytes).
fn remote_files(url: &str) -> Vec<(String, Vec<u8>)> {
    let (store, _) = Store::resolve(url).unwrap();
    let mut out = Vec::new();
    let mut dirs = vec![url.to_string()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = store.list_dir(&d) else { continue };
        for e in entries {
            if e.is_dir {
                dirs.push(e.path);
            } else {
                // A file being shipped (`_` prefix) may get its final name
                // between the listing and the open: it is then listed again
                // under that name at the next look.
                let read = store.open(&e.path, 0).and_then(|mut reader| {
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(&mut reader, &mut bytes).map_err(|e| e.to_string())?;
                    Ok(bytes)
                });
                match read {
                    Err(_) if file_name(&e.path).starts_with('_') => continue,
                    read => out.push((e.path[url.len() + 1..].to_string(), read.unwrap())),
                }
            }
        }
    }
    out.sort();
    out
}

/// The closed local files of `root` (relative path, bytes).
fn local_parts(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if p.is_dir() {
                dirs.push(p);
            } else if name.starts_with("part-") {
                out.push((p.strip_prefix(root).unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Waits until every closed local file is on HDFS under its final name.
/// Waits until `app`'s closed files hold `n` events (`--roll-seconds`).
fn wait_closed(root: &Path, app: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored(root, app).len() < n {
        assert!(Instant::now() < deadline, "{app}: {} of {n} events in closed files", stored(root, app).len());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_shipped(root: &Path, url: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let local = local_parts(root);
        let remote: Vec<_> = remote_files(url).into_iter().filter(|(p, _)| !file_name(p).starts_with('_')).collect();
        if !local.is_empty() && remote == local {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not shipped in {timeout:?}: {} local, {} remote",
            local.len(),
            remote.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn post_all(s: &EventServer, key: &str, events: &[Value]) {
    for chunk in events.chunks(50) {
        let body = Value::Array(chunk.to_vec()).to_string();
        let (status, r) = s.call("POST", &format!("/batch/events.json?accessKey={key}"), Some(&body));
        assert_eq!(status, 200);
        assert!(r.as_array().unwrap().iter().all(|x| x["status"] == 201), "{r}");
    }
}

/// One MiniDFS (started after the server, on a port chosen beforehand) for
/// the whole story.
#[test]
fn closed_partitions_reach_hdfs_once_even_if_it_starts_late_or_the_server_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("events");
    let key = new_app(&root, "handmade");
    let port = free_port();
    let ship = format!("hdfs://127.0.0.1:{port}/events");
    let flags = ["--roll-seconds", "1", "--ship", &ship];

    // HDFS down: every event is still acknowledged.
    let s = EventServer::start(&root, &flags);
    let lines: Vec<Value> =
        std::fs::read_to_string(handmade_events()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (singles, batched) = lines.split_at(9);
    for e in singles {
        let t = Instant::now();
        let (status, body) = s.call("POST", &format!("/events.json?accessKey={key}"), Some(&e.to_string()));
        assert_eq!(status, 201, "{e}: {body}");
        assert!(t.elapsed() < Duration::from_secs(10), "a 201 waited on HDFS");
    }
    post_all(&s, &key, batched);
    wait_closed(&root, "handmade", lines.len());

    // HDFS up: shipped within the back-off.
    let dfs = MiniDfs::start_with(&["--port", &port.to_string()]);
    assert_eq!(dfs.url, format!("hdfs://127.0.0.1:{port}"));
    wait_shipped(&root, &ship, Duration::from_secs(60));
    let log = s.stop();
    assert!(log.contains("shipping"), "{log}");
    assert_eq!(stored(&root, "handmade").len(), lines.len());

    // The shipped root trains to the model of the local root: the UR's.
    let local_model = dir.path().join("local-model");
    train_ok(&handmade_engine(), &root.join("handmade"), &local_model, &["--now", HANDMADE_NOW]);
    assert_is_the_expected_handmade_model(&local_model);
    let hdfs_model = dir.path().join("hdfs-model");
    let input = PathBuf::from(format!("{ship}/handmade"));
    train_ok(&handmade_engine(), &input, &hdfs_model, &["--now", HANDMADE_NOW, "--workers", "2"]);
    assert!(
        std::fs::read(hdfs_model.join("items.jsonl")).unwrap()
            == std::fs::read(local_model.join("items.jsonl")).unwrap(),
        "the shipped events give another model"
    );

    // A crash after a shipped file's temporary write, before its rename.
    let more = new_app(&root, "more");
    let abort = [("UR_EVENTS_SHIP_TEST_ABORT_BEFORE_RENAME", "1")];
    let mut s = EventServer::start_env(&root, &flags, &abort);
    let ids: Vec<Value> = (0..120)
        .map(|i| json!({"event": "view", "entityType": "user", "entityId": format!("m{i}"), "targetEntityType": "item", "targetEntityId": "i1"}))
        .collect();
    post_all(&s, &more, &ids[..60]);
    let status = s.wait_exit(Duration::from_secs(30)).expect("the test hook aborts the server");
    assert!(!status.success());
    let temps: Vec<String> =
        remote_files(&ship).into_iter().map(|(p, _)| p).filter(|p| file_name(p).starts_with("_shipping-")).collect();
    assert_eq!(temps.len(), 1, "one half-shipped file: {temps:?}");

    // The restart ships it (from scratch) and the rest, each once.
    let s = EventServer::start(&root, &flags);
    post_all(&s, &more, &ids[60..]);
    wait_closed(&root, "more", ids.len());
    wait_shipped(&root, &ship, Duration::from_secs(60));
    s.stop();
    wait_shipped(&root, &ship, Duration::from_secs(1));
    let remote = remote_files(&ship);
    assert!(remote.iter().all(|(p, _)| !file_name(p).starts_with('_')), "a temporary file is left");
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (path, bytes) in &remote {
        if path.starts_with("more/") {
            for line in std::str::from_utf8(bytes).unwrap().lines() {
                let e: Value = serde_json::from_str(line).unwrap();
                *seen.entry(e["entityId"].as_str().unwrap().to_string()).or_default() += 1;
            }
        }
    }
    assert_eq!(seen.len(), 120, "every acknowledged event shipped");
    assert!(seen.values().all(|&n| n == 1), "an event shipped twice");
    let manifest = std::fs::read_to_string(
        std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("_shipped@"))
            .expect("a shipping record")
            .path(),
    )
    .unwrap();
    let recorded: Vec<&str> = manifest.lines().collect();
    let distinct: std::collections::HashSet<&str> = recorded.iter().copied().collect();
    assert_eq!(recorded.len(), distinct.len(), "a file recorded twice: {manifest}");
    assert_eq!(recorded.len(), local_parts(&root).len());
}
