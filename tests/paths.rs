//! A state identifies the files it consumed by their path relative to the
//! canonical input root: another spelling of the same input (`./inc/`, an
//! absolute path, another working directory, a symbolic link) consumes
//! nothing again, and another input root is refused.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The handmade events in two files, `inc/a.jsonl` and `inc/month=2/b.jsonl`.
struct Fixture {
    dir: tempfile::TempDir,
    engine: PathBuf,
    /// The model of a full training on `inc`.
    full: Vec<u8>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = std::fs::read_to_string(handmade_events()).unwrap().lines().map(String::from).collect();
    let (a, b) = lines.split_at(lines.len() / 2);
    let inc = dir.path().join("inc");
    std::fs::create_dir_all(inc.join("month=2")).unwrap();
    write_lines(&inc.join("a.jsonl"), a);
    write_lines(&inc.join("month=2/b.jsonl"), b);
    let engine = handmade_engine();
    let full = dir.path().join("full");
    train_ok(&engine, &inc, &full, &["--now", HANDMADE_NOW, "-q"]);
    let full = std::fs::read(full.join("items.jsonl")).unwrap();
    Fixture { dir, engine, full }
}

/// `ur-train -i input --state state` run in `cwd`.
fn run_in(f: &Fixture, cwd: &Path, input: &str, state: &str, extra: &[&str]) -> Output {
    let model = f.dir.path().join("model");
    let mut args: Vec<String> =
        ["-e", f.engine.to_str().unwrap(), "-i", input, "-o", model.to_str().unwrap()].map(String::from).to_vec();
    args.extend(["--state", state, "--now", HANDMADE_NOW, "-q", "--no-progress"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    Command::new(env!("CARGO_BIN_EXE_ur-train"))
        .args(&args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .expect("ur-train runs")
}

fn model(f: &Fixture) -> Vec<u8> {
    std::fs::read(f.dir.path().join("model/items.jsonl")).unwrap()
}

fn pop_rank(f: &Fixture, item: &str) -> serde_json::Value {
    let docs = documents(&f.dir.path().join("model"));
    docs.iter().find(|d| d["id"] == item).map(|d| d["popRank"].clone()).unwrap_or_default()
}

/// Trains `-i inc` from `f.dir`, then `input` from `cwd`: the second run
/// reads no file and gives the model of a full training.
fn same_input(f: &Fixture, case: &str, cwd: &Path, input: &str) {
    let state = f.dir.path().join(format!("state-{case}"));
    let state = state.to_str().unwrap();
    let out = run_in(f, f.dir.path(), "inc", state, &[]);
    assert!(out.status.success(), "{case}: {}", stderr(&out));
    let pop = pop_rank(f, "Iphone 6");
    assert!(model(f) == f.full, "{case}: the first run gives the full model");
    let out = run_in(f, cwd, input, state, &[]);
    assert!(out.status.success(), "{case}: {}", stderr(&out));
    let m = manifest(&f.dir.path().join("model"));
    assert_eq!(m["state"]["newFiles"], 0, "{case}: {input} from {} read files again: {m}", cwd.display());
    assert_eq!(m["state"]["filesConsumedBefore"], 2, "{case}");
    assert_eq!(pop_rank(f, "Iphone 6"), pop, "{case}: popRank changed");
    assert!(model(f) == f.full, "{case}: the second run does not give the full model");
}

#[test]
fn another_spelling_of_the_input_consumes_nothing_again() {
    let f = fixture();
    let root = f.dir.path();
    let inc = root.join("inc");
    same_input(&f, "same", root, "inc");
    same_input(&f, "dot-slash", root, "./inc/");
    same_input(&f, "absolute", root, inc.to_str().unwrap());
    same_input(&f, "dot-dot", &inc.join("month=2"), "../../inc");
    same_input(&f, "cwd", &inc, ".");
    let link = root.join("link");
    std::os::unix::fs::symlink(&inc, &link).unwrap();
    same_input(&f, "symlink", root, "link/");
    same_input(&f, "file-url", root, &format!("file://{}", inc.display()));
}

#[test]
fn another_input_root_is_refused() {
    let f = fixture();
    let root = f.dir.path();
    let state = root.join("state");
    let state = state.to_str().unwrap();
    let out = run_in(&f, root, "inc", state, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::create_dir_all(root.join("other")).unwrap();
    std::fs::copy(root.join("inc/a.jsonl"), root.join("other/a.jsonl")).unwrap();
    let before = std::fs::read(root.join(format!("{state}/state.json"))).unwrap();
    let out = run_in(&f, root, "other", state, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let (inc, other) = (root.join("inc").canonicalize().unwrap(), root.join("other").canonicalize().unwrap());
    assert!(err.contains(inc.to_str().unwrap()) && err.contains(other.to_str().unwrap()), "{err}");
    assert!(err.contains("--full"), "{err}");
    assert_eq!(std::fs::read(root.join(format!("{state}/state.json"))).unwrap(), before, "the state is unchanged");
    // --full retrains from the new root.
    let out = run_in(&f, root, "other", state, &["--full"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_in(&f, root, "./other", state, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(manifest(&root.join("model"))["state"]["newFiles"], 0);
}

/// A single file as input: its directory is the root, its name what the
/// state records; the directory later consumes only the other files.
#[test]
fn a_single_file_then_its_directory() {
    let f = fixture();
    let root = f.dir.path();
    let state = root.join("state");
    let state = state.to_str().unwrap();
    let out = run_in(&f, root, "inc/month=2/../a.jsonl", state, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_in(&f, &root.join("inc"), "a.jsonl", state, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(manifest(&root.join("model"))["state"]["newFiles"], 0);
    let out = run_in(&f, root, "./inc", state, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = manifest(&root.join("model"));
    assert_eq!((m["state"]["newFiles"].clone(), m["state"]["filesConsumedBefore"].clone()), (1.into(), 1.into()));
    assert!(model(&f) == f.full, "a.jsonl then the directory: the full model");
}

/// A state of format 2 recorded paths as listed, without a root: refused.
#[test]
fn a_state_without_an_input_root_is_refused() {
    let f = fixture();
    let root = f.dir.path();
    let state = root.join("state");
    let out = run_in(&f, root, "inc", state.to_str().unwrap(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(state.join("state.json")).unwrap();
    let serde_json::Value::Object(mut fields) = serde_json::from_str(&text).unwrap() else { panic!("{text}") };
    fields.remove("checksum");
    fields.remove("inputRoot");
    fields.insert("format".into(), 2.into());
    let sealed = ur::state::seal::seal_manifest(fields);
    std::fs::write(state.join("state.json"), serde_json::to_string_pretty(&sealed).unwrap()).unwrap();
    let out = run_in(&f, root, "inc", state.to_str().unwrap(), &[]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("state format 2 is older than this release") && err.contains("--full"), "{err}");
}

fn follow_options(f: &Fixture, input: &Path, state: &Path) -> ur::train::TrainOptions {
    train_options(&f.engine, input, &f.dir.path().join("model"), Some(state), HANDMADE_NOW)
}

/// A follower identifies the files of its resident model the same way: the
/// input spelt otherwise is nothing new, a link turned to another directory
/// is refused.
#[test]
fn a_follower_identifies_files_by_root_too() {
    let f = fixture();
    let root = f.dir.path();
    let (link, state) = (root.join("link"), root.join("state"));
    std::os::unix::fs::symlink(root.join("inc"), &link).unwrap();
    let opts = follow_options(&f, &link, &state);
    let mut follower = ur::train::Follower::new(&opts, 0.0).unwrap();
    assert!(follower.tick(&opts, false).unwrap().is_some(), "the first tick trains");
    let absolute = follow_options(&f, &root.join("inc/month=2/.."), &state);
    assert!(follower.tick(&absolute, false).unwrap().is_none(), "the same files: nothing new");
    assert!(model(&f) == f.full);

    std::fs::create_dir_all(root.join("other")).unwrap();
    std::fs::copy(root.join("inc/a.jsonl"), root.join("other/a.jsonl")).unwrap();
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(root.join("other"), &link).unwrap();
    let err = follower.tick(&opts, false).err().expect("another root is refused");
    let other = root.join("other").canonicalize().unwrap();
    assert!(matches!(err, ur::train::TrainError::Setup(_)), "{err}");
    assert!(err.to_string().contains(other.to_str().unwrap()) && err.to_string().contains("--full"), "{err}");
    assert!(model(&f) == f.full, "the model is unchanged");
}
