//! Query load for `ur serve`, from its own process: N clients on keep-alive
//! connections post queries to `/queries.json` until a request count or a
//! time limit, and the latency distribution is printed.
//!
//! ```text
//! cargo run --release --example query-load -- --addr 127.0.0.1:8000 --clients 16 \
//!     --requests 20000 --seconds 30 --users 1000 --items 500
//! ```
//! Queries alternate between `{"user": "user-N"}` and `{"item": "item-N"}`
//! for N below `--users` / `--items` (the ids of `gen-events`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "http_conn.rs"]
mod http_conn;
use http_conn::{Conn, percentile};

fn main() {
    let mut addr = "127.0.0.1:8000".to_string();
    let (mut clients, mut requests, mut seconds, mut users, mut items) = (1usize, 5000u64, 30u64, 1000u64, 500u64);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = value,
            "--clients" => clients = value.parse().expect("--clients N"),
            "--requests" => requests = value.parse().expect("--requests N"),
            "--seconds" => seconds = value.parse().expect("--seconds N"),
            "--users" => users = value.parse().expect("--users N"),
            "--items" => items = value.parse().expect("--items N"),
            other => panic!("unknown flag {other}"),
        }
    }
    let issued = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (addr, issued, errors, latencies) = (addr.clone(), issued.clone(), errors.clone(), latencies.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::open(&addr);
                let mut mine = Vec::new();
                loop {
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if n >= requests || Instant::now() > deadline {
                        break;
                    }
                    let k = n.wrapping_mul(2_654_435_761).wrapping_add(c as u64);
                    let body = if n % 2 == 0 {
                        format!(r#"{{"user": "user-{}"}}"#, k % users)
                    } else {
                        format!(r#"{{"item": "item-{}"}}"#, k % items)
                    };
                    let t = Instant::now();
                    match conn.post("/queries.json", &body) {
                        Ok(200) => mine.push(t.elapsed().as_secs_f64() * 1000.0),
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            conn = Conn::open(&addr);
                        }
                    }
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut l = std::mem::take(&mut *latencies.lock().unwrap());
    l.sort_by(f64::total_cmp);
    let pct = |p: f64| percentile(&l, p);
    println!(
        "clients {clients}: {} ok, {} errors in {elapsed:.1} s = {:.0} req/s; latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
        l.len(),
        errors.load(Ordering::Relaxed),
        l.len() as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        l.last().copied().unwrap_or(f64::NAN)
    );
}
