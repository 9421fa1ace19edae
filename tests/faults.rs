//! Faults of storage and input: foreign directories, interrupted publishes,
//! dangling links, hostile lines; and the event scanner and line reader on
//! arbitrary bytes.

use crate::util::*;
use proptest::prelude::*;
use std::path::Path;

fn events(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let event = if i % 3 == 0 { "view" } else { "purchase" };
            usage(event, &format!("u{}", i % 7), &format!("i{}", i % 5), "2026-01-10T00:00:00Z")
        })
        .collect()
}

fn train(input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    ur_train(train_args(&handmade_engine(), input, output, extra))
}

#[test]
fn a_foreign_directory_with_a_manifest_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    write_lines(&input, &events(50));
    let web = dir.path().join("webapp");
    std::fs::create_dir(&web).unwrap();
    std::fs::write(web.join("manifest.json"), r#"{"name": "Shop", "start_url": "/", "icons": []}"#).unwrap();
    std::fs::write(web.join("index.html"), "<html></html>").unwrap();
    let out = train(&input, &web, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not ours"), "{err}");
    assert_eq!(std::fs::read_to_string(web.join("index.html")).unwrap(), "<html></html>");
    assert!(std::fs::read_to_string(web.join("manifest.json")).unwrap().contains("start_url"));
}

#[test]
fn a_model_moved_aside_by_a_killed_run_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    write_lines(&input, &events(50));
    let model = dir.path().join("model");
    train_ok(&handmade_engine(), &input, &model, &[]);
    let before = std::fs::read(model.join("items.jsonl")).unwrap();
    // Killed between moving the old model aside and moving the new one in.
    let tag = ur::storage::owner::Machine::this().tag("999999999");
    let old = dir.path().join(format!(".model.tmp-{tag}.old"));
    std::fs::rename(&model, &old).unwrap();
    // The next run fails (too many rejected lines): the previous model is back.
    let mut lines = events(50);
    lines[5] = "not json at all".into();
    write_lines(&input, &lines);
    let out = train(&input, &model, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(std::fs::read(model.join("items.jsonl")).unwrap(), before);
    assert!(!old.exists());
}

#[test]
fn another_hosts_temporary_directory_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    write_lines(&input, &events(50));
    let other = ur::storage::owner::Machine { host: "other-host".into(), boot: "0123456789ab".into() };
    let theirs = dir.path().join(format!(".model.tmp-{}", other.tag("999999999")));
    std::fs::create_dir(&theirs).unwrap();
    let mine = dir.path().join(format!(".model.tmp-{}", ur::storage::owner::Machine::this().tag("999999999")));
    std::fs::create_dir(&mine).unwrap();
    train_ok(&handmade_engine(), &input, &dir.path().join("model"), &[]);
    assert!(theirs.exists(), "another host's run in progress was deleted");
    assert!(!mine.exists(), "this host's dead run was not cleaned up");
}

#[test]
fn a_dangling_symlink_in_the_input_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    write_lines(&input.join("a.jsonl"), &events(50));
    std::os::unix::fs::symlink(dir.path().join("gone.jsonl"), input.join("b.jsonl")).unwrap();
    let err = train_ok(&handmade_engine(), &input, &dir.path().join("model"), &[]);
    assert!(err.contains("dangling"), "{err}");
    assert_eq!(manifest(&dir.path().join("model"))["input"]["files"], 1);
}

#[test]
fn control_characters_in_rejected_lines_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let mut lines = events(400);
    lines[3] = r#"{"event":"purchase","entityType":"user","entityId":"u1","targetEntityType":"item","targetEntityId":"i1","eventTime":"\u001b[2J\u001b[31mboom\r"}"#.into();
    write_lines(&input, &lines);
    let err = train_ok(&handmade_engine(), &input, &dir.path().join("model"), &[]);
    assert!(err.contains("events.jsonl:4: field eventTime"), "{err}");
    assert!(!err.contains('\u{1b}') && !err.contains('\r'), "{err:?}");
    assert!(err.contains(r"\u{1b}[2J"), "{err}");
}

/// A 64 MiB line in a small `.gz`: read in bounded memory, rejected, and the
/// lines after it read.
#[test]
fn a_huge_line_is_rejected_and_reading_goes_on() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl.gz");
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&input).unwrap(), flate2::Compression::fast());
    let lines = events(400);
    for l in &lines[..200] {
        writeln!(gz, "{l}").unwrap();
    }
    gz.write_all(b"{\"event\": \"").unwrap();
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&chunk).unwrap();
    }
    gz.write_all(b"\"}\n").unwrap();
    for l in &lines[200..] {
        writeln!(gz, "{l}").unwrap();
    }
    gz.finish().unwrap();
    let model = dir.path().join("model");
    let err = train_ok(&handmade_engine(), &input, &model, &[]);
    assert!(err.contains("events.jsonl.gz:201: line longer than 1048576 bytes"), "{err}");
    let m = manifest(&model);
    assert_eq!(m["input"]["lines"], 401, "{m}");
    assert_eq!(m["input"]["rejected"], 1, "{m}");
    let peak = m["peakRssBytes"].as_u64().unwrap_or(0);
    assert!(peak < 60 << 20, "peak RSS {peak} bytes: the line was held in memory");
    // A lower --max-line-bytes rejects ordinary lines too, by the same reason.
    let small = dir.path().join("small");
    let out = ur_train(train_args(&handmade_engine(), &input, &small, &["--max-line-bytes", "20"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("events.jsonl.gz:1: line longer than 20 bytes"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_event_parser_never_panics(line in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = ur::source::event::parse_event(&line);
        let _ = ur::source::json::scan_event(&line);
    }

    #[test]
    fn the_event_parser_never_panics_on_near_events(
        cut in 0usize..200,
        junk in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), Just(b'{'), Just(b'}'), Just(b':'), Just(b','), Just(b'u'), any::<u8>()], 0..20),
    ) {
        let good = usage("purchase", "u\u{e9}1", "i\\1", "2026-01-10T00:00:00.123+02:00").into_bytes();
        let cut = cut.min(good.len());
        let mut line = good[..cut].to_vec();
        line.extend_from_slice(&junk);
        line.extend_from_slice(&good[cut..]);
        let _ = ur::source::event::parse_event(&line);
    }

    #[test]
    fn the_line_reader_keeps_every_byte(
        data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..400),
        max in 0usize..40,
    ) {
        use ur::source::lines::{Line, split_lines_within};
        let mut total = 0u64;
        let mut pieces = 0u64;
        split_lines_within(&mut &data[..], max, |line| {
            let len = match line {
                Line::Text(t) => { assert!(t.len() <= max && !t.contains(&b'\n')); t.len() as u64 }
                Line::TooLong { head, len } => { assert!(head.len() == max + 1 && len > max as u64); len }
            };
            total += len;
            pieces += 1;
            true
        }).unwrap();
        // Every byte is in a line or is one of its terminators.
        let newlines = data.iter().filter(|&&b| b == b'\n').count() as u64;
        let expected_pieces = newlines + u64::from(!data.is_empty() && data.last() != Some(&b'\n'));
        prop_assert_eq!(pieces, expected_pieces);
        prop_assert_eq!(total + newlines, data.len() as u64);
    }
}

/// SIGTERM while a run publishes (held between its model directory and its
/// state: `UR_TRAIN_TEST_HOLD_AT=publishing`): the publication ends first
/// and the run exits 0 with the model and the state that records it — not
/// 143 "no model written" with the model published and the state behind it.
#[test]
fn a_signal_during_the_publication_lets_it_end() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events");
    std::fs::create_dir(&input).unwrap();
    std::fs::copy(handmade_events(), input.join("a.jsonl")).unwrap();
    let (model, state, release) = (dir.path().join("model"), dir.path().join("state"), dir.path().join("release"));
    let args = train_args(&handmade_engine(), &input, &model, &["--state", state.to_str().unwrap(), "--no-progress"]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ur-train"))
        .args(args)
        .env(ur::hold::HOLD_ENV, &release)
        .env(ur::hold::HOLD_AT_ENV, "publishing")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok);
    let mut log = String::new();
    read_until(&mut lines, &mut log, "holding mid-publishing");
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    read_until(&mut lines, &mut log, "SIGTERM during the publication");
    std::fs::write(&release, "").unwrap();
    let status = child.wait().unwrap();
    lines.for_each(|line| log.push_str(&line));
    assert!(status.success(), "{status}: {log}");
    assert!(model.join("items.jsonl").exists(), "{log}");
    let recorded = std::fs::read_to_string(state.join("state.json")).unwrap();
    assert!(recorded.contains("a.jsonl"), "{recorded}");
}
