//! Reading event lines, measured alone: ur's scanner (`parse_event`) against
//! serde_json, simd-json (tape) and sonic-rs (Deserialize and `get_many`) on
//! the same lines, with `str::from_utf8` and one memchr pass over each line
//! as floors, and ur's `scan_event` (the members only) with and without its
//! fast path for PIO's usual member order. The lines are decompressed into
//! memory once; each round runs every variant over all of them in turn
//! (interleaved), and the median CPU time of the thread is reported. A second
//! mode checks which parsers accept and reject what serde_json does on lines
//! near valid events.
//!
//! ```text
//! cargo run --release --features bench-json --example scan -- /work/bench-data/ur-large 2000000 5
//! cargo run --release --features bench-json --example scan -- --agree
//! ```
//!
//! The competitors read the members as optional strings (a wrong type is an
//! error there, a [`ur::source::event::Reject`] here) and do not check for
//! duplicate members; `eventTime` is parsed with ur's parser for all.

use std::borrow::Cow;
use std::io::Read;
use ur::source::event::parse_event;
use ur::time::parse_iso8601;

type Lines = [(usize, usize)];

/// One way of reading all the lines; returns a checksum.
type Reader = fn(&[u8], &Lines) -> u64;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--agree") {
        return agree();
    }
    let dir = args.first().map_or("/work/bench-data/ur-large", String::as_str);
    let max: usize = args.get(1).map_or(2_000_000, |s| s.parse().expect("a number of lines"));
    let rounds: usize = args.get(2).map_or(5, |s| s.parse().expect("a number of rounds"));
    let (buf, lines) = load(dir, max);
    eprintln!("{} lines, {} MB", lines.len(), buf.len() >> 20);
    let variants: [(&str, Reader); 9] = [
        ("str::from_utf8", utf8),
        ("memchr (floor)", memchr_pass),
        ("ur parse_event", ur_scanner),
        ("ur scan_event", ur_members),
        ("ur scan_event, general path only", ur_members_general),
        ("serde_json", serde),
        ("simd-json tape", simd_tape),
        ("sonic-rs serde", sonic),
        ("sonic-rs get_many", sonic_many),
    ];
    let mut times = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in variants.iter().enumerate() {
            let start = cpu();
            std::hint::black_box(f(&buf, &lines));
            times[i].push(cpu() - start);
        }
    }
    println!("| variant | median CPU s | ns/line |");
    println!("|---|---:|---:|");
    for ((name, _), t) in variants.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        let m = t[t.len() / 2];
        println!("| {name} | {m:.3} | {:.1} |", m * 1e9 / lines.len() as f64);
    }
}

/// CPU time (user + system) of this thread, in seconds.
fn cpu() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut u);
        u
    };
    let secs = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Up to `max` lines of the `.gz` partitions under `dir`, in path order: one
/// buffer and the (start, end) of each line.
fn load(dir: &str, max: usize) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("the input directory")
        .map(|e| e.expect("a directory entry").path().join("events.jsonl.gz"))
        .filter(|p| p.exists())
        .collect();
    files.sort();
    let (mut buf, mut lines) = (Vec::new(), Vec::new());
    for f in files {
        let start = buf.len();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(f).expect("a partition"))
            .read_to_end(&mut buf)
            .expect("gzip");
        let mut line_start = start;
        for nl in memchr::memchr_iter(b'\n', &buf[start..]) {
            lines.push((line_start, start + nl));
            line_start = start + nl + 1;
            if lines.len() == max {
                return (buf, lines);
            }
        }
    }
    (buf, lines)
}

fn utf8(buf: &[u8], lines: &Lines) -> u64 {
    lines.iter().map(|&(s, e)| std::str::from_utf8(&buf[s..e]).map_or(0, |t| t.len() as u64)).sum()
}

/// Every byte looked at once, by a SIMD search for a byte the lines lack.
fn memchr_pass(buf: &[u8], lines: &Lines) -> u64 {
    lines.iter().map(|&(s, e)| memchr::memchr(b'\\', &buf[s..e]).map_or(1, |i| i as u64)).sum()
}

/// A checksum of what was read, so nothing is optimised away.
fn sum(strings: [Option<&str>; 6], properties: Option<&str>, time: Option<&str>) -> u64 {
    let lengths: usize = strings.iter().chain([&properties]).map(|s| s.map_or(0, str::len)).sum();
    lengths as u64 + time.and_then(parse_iso8601).unwrap_or(0) as u64
}

/// The members as found (no eventTime parse, no checks of the event):
/// with the fast path for PIO's usual member order, and without it.
fn ur_members(buf: &[u8], lines: &Lines) -> u64 {
    members(buf, lines, ur::source::json::scan_event)
}

fn ur_members_general(buf: &[u8], lines: &Lines) -> u64 {
    members(buf, lines, ur::source::json::scan_event_general)
}

fn members(buf: &[u8], lines: &Lines, scan: fn(&[u8]) -> Result<ur::source::json::EventMembers<'_>, String>) -> u64 {
    let mut n = 0u64;
    for &(s, e) in lines {
        if let Ok(m) = scan(&buf[s..e]) {
            n += m.properties.map_or(1, |p| p.len() as u64) + m.event.is_some() as u64;
        }
    }
    n
}

fn ur_scanner(buf: &[u8], lines: &Lines) -> u64 {
    let mut n = 0;
    for &(s, e) in lines {
        if let Ok(ev) = parse_event(&buf[s..e]) {
            let ids = [Some(&*ev.event), Some(&*ev.entity_type), Some(&*ev.entity_id)];
            let targets = [ev.target_entity_type.as_deref(), ev.target_entity_id.as_deref(), None];
            n +=
                sum([ids[0], ids[1], ids[2], targets[0], targets[1], None], ev.properties, None) + ev.event_time as u64;
        }
    }
    n
}

/// The PIO event's members, borrowed; `P` is each parser's raw value for
/// `properties`.
#[derive(serde::Deserialize)]
struct BorrowedEvent<'a, P> {
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "entityType")]
    entity_type: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "entityId")]
    entity_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "targetEntityType")]
    target_entity_type: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "targetEntityId")]
    target_entity_id: Option<Cow<'a, str>>,
    properties: Option<P>,
    #[serde(borrow, rename = "eventTime")]
    event_time: Option<Cow<'a, str>>,
}

type SerdeEvent<'a> = BorrowedEvent<'a, &'a serde_json::value::RawValue>;
type SonicEvent<'a> = BorrowedEvent<'a, sonic_rs::LazyValue<'a>>;

fn serde(buf: &[u8], lines: &Lines) -> u64 {
    let mut n = 0;
    for &(s, e) in lines {
        if let Ok(ev) = serde_json::from_slice::<SerdeEvent>(&buf[s..e]) {
            let f = [&ev.event, &ev.entity_type, &ev.entity_id, &ev.target_entity_type, &ev.target_entity_id];
            let f = f.map(|x| x.as_deref());
            n += sum([f[0], f[1], f[2], f[3], f[4], None], ev.properties.map(|r| r.get()), ev.event_time.as_deref());
        }
    }
    n
}

fn sonic(buf: &[u8], lines: &Lines) -> u64 {
    let mut n = 0;
    for &(s, e) in lines {
        if let Ok(ev) = sonic_rs::from_slice::<SonicEvent>(&buf[s..e]) {
            let f = [&ev.event, &ev.entity_type, &ev.entity_id, &ev.target_entity_type, &ev.target_entity_id];
            let f = f.map(|x| x.as_deref());
            let properties = ev.properties.as_ref().map(|r| r.as_raw_str());
            n += sum([f[0], f[1], f[2], f[3], f[4], None], properties, ev.event_time.as_deref());
        }
    }
    n
}

const MEMBERS: [&str; 7] =
    ["event", "entityType", "entityId", "targetEntityType", "targetEntityId", "properties", "eventTime"];

fn sonic_many(buf: &[u8], lines: &Lines) -> u64 {
    use sonic_rs::JsonValueTrait;
    let mut tree = sonic_rs::PointerTree::new();
    for k in MEMBERS {
        tree.add_path(&[k]);
    }
    let mut n = 0;
    for &(s, e) in lines {
        if let Ok(v) = sonic_rs::get_many(&buf[s..e], &tree) {
            let f = |i: usize| v[i].as_ref().and_then(|x| x.as_str());
            let properties = v[5].as_ref().map(|x| x.as_raw_str());
            n += sum([f(0), f(1), f(2), f(3), f(4), None], properties, f(6));
        }
    }
    n
}

/// simd-json rewrites its input, so each line is copied first; `properties`
/// is only checked to be an object (the tape has no raw text).
fn simd_tape(buf: &[u8], lines: &Lines) -> u64 {
    use simd_json::prelude::*;
    let mut buffers = simd_json::Buffers::default();
    let mut copy = Vec::new();
    let mut n = 0;
    for &(s, e) in lines {
        copy.clear();
        copy.extend_from_slice(&buf[s..e]);
        if let Ok(tape) = simd_json::to_tape_with_buffers(&mut copy, &mut buffers) {
            let v = tape.as_value();
            let f = MEMBERS.map(|k| v.get_str(k));
            let object = v.get("properties").is_some_and(|p| p.is_object());
            n += sum([f[0], f[1], f[2], f[3], f[4], None], None, f[6]) + object as u64;
        }
    }
    n
}

/// Lines near valid events (the mutations of `scanner_agrees_with_serde_json`):
/// how often each parser accepts what serde_json rejects or the reverse.
fn agree() {
    let seeds = [
        r#"{"event": "purchase", "entityType": "user", "entityId": "u1", "targetEntityType": "item", "targetEntityId": "Iphone 6", "properties": {"a": [1, -2.5e-3, true, null, {"x": "y\n"}]}, "eventTime": "2026-01-15T12:00:00.000Z"}"#,
        r#"{"event":"$set","entityType":"item","entityId":"caf\u00e9 \"x\"","properties":{"categories":["a","b"],"n":0},"eventTime":"2026-01-15T12:00:00Z","tags":[]}"#,
        r#"{"eventId":"e","event":"view","entityType":"user","entityId":"x","targetEntityId":null,"properties":null,"eventTime":"x"}"#,
    ];
    let alphabet = b"{}[]\":,\\ u0123456789.eE+-tfnrl\"ab\x01\xc3\xa9";
    let mut state = 0x1234_5678_u64;
    let mut next = |n: usize| {
        state = ur::hash::mix(state.wrapping_add(0x9e37_79b9_7f4a_7c15));
        (state % n as u64) as usize
    };
    let mut tree = sonic_rs::PointerTree::new();
    tree.add_path(&["event"]);
    let (mut valid, mut accepted) = (0, 0);
    let mut disagree = [0; 4];
    for round in 0..40_000 {
        let mut line = seeds[round % seeds.len()].as_bytes().to_vec();
        for _ in 0..1 + next(3) {
            let pos = next(line.len() + 1);
            match next(3) {
                0 if pos < line.len() => {
                    line.remove(pos);
                }
                1 => line.insert(pos, alphabet[next(alphabet.len())]),
                _ if pos < line.len() => line[pos] = alphabet[next(alphabet.len())],
                _ => {}
            }
        }
        if std::str::from_utf8(&line).is_err() {
            continue;
        }
        valid += 1;
        let serde = serde_json::from_slice::<SerdeEvent>(&line).is_ok();
        accepted += serde as usize;
        let others = [
            ur::source::json::scan_event(&line).is_ok(),
            simd_json::to_tape(&mut line.clone()).is_ok(),
            sonic_rs::from_slice::<SonicEvent>(&line).is_ok(),
            sonic_rs::get_many(line.as_slice(), &tree).is_ok(),
        ];
        for (d, other) in disagree.iter_mut().zip(others) {
            *d += (other != serde) as usize;
        }
    }
    println!("{valid} UTF-8 lines, serde_json accepts {accepted}; lines where a parser disagrees with it:");
    for (name, d) in ["ur scanner", "simd-json tape", "sonic-rs serde", "sonic-rs get_many"].iter().zip(disagree) {
        println!("  {name}: {d}");
    }
}
