//! Resident training (`--follow`): updates of the model held in memory.
//! The library's `Follower` is driven tick by tick, with files added in
//! between, and its models are compared with full trainings.

use crate::incremental::{NOW, months, retail_engine};
use crate::util::*;
use std::path::Path;
use ur::stats::RejectLimit;
use ur::train::{Follower, TrainOptions};

fn options(engine: &Path, input: &Path, output: &Path, state: Option<&Path>) -> TrainOptions {
    train_options(engine, input, output, state, NOW)
}

fn full_training(engine: &Path, input: &Path, dir: &Path) -> Vec<u8> {
    let full = dir.join("full");
    train_ok(engine, input, &full, &["--now", NOW, "-q", "--workers", "3"]);
    std::fs::read(full.join("items.jsonl")).unwrap()
}

/// With `--drift 0` every update re-scores every row from counts kept up to
/// date by differences: the model a full training on the same files gives,
/// byte for byte, downsampling included (the retail engine's caps bite).
#[test]
fn updates_with_drift_zero_equal_full_training() {
    let dir = tempfile::tempdir().unwrap();
    let engine = retail_engine(dir.path());
    let input = dir.path().join("events");
    let model = dir.path().join("model");
    months(&input, &["2011-10", "2011-11", "2011-12"]);
    let opts = options(&engine, &input, &model, None);
    let mut follower = Follower::new(&opts, 0.0).unwrap();
    let first = follower.tick(&opts, false).unwrap().expect("the first tick trains");
    assert!(first.summary.update.is_none(), "the first tick is a training");
    assert!(follower.tick(&opts, false).unwrap().is_none(), "nothing new: nothing done");

    months(&input, &["2011-11", "2011-12"]);
    let update = follower.tick(&opts, false).unwrap().expect("a new month is an update");
    let stats = update.summary.update.clone().expect("update statistics");
    assert_eq!(update.summary.read.files, 1, "only the new month is read");
    assert!(stats.users_changed > 0 && stats.count_changes > 0, "{stats:?}");
    assert!(stats.full_rescore);
    assert!(
        std::fs::read(model.join("items.jsonl")).unwrap() == full_training(&engine, &input, dir.path()),
        "after one update the model differs from a full training"
    );

    months(&input, &[]);
    follower.tick(&opts, false).unwrap().expect("two new months");
    assert!(
        std::fs::read(model.join("items.jsonl")).unwrap() == full_training(&engine, &input, dir.path()),
        "after two updates the model differs from a full training"
    );
}

/// The state written from memory (a checkpoint) is the state a cron run
/// continues from: the next incremental run equals a full training.
#[test]
fn a_checkpoint_continues_with_cron_runs() {
    let dir = tempfile::tempdir().unwrap();
    let engine = retail_engine(dir.path());
    let input = dir.path().join("events");
    let (model, state) = (dir.path().join("model"), dir.path().join("state"));
    months(&input, &["2011-11", "2011-12"]);
    let opts = options(&engine, &input, &model, Some(&state));
    {
        let mut follower = Follower::new(&opts, 0.0).unwrap();
        follower.tick(&opts, false).unwrap().unwrap();
        // The follower holds the state: a cron run is refused.
        let out = ur_train(train_args(&engine, &input, &model, &["--state", state.to_str().unwrap(), "-q"]));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        months(&input, &["2011-12"]);
        let t = follower.tick(&opts, true).unwrap().unwrap();
        assert!(t.summary.update.is_some() && t.summary.state_bytes > 0);
    }
    months(&input, &[]);
    let out = ur_train(train_args(&engine, &input, &model, &["--state", state.to_str().unwrap(), "--now", NOW, "-q"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(manifest(&model)["input"]["files"], 1, "the checkpoint consumed months 1-12");
    assert!(std::fs::read(model.join("items.jsonl")).unwrap() == full_training(&engine, &input, dir.path()));
}

/// Correlator fields of each document, by item id.
fn correlators(model: &Path) -> std::collections::BTreeMap<String, Vec<serde_json::Value>> {
    documents(model)
        .into_iter()
        .map(|d| {
            let id = d["id"].as_str().unwrap().to_string();
            (id, ["purchase", "cancel", "country"].iter().map(|f| d.get(*f).cloned().unwrap_or_default()).collect())
        })
        .collect()
}

/// Under the drift threshold, a small update re-scores only the rows whose
/// counts changed — exactly, so they equal a full training's — and every
/// other row keeps the correlators it had.
#[test]
fn a_small_update_rescores_only_the_rows_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = retail_engine(dir.path());
    let input = dir.path().join("events");
    let model = dir.path().join("model");
    months(&input, &["2011-12"]);
    let opts = options(&engine, &input, &model, None);
    let mut follower = Follower::new(&opts, 0.05).unwrap();
    follower.tick(&opts, false).unwrap().unwrap();
    let before = correlators(&model);

    // The first 40 events of the next month.
    let month = online_retail().join("month=2011-12");
    let file = std::fs::read_dir(&month).unwrap().next().unwrap().unwrap().path();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(std::fs::File::open(&file).unwrap()), &mut text)
        .unwrap();
    let lines: Vec<String> = text.lines().take(40).map(String::from).collect();
    write_lines(&input.join("extra.jsonl"), &lines);
    let t = follower.tick(&opts, false).unwrap().unwrap();
    let stats = t.summary.update.unwrap();
    assert!(!stats.full_rescore, "{stats:?}");
    assert!(stats.rows_rescored > 0 && stats.rows_rescored < stats.rows / 2, "{stats:?}");

    let after = correlators(&model);
    let full_model = dir.path().join("full");
    train_ok(&engine, &input, &full_model, &["--now", NOW, "-q"]);
    let full = correlators(&full_model);
    assert_eq!(after.len(), full.len());
    let (mut same_as_full, mut kept) = (0, 0);
    for (id, fields) in &after {
        if Some(fields) == full.get(id) {
            same_as_full += 1;
        } else {
            assert_eq!(Some(fields), before.get(id), "{id}: neither the full training's nor the previous correlators");
            kept += 1;
        }
    }
    assert!(same_as_full > kept, "{same_as_full} rows as in a full training, {kept} kept");
}

#[test]
fn follow_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events");
    write_lines(&input.join("a.jsonl"), &[usage("purchase", "u1", "i1", NOW)]);
    let engine = engine_file(dir.path(), serde_json::json!({"eventNames": ["purchase"]}));
    let model = dir.path().join("model");
    let out = ur_train(train_args(&engine, &input, &model, &["--follow", "1s", "--drift=-1"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--drift"), "{}", stderr(&out));
    let out = ur_train(train_args(&engine, &input, &model, &["--follow", "soon"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--follow"), "{}", stderr(&out));
    let out = ur_train(train_args(&engine, &input, &model, &["--follow", "1s", "--hosts", "/nonexistent"]));
    assert_eq!(out.status.code(), Some(2));
    // One training, then it stops: the model is there.
    let out = ur_train(train_args(&engine, &input, &model, &["--follow", "0s", "--max-updates", "1", "-q"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(manifest(&model)["follow"]["tick"], 0);
}

/// A file with bad lines past `--max-rejected` fails its update: the model
/// published last stays, nothing held changes, and once the file is fixed
/// the next update takes it.
#[test]
fn a_bad_update_keeps_the_model_and_the_resident_state() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events");
    let t = "2026-01-01T00:00:00Z";
    let base: Vec<String> = (0..60)
        .flat_map(|u| {
            let u = format!("u{u}");
            [usage("purchase", &u, &format!("i{}", u.len() % 5), t), usage("purchase", &u, "i9", t)]
        })
        .collect();
    write_lines(&input.join("a.jsonl"), &base);
    let engine = engine_file(dir.path(), serde_json::json!({"eventNames": ["purchase"]}));
    let model = dir.path().join("model");
    let mut opts = options(&engine, &input, &model, None);
    opts.max_rejected = RejectLimit::parse("0").unwrap();
    let mut follower = Follower::new(&opts, 0.0).unwrap();
    follower.tick(&opts, false).unwrap().unwrap();
    let published = std::fs::read(model.join("items.jsonl")).unwrap();

    let bad = input.join("b.jsonl");
    write_lines(&bad, &[usage("purchase", "u1", "i3", t), "{not json".to_string()]);
    match follower.tick(&opts, false) {
        Err(ur::train::TrainError::Failed(ur::dataflow::Failure::TooManyRejected(stats))) => {
            assert_eq!(stats.rejected_total(), 1)
        }
        other => panic!("expected a rejected update, got {:?}", other.map(|t| t.map(|t| t.summary.read.lines))),
    }
    assert!(follower.is_warm(), "a failed read changes nothing held");
    assert!(std::fs::read(model.join("items.jsonl")).unwrap() == published, "the model stays");

    write_lines(&bad, &[usage("purchase", "u1", "i3", t)]);
    let update = follower.tick(&opts, false).unwrap().unwrap();
    assert_eq!(update.summary.read.lines, 1, "an update, not a new training");
    let full = dir.path().join("full");
    train_ok(&engine, &input, &full, &["--now", NOW, "-q"]);
    assert!(std::fs::read(model.join("items.jsonl")).unwrap() == std::fs::read(full.join("items.jsonl")).unwrap());
}

/// Waits (up to a minute) for the model's manifest to report `tick`.
pub fn wait_for_tick(model: &Path, tick: u64, child: &mut std::process::Child) {
    let started = std::time::Instant::now();
    loop {
        let seen = std::fs::read_to_string(model.join("manifest.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|m| m["follow"]["tick"].as_u64());
        if seen == Some(tick) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("ur-train --follow exited early: {status}");
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "no tick {tick} within a minute");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The command line: it trains, updates when a file appears, and on
/// SIGTERM writes the state with every file it consumed and exits 0,
/// releasing the state for cron runs.
#[test]
fn sigterm_writes_the_state_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let engine = retail_engine(dir.path());
    let input = dir.path().join("events");
    let (model, state) = (dir.path().join("model"), dir.path().join("state"));
    months(&input, &["2011-11", "2011-12"]);
    let args = train_args(
        &engine,
        &input,
        &model,
        &["--state", state.to_str().unwrap(), "--follow", "0.05s", "--now", NOW, "-q", "--no-progress"],
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ur-train"))
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_tick(&model, 0, &mut child);
    // The new month appears at once (a directory renamed into the input).
    let staging = dir.path().join("staging");
    months(&staging, &[]);
    std::fs::rename(staging.join("month=2011-11"), input.join("month=2011-11")).unwrap();
    wait_for_tick(&model, 1, &mut child);
    // SAFETY: sending a signal to the child we started.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("state.json")).unwrap()).unwrap();
    assert_eq!(written["consumed"].as_array().unwrap().len(), 12, "months 1-12 in the state");
    // The state is free again, and continues like any other.
    months(&input, &[]);
    let out = ur_train(train_args(&engine, &input, &model, &["--state", state.to_str().unwrap(), "--now", NOW, "-q"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(manifest(&model)["input"]["files"], 1);
    assert!(std::fs::read(model.join("items.jsonl")).unwrap() == full_training(&engine, &input, dir.path()));
}
