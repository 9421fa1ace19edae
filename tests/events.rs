//! `ur events`, the real binary over real HTTP on loopback: PIO's API with
//! the Python SDK's request shapes, validation, keys, limits, reading back,
//! crashes under load, and the handmade events trained from what it stored.

use crate::conformance::assert_is_the_expected_handmade_model;
use crate::util::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `ur events`.
pub(crate) struct EventServer {
    child: Child,
    pub(crate) addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    /// The thread reading its stderr: it ends when the process does.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl EventServer {
    pub(crate) fn start(root: &Path, extra: &[&str]) -> EventServer {
        EventServer::start_env(root, extra, &[])
    }

    /// [`EventServer::start`] with more environment variables.
    pub(crate) fn start_env(root: &Path, extra: &[&str], env: &[(&str, &str)]) -> EventServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ur"))
            .args(["events", "--root", root.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "ur=info")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("ur events starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut lines = BufReader::new(child.stderr.take().unwrap());
        let log = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            while lines.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(i) = line.find("listening on http://") {
                    let addr: String = line[i + 20..].chars().take_while(|c| !c.is_whitespace()).collect();
                    let _ = tx.send(addr);
                }
                log.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("ur events did not start: {}", stderr.lock().unwrap()));
        EventServer { child, addr: addr.parse().unwrap(), stderr, reader: Some(reader) }
    }

    pub(crate) fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        http(self.addr, method, path, body, &[])
    }

    /// What it logged so far.
    pub(crate) fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, and wait for the exit.
    pub(crate) fn stop(mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let log = self.stderr.lock().unwrap().clone();
        assert!(status.success(), "ur events ended with {status}: {log}");
        log
    }

    /// Waits for the process to end by itself (at most `timeout`).
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for EventServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request (`Connection: close`); the status and JSON body.
pub(crate) fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>, headers: &[&str]) -> (u16, Value) {
    let (status, text) = http_raw(addr, method, path, body.map(str::as_bytes), headers);
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn http_raw(addr: SocketAddr, method: &str, path: &str, body: Option<&[u8]>, headers: &[&str]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(&format!("{h}\r\n"));
    }
    req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status: u16 = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { unchunk(rest) } else { rest.to_string() };
    (status, body)
}

fn unchunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn ur(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ur")).args(args).env_remove("RUST_LOG").output().expect("ur runs")
}

pub(crate) fn new_app(root: &Path, name: &str) -> String {
    let out = ur(&["app", "new", name, "--root", root.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Every stored line of an app, closed files only (what ur-train reads).
pub(crate) fn stored(root: &Path, app: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for f in files(&root.join(app)) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with('_') || name.starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{name}: a partial last line");
        for line in text.lines() {
            ur::source::event::parse_event(line.as_bytes())
                .unwrap_or_else(|e| panic!("{name}: {line}: {:?}", e.reason));
            out.push(serde_json::from_str(line).unwrap());
        }
    }
    out
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(files(&p)) } else { out.push(p) }
        }
    }
    out.sort();
    out
}

/// The Python SDK's `create_event` body (predictionio/__init__.py): the
/// eventTime as `strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + strftime("%z")`.
fn sdk_event(event: &str, etype: &str, eid: &str, target: Option<(&str, &str)>, props: Value) -> String {
    let mut d = json!({"event": event, "entityType": etype, "entityId": eid});
    if let Some((t, i)) = target {
        d["targetEntityType"] = json!(t);
        d["targetEntityId"] = json!(i);
    }
    d["properties"] = props;
    d["eventTime"] = json!("2026-01-15T12:00:00.123+0000");
    d.to_string()
}

#[test]
fn pio_api_with_the_python_sdks_requests() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("events");
    let key = new_app(&root, "shop");
    let s = EventServer::start(&root, &[]);
    let with_key = |p: &str| format!("{p}?accessKey={key}");
    assert_eq!(s.call("GET", "/", None), (200, json!({"status": "alive"})));

    let view = sdk_event("view", "user", "u1", Some(("item", "i1")), json!({}));
    let (status, body) = s.call("POST", &with_key("/events.json"), Some(&view));
    assert_eq!(status, 201, "{body}");
    let id = body["eventId"].as_str().unwrap().to_string();
    for (ev, props) in
        [("$set", json!({"categories": ["phones"]})), ("$unset", json!({"categories": null})), ("$delete", json!({}))]
    {
        let (status, body) = s.call("POST", &with_key("/events.json"), Some(&sdk_event(ev, "item", "i9", None, props)));
        assert_eq!(status, 201, "{ev}: {body}");
    }
    let (status, got) = s.call("GET", &with_key(&format!("/events/{id}.json")), None);
    assert_eq!(status, 200);
    assert_eq!((got["event"].as_str(), got["entityId"].as_str()), (Some("view"), Some("u1")));
    assert_eq!(got["eventTime"], "2026-01-15T12:00:00.123Z");
    assert!(got["creationTime"].is_string());
    assert_eq!(s.call("GET", &with_key("/events/nope.json"), None).0, 404);

    // Basic authentication (the SDKs' alternative), and a batch with one bad event.
    let basic = format!("Authorization: Basic {}", base64(&format!("{key}:")));
    let batch = format!(
        "[{},{},{}]",
        sdk_event("buy", "user", "u2", Some(("item", "i1")), json!({})),
        sdk_event("buy", "user", "u2", Some(("item", "")), json!({})),
        sdk_event("buy", "user", "u3", Some(("item", "i2")), json!({}))
    );
    let (status, body) = http(s.addr, "POST", "/batch/events.json", Some(&batch), &[&basic]);
    assert_eq!(status, 200, "{body}");
    let statuses: Vec<u64> = body.as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [201, 400, 201]);
    assert_eq!(body[1]["message"], "targetEntityId must not be empty string.");

    // PIO's filters.
    let get = |q: &str| s.call("GET", &format!("/events.json?accessKey={key}&{q}"), None);
    let count = |q: &str| get(q).1.as_array().map_or(0, Vec::len);
    assert_eq!(count("limit=-1"), 6);
    assert_eq!(count("entityType=user&entityId=u2"), 1);
    assert_eq!(count("event=buy"), 2);
    assert_eq!(count("targetEntityType=item&targetEntityId=i1"), 2);
    assert_eq!(count("limit=2"), 2);
    assert_eq!(count("startTime=2026-01-15T12:00:00.124Z"), 0);
    assert_eq!(get("startTime=2026-01-15T12:00:00.124Z").0, 404);
    assert_eq!(count("untilTime=2026-01-15T12:00:00.124Z"), 6);
    assert_eq!(count("entityType=item&entityId=i9&reversed=true"), 3);
    assert_eq!(get("reversed=true").0, 400);
    assert_eq!(get("startTime=yesterday").0, 400);

    let stored_before = s.stop();
    assert!(!stored_before.contains(&key), "the key was logged");
    let events = stored(&root, "shop");
    assert_eq!(events.len(), 6);
    assert!(events.iter().all(|e| e["eventId"].is_string() && e["creationTime"].is_string()));
}

fn base64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() { out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char) } else { out.push('=') }
        }
    }
    out
}

#[test]
fn bad_requests_get_4xx_with_a_reason_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("events");
    let key = new_app(&root, "shop");
    let limited = String::from_utf8(ur(&["accesskey", "new", "shop", "view", "--root", root.to_str().unwrap()]).stdout)
        .unwrap()
        .trim()
        .to_string();
    let s = EventServer::start(&root, &["--max-body-bytes", "100000"]);
    let post = |body: &str| s.call("POST", &format!("/events.json?accessKey={key}"), Some(body));
    let good = json!({"event": "view", "entityType": "user", "entityId": "u1", "targetEntityType": "item", "targetEntityId": "i"});
    let cases: Vec<(Value, &str)> = vec![
        (json!({"entityType": "user", "entityId": "u"}), "field event is required"),
        (
            json!({"event": "view", "entityType": "user", "entityId": 5}),
            "field entityId must be a string, found a number",
        ),
        (json!({"event": "", "entityType": "user", "entityId": "u"}), "event must not be empty."),
        (
            json!({"event": "view", "entityType": "user", "entityId": "u", "targetEntityType": "item"}),
            "targetEntityType and targetEntityId must be specified together.",
        ),
        (
            json!({"event": "$unset", "entityType": "item", "entityId": "i"}),
            "properties cannot be empty for $unset event",
        ),
        (
            json!({"event": "$fly", "entityType": "item", "entityId": "i"}),
            "$fly is not a supported reserved event name.",
        ),
        (
            json!({"event": "$set", "entityType": "item", "entityId": "i", "targetEntityType": "a", "targetEntityId": "b"}),
            "Reserved event $set cannot have targetEntity",
        ),
        (
            json!({"event": "view", "entityType": "pio_user", "entityId": "u"}),
            "The entityType pio_user is not allowed. 'pio_' is a reserved name prefix.",
        ),
        (
            json!({"event": "view", "entityType": "user", "entityId": "u", "properties": {"$x": 1}}),
            "The property $x is not allowed. 'pio_' is a reserved name prefix.",
        ),
        (
            json!({"event": "view", "entityType": "user", "entityId": "u", "properties": [1]}),
            "field properties must be a JSON object, found an array",
        ),
        (
            json!({"event": "view", "entityType": "user", "entityId": "u", "eventTime": "noon"}),
            "Fail to extract eventTime noon",
        ),
        (
            json!({"event": "view", "entityType": "user", "entityId": "u".repeat(600)}),
            "field entityId is longer than 512 bytes",
        ),
    ];
    for (body, reason) in &cases {
        assert_eq!(post(&body.to_string()), (400, json!({"message": reason})), "{body}");
    }
    let (status, body) = post("{\"event\": ");
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().starts_with("malformed JSON"), "{body}");
    let (status, _) =
        http_raw(s.addr, "POST", &format!("/events.json?accessKey={key}"), Some(&vec![b' '; 200_000]), &[]);
    assert_eq!(status, 413);
    let too_many = Value::Array(vec![good.clone(); 51]).to_string();
    let (status, body) = s.call("POST", &format!("/batch/events.json?accessKey={key}"), Some(&too_many));
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("Batch request must have less than or equal to 50 events"))
    );
    assert_eq!(
        s.call("POST", "/events.json", Some(&good.to_string())),
        (401, json!({"message": "Missing accessKey."}))
    );
    assert_eq!(
        s.call("POST", "/events.json?accessKey=wrong", Some(&good.to_string())),
        (401, json!({"message": "Invalid accessKey."}))
    );
    assert_eq!(s.call("POST", &format!("/events.json?accessKey={key}&channel=c"), Some(&good.to_string())).0, 401);
    let buy = json!({"event": "buy", "entityType": "user", "entityId": "u1", "targetEntityType": "item", "targetEntityId": "i"});
    let (status, body) = s.call("POST", &format!("/events.json?accessKey={limited}"), Some(&buy.to_string()));
    assert_eq!((status, body["message"].as_str()), (403, Some("buy events are not allowed")));
    assert_eq!(s.call("DELETE", &format!("/events/x.json?accessKey={key}"), None).0, 501);
    // A deleted app's key stops working once the server reloads the apps
    // (it checks every half second).
    let reloads = |s: &EventServer| s.log().matches("reloaded apps and access keys").count();
    let before = reloads(&s);
    let out = ur(&["app", "delete", "shop", "--root", root.to_str().unwrap()]);
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while reloads(&s) == before {
        assert!(Instant::now() < deadline, "the server did not reload the apps: {}", s.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(post(&good.to_string()).0, 401);
    assert_eq!(s.call("GET", "/", None).0, 200, "the server stays up");
    s.stop();
    assert!(stored(&root, "shop").is_empty());
}

/// `kill -9` under load, 12 times: every acknowledged event is stored
/// exactly once, no closed file has a partial line, ur-train rejects none.
#[test]
fn kill_9_under_load_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("events");
    let key = new_app(&root, "load");
    let mut acknowledged: Vec<String> = Vec::new();
    let mut sent = 0usize;
    for round in 0..12 {
        let s = EventServer::start(&root, &["--roll-seconds", "1"]);
        let addr = s.addr;
        let stop = Instant::now() + Duration::from_millis(200 + 40 * round as u64);
        let clients: Vec<_> = (0..8)
            .map(|c| {
                let key = key.clone();
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    let mut n = 0;
                    let mut attempted = 0;
                    while Instant::now() < stop + Duration::from_millis(400) {
                        let ids: Vec<String> = (0..if c % 2 == 0 { 1 } else { 20 }).map(|i| format!("r{round}-c{c}-{n}-{i}")).collect();
                        n += 1;
                        attempted += ids.len();
                        let evs: Vec<Value> = ids
                            .iter()
                            .map(|u| json!({"event": "view", "entityType": "user", "entityId": u, "targetEntityType": "item", "targetEntityId": format!("i{}", n % 7)}))
                            .collect();
                        let r = std::panic::catch_unwind(|| {
                            if evs.len() == 1 {
                                http(addr, "POST", &format!("/events.json?accessKey={key}"), Some(&evs[0].to_string()), &[])
                            } else {
                                let b = Value::Array(evs.clone()).to_string();
                                http(addr, "POST", &format!("/batch/events.json?accessKey={key}"), Some(&b), &[])
                            }
                        });
                        match r {
                            Ok((201, _)) => acked.extend(ids),
                            Ok((200, body)) => {
                                for (u, st) in ids.iter().zip(body.as_array().into_iter().flatten()) {
                                    if st["status"] == 201 {
                                        acked.push(u.clone());
                                    }
                                }
                            }
                            _ => break,
                        }
                    }
                    (acked, attempted)
                })
            })
            .collect();
        std::thread::sleep(stop.saturating_duration_since(Instant::now()));
        s.kill9();
        for c in clients {
            let (acked, attempted) = c.join().unwrap();
            acknowledged.extend(acked);
            sent += attempted;
        }
        // The restart closes the dead server's files.
        EventServer::start(&root, &[]).stop();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for e in stored(&root, "load") {
            *seen.entry(e["entityId"].as_str().unwrap().to_string()).or_default() += 1;
        }
        assert!(seen.values().all(|&n| n == 1), "an event stored twice");
        for a in &acknowledged {
            assert_eq!(seen.get(a), Some(&1), "round {round}: acknowledged {a} lost");
        }
        assert!(files(&root.join("load")).iter().all(|f| !f.file_name().unwrap().to_string_lossy().starts_with('_')));
    }
    assert!(acknowledged.len() > 1000, "too little load: {} acknowledged of {sent}", acknowledged.len());
    let model = dir.path().join("model");
    let engine =
        engine_file(dir.path(), json!({"appName": "load", "indexName": "x", "indicators": [{"name": "view"}]}));
    let err = train_ok(&engine, &root.join("load"), &model, &["--max-rejected", "0"]);
    assert!(err.contains(" rejected=0 "), "{err}");
}

/// The UR's handmade test through the event server: POST the events,
/// train from the written partitions, get the UR's expected model.
#[test]
fn handmade_events_posted_then_trained_give_the_expected_model() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("events");
    let key = new_app(&root, "handmade");
    let s = EventServer::start(&root, &[]);
    let lines: Vec<Value> =
        std::fs::read_to_string(handmade_events()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (singles, batched) = lines.split_at(9);
    for e in singles {
        let (status, body) = s.call("POST", &format!("/events.json?accessKey={key}"), Some(&e.to_string()));
        assert_eq!(status, 201, "{e}: {body}");
    }
    for chunk in batched.chunks(50) {
        let body = Value::Array(chunk.to_vec()).to_string();
        let (status, r) = s.call("POST", &format!("/batch/events.json?accessKey={key}"), Some(&body));
        assert_eq!(status, 200);
        assert!(r.as_array().unwrap().iter().all(|x| x["status"] == 201), "{r}");
    }
    s.stop();
    assert_eq!(stored(&root, "handmade").len(), lines.len());
    let model = dir.path().join("model");
    train_ok(&handmade_engine(), &root.join("handmade"), &model, &["--now", HANDMADE_NOW, "--workers", "2"]);
    assert_is_the_expected_handmade_model(&model);
}

/// `ur import` then `ur export`: the handmade events go in like `pio
/// import`, come out like `pio export`, and train to the expected model;
/// one bad line with `--max-rejected 0` imports nothing.
#[test]
fn import_then_export_then_train() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("events");
    let r = root.to_str().unwrap();
    new_app(&root, "handmade");
    let bad = dir.path().join("bad.jsonl");
    let mut text = std::fs::read_to_string(handmade_events()).unwrap();
    text.push_str("{\"event\":\"$fly\",\"entityType\":\"user\",\"entityId\":\"u\"}\n");
    std::fs::write(&bad, &text).unwrap();
    let out = ur(&["import", "--app", "handmade", bad.to_str().unwrap(), "--root", r]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("unsupported reserved event name"), "{}", stderr(&out));
    assert!(stored(&root, "handmade").is_empty());
    let out = ur(&["import", "--app", "handmade", bad.to_str().unwrap(), "--root", r, "--max-rejected", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("imported 119 of 120 lines"), "{}", stderr(&out));
    let exported = dir.path().join("export");
    let out = ur(&["export", "--app", "handmade", "--output", exported.to_str().unwrap(), "--root", r]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(exported.join("_SUCCESS").exists());
    let out = ur(&["export", "--app", "handmade", "--output", exported.to_str().unwrap(), "--root", r]);
    assert_eq!(out.status.code(), Some(2), "an existing output is refused");
    let model = dir.path().join("model");
    train_ok(&handmade_engine(), &exported, &model, &["--now", HANDMADE_NOW, "--workers", "2"]);
    assert_is_the_expected_handmade_model(&model);
}
