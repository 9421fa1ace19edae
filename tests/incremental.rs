//! Incremental training (`--state`): new files only, the same model as a
//! full training, each file counted once.

use crate::util::*;
use serde_json::json;
use std::path::{Path, PathBuf};

pub fn retail_engine(dir: &Path) -> PathBuf {
    engine_file(
        dir,
        json!({
            "indicators": [
                {"name": "purchase", "maxItemsPerUser": 50, "maxCorrelatorsPerItem": 20},
                {"name": "cancel", "maxItemsPerUser": 10},
                {"name": "country", "maxItemsPerUser": 40}
            ],
            "rankings": [
                {"name": "popRank", "type": "popular", "eventNames": ["purchase"], "duration": "60 days"},
                {"name": "trendRank", "type": "trending", "eventNames": ["purchase", "cancel"], "duration": "30 days"},
                {"name": "uniqueRank", "type": "random"}
            ],
            "seed": 9
        }),
    )
}

/// Copies the Online Retail months (all but those in `except`) to `to`,
/// leaving months already there untouched.
pub fn months(to: &Path, except: &[&str]) {
    let data = online_retail();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if path.is_dir() && !except.iter().any(|m| name.ends_with(m)) {
            std::fs::create_dir_all(to.join(&name)).unwrap();
            for f in std::fs::read_dir(&path).unwrap() {
                let f = f.unwrap().path();
                let target = to.join(&name).join(f.file_name().unwrap());
                if !target.exists() {
                    std::fs::copy(&f, target).unwrap();
                }
            }
        }
    }
}

pub const NOW: &str = "2011-12-10T00:00:00Z";

fn run(engine: &Path, input: &Path, output: &Path, state: &Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> =
        ["-e", engine.to_str().unwrap(), "-i", input.to_str().unwrap()].map(String::from).to_vec();
    args.extend(["-o".into(), output.display().to_string(), "--state".into(), state.display().to_string()]);
    args.extend(["--now".into(), NOW.into(), "-q".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    ur_train(&args)
}

/// Months 1–12, then month 13 as an update: the model a full training on
/// all 13 months gives, byte for byte (downsampling and rankings included).
#[test]
fn month_13_update_equals_full_training() {
    let dir = tempfile::tempdir().unwrap();
    let engine = retail_engine(dir.path());
    let input = dir.path().join("events");
    months(&input, &["2011-12"]);
    let (model, state) = (dir.path().join("model"), dir.path().join("state"));
    let out = run(&engine, &input, &model, &state, &["--workers", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(manifest(&model)["input"]["files"], 12);

    months(&input, &[]);
    let out = run(&engine, &input, &model, &state, &["--workers", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = manifest(&model);
    assert_eq!(m["input"]["files"], 1, "only the new month is read");
    assert_eq!(m["input"]["lines"], 17_710);

    let full = dir.path().join("full");
    train_ok(&engine, &input, &full, &["--now", NOW, "-q", "--workers", "1"]);
    let (a, b) = (std::fs::read(model.join("items.jsonl")).unwrap(), std::fs::read(full.join("items.jsonl")).unwrap());
    assert!(a.len() > 100_000);
    assert!(a == b, "incremental and full models differ");

    // Nothing new: the same model again.
    let out = run(&engine, &input, &model, &state, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(manifest(&model)["input"]["files"], 0);
    assert!(std::fs::read(model.join("items.jsonl")).unwrap() == b);
}

/// A run that published the model but died before writing the state: the
/// next run reads the same new files again, and counts them once.
#[test]
fn a_crash_before_the_state_is_written_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = retail_engine(dir.path());
    let input = dir.path().join("events");
    months(&input, &["2011-11", "2011-12"]);
    let (model, state) = (dir.path().join("model"), dir.path().join("state"));
    assert!(run(&engine, &input, &model, &state, &[]).status.success());
    let saved = dir.path().join("saved-state");
    copy_dir(&state, &saved);

    months(&input, &["2011-12"]);
    assert!(run(&engine, &input, &model, &state, &[]).status.success());
    // The crash: the model is new, the state is the previous one.
    std::fs::remove_dir_all(&state).unwrap();
    copy_dir(&saved, &state);
    months(&input, &[]);
    let out = run(&engine, &input, &model, &state, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(manifest(&model)["input"]["files"], 2, "both months not in the state are read");

    let full = dir.path().join("full");
    train_ok(&engine, &input, &full, &["--now", NOW, "-q"]);
    assert!(std::fs::read(model.join("items.jsonl")).unwrap() == std::fs::read(full.join("items.jsonl")).unwrap());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn a_changed_consumed_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events");
    write_lines(&input.join("a.jsonl"), &[usage("purchase", "u1", "i1", "2026-01-01T00:00:00Z")]);
    let (model, state) = (dir.path().join("model"), dir.path().join("state"));
    let engine = engine_file(dir.path(), json!({"eventNames": ["purchase"]}));
    assert!(run(&engine, &input, &model, &state, &[]).status.success());
    write_lines(
        &input.join("a.jsonl"),
        &[usage("purchase", "u1", "i1", "2026-01-01T00:00:00Z"), usage("purchase", "u2", "i1", "2026-01-02T00:00:00Z")],
    );
    let out = run(&engine, &input, &model, &state, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("a.jsonl changed after it was consumed") && err.contains("--full"), "{err}");
    // --full rebuilds from everything.
    assert!(run(&engine, &input, &model, &state, &["--full"]).status.success());
    assert_eq!(manifest(&model)["input"]["lines"], 2);
}

#[test]
fn another_engine_or_a_running_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events");
    write_lines(&input.join("a.jsonl"), &[usage("purchase", "u1", "i1", "2026-01-01T00:00:00Z")]);
    let (model, state) = (dir.path().join("model"), dir.path().join("state"));
    let engine = engine_file(&dir.path().join("one"), json!({"eventNames": ["purchase"]}));
    assert!(run(&engine, &input, &model, &state, &[]).status.success());

    let other = engine_file(&dir.path().join("two"), json!({"eventNames": ["purchase", "view"]}));
    let out = run(&other, &input, &model, &state, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("another engine configuration"), "{}", stderr(&out));

    // A run in progress (the lock held): a second run is refused at once.
    let lock = ur::state::lock::StateLock::acquire(&ur::storage::Store::Local, state.to_str().unwrap()).unwrap();
    let out = run(&engine, &input, &model, &state, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("another ur-train run is using the state"), "{}", stderr(&out));
    drop(lock);
    assert!(run(&engine, &input, &model, &state, &[]).status.success());
}
