//! Full training: one worker's run of every stage (see the diagram in
//! [`super`]) on its share of the input and of the previous state, ending
//! with its part of the documents, its users' histories, its part of the new
//! state and, when following, its resident model for the next update.

use super::cco::{self, Correlators, RowRanges};
use super::documents::{part_output, range_ranks};
use super::exchange::Comm;
use super::facts::{self, RangeFacts};
use super::intake::{agree_on_input, agree_on_read, output_is_shared, read_own_share};
use super::outcome::{ModelShape, Stopwatch, WorkerCounts, gather_outcome};
use super::read::Share;
use super::state_part::{self, ItemFacts, OwnedUsers, PartSource};
use super::users::{self, Csr, Rows};
use super::{Failure, Summary, WorkerContext, dictionary, resident, sample};
use crate::config::RecsModel;
use crate::hash::{id_hash, indicator_salt};
use crate::intern::SortedIds;
use crate::memory::log_resident;
use crate::sink::document::DocumentLayout;
use crate::sink::history::{Histories, write_histories};
use crate::sink::part::{PartDocuments, PartWritten, write_part};
use crate::stats::{Interactions, ReadStats, Timings};
use crate::time::format_iso8601;
use std::collections::BTreeMap;
use timely::worker::Worker;

/// One worker's full training run.
pub(super) fn train(worker: &mut Worker, ctx: &WorkerContext) -> Result<Summary, Failure> {
    let mut comm = Comm::new(worker, ctx.processes);
    let lead = comm.index == 0;
    let mut watch = Stopwatch::start();
    let mut timings = Timings::default();
    agree_on_input(&mut comm, ctx)?;
    let (mut share, owned_users, read) = read_with_state(&mut comm, ctx)?;
    timings.read = watch.lap();
    log_resident(lead, "read");
    if lead {
        tracing::info!(lines = read.lines, rejected = read.rejected_total(), secs = timings.read, "read");
    }

    // Dictionary: every item id, sorted; item i is the i-th.
    let dict = dictionary::build_dictionary(&mut comm, SortedIds::from_unsorted(share.items.iter()));
    let global_item: Vec<u32> =
        share.items.iter().map(|s| dict.position(s).expect("every local item is in the dictionary")).collect();
    let n_items = dict.len();
    let kept_for_state = ctx.state_out.as_ref().map(|_| state_part::item_facts(&share, &global_item));
    timings.dictionary = watch.lap();
    log_resident(lead, "dictionary");

    let (mut rows, n, users_seen) = group(&mut comm, ctx, &mut share, &global_item, owned_users)?;
    timings.group = watch.lap();
    log_resident(lead, "group");
    if lead {
        tracing::info!(users = users_seen, n, items = n_items, secs = timings.group, "grouped users");
    }

    let mut sampled = downsample(&mut comm, ctx, &mut rows, &dict);
    timings.downsample = watch.lap();
    log_resident(lead, "downsample");
    let (ranges, correlators, pair_visits) = correlate(&mut comm, ctx, &mut rows, &sampled, n, n_items);
    if ctx.follow.is_none() {
        sampled.post = Vec::new();
    }
    timings.cco = watch.lap();
    log_resident(lead, "cco");
    if lead {
        tracing::info!(pair_visits, secs = timings.cco, "correlated");
    }

    // Properties and ranks of the items this worker owns.
    let facts = item_facts(&mut comm, ctx, &mut share, &global_item, &ranges);
    let kept_share = ctx.follow.is_some().then(|| {
        // Property events stay with their item's owner from now on.
        share.property_events = Vec::new();
        share
    });
    let range = ranges.range(comm.index);
    let rank_values = range_ranks(&ctx.engine, &facts, &range, &dict);
    timings.properties_and_ranks = watch.lap();
    log_resident(lead, "properties and ranks");

    // Documents of the own range, in item order; histories; the state part.
    let layout = DocumentLayout::of(&ctx.engine);
    let docs = PartDocuments {
        range,
        dict: &dict,
        layout: &layout,
        primary_users: &sampled.primary_users,
        correlators: correlators.as_ref().map(|c| c.rows.as_slice()),
        ranks: &rank_values,
        properties: &facts.properties,
        deleted: &facts.deleted,
        prev_hash: &facts.prev_hash,
    };
    let Written { counts, error, doc_hashes, history_hashes } =
        write_outputs(ctx, comm.index, &rows, &docs, kept_for_state.as_ref());

    // Following: what stays in memory for the next update.
    if let Some(follow) = &ctx.follow {
        let run = resident::FromRun {
            dict,
            rows,
            before: sampled.before.unwrap_or_default(),
            after: sampled.after.unwrap_or_default(),
            pre: sampled.pre,
            post: sampled.post,
            n,
            ranges: ranges.clone(),
            correlators,
            doc_hashes,
            history_hashes,
            facts: kept_share.expect("share kept when following"),
            range_facts: &facts,
        };
        follow.put(comm.index, resident::Resident::build(&mut comm, &ctx.engine, run));
    }
    let shared = output_is_shared(&comm, ctx);
    let sent = comm.sent_remote.clone();
    let (total, extras) = gather_outcome(&mut comm, counts, error, (shared, sent))?;
    timings.write = watch.lap();

    let shape = ModelShape {
        users: users_seen,
        n,
        items: n_items as u64,
        primary_users: &sampled.primary_users,
        interactions: sampled.interactions,
        pair_visits,
    };
    let model = total.model_stats(&ctx.engine, shape);
    timings.total = watch.total();
    if lead {
        tracing::info!(documents = model.documents, now = %format_iso8601(ctx.now), secs = timings.total, "documents written");
    }
    let mut network_bytes = BTreeMap::new();
    for (name, bytes) in extras.iter().flat_map(|(_, sent)| sent) {
        *network_bytes.entry(name.clone()).or_default() += bytes;
    }
    let mut warnings = sampled.warnings;
    warnings.extend(total.part.clash_warnings());
    let summary =
        Summary { warnings, network_bytes, shared_output: extras[0].0, ..total.summary(read, model, timings) };
    // Every process gets worker 0's summary (for its manifest).
    let all = comm.all_gather("summary", lead.then_some(summary));
    Ok(all.into_iter().flatten().next().expect("worker 0 sends its summary"))
}

/// What writing a full run's outputs left.
struct Written {
    counts: WorkerCounts,
    error: Option<Failure>,
    /// (item, hash) of the documents written.
    doc_hashes: Vec<(u32, u64)>,
    /// By user: the hash of the history document as last written.
    history_hashes: Vec<u64>,
}

/// Writes this worker's part of the documents, then its users' histories
/// and its part of the new state (each only if what came before succeeded).
fn write_outputs(
    ctx: &WorkerContext,
    me: usize,
    rows: &Rows,
    docs: &PartDocuments,
    kept_for_state: Option<&ItemFacts>,
) -> Written {
    let mut written = PartWritten::default();
    let part = write_part(&part_output(ctx, me), docs, None, &mut written);
    let mut history_hashes = rows.prev_history.clone();
    let users_sent = match (part, &ctx.es, &rows.histories) {
        (Ok(()), Some(es), Some(histories)) => {
            let kinds = ctx.engine.indicators.len();
            let users = (0..rows.names.len()).map(|u| (u, rows.names.resolve(u as u32)));
            let recent = |u: usize, k: usize| histories.row(u * kinds + k).to_vec();
            let histories = Histories { recent, indicators: &docs.layout.indicators, dict: docs.dict };
            write_histories(es, me, users, &histories, &mut history_hashes).map_err(Failure::from)
        }
        (Ok(()), _, _) => Ok(0),
        (Err(e), _, _) => Err(e.into()),
    };
    let mut counts = WorkerCounts { users: rows.users as u64, ..WorkerCounts::default() };
    counts.users_sent = *users_sent.as_ref().unwrap_or(&0);
    let mut error = users_sent.err();
    if let (None, Some(out), Some(kept)) = (&error, &ctx.state_out, kept_for_state) {
        let source = state_source(rows, &history_hashes, kept, &written.hashes);
        match state_part::write_state_part(out, me, &source, docs.dict, &ctx.plan) {
            Ok(bytes) => counts.state_bytes = bytes,
            Err(e) => error = Some(e),
        }
    }
    counts.part = written.stats;
    Written { counts, error, doc_hashes: written.hashes, history_hashes }
}

/// Reads this worker's share, joins its parts of the previous state and
/// agrees on the outcome; fails when there is nothing to train on.
fn read_with_state(comm: &mut Comm, ctx: &WorkerContext) -> Result<(Share, Option<OwnedUsers>, ReadStats), Failure> {
    let (mut share, mut error) = read_own_share(comm, ctx);
    let mut owned_users = None;
    if let (None, Some(state)) = (&error, &ctx.state_in) {
        match state_part::join_previous(&mut share, &ctx.plan, state, comm.index, comm.peers) {
            Ok(owned) => owned_users = owned,
            Err(e) => error = Some(e),
        }
    }
    let read = agree_on_read(comm, ctx, &mut share, error)?;
    share.count_ranks(&ctx.plan);
    if ctx.state_out.is_none() && ctx.follow.is_none() {
        // Counted: only a state or a resident model needs the events themselves.
        share.rank_events = Vec::new();
    }
    let engine = &ctx.engine;
    let primary = engine.primary();
    let primary_events: u64 = primary.event_names.iter().filter_map(|e| read.events.get(e)).map(|c| c.kept).sum();
    if primary_events == 0 && ctx.state_in.is_none() && engine.recs_model != RecsModel::Backfill {
        return Err(Failure::NoData(format!(
            "no primary events: none of the {} lines read is a usable `{}` event (user → item); the first indicator must have data",
            read.lines,
            primary.event_names.join("`/`")
        )));
    }
    Ok((share, owned_users, read))
}

/// Users meet at their owners; minEventsPerUser picks the rows. Returns the
/// rows, N and the number of users seen (over all workers).
fn group(
    comm: &mut Comm,
    ctx: &WorkerContext,
    share: &mut Share,
    global_item: &[u32],
    owned_users: Option<OwnedUsers>,
) -> Result<(Rows, u64, u64), Failure> {
    let engine = &ctx.engine;
    let history_caps: Vec<u32> = engine.indicators.iter().map(|i| i.history_cap).collect();
    let histories = ctx.histories.then_some(history_caps.as_slice());
    let mut rows = users::group_users(
        comm,
        share,
        global_item,
        engine.min_events_per_user,
        histories,
        ctx.state_out.is_some() || ctx.follow.is_some(),
        owned_users.map(|o| o.into_batch(global_item)),
    );
    if !ctx.histories && ctx.state_out.is_none() && ctx.follow.is_none() {
        rows.forget_names();
    }
    let n = comm.sum("rows", rows.user_of_row.len() as u64);
    let users_seen = comm.sum("users", rows.users as u64);
    if n == 0 && engine.recs_model != RecsModel::Backfill {
        return Err(Failure::NoData(format!(
            "no user has minEventsPerUser = {} `{}` events: nothing to train on",
            engine.min_events_per_user,
            engine.primary().name
        )));
    }
    Ok((rows, n, users_seen))
}

/// The rows downsampled, and the per-item user counts before and after.
struct Downsampled {
    /// Per item: users with it in the primary indicator before downsampling.
    primary_users: Vec<u32>,
    /// Per indicator, per item: users before downsampling (kept when following).
    pre: Vec<Vec<u32>>,
    /// Per indicator, per item: users after downsampling.
    post: Vec<Vec<u32>>,
    interactions: BTreeMap<String, Interactions>,
    /// When following: the owner's rows before and after downsampling.
    before: Option<Vec<Csr>>,
    after: Option<Vec<Csr>>,
    warnings: Vec<String>,
}

/// Downsamples each indicator; counts users per item before and after.
fn downsample(comm: &mut Comm, ctx: &WorkerContext, rows: &mut Rows, dict: &SortedIds) -> Downsampled {
    let engine = &ctx.engine;
    let n_items = dict.len();
    let item_hash: Vec<u64> = dict.iter().map(id_hash).collect();
    let following = ctx.follow.is_some();
    let mut out = Downsampled {
        primary_users: Vec::new(),
        pre: Vec::new(),
        post: Vec::new(),
        interactions: BTreeMap::new(),
        before: following.then(|| rows.matrices.clone()),
        after: None,
        warnings: Vec::new(),
    };
    for (k, indicator) in engine.indicators.iter().enumerate() {
        let matrix = &mut rows.matrices[k];
        let pre = comm.all_reduce_sum("downsample: counts before", column_counts(matrix, n_items));
        let distinct: u64 = pre.iter().map(|&c| c as u64).sum();
        let salt = indicator_salt(engine.seed, &indicator.name);
        sample::downsample(comm, &rows.hash, matrix, &pre, &item_hash, salt, indicator.max_items_per_user);
        let post = comm.all_reduce_sum("downsample: counts after", column_counts(&rows.matrices[k], n_items));
        let after: u64 = post.iter().map(|&c| c as u64).sum();
        out.interactions.insert(indicator.name.clone(), Interactions { distinct, after_downsampling: after });
        if distinct == 0 && engine.recs_model != RecsModel::Backfill {
            out.warnings.push(format!(
                "indicator `{}` has no events of training users: its field is empty in every document",
                indicator.name
            ));
        }
        if k == 0 {
            out.primary_users = pre.clone();
        }
        if following {
            out.pre.push(pre);
        }
        out.post.push(post);
    }
    out.after = following.then(|| rows.matrices.clone());
    out
}

/// Correlators of the rows this worker owns: the row ranges (split by
/// cost), the correlators (none without indicators) and the pair visits
/// (over all workers).
fn correlate(
    comm: &mut Comm,
    ctx: &WorkerContext,
    rows: &mut Rows,
    sampled: &Downsampled,
    n: u64,
    n_items: usize,
) -> (RowRanges, Option<Correlators>, u64) {
    let engine = &ctx.engine;
    let with_indicators = engine.recs_model != RecsModel::Backfill;
    let cost = comm.all_reduce_sum("cco: row costs", row_costs(&rows.matrices, n_items, with_indicators));
    let ranges = RowRanges::split(&cost, comm.peers);
    drop(cost);
    let (correlators, pair_visits) = if with_indicators {
        let matrices = std::mem::take(&mut rows.matrices);
        let block = cco::distribute_rows(comm, &matrices, &ranges);
        drop(matrices);
        crate::hold::at(crate::hold::Point::CoOccurrence);
        let following = ctx.follow.is_some();
        let c = cco::correlate(&block, &sampled.post, n, &engine.indicators, n_items, following);
        let visits = c.pair_visits;
        (Some(c), visits)
    } else {
        (None, 0)
    };
    let pair_visits = comm.sum("cco: pair visits", pair_visits);
    (ranges, correlators, pair_visits)
}

/// The properties and ranking counts of the items of this worker's range,
/// from every worker's share.
fn item_facts(
    comm: &mut Comm,
    ctx: &WorkerContext,
    share: &mut Share,
    global_item: &[u32],
    ranges: &RowRanges,
) -> RangeFacts {
    let with_facts = ctx.engine.recs_model != RecsModel::CollabFiltering;
    let wanted = facts::Wanted { properties: with_facts, ranks: with_facts, keep_events: ctx.follow.is_some() };
    facts::exchange_facts(comm, share, global_item, ranges, &ctx.engine.rankings, wanted)
}

/// What this worker's part of the new state is made of.
fn state_source<'a>(
    rows: &'a Rows,
    history_hashes: &'a [u64],
    kept: &'a ItemFacts,
    doc_hashes: &'a [(u32, u64)],
) -> PartSource<'a> {
    let (rank_events, spans, property_events) = kept;
    PartSource {
        users: &rows.names,
        primary: &rows.primary,
        pairs: rows.all_pairs.as_deref().expect("pairs kept for the state"),
        history_hashes,
        rank_events,
        spans,
        property_events,
        doc_hashes,
    }
}

/// Users per item in a matrix (rows of this worker).
fn column_counts(matrix: &Csr, n_items: usize) -> Vec<u32> {
    let mut counts = vec![0u32; n_items];
    for &i in &matrix.items {
        counts[i as usize] += 1;
    }
    counts
}

/// The pair-visits each primary item's row will cost.
fn row_costs(matrices: &[Csr], n_items: usize, with_indicators: bool) -> Vec<u64> {
    let mut cost = vec![0u64; n_items];
    if with_indicators {
        for u in 0..matrices[0].rows() {
            let work: u64 = matrices.iter().map(|m| m.row(u).len() as u64).sum();
            for &i in matrices[0].row(u) {
                cost[i as usize] += work;
            }
        }
    }
    cost
}
