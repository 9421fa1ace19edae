//! Bad input: counted, shown as file:line: reason, and fatal past --max-rejected.

use crate::util::*;
use std::path::Path;

fn good_lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            usage(
                if i % 3 == 0 { "view" } else { "purchase" },
                &format!("u{}", i % 7),
                &format!("i{}", i % 5),
                "2026-01-10T00:00:00Z",
            )
        })
        .collect()
}

fn run(dir: &Path, lines: &[String], extra: &[&str]) -> (std::process::Output, std::path::PathBuf) {
    let input = dir.join("events.jsonl");
    write_lines(&input, lines);
    let model = dir.join("model");
    let mut args = vec![
        "-e".to_string(),
        handmade_engine().display().to_string(),
        "-i".into(),
        input.display().to_string(),
        "-o".into(),
        model.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    (ur_train(&args), model)
}

#[test]
fn rejected_lines_are_counted_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = good_lines(400);
    lines[10] = "{\"event\": \"purchase\", oops".into();
    lines[20] = r#"{"event":"purchase","entityType":"user","entityId":"u1","targetEntityType":"item","targetEntityId":"i1","eventTime":"yesterday"}"#.into();
    lines[30] = r#"{"event":"purchase","entityType":"user","entityId":"u1","targetEntityType":"item","eventTime":"2026-01-10T00:00:00Z"}"#.into();
    let (out, model) = run(dir.path(), &lines, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("3 lines rejected"), "{err}");
    assert!(err.contains("events.jsonl:11: malformed JSON"), "{err}");
    assert!(err.contains("events.jsonl:21: field eventTime: `yesterday`"), "{err}");
    assert!(err.contains("events.jsonl:31: missing field targetEntityId"), "{err}");
    let m = manifest(&model);
    assert_eq!(m["input"]["rejected"], 3);
    assert_eq!(m["input"]["rejectedByReason"]["bad eventTime"], 1);
    assert_eq!(m["input"]["rejectedByReason"]["malformed JSON"], 1);
    assert_eq!(m["input"]["rejectedByReason"]["missing field targetEntityId"], 1);
    assert_eq!(m["input"]["events"]["purchase"]["rejected"], 2);
}

#[test]
fn too_many_rejected_fails_without_a_model_and_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let (out, model) = run(dir.path(), &good_lines(50), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = std::fs::read(model.join("items.jsonl")).unwrap();

    let mut lines = good_lines(50);
    lines[5] = "not json at all".into();
    // 1 of 50 lines is 2%, over the default 1%.
    let (out, model) = run(dir.path(), &lines, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("events.jsonl:6: malformed JSON"), "{err}");
    assert!(err.contains("1 of 50 lines rejected") && err.contains("no model written"), "{err}");
    assert_eq!(std::fs::read(model.join("items.jsonl")).unwrap(), before, "the previous model must stay");
    let leftovers: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(leftovers.iter().all(|n| !n.contains(".tmp-")), "{leftovers:?}");

    // A count: 0 allows none, 1 allows this one.
    let (out, _) = run(dir.path(), &lines, &["--max-rejected", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (out, _) = run(dir.path(), &lines, &["--max-rejected", "0"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn no_primary_events_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..20).map(|i| usage("view", &format!("u{i}"), "i", "2026-01-10T00:00:00Z")).collect();
    let (out, model) = run(dir.path(), &lines, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no primary events") && err.contains("purchase"), "{err}");
    assert!(!model.exists());
}

#[test]
fn setup_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = ur_train([
        "-e",
        handmade_engine().to_str().unwrap(),
        "-i",
        "/no/such/events",
        "-o",
        dir.path().join("m").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/no/such/events"), "{}", stderr(&out));

    let engine =
        engine_file(dir.path(), serde_json::json!({"indicators": [{"name": "buy", "maxCorrelatorsPerItem": "many"}]}));
    let out = ur_train([
        "-e",
        engine.to_str().unwrap(),
        "-i",
        handmade_events().to_str().unwrap(),
        "-o",
        dir.path().join("m").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("algorithms[0].params.indicators[0].maxCorrelatorsPerItem"), "{}", stderr(&out));

    let out = ur_train([
        "-e",
        handmade_engine().to_str().unwrap(),
        "-i",
        handmade_events().to_str().unwrap(),
        "--max-rejected",
        "lots",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = ur_train([
        "-e",
        handmade_engine().to_str().unwrap(),
        "-i",
        handmade_events().to_str().unwrap(),
        "--now",
        "tomorrow",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--now"));
}

#[test]
fn corrupt_gzip_fails_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events");
    write_lines(&input.join("part-0.jsonl"), &good_lines(30));
    std::fs::write(input.join("part-1.jsonl.gz"), b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage").unwrap();
    let model = dir.path().join("model");
    let out = ur_train([
        "-e",
        handmade_engine().to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("part-1.jsonl.gz") && err.contains("decompress"), "{err}");
    assert!(!model.exists());
}

#[test]
fn garbage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    let mut lines = good_lines(100);
    let samples = [
        "{}",
        "null",
        "[]",
        "\"just a string\"",
        "{\"event\":null}",
        "{\"event\":\"purchase\",\"entityType\":\"user\",\"entityId\":\"u\",\"targetEntityType\":\"item\",\"targetEntityId\":\"\",\"eventTime\":\"2026-01-10T00:00:00Z\"}",
        "{\"event\":\"$set\",\"entityType\":\"item\",\"entityId\":\"i\",\"properties\":\"nope\",\"eventTime\":\"2026-01-10T00:00:00Z\"}",
        "{\"event\":\"purchase\",\"entityType\":\"user\",\"entityId\":\"u\",\"targetEntityType\":\"item\",\"targetEntityId\":\"i\",\"eventTime\":\"9999-12-31T23:59:59.999999999-23:59\"}",
        "{\"event\":\"purchase\",\"entityType\":\"user\",\"entityId\":\"u\",\"targetEntityType\":\"item\",\"targetEntityId\":\"i\",\"eventTime\":\"-0001-01-01T00:00:00Z\"}",
    ];
    for s in samples {
        lines.push(s.to_string());
    }
    for _ in 0..50 {
        let len = rng.below(200) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| (rng.below(94) + 32) as u8).collect();
        lines.push(String::from_utf8(bytes).unwrap());
    }
    let (out, _) = run(dir.path(), &lines, &["--max-rejected", "100%"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Invalid UTF-8 inside a string.
    let input = dir.path().join("bin.jsonl");
    let mut raw = good_lines(60).join("\n").into_bytes();
    raw.extend_from_slice(b"\n{\"event\":\"purchase\",\"entityId\":\"\xff\xfe\"}\n");
    std::fs::write(&input, raw).unwrap();
    let out = ur_train([
        "-e",
        handmade_engine().to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-o",
        dir.path().join("m2").to_str().unwrap(),
        "--max-rejected",
        "100%",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("bin.jsonl:61: malformed JSON"), "{}", stderr(&out));
}
