//! The manifest of a run: engine, input statistics, model, timings, and
//! what the state, a follower and Elasticsearch did.

use super::inputs::Selection;
use super::processes::Processes;
use super::{Mode, TrainOptions};
use crate::dataflow::Summary;
use crate::sink::elasticsearch::EsTarget;
use crate::stats::peak_rss_bytes;
use crate::time::format_iso8601;

/// The manifest published with the model.
pub(super) fn manifest(
    opts: &TrainOptions,
    mode: &Mode,
    summary: &Summary,
    procs: &Processes,
    selection: &Selection,
    es: Option<&EsTarget>,
) -> serde_json::Value {
    let mut manifest = run_manifest(opts, summary, procs);
    if let Some(s) = &selection.state {
        manifest["state"] = serde_json::json!({
            "location": s.dir,
            "resumed": s.manifest.is_some(),
            "filesConsumedBefore": s.consumed().map_or(0, |c| c.files.len()),
            "newFiles": selection.inputs.len(),
            "bytes": summary.state_bytes,
        });
    }
    if let Some(f) = mode.follower() {
        manifest["follow"] = serde_json::json!({
            "tick": f.ticks,
            "drift": f.shared.drift,
            "update": summary.update,
        });
    }
    if opts.es.is_some() {
        manifest["elasticsearch"] = serde_json::json!({
            "inPlace": es.is_some_and(|e| e.in_place),
            "rebuilt": es.and_then(|e| e.rebuilt.clone()),
            "documentsSent": summary.changed.documents,
            "documentsDeleted": summary.changed.deleted,
            "usersSent": summary.changed.users,
        });
    }
    manifest
}

/// What every manifest has.
fn run_manifest(opts: &TrainOptions, s: &Summary, procs: &Processes) -> serde_json::Value {
    let events = s.read.lines.max(1) as f64;
    let network: u64 = s.network_bytes.values().sum();
    serde_json::json!({
        "format": "ur-train model 1",
        "producer": crate::sink::directory::PRODUCER,
        "version": env!("CARGO_PKG_VERSION"),
        "now": format_iso8601(procs.now),
        "engine": opts.engine,
        "input": {
            "location": opts.input,
            "files": s.read.files,
            "bytes": s.read.bytes,
            "lines": s.read.lines,
            "blankLines": s.read.blank_lines,
            "rejected": s.read.rejected_total(),
            "rejectedByReason": s.read.rejected,
            "ignoredByReason": s.read.ignored,
            "events": s.read.events,
        },
        "model": s.model,
        "workers": procs.workers,
        "processes": procs.processes,
        "network": {
            "bytesToOtherProcesses": network,
            "bytesPerLine": network as f64 / events,
            "byExchange": s.network_bytes,
        },
        "timings": s.timings,
        "peakRssBytes": peak_rss_bytes(),
        "warnings": s.warnings,
    })
}
