//! `ur serve` under hostile traffic, over real HTTP: slow-loris clients are
//! cut off, stalled bodies time out, load beyond the limits is shed with
//! 503 + Retry-After, SIGTERM is not held by a stalled client, oversized
//! and over-cap queries are refused with what is wrong, the server starts
//! while Elasticsearch is down, secrets stay out of `ps` and the log, and
//! (with the real Elasticsearch) a client's mistake is a 400 and an
//! upstream failure a generic 5xx with a request id.

use crate::elasticsearch::{PASSWORD, USER, dying_proxy, engine_named, es_args, pipe, server, train};
use crate::util::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `ur serve`, killed when dropped.
struct Serve {
    child: Child,
    addr: String,
    /// Its stderr, read on a thread (a full pipe would block the server).
    log: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `ur serve` with these Elasticsearch flags and serve flags; waits for the port.
fn start(engine: &Path, es: &[String], flags: &[&str]) -> Serve {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ur"))
        .args(["-v", "-e", engine.to_str().unwrap()])
        .args(es)
        .args(["serve", "--listen", &addr])
        .args(flags)
        .env_remove("ES_PASSWORD")
        .env_remove("ES_API_KEY")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Some(drain_stderr(&mut child));
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&addr).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "ur serve exited");
        assert!(Instant::now() < deadline, "ur serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Serve { child, addr, log }
}

/// Elasticsearch flags for a port where nothing listens.
fn es_down() -> Vec<String> {
    vec!["--es-url".into(), format!("http://127.0.0.1:{}", free_port())]
}

/// Sends raw bytes, reads the answer until the server closes (10 s at most).
fn raw(addr: &str, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

fn status_of(reply: &str) -> u16 {
    reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn query(addr: &str, body: &str) -> (u16, String) {
    let reply = raw(
        addr,
        format!(
            "POST /queries.json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    (status_of(&reply), reply)
}

/// A connection that sent a request's headers and part of its body, then stalls.
fn stalled_body(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"POST /queries.json HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"user\":").unwrap();
    s
}

#[test]
fn a_slow_loris_is_cut_off() {
    let serve = start(&handmade_engine(), &es_down(), &["--header-timeout-ms", "500"]);
    let mut s = TcpStream::connect(&serve.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /queries.json HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let _ = s.read(&mut buf); // EOF (or a reset) when the server gives up
    assert!(started.elapsed() < Duration::from_secs(3), "still open after {:?}", started.elapsed());
}

#[test]
fn a_stalled_body_times_out_within_the_deadline() {
    let serve = start(&handmade_engine(), &es_down(), &["--timeout-ms", "500"]);
    let mut s = stalled_body(&serve.addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut reply = vec![0u8; 1024];
    let n = s.read(&mut reply).unwrap_or(0);
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert_eq!(status_of(&reply), 408, "{reply}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn load_beyond_the_limits_is_shed_with_retry_after() {
    let serve = start(&handmade_engine(), &es_down(), &["--max-in-flight", "1", "--max-connections", "3"]);
    let _busy = stalled_body(&serve.addr);
    // Once the stalled request holds the one slot (until then a query fails on
    // Elasticsearch being down), the next query is shed.
    let (status, reply) = eventually("a query shed while one is in flight", Duration::from_secs(10), || {
        let (status, reply) = query(&serve.addr, r#"{"user": "u1"}"#);
        reply.contains("too many requests in progress").then_some((status, reply))
    });
    assert_eq!(status, 503, "{reply}");
    assert!(reply.to_ascii_lowercase().contains("retry-after: 1"), "{reply}");
    // Three connections held (one busy, two idle): the fourth is refused.
    // Retried while a closed connection (the queries') may still count.
    let reply = eventually("the fourth connection refused", Duration::from_secs(10), || {
        let _idle = [TcpStream::connect(&serve.addr).unwrap(), TcpStream::connect(&serve.addr).unwrap()];
        let reply = raw(&serve.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        reply.contains("too many clients").then_some(reply)
    });
    assert_eq!(status_of(&reply), 503, "{reply}");
    assert!(reply.contains("Retry-After"), "{reply}");
}

#[test]
fn sigterm_is_not_held_by_a_stalled_client() {
    let mut serve = start(
        &handmade_engine(),
        &es_down(),
        &["--timeout-ms", "60000", "--shutdown-timeout-ms", "1000", "--max-connections", "1"],
    );
    // The stalled client holds the one connection: a second is refused
    // (retried while start's probe connection may still count).
    let _stalled = eventually("the stalled client's connection accepted", Duration::from_secs(10), || {
        let stalled = stalled_body(&serve.addr);
        let reply = raw(&serve.addr, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        reply.contains("too many clients").then_some(stalled)
    });
    unsafe { libc::kill(serve.child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    while serve.child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(5), "ur serve still running 5 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(serve.child.try_wait().unwrap().unwrap().success());
}

#[test]
fn oversized_and_over_cap_queries_are_refused_with_the_cap() {
    let serve = start(&handmade_engine(), &es_down(), &[]);
    let ids = |n: usize| (0..n).map(|i| format!("item-{i}")).collect::<Vec<_>>();
    let (status, reply) = query(&serve.addr, &json!({ "blacklistItems": ids(100_000) }).to_string());
    assert_eq!(status, 413, "{reply}");
    assert!(reply.contains("--max-body-bytes"), "{reply}");
    let cases = [
        (json!({ "blacklistItems": ids(1001) }), "--max-blacklist"),
        (json!({ "itemSet": ids(8200) }), "itemSet has 8200, more than the 500 allowed (--max-item-set)"),
        (json!({ "num": 100_000 }), "--max-num"),
        (json!({ "num": 10, "from": 20_000 }), "--max-window"),
        (json!({ "user": "u".repeat(700) }), "user id has 700 bytes"),
    ];
    for (q, expected) in cases {
        let (status, reply) = query(&serve.addr, &q.to_string());
        assert_eq!(status, 400, "{reply}");
        assert!(reply.contains(expected), "{expected}: {reply}");
    }
    let (status, reply) = query(&serve.addr, "{not json");
    assert_eq!(status, 400, "{reply}");
}

#[test]
fn secrets_stay_out_of_ps_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "FileS3cret\n").unwrap();
    let port = free_port();
    let url = format!("http://elastic:UrlS3cret@127.0.0.1:{port}");
    let es = vec![
        "--es-url".into(),
        url.clone(),
        "--es-user".into(),
        "elastic".into(),
        "--es-password-file".into(),
        file.display().to_string(),
    ];
    let mut serve = start(&handmade_engine(), &es, &[]);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", serve.child.id())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("FileS3cret"));
    let (status, reply) = query(&serve.addr, r#"{"user": "u1"}"#);
    assert_eq!(status, 503, "{reply}");
    assert!(!reply.contains("S3cret") && !reply.contains("127.0.0.1"), "{reply}");
    unsafe { libc::kill(serve.child.id() as i32, libc::SIGTERM) };
    serve.child.wait().unwrap();
    let log = serve.log.take().unwrap().join().unwrap();
    assert!(log.contains("not reachable"), "{log}");
    assert!(!log.contains("S3cret"), "{log}");

    let out = Command::new(env!("CARGO_BIN_EXE_ur"))
        .args(["-e", handmade_engine().to_str().unwrap(), "--es-url", &url, "query", r#"{"user": "u1"}"#])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("http://***@127.0.0.1") && !err.contains("S3cret"), "{err}");
}

/// Forwards `listen` to `target` from now on.
fn forward(listener: TcpListener, target: String) {
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            let Ok(upstream) = TcpStream::connect(&target) else { break };
            let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            std::thread::spawn(move || pipe(client, upstream, None));
            std::thread::spawn(move || pipe(u2, c2, None));
        }
    });
}

#[test]
fn serve_starts_while_elasticsearch_is_down() {
    let es = server();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_named(dir.path(), "hm_late");
    assert!(train(&engine, &handmade_events(), &es.url, &[]).status.success());
    let port = free_port();
    let mut args = es_args(&format!("http://127.0.0.1:{port}"));
    args.truncate(4); // the password goes in a file
    let file = dir.path().join("pw");
    std::fs::write(&file, PASSWORD).unwrap();
    args.extend(["--es-password-file".into(), file.display().to_string()]);
    assert_eq!(args[3], USER);
    let serve = start(&engine, &args, &[]);
    let health = |addr: &str| raw(addr, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let reply = health(&serve.addr);
    assert_eq!(status_of(&reply), 503, "{reply}");
    assert!(reply.to_ascii_lowercase().contains("retry-after: 1"), "{reply}");
    assert_eq!(query(&serve.addr, r#"{"user": "u1"}"#).0, 503);

    forward(TcpListener::bind(("127.0.0.1", port)).unwrap(), es.url.trim_start_matches("http://").to_string());
    let started = Instant::now();
    while status_of(&health(&serve.addr)) != 200 {
        assert!(started.elapsed() < Duration::from_secs(20), "never became healthy");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, reply) = query(&serve.addr, r#"{"user": "u1"}"#);
    assert_eq!(status, 200, "{reply}");
    // Terse: no version, no index names.
    let reply = health(&serve.addr);
    assert!(reply.ends_with(r#"{"status":"ok"}"#), "{reply}");
}

#[test]
fn client_mistakes_are_400_and_upstream_failures_generic() {
    let es = server();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_named(dir.path(), "hm_hostile");
    assert!(train(&engine, &handmade_events(), &es.url, &[]).status.success());
    let serve = start(&engine, &es_args(&es.url), &[]);
    for q in [r#"{"user": ""}"#, r#"{"item": ""}"#, r#"{"blacklistItems": [""]}"#, r#"{"user": "u1", "item": ""}"#] {
        let (status, reply) = query(&serve.addr, q);
        assert_eq!(status, 200, "{q}: {reply}");
        assert!(reply.contains("itemScores"), "{q}: {reply}");
    }
    let (status, reply) = query(&serve.addr, &json!({ "user": "u".repeat(700) }).to_string());
    assert_eq!(status, 400, "{reply}");
    // Elasticsearch goes away: a generic 502 with a request id, no URL, no upstream text.
    let proxy = dying_proxy(&es.url, 20_000);
    let serve = start(&engine, &es_args(&proxy), &[]);
    let mut failed = None;
    for _ in 0..200 {
        let (status, reply) = query(&serve.addr, r#"{"user": "u1"}"#);
        if status != 200 {
            failed = Some((status, reply));
            break;
        }
    }
    let (status, reply) = failed.expect("the proxy died");
    assert_eq!(status, 502, "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.contains("requestId") && !body.contains("127.0.0.1") && !body.contains("http"), "{reply}");
}
