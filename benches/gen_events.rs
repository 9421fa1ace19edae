//! Synthetic e-commerce events for benchmarks, in PIO event JSON.
//!
//! Shape: Zipf item popularity inside taste clusters (so items really
//! co-occur), log-normal user activity, a view → cart → purchase funnel, a
//! few heavy users (bots, wholesalers) far past the downsampling caps, and
//! one `$set` of categories per item. Deterministic for a seed.
//!
//! ```text
//! cargo run --release --example gen-events -- --events 10000000 --out bench-data/10m --files 16
//! ```

use std::io::Write;

struct Args {
    events: u64,
    out: std::path::PathBuf,
    files: usize,
    gzip: bool,
    seed: u64,
}

fn parse_args() -> Args {
    let mut args = Args { events: 1_000_000, out: "bench-data/events".into(), files: 8, gzip: false, seed: 1 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--events" => args.events = value().parse().unwrap_or_else(|_| usage("--events N")),
            "--out" => args.out = value().into(),
            "--files" => args.files = value().parse().unwrap_or_else(|_| usage("--files N")),
            "--seed" => args.seed = value().parse().unwrap_or_else(|_| usage("--seed N")),
            "--gzip" => args.gzip = true,
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    args
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("error: {msg}");
    }
    eprintln!("usage: gen-events [--events N] [--out DIR] [--files N] [--gzip] [--seed N]");
    std::process::exit(if msg.is_empty() { 0 } else { 2 });
}

/// SplitMix64: small, fast, good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit().max(1e-300), self.unit());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Zipf(s) over 0..n by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for k in 1..=n {
            acc += 1.0 / (k as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }
    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

const NOW_SECS: i64 = 1_768_478_400; // 2026-01-15T12:00:00Z
const SPAN_SECS: i64 = 180 * 86_400;

fn main() {
    let args = parse_args();
    let mut rng = Rng(args.seed);
    // About 40 events per user and 5 users per item.
    let users = (args.events / 40).max(10);
    let items = (users / 5).max(20) as usize;
    let clusters = (items / 250).max(4);
    let per_cluster = items / clusters;
    let global = Zipf::new(items, 1.05);
    let local = Zipf::new(per_cluster, 1.1);
    // Log-normal activity scaled to the requested total (heavy users on top).
    let sigma = 1.0f64;
    let mean_views = args.events as f64 / users as f64 / 1.35;
    let mu = mean_views.ln() - sigma * sigma / 2.0;

    std::fs::create_dir_all(&args.out).expect("create --out");
    let mut writers: Vec<Box<dyn Write>> = (0..args.files)
        .map(|p| {
            let dir = args.out.join(format!("part={p:03}"));
            std::fs::create_dir_all(&dir).expect("create partition");
            let name = if args.gzip { "events.jsonl.gz" } else { "events.jsonl" };
            let file =
                std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join(name)).expect("create"));
            if args.gzip {
                Box::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast())) as Box<dyn Write>
            } else {
                Box::new(file)
            }
        })
        .collect();

    let mut written = 0u64;
    let mut line = String::with_capacity(256);
    let emit = |w: &mut dyn Write, line: &str, written: &mut u64| {
        w.write_all(line.as_bytes()).expect("write");
        *written += 1;
    };
    // Item catalogue: one $set per item.
    for i in 0..items {
        line.clear();
        let time = format_time(NOW_SECS - SPAN_SECS - 86_400);
        let c = i / per_cluster.max(1);
        line.push_str(&format!(
            "{{\"event\":\"$set\",\"entityType\":\"item\",\"entityId\":\"item-{i}\",\"properties\":{{\"categories\":[\"cat-{c}\",\"dept-{}\"]}},\"eventTime\":\"{time}\"}}\n",
            c % 17
        ));
        emit(&mut *writers[i % args.files], &line, &mut written);
    }
    let mut u = 0u64;
    while written < args.events {
        let heavy = u % 2_000 == 1_999;
        let views =
            if heavy { (mean_views * 60.0) as u64 } else { (mu + sigma * rng.normal()).exp().round().max(1.0) as u64 };
        let cluster = rng.below(clusters as u64) as usize;
        let w = &mut *writers[(u % args.files as u64) as usize];
        for _ in 0..views {
            let item =
                if rng.unit() < 0.7 { cluster * per_cluster + local.sample(&mut rng) } else { global.sample(&mut rng) };
            let t = NOW_SECS - rng.below(SPAN_SECS as u64) as i64;
            for (event, p) in [("view", 1.0), ("cart", 0.25), ("purchase", 0.4)] {
                if rng.unit() >= p {
                    break;
                }
                line.clear();
                line.push_str(&format!(
                    "{{\"event\":\"{event}\",\"entityType\":\"user\",\"entityId\":\"user-{u}\",\"targetEntityType\":\"item\",\"targetEntityId\":\"item-{item}\",\"properties\":{{}},\"eventTime\":\"{}\"}}\n",
                    format_time(t)
                ));
                emit(w, &line, &mut written);
            }
            if written >= args.events {
                break;
            }
        }
        u += 1;
    }
    for w in &mut writers {
        w.flush().expect("flush");
    }
    drop(writers);
    eprintln!("{written} events, {u} users, {items} items in {} files under {}", args.files, args.out.display());
}

fn format_time(secs: i64) -> String {
    ur::time::format_iso8601(secs * 1000)
}
