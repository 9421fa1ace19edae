//! Event load for `ur events`, from its own process: N clients on
//! keep-alive connections post events (one per request to `/events.json`,
//! or `--batch` per request to `/batch/events.json`) for `--seconds`, and
//! the acknowledgement latency distribution and events/s are printed.
//! Every event is of a new user. As fast as the server answers (closed
//! loop), or `--rate N` events/s in all, spread over the clients, each
//! request sent at its time whatever the answers before (open loop: a late
//! request's latency counts from when it was due).
//!
//! ```text
//! cargo run --release --example events-load -- --addr 127.0.0.1:7070 --key KEY \
//!     --clients 16 --batch 50 --seconds 10 [--rate 5000]
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "http_conn.rs"]
mod http_conn;
use http_conn::{Conn, percentile};

fn main() {
    let mut addr = "127.0.0.1:7070".to_string();
    let mut key = String::new();
    let (mut clients, mut batch, mut seconds, mut rate) = (1usize, 1usize, 10u64, 0f64);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = value,
            "--key" => key = value,
            "--clients" => clients = value.parse().expect("--clients N"),
            "--batch" => batch = value.parse().expect("--batch N"),
            "--seconds" => seconds = value.parse().expect("--seconds N"),
            "--rate" => rate = value.parse().expect("--rate EVENTS_PER_SECOND"),
            other => panic!("unknown flag {other}"),
        }
    }
    let errors = Arc::new(AtomicU64::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let path = if batch == 1 {
        format!("/events.json?accessKey={key}")
    } else {
        format!("/batch/events.json?accessKey={key}")
    };
    // Each client's requests this far apart (open loop), or none (closed).
    let every = (rate > 0.0).then(|| Duration::from_secs_f64(clients as f64 * batch as f64 / rate));
    let run = std::process::id();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (addr, path, errors, events, latencies) =
                (addr.clone(), path.clone(), errors.clone(), events.clone(), latencies.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::open(&addr);
                let mut mine = Vec::new();
                let mut n = 0u64;
                // Clients start spread over one interval.
                let mut due = every.map(|e| started + e.mul_f64(c as f64 / clients as f64));
                while Instant::now() < deadline {
                    if let Some(at) = due {
                        if at >= deadline {
                            break;
                        }
                        std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    }
                    let one = |i: u64| {
                        format!(
                            r#"{{"event":"view","entityType":"user","entityId":"u-{run}-{c}-{i}","targetEntityType":"item","targetEntityId":"i-{}","properties":{{}},"eventTime":"2026-01-15T12:00:00.000+0000"}}"#,
                            i % 1000
                        )
                    };
                    let body = if batch == 1 {
                        one(n)
                    } else {
                        format!("[{}]", (0..batch as u64).map(|i| one(n + i)).collect::<Vec<_>>().join(","))
                    };
                    n += batch as u64;
                    let t = due.unwrap_or_else(Instant::now);
                    due = due.zip(every).map(|(at, every)| at + every);
                    match conn.post(&path, &body) {
                        Ok(201 | 200) => {
                            mine.push(t.elapsed().as_secs_f64() * 1000.0);
                            events.fetch_add(batch as u64, Ordering::Relaxed);
                        }
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
        "clients {clients} batch {batch}{}: {} requests, {} errors in {elapsed:.1} s = {:.0} events/s; ack latency ms p50 {:.2} p99 {:.2} max {:.2}",
        if rate > 0.0 { format!(" rate {rate}/s") } else { String::new() },
        l.len(),
        errors.load(Ordering::Relaxed),
        events.load(Ordering::Relaxed) as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        l.last().copied().unwrap_or(f64::NAN)
    );
}
