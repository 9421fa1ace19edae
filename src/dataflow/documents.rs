//! What the write stage of a run, full or update, needs from the worker
//! context: where this worker's part goes, and the ranking values of its
//! row range. The writing itself is the sink's ([`crate::sink::part`],
//! [`crate::sink::history`]).

use super::WorkerContext;
use super::facts::RangeFacts;
use super::ranks;
use crate::config::{Engine, RecsModel};
use crate::intern::SortedIds;
use crate::sink::directory::part_name;
use crate::sink::part::{PartFile, PartOutput};
use crate::storage::join;
use std::ops::Range;

/// Where `worker`'s part goes: its part file in the model directory (with
/// one process, scratch: the parts are concatenated into `items.jsonl`) and
/// the Elasticsearch model index.
pub fn part_output(ctx: &WorkerContext, worker: usize) -> PartOutput<'_> {
    PartOutput {
        file: ctx.output.as_ref().map(|out| PartFile {
            store: &out.store,
            path: join(&out.parts_dir, &part_name(worker)),
            scratch: ctx.processes == 1,
        }),
        es: ctx.es.as_deref(),
        worker,
    }
}

/// The ranking values of a range's items (none without rankings in the model).
pub fn range_ranks(engine: &Engine, facts: &RangeFacts, range: &Range<u32>, dict: &SortedIds) -> Vec<Vec<Option<f64>>> {
    let has_properties: Vec<bool> = facts.properties.iter().map(Option::is_some).collect();
    if engine.recs_model == RecsModel::CollabFiltering {
        return vec![vec![None; has_properties.len()]; engine.rankings.len()];
    }
    ranks::rank_values(&engine.rankings, &facts.counts, &facts.random, &has_properties, range, dict, engine.seed)
}
