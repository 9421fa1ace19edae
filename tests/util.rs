//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const HANDMADE_NOW: &str = "2026-01-15T12:00:00Z";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The UCI Online Retail log as PIO events, one partition per month
/// (`data/online-retail`, CC BY 4.0: see its README).
pub fn online_retail() -> PathBuf {
    repo().join("data/online-retail")
}

pub fn handmade_events() -> PathBuf {
    repo().join("data/handmade/events.jsonl")
}

pub fn handmade_engine() -> PathBuf {
    repo().join("jobs/handmade.json")
}

/// Runs `ur-train` with arguments; never shows a progress bar.
pub fn ur_train<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_ur-train"))
        .args(args)
        .arg("--no-progress")
        .env_remove("RUST_LOG")
        .output()
        .expect("ur-train runs")
}

/// `ur-train` arguments: engine, input, output, then `extra`.
pub fn train_args(engine: &Path, input: &Path, output: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--engine".into(),
        engine.display().to_string(),
        "--input".into(),
        input.display().to_string(),
        "--output".into(),
        output.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Trains and asserts success; returns the stderr text.
pub fn train_ok(engine: &Path, input: &Path, output: &Path, extra: &[&str]) -> String {
    let args = train_args(engine, input, output, extra);
    let out = ur_train(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "ur-train {args:?} failed: {stderr}");
    stderr
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The documents of a model, parsed, in file order.
pub fn documents(model: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(model.join("items.jsonl")).expect("items.jsonl");
    text.lines()
        .map(|l| match serde_json::from_str(l).expect("a JSON line") {
            serde_json::Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        })
        .collect()
}

pub fn manifest(model: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(model.join("manifest.json")).expect("manifest")).expect("JSON")
}

/// Writes lines to a file.
pub fn write_lines(path: &Path, lines: &[String]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// A PIO usage event line.
pub fn usage(event: &str, user: &str, item: &str, time: &str) -> String {
    serde_json::json!({
        "event": event, "entityType": "user", "entityId": user,
        "targetEntityType": "item", "targetEntityId": item,
        "properties": {}, "eventTime": time,
    })
    .to_string()
}

/// A PIO property event line on an item.
pub fn item_event(event: &str, item: &str, properties: serde_json::Value, time: &str) -> String {
    serde_json::json!({
        "event": event, "entityType": "item", "entityId": item,
        "properties": properties, "eventTime": time,
    })
    .to_string()
}

/// A minimal engine.json with the given algorithm params.
pub fn engine_file(dir: &Path, params: serde_json::Value) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("engine.json");
    let engine = serde_json::json!({
        "id": "test", "engineFactory": "com.actionml.RecommendationEngine",
        "datasource": {"params": {"appName": "test"}},
        "algorithms": [{"name": "ur", "params": params}],
    });
    std::fs::write(&path, serde_json::to_string_pretty(&engine).unwrap()).unwrap();
    path
}

/// A deterministic pseudo-random sequence for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        ur::hash::mix(self.0)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A skewed choice in 0..n (small values more likely).
    pub fn skewed(&mut self, n: u64) -> u64 {
        let a = self.below(n);
        let b = self.below(n);
        a.min(b)
    }
}

/// Library options for a run in this process (the follower's tests): two
/// workers, the default limits, the model into `output`.
pub fn train_options(
    engine: &Path,
    input: &Path,
    output: &Path,
    state: Option<&Path>,
    now: &str,
) -> ur::train::TrainOptions {
    ur::train::TrainOptions {
        engine: ur::config::Engine::load(engine).unwrap().engine,
        engine_warnings: Vec::new(),
        input: input.display().to_string(),
        output: Some(output.display().to_string()),
        es: None,
        now: ur::time::parse_iso8601(now),
        workers: 2,
        max_rejected: ur::stats::RejectLimit::parse("1%").unwrap(),
        show_rejected: 10,
        split_bytes: 64 << 20,
        max_line_bytes: ur::source::lines::DEFAULT_MAX_LINE_BYTES,
        cluster: None,
        progress: false,
        state: state.map(|s| s.display().to_string()),
        full: false,
    }
}

/// Reads a child's stderr to its end on a thread, so a busy child never
/// blocks on a full pipe; join the handle (after the child exits) for the text.
pub fn drain_stderr(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    use std::io::Read;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    })
}

/// Retries `attempt` until it gives a value; fails naming `what` after
/// `within`. For conditions only the other side knows (a connection
/// accepted, closed, counted), where a sleep would be a guess.
pub fn eventually<T>(what: &str, within: std::time::Duration, mut attempt: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = attempt() {
            return v;
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Reads `lines` (a child's log) into `log` until one contains `text`;
/// fails if the log ends first.
pub fn read_until(lines: &mut impl Iterator<Item = String>, log: &mut String, text: &str) {
    for line in lines {
        log.push_str(&line);
        log.push('\n');
        if line.contains(text) {
            return;
        }
    }
    panic!("the run ended without logging {text:?}: {log}")
}
