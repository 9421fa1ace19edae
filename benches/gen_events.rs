//! Synthetic e-commerce events for benchmarks, in PIO event JSON.
//!
//! Shape: Zipf item popularity inside taste clusters (so items really
//! co-occur), log-normal user activity, a view → cart → purchase funnel, a
//! few heavy users (bots, wholesalers) far past the downsampling caps, and
//! one `$set` of categories per item. Deterministic for a seed.
//!
//! ```text
//! cargo run --release --example gen-events -- --events 10000000 --out bench-data/10m --files 16
//! cargo run --release --example gen-events -- --shape ur-large --out bench-data/ur-large
//! ```
//!
//! `--shape ur-large` is the shape of the UR's "large" benchmark: 14.4M
//! events, 3.6M users, 117k items, `view` and `purchase` only, no item
//! properties, 16 gzip partitions.

use std::io::Write;

struct Args {
    events: u64,
    out: std::path::PathBuf,
    files: usize,
    gzip: bool,
    seed: u64,
    /// Default: one per 40 events.
    users: Option<u64>,
    /// Default: one per 5 users.
    items: Option<usize>,
    /// The funnel: event names, each taken with its probability after the one before.
    funnel: Vec<(String, f64)>,
    /// One `$set` of categories per item.
    catalogue: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        events: 1_000_000,
        out: "bench-data/events".into(),
        files: 8,
        gzip: false,
        seed: 1,
        users: None,
        items: None,
        funnel: funnel("view,cart,purchase"),
        catalogue: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--events" => args.events = value().parse().unwrap_or_else(|_| usage("--events N")),
            "--out" => args.out = value().into(),
            "--files" => args.files = value().parse().unwrap_or_else(|_| usage("--files N")),
            "--seed" => args.seed = value().parse().unwrap_or_else(|_| usage("--seed N")),
            "--gzip" => args.gzip = true,
            "--users" => args.users = Some(value().parse().unwrap_or_else(|_| usage("--users N"))),
            "--items" => args.items = Some(value().parse().unwrap_or_else(|_| usage("--items N"))),
            "--events-named" => args.funnel = funnel(&value()),
            "--no-catalogue" => args.catalogue = false,
            "--shape" => match value().as_str() {
                "ur-large" => {
                    args.events = 14_400_000;
                    args.users = Some(3_800_000); // heavy users and rounding: 3.6M come out
                    args.items = Some(117_000);
                    args.funnel = funnel("view,purchase");
                    args.catalogue = false;
                    args.files = 16;
                    args.gzip = true;
                }
                _ => usage("--shape ur-large"),
            },
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
    eprintln!(
        "usage: gen-events [--events N] [--out DIR] [--files N] [--gzip] [--seed N] [--users N] [--items N]\n\
         \x20                 [--events-named view,cart,purchase] [--no-catalogue] [--shape ur-large]"
    );
    std::process::exit(if msg.is_empty() { 0 } else { 2 });
}

/// The funnel for `names`: the first always, each next one with a quarter
/// to 40% of the one before (view → cart 25%, cart → purchase 40%; view →
/// purchase 25% when there are two).
fn funnel(names: &str) -> Vec<(String, f64)> {
    let names: Vec<&str> = names.split(',').filter(|n| !n.is_empty()).collect();
    if names.is_empty() {
        usage("--events-named needs at least one name");
    }
    names
        .iter()
        .enumerate()
        .map(|(k, n)| {
            (
                n.to_string(),
                if k == 0 {
                    1.0
                } else if k == 1 {
                    0.25
                } else {
                    0.4
                },
            )
        })
        .collect()
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
    let users = args.users.unwrap_or(args.events / 40).max(10);
    let items = args.items.unwrap_or((users / 5) as usize).max(20);
    let clusters = (items / 250).max(4);
    let per_cluster = items / clusters;
    let global = Zipf::new(items, 1.05);
    let local = Zipf::new(per_cluster, 1.1);
    // Log-normal activity scaled to the requested total (heavy users on top).
    let sigma = 1.0f64;
    // Events per view: 1 + 0.25 + 0.1 for view → cart → purchase.
    let per_view: f64 = args
        .funnel
        .iter()
        .scan(1.0, |p, (_, q)| {
            *p *= q;
            Some(*p)
        })
        .sum();
    let mean_views = args.events as f64 / users as f64 / per_view;
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
    for i in (0..items).filter(|_| args.catalogue) {
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
            for (event, p) in &args.funnel {
                if rng.unit() >= *p {
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
