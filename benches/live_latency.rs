//! Event → visible in a query: posts one usage event of a fresh user to
//! `ur events --es-url` and polls the user's history exactly as a query
//! reads it (`Recommender::history`: the training's and the live document
//! in one `_mget`) until the item is there; prints p50/p99 over the samples.
//!
//! ```text
//! cargo run --release --example live-latency -- --addr 127.0.0.1:7070 --key KEY \
//!     --es http://127.0.0.1:9200 --engine jobs/handmade.json --samples 200
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use ur::es::{Es, EsConfig};
use ur::query::Recommender;
use ur::runtime::block_on;

fn main() {
    let (mut addr, mut key, mut es, mut engine, mut samples) =
        (String::from("127.0.0.1:7070"), String::new(), String::new(), String::new(), 200usize);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = value,
            "--key" => key = value,
            "--es" => es = value,
            "--engine" => engine = value,
            "--samples" => samples = value.parse().expect("--samples N"),
            other => panic!("unknown flag {other}"),
        }
    }
    let engine = ur::config::Engine::load(std::path::Path::new(&engine)).expect("engine").engine;
    let indicator = engine.indicators[0].name.clone();
    let es = block_on(Es::connect(&EsConfig::with_urls(&es).expect("--es"))).expect("Elasticsearch");
    let r = Recommender::new(es, engine);
    let run = std::process::id();
    let mut took = Vec::with_capacity(samples);
    let mut late = 0;
    for n in 0..samples {
        let (user, item) = (format!("probe-{run}-{n}"), format!("item-{}", n % 100));
        let body = format!(
            r#"{{"event":"{indicator}","entityType":"user","entityId":"{user}","targetEntityType":"item","targetEntityId":"{item}"}}"#
        );
        let start = Instant::now();
        assert_eq!(post(&addr, &format!("/events.json?accessKey={key}"), &body), 201);
        loop {
            let history = block_on(r.history(&user)).expect("history");
            let seen = history.and_then(|h| h.get(&indicator).cloned()).is_some_and(|v| v[0] == item.as_str());
            if seen {
                took.push(start.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                late += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if late > 3 {
            break;
        }
    }
    if took.is_empty() {
        println!("event → visible in a query: none of {late} events visible within 10 s");
        return;
    }
    took.sort_by(f64::total_cmp);
    let pct = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
    println!(
        "event → visible in a query: {} samples, ms p50 {:.1} p99 {:.1} max {:.1}; {late} not within 10 s",
        took.len(),
        pct(0.5),
        pct(0.99),
        took[took.len() - 1]
    );
}

/// One request on its own connection; the status.
fn post(addr: &str, path: &str, body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).expect("ur events");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}
