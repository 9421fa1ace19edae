//! The dataflow: what every worker does, stage by stage. This is the only
//! module that knows about timely.
//!
//! ```text
//! read ─▶ dictionary ─▶ group users ─▶ downsample ─▶ CCO rows ─▶ correlate ─┐
//!   │      (all-gather     (shuffle by     (shuffle      (shuffle to          ├─▶ documents
//!   │       item ids)       user)           heavy items)  row owners)         │   (a part per worker)
//!   └──────────────── property events, ranking counts ─(shuffle to owners)───┘
//! ```
//!
//! Each arrow that crosses workers is a timely exchange ([`exchange`]); the
//! stages in between are plain functions over this worker's partition, so
//! every worker runs the same program on its share and the result does not
//! depend on how many workers (or processes) there are.

pub mod cco;
pub mod dictionary;
pub mod exchange;
pub mod facts;
pub mod llr;
pub mod properties;
pub mod ranks;
pub mod read;
pub mod resident;
pub mod resume;
pub mod sample;
pub mod users;

use crate::config::{Engine, RecsModel};
use crate::hash::{id_hash, indicator_salt};
use crate::intern::SortedIds;
use crate::model::{Properties, PropertyEvent};
use crate::sink::document::{Document, DocumentLayout};
use crate::sink::elasticsearch::EsTarget;
use crate::source::{InputFile, WorkUnit};
use crate::stats::{Interactions, ModelStats, ReadStats, RejectLimit, Timings};
use crate::storage::{Store, join};
use crate::time::format_iso8601;
use cco::RowRanges;
use exchange::Comm;
use read::{ReadPlan, Share, read_share};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;
use timely::worker::Worker;

/// What all workers of a process share, read-only.
pub struct WorkerContext {
    pub engine: Engine,
    pub store: Store,
    pub inputs: Vec<InputFile>,
    pub units: Vec<WorkUnit>,
    /// `shares[w]`: indices of the units worker w reads (w over all processes).
    pub shares: Vec<Vec<usize>>,
    /// Hash of the input listing, compared across processes.
    pub listing: u64,
    pub plan: ReadPlan,
    pub now: i64,
    pub max_rejected: RejectLimit,
    pub show_rejected: usize,
    /// Where worker w writes `items-0000w.jsonl`, if a directory is written.
    pub output: Option<DirOutput>,
    /// The Elasticsearch indices being written, if any.
    pub es: Option<Arc<EsTarget>>,
    pub process: usize,
    pub processes: usize,
    pub bytes_read: Arc<AtomicU64>,
    /// Keep each user's recent items (for the query-time user history).
    pub histories: bool,
    /// The previous state, to train from together with the new files.
    pub state_in: Option<StateIn>,
    /// Where this run writes its state parts.
    pub state_out: Option<DirOutput>,
    /// `--follow`: the resident states kept between updates.
    pub follow: Option<Arc<resident::Follow>>,
}

/// A state to resume from.
pub struct StateIn {
    pub store: Store,
    pub dir: String,
    pub parts: usize,
}

/// A model directory being written: its store and temporary directory.
pub struct DirOutput {
    pub store: Store,
    pub parts_dir: String,
}

/// The result of a run, produced by worker 0 and given to every worker.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub read: ReadStats,
    pub model: ModelStats,
    pub timings: Timings,
    pub warnings: Vec<String>,
    /// Bytes of exchanged data sent to workers of other processes, by exchange.
    pub network_bytes: BTreeMap<String, u64>,
    /// True if every process wrote its parts into one shared directory.
    pub shared_output: bool,
    /// Users with a history document (all users seen).
    pub users_indexed: u64,
    /// What was sent to Elasticsearch.
    pub changed: Changes,
    /// Size of the state written.
    pub state_bytes: u64,
    /// What a resident update changed (`--follow`, after the first run).
    pub update: Option<resident::UpdateStats>,
}

/// Documents sent to Elasticsearch (in place: only what changed).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Changes {
    pub documents: u64,
    pub deleted: u64,
    pub users: u64,
}

/// A failure that every worker agrees on.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Reading failed (I/O, corrupt file).
    Input(String),
    /// Too many lines rejected; the read statistics say which.
    TooManyRejected(Box<ReadStats>),
    /// Nothing to train on.
    NoData(String),
    /// Writing the documents failed.
    Output(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Input(e) | Failure::NoData(e) | Failure::Output(e) => f.write_str(e),
            Failure::TooManyRejected(stats) => write!(
                f,
                "{} of {} lines rejected, more than --max-rejected allows",
                stats.rejected_total(),
                stats.lines
            ),
        }
    }
}

/// One worker's program.
pub fn run_worker(worker: &mut Worker, ctx: &WorkerContext) -> Result<Summary, Failure> {
    // Following, after the first run: update the resident state.
    if let Some(follow) = &ctx.follow
        && let Some(mut res) = follow.take(worker.index())
    {
        let out = update_worker(worker, ctx, &mut res, follow.drift);
        // Reading fails before anything held changes: keep it.
        if matches!(out, Ok(_) | Err(Failure::Input(_) | Failure::TooManyRejected(_))) {
            follow.put(worker.index(), res);
        }
        return out;
    }
    let started = Instant::now();
    let mut comm = Comm::new(worker, ctx.processes);
    let me = comm.index;
    let lead = me == 0;
    let engine = &ctx.engine;
    let mut timings = Timings::default();
    let mut warnings = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |slot: &mut f64| {
        *slot = clock.elapsed().as_secs_f64();
        clock = Instant::now();
    };

    // Every process must see the same input; each marks the output directory.
    let first_of_process = me % (comm.peers / ctx.processes) == 0;
    let mut setup_error = None;
    if let (true, Some(out)) = (first_of_process, &ctx.output) {
        let marker = join(&out.parts_dir, &format!(".process-{}", ctx.process));
        setup_error = out.store.create(&marker).and_then(|f| f.finish().map_err(|e| format!("{marker}: {e}"))).err();
    }
    let listings = comm.all_gather("input listing", (ctx.process, ctx.inputs.len(), ctx.listing, setup_error));
    for (process, files, listing, error) in listings {
        if let Some(e) = error {
            return Err(Failure::Output(e));
        }
        if listing != ctx.listing {
            return Err(Failure::Input(format!(
                "process {process} sees other input files ({files}) than process {} ({}): every process must see the same --input",
                ctx.process,
                ctx.inputs.len()
            )));
        }
    }

    // Read this worker's units; agree on errors and on the rejection limit.
    let mine = ctx.shares.get(me).map(Vec::as_slice).unwrap_or(&[]);
    let input = read::Input { store: &ctx.store, files: &ctx.inputs, units: &ctx.units };
    let (mut share, mut error) = match read_share(&ctx.plan, &input, mine, ctx.show_rejected, &ctx.bytes_read) {
        Ok(share) => (share, None),
        Err(e) => (Share::empty(&ctx.plan), Some(e)),
    };
    // The previous state's parts join this worker's share (part p on worker
    // p mod workers). With as many workers as parts, part p holds the users
    // worker p owns: they stay where they are.
    let mut owned_users = None;
    if let (None, Some(state)) = (&error, &ctx.state_in) {
        for p in (me..state.parts).step_by(comm.peers) {
            match crate::state::read_part(&state.store, &state.dir, p) {
                Ok(part) if state.parts == comm.peers => {
                    owned_users = Some(resume::own_part(&mut share, &ctx.plan, part))
                }
                Ok(part) => resume::merge_part(&mut share, &ctx.plan, part),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
    }
    let stats = agree_on_read(&mut comm, ctx, &mut share, error)?;
    share.count_ranks(&ctx.plan);
    let primary = engine.primary();
    let primary_events: u64 = primary.event_names.iter().filter_map(|e| stats.events.get(e)).map(|c| c.kept).sum();
    if primary_events == 0 && ctx.state_in.is_none() && engine.recs_model != RecsModel::Backfill {
        return Err(Failure::NoData(format!(
            "no primary events: none of the {} lines read is a usable `{}` event (user → item); the first indicator must have data",
            stats.lines,
            primary.event_names.join("`/`")
        )));
    }
    lap(&mut timings.read);
    if lead {
        tracing::info!(lines = stats.lines, rejected = stats.rejected_total(), secs = timings.read, "read");
    }

    // Dictionary: every item id, sorted; item i is the i-th.
    let mine = SortedIds::from_unsorted(share.items.iter());
    let dict = dictionary::build_dictionary(&mut comm, mine);
    let global_item: Vec<u32> =
        share.items.iter().map(|s| dict.position(s).expect("every local item is in the dictionary")).collect();
    let n_items = dict.len();
    let kept_for_state = ctx.state_out.as_ref().map(|_| resume::item_facts(&share, &global_item));
    lap(&mut timings.dictionary);

    // Users meet at their owners; minEventsPerUser picks the rows.
    let history_caps: Vec<u32> = engine.indicators.iter().map(|i| i.history_cap).collect();
    let histories = ctx.histories.then_some(history_caps.as_slice());
    let mut rows = users::group_users(
        &mut comm,
        &mut share,
        &global_item,
        engine.min_events_per_user,
        histories,
        ctx.state_out.is_some() || ctx.follow.is_some(),
        owned_users.map(|o| o.into_batch(&global_item)),
    );
    let n = comm.sum("rows", rows.user_of_row.len() as u64);
    let users_seen = comm.sum("users", rows.names.len() as u64);
    if n == 0 && engine.recs_model != RecsModel::Backfill {
        return Err(Failure::NoData(format!(
            "no user has minEventsPerUser = {} `{}` events: nothing to train on",
            engine.min_events_per_user, primary.name
        )));
    }
    lap(&mut timings.group);
    if lead {
        tracing::info!(users = users_seen, n, items = n_items, secs = timings.group, "grouped users");
    }

    // Downsample each indicator; count users per item before and after.
    let item_hash: Vec<u64> = dict.iter().map(id_hash).collect();
    let mut interactions = BTreeMap::new();
    let mut pre_primary: Vec<u32> = Vec::new();
    let mut pre_counts: Vec<Vec<u32>> = Vec::new();
    let mut post_counts: Vec<Vec<u32>> = Vec::new();
    let following = ctx.follow.is_some();
    let before = following.then(|| rows.matrices.clone());
    for (k, indicator) in engine.indicators.iter().enumerate() {
        let matrix = &mut rows.matrices[k];
        let pre = comm.all_reduce_sum("downsample: counts before", column_counts(matrix, n_items));
        let distinct: u64 = pre.iter().map(|&c| c as u64).sum();
        let salt = indicator_salt(engine.seed, &indicator.name);
        sample::downsample(&mut comm, &rows.hash, matrix, &pre, &item_hash, salt, indicator.max_items_per_user);
        let post = comm.all_reduce_sum("downsample: counts after", column_counts(&rows.matrices[k], n_items));
        let after: u64 = post.iter().map(|&c| c as u64).sum();
        interactions.insert(indicator.name.clone(), Interactions { distinct, after_downsampling: after });
        if distinct == 0 && engine.recs_model != RecsModel::Backfill {
            warnings.push(format!(
                "indicator `{}` has no events of training users: its field is empty in every document",
                indicator.name
            ));
        }
        if k == 0 {
            pre_primary = pre.clone();
        }
        if following {
            pre_counts.push(pre);
        }
        post_counts.push(post);
    }
    drop(item_hash);
    let after = following.then(|| rows.matrices.clone());
    lap(&mut timings.downsample);

    // Correlators of the rows this worker owns.
    let with_indicators = engine.recs_model != RecsModel::Backfill;
    let cost = comm.all_reduce_sum("cco: row costs", row_costs(&rows.matrices, n_items, with_indicators));
    let ranges = RowRanges::split(&cost, comm.peers);
    drop(cost);
    let matrices = if with_indicators { std::mem::take(&mut rows.matrices) } else { Vec::new() };
    let (correlators, pair_visits) = if with_indicators {
        let block = cco::distribute_rows(&mut comm, &matrices, &ranges);
        drop(matrices);
        let c = cco::correlate(&block, &post_counts, n, &engine.indicators, n_items, ctx.follow.is_some());
        let visits = c.pair_visits;
        (Some(c), visits)
    } else {
        (None, 0)
    };
    let post_counts = if following { post_counts } else { Vec::new() };
    let pair_visits = comm.sum("cco: pair visits", pair_visits);
    lap(&mut timings.cco);
    if lead {
        tracing::info!(pair_visits, secs = timings.cco, "correlated");
    }

    // Properties and ranks of the items this worker owns.
    let with_facts = engine.recs_model != RecsModel::CollabFiltering;
    let facts = facts::exchange_facts(
        &mut comm,
        &mut share,
        &global_item,
        &ranges,
        &engine.rankings,
        facts::Wanted { properties: with_facts, ranks: with_facts, keep_events: following },
    );
    let kept_share = following.then(|| {
        // Property events stay with their item's owner from now on.
        share.property_events = Vec::new();
        share
    });
    let range = ranges.range(me);
    let rank_values = range_ranks(engine, &facts, &range, &dict);
    lap(&mut timings.properties_and_ranks);

    // Documents of the own range, in item order.
    let layout = DocumentLayout::of(engine);
    let mut local = LocalModelStats::default();
    let mut doc_hashes: Vec<(u32, u64)> = Vec::new();
    let written = write_part(
        ctx,
        me,
        &range,
        &dict,
        &pre_primary,
        correlators.as_ref(),
        &rank_values,
        &facts,
        &layout,
        &mut local,
        &mut doc_hashes,
        None,
    );
    let mut history_hashes = rows.prev_history.clone();
    let users_written = match (written, &ctx.es, &rows.histories) {
        (Ok(()), Some(es), Some(histories)) => {
            let users = (0..rows.names.len()).map(|u| (u, rows.names.resolve(u as u32)));
            let recent = |u: usize, k: usize| histories.row(u * engine.indicators.len() + k).to_vec();
            write_histories(es, me, users, recent, &dict, engine, &mut history_hashes)
        }
        (Ok(()), _, _) => Ok(0),
        (Err(e), _, _) => Err(e),
    };
    local.users = rows.names.len() as u64;
    local.users_sent = *users_written.as_ref().unwrap_or(&0);
    let mut write_error = users_written.err();
    // This worker's part of the new state.
    if let (None, Some(out), Some((rank_events, spans, property_events))) =
        (&write_error, &ctx.state_out, &kept_for_state)
    {
        let all = rows.all_pairs.as_deref().expect("pairs kept for the state");
        let source = resume::PartSource {
            users: &rows.names,
            primary: &rows.primary,
            pairs: all,
            history_hashes: &history_hashes,
            rank_events,
            spans,
            property_events,
            doc_hashes: &doc_hashes,
        };
        let part = resume::build_part(&source, &dict, &ctx.plan);
        match crate::state::write_part(&out.store, &out.parts_dir, me, &part) {
            Ok(bytes) => local.state_bytes = bytes,
            Err(e) => write_error = Some(e),
        }
    }
    // Following: what stays in memory for the next update.
    if let Some(follow) = &ctx.follow {
        let run = resident::FromRun {
            dict,
            rows,
            before: before.unwrap_or_default(),
            after: after.unwrap_or_default(),
            pre: pre_counts,
            post: post_counts,
            n,
            ranges: ranges.clone(),
            correlators,
            doc_hashes,
            history_hashes,
            facts: kept_share.expect("share kept when following"),
            range_facts: &facts,
        };
        follow.put(me, resident::Resident::build(&mut comm, engine, run));
    }
    // Worker 0 checks whether every process wrote into the directory it sees.
    let shared = lead
        && ctx.output.as_ref().is_some_and(|out| {
            (0..ctx.processes).all(|p| {
                let marker = join(&out.parts_dir, &format!(".process-{p}"));
                matches!(out.store.stat(&marker), Ok(Some(_)))
            })
        });
    let sent = comm.sent_remote.clone();
    let gathered = comm.all_gather("documents: outcome", (local, write_error, shared, sent));
    lap(&mut timings.write);

    let mut total = LocalModelStats::default();
    let shared_output = gathered[0].2;
    let mut network_bytes = BTreeMap::new();
    for (s, error, _, sent) in gathered {
        if let Some(e) = error {
            return Err(Failure::Output(e));
        }
        total.add(s);
        for (name, bytes) in sent {
            *network_bytes.entry(name).or_default() += bytes;
        }
    }
    warnings.extend(total.clash_warnings());
    let model = ModelStats {
        users: users_seen,
        n,
        items: n_items as u64,
        primary_items: pre_primary.iter().filter(|&&c| c > 0).count() as u64,
        interactions,
        pair_visits,
        ..total.document_stats(engine)
    };
    timings.total = started.elapsed().as_secs_f64();
    if lead {
        tracing::info!(documents = model.documents, now = %format_iso8601(ctx.now), secs = timings.total, "documents written");
    }
    let users_indexed = total.users;
    let changed = total.changes();
    let state_bytes = total.state_bytes;
    let summary = Summary {
        read: stats,
        model,
        timings,
        warnings,
        network_bytes,
        shared_output,
        users_indexed,
        changed,
        state_bytes,
        update: None,
    };
    // Every process gets worker 0's summary (for its manifest).
    let all = comm.all_gather("summary", lead.then_some(summary));
    Ok(all.into_iter().flatten().next().expect("worker 0 sends its summary"))
}

/// One worker's update of its resident state with the new files
/// (`--follow`, after the first run): see [`resident`].
fn update_worker(
    worker: &mut Worker,
    ctx: &WorkerContext,
    res: &mut resident::Resident,
    drift: f64,
) -> Result<Summary, Failure> {
    let started = Instant::now();
    let mut comm = Comm::new(worker, ctx.processes);
    let me = comm.index;
    let lead = me == 0;
    let engine = &ctx.engine;
    let mut timings = Timings::default();
    let mut clock = Instant::now();
    let mut lap = |slot: &mut f64| {
        *slot = clock.elapsed().as_secs_f64();
        clock = Instant::now();
    };

    let mine = ctx.shares.get(me).map(Vec::as_slice).unwrap_or(&[]);
    let input = read::Input { store: &ctx.store, files: &ctx.inputs, units: &ctx.units };
    let (mut share, error) = match read_share(&ctx.plan, &input, mine, ctx.show_rejected, &ctx.bytes_read) {
        Ok(share) => (share, None),
        Err(e) => (Share::empty(&ctx.plan), Some(e)),
    };
    let stats = agree_on_read(&mut comm, ctx, &mut share, error)?;
    lap(&mut timings.read);

    // New item ids join the dictionary.
    let new_items = SortedIds::from_unsorted(share.items.iter().filter(|s| res.dict.position(s).is_none()));
    let added = SortedIds::merge(&comm.all_gather("follow: new items", new_items));
    res.add_items(&added, me);
    let global_item: Vec<u32> =
        share.items.iter().map(|s| res.dict.position(s).expect("every local item is in the dictionary")).collect();
    lap(&mut timings.dictionary);

    // New events to their users' owners, then the model's counts.
    let batches = users::ship_users(&mut share, &global_item, comm.peers, true);
    let received = comm.shuffle("group users", batches);
    lap(&mut timings.group);
    let update = resident::update(&mut comm, engine, res, received, drift);
    lap(&mut timings.cco);
    if lead {
        tracing::info!(
            users_changed = update.users_changed,
            rows_rescored = update.rows_rescored,
            full_rescore = update.full_rescore,
            secs = timings.cco,
            "updated"
        );
    }

    // The new item facts join the ones held; properties and ranks of the range.
    let facts_clock = Instant::now();
    let new_properties: Vec<PropertyEvent> = std::mem::take(&mut share.property_events)
        .into_iter()
        .map(|e| PropertyEvent { item: global_item[e.item as usize], ..e })
        .collect();
    resume::add_item_facts(&mut res.facts, &ctx.plan, &share);
    drop(share);
    let with_facts = engine.recs_model != RecsModel::CollabFiltering;
    if with_facts {
        let mut parcels: Vec<Vec<PropertyEvent>> = vec![Vec::new(); comm.peers];
        for e in new_properties {
            parcels[res.ranges.owner(e.item)].push(e);
        }
        let received = comm.shuffle("follow: property events", parcels.into_iter().enumerate().collect());
        res.add_property_events(received.into_iter().flat_map(|(_, v)| v), me);
    }
    res.facts.count_ranks(&ctx.plan);
    let counted = facts_clock.elapsed().as_secs_f64();
    let facts_global: Vec<u32> =
        res.facts.items.iter().map(|s| res.dict.position(s).expect("every item read is in the dictionary")).collect();
    let ranges = res.ranges.clone();
    let mut facts = facts::exchange_facts(
        &mut comm,
        &mut res.facts,
        &facts_global,
        &ranges,
        &engine.rankings,
        facts::Wanted { properties: false, ranks: with_facts, keep_events: false },
    );
    facts.prev_hash = res.doc_hash.clone();
    // Lent to the writer, given back after.
    facts.properties = std::mem::take(&mut res.properties);
    facts.deleted = std::mem::take(&mut res.deleted);
    tracing::debug!(worker = me, counted, exchanged = facts_clock.elapsed().as_secs_f64(), "item facts");
    let range = ranges.range(me);
    let rank_values = range_ranks(engine, &facts, &range, &res.dict);
    lap(&mut timings.properties_and_ranks);

    // Documents of the range, and the state when it is written.
    let layout = DocumentLayout::of(engine);
    let with_indicators = engine.recs_model != RecsModel::Backfill;
    let mut local = LocalModelStats::default();
    let mut doc_hashes: Vec<(u32, u64)> = Vec::new();
    let written = write_part(
        ctx,
        me,
        &range,
        &res.dict,
        &res.pre[0],
        with_indicators.then_some(&res.correlators),
        &rank_values,
        &facts,
        &layout,
        &mut local,
        &mut doc_hashes,
        Some((&mut res.docs, &update.rescored)),
    );
    res.properties = std::mem::take(&mut facts.properties);
    res.deleted = std::mem::take(&mut facts.deleted);
    // Elasticsearch: the histories of the users with new events.
    let written = match (written, &ctx.es) {
        (Ok(()), Some(es)) => {
            let caps: Vec<u32> = engine.indicators.iter().map(|i| i.history_cap).collect();
            let mut hashes = std::mem::take(&mut res.history_hash);
            let users = update.touched.iter().map(|&u| (u as usize, res.users.resolve(u)));
            let recent = |u: usize, k: usize| res.recent(u as u32, k, caps[k]);
            let sent = write_histories(es, me, users, recent, &res.dict, engine, &mut hashes);
            res.history_hash = hashes;
            sent.map(|n| local.users_sent = n)
        }
        (written, _) => written,
    };
    res.doc_hash.iter_mut().for_each(|h| *h = 0);
    for &(item, hash) in &doc_hashes {
        res.doc_hash[(item - range.start) as usize] = hash;
    }
    local.users = res.users.len() as u64;
    let mut write_error = written.err();
    if let (None, Some(out)) = (&write_error, &ctx.state_out) {
        let (rank_events, spans, _) = resume::item_facts(&res.facts, &facts_global);
        let property_events: Vec<PropertyEvent> = res.property_events.iter().flatten().cloned().collect();
        let pairs = res.pair_lists();
        let source = resume::PartSource {
            users: &res.users,
            primary: &res.primary,
            pairs: &pairs,
            history_hashes: &res.history_hash,
            rank_events: &rank_events,
            spans: &spans,
            property_events: &property_events,
            doc_hashes: &doc_hashes,
        };
        let part = resume::build_part(&source, &res.dict, &ctx.plan);
        match crate::state::write_part(&out.store, &out.parts_dir, me, &part) {
            Ok(bytes) => local.state_bytes = bytes,
            Err(e) => write_error = Some(e),
        }
    }
    let gathered = comm.all_gather("documents: outcome", (local, write_error));
    lap(&mut timings.write);
    let mut total = LocalModelStats::default();
    for (s, error) in gathered {
        if let Some(e) = error {
            return Err(Failure::Output(e));
        }
        total.add(s);
    }
    let mut warnings = Vec::new();
    warnings.extend(total.clash_warnings());
    let interactions = engine
        .indicators
        .iter()
        .enumerate()
        .map(|(k, i)| {
            let distinct = res.pre[k].iter().map(|&c| c as u64).sum();
            let after_downsampling = res.post[k].iter().map(|&c| c as u64).sum();
            (i.name.clone(), Interactions { distinct, after_downsampling })
        })
        .collect();
    let pair_visits = comm.sum("cco: pair visits", res.correlators.pair_visits);
    let model = ModelStats {
        users: total.users,
        n: res.n,
        items: res.dict.len() as u64,
        primary_items: res.pre[0].iter().filter(|&&c| c > 0).count() as u64,
        interactions,
        pair_visits,
        ..total.document_stats(engine)
    };
    timings.total = started.elapsed().as_secs_f64();
    if lead {
        tracing::info!(documents = model.documents, secs = timings.total, "documents written");
    }
    Ok(Summary {
        read: stats,
        model,
        timings,
        warnings,
        network_bytes: comm.sent_remote.clone(),
        shared_output: true,
        users_indexed: total.users,
        changed: total.changes(),
        state_bytes: total.state_bytes,
        update: Some(update),
    })
}

/// The ranking values of a range's items (none without rankings in the model).
fn range_ranks(
    engine: &Engine,
    facts: &facts::RangeFacts,
    range: &std::ops::Range<u32>,
    dict: &SortedIds,
) -> Vec<Vec<Option<f64>>> {
    let has_properties: Vec<bool> = facts.properties.iter().map(Option::is_some).collect();
    if engine.recs_model == RecsModel::CollabFiltering {
        return vec![vec![None; has_properties.len()]; engine.rankings.len()];
    }
    ranks::rank_values(&engine.rankings, &facts.counts, &facts.random, &has_properties, range, dict, engine.seed)
}

/// Every worker's read statistics merged; an error anywhere, or too many
/// rejected lines, fails every worker.
fn agree_on_read(
    comm: &mut Comm,
    ctx: &WorkerContext,
    share: &mut Share,
    error: Option<String>,
) -> Result<ReadStats, Failure> {
    let gathered = comm.all_gather("read: outcome", (share.stats.clone(), error));
    let mut stats = ReadStats::default();
    for (s, error) in gathered {
        if let Some(e) = error {
            return Err(Failure::Input(e));
        }
        stats.merge(s, ctx.show_rejected);
    }
    stats.resolve_lines();
    share.stats = ReadStats::default();
    if ctx.max_rejected.exceeded(stats.rejected_total(), stats.lines) {
        return Err(Failure::TooManyRejected(Box::new(stats)));
    }
    Ok(stats)
}

/// Users per item in a matrix (rows of this worker).
fn column_counts(matrix: &users::Csr, n_items: usize) -> Vec<u32> {
    let mut counts = vec![0u32; n_items];
    for &i in &matrix.items {
        counts[i as usize] += 1;
    }
    counts
}

/// The pair-visits each primary item's row will cost.
fn row_costs(matrices: &[users::Csr], n_items: usize, with_indicators: bool) -> Vec<u64> {
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

#[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
struct LocalModelStats {
    documents: u64,
    users: u64,
    users_sent: u64,
    documents_sent: u64,
    deleted: u64,
    state_bytes: u64,
    correlators: Vec<u64>,
    items_with_properties: u64,
    ranked: Vec<u64>,
    clashes: BTreeMap<String, u64>,
}

impl LocalModelStats {
    /// The model statistics the written documents give.
    fn document_stats(&self, engine: &Engine) -> ModelStats {
        ModelStats {
            correlators: engine.indicators.iter().zip(&self.correlators).map(|(i, &c)| (i.name.clone(), c)).collect(),
            items_with_properties: self.items_with_properties,
            ranked_items: engine.rankings.iter().zip(&self.ranked).map(|(r, &c)| (r.name.clone(), c)).collect(),
            documents: self.documents,
            ..ModelStats::default()
        }
    }

    /// What was sent to Elasticsearch.
    fn changes(&self) -> Changes {
        Changes { documents: self.documents_sent, deleted: self.deleted, users: self.users_sent }
    }

    /// Properties not written because the model uses their name.
    fn clash_warnings(&self) -> impl Iterator<Item = String> + '_ {
        self.clashes.iter().map(|(field, count)| {
            format!("property `{field}` of {count} item(s) is not written: the model uses that field name")
        })
    }

    fn add(&mut self, other: LocalModelStats) {
        self.documents += other.documents;
        self.users += other.users;
        self.users_sent += other.users_sent;
        self.documents_sent += other.documents_sent;
        self.deleted += other.deleted;
        self.state_bytes += other.state_bytes;
        self.items_with_properties += other.items_with_properties;
        add_vec(&mut self.correlators, &other.correlators);
        add_vec(&mut self.ranked, &other.ranked);
        for (k, v) in other.clashes {
            *self.clashes.entry(k).or_default() += v;
        }
    }
}

fn add_vec(a: &mut Vec<u64>, b: &[u64]) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// A document as last written while following, with what it was made of.
pub struct CachedDoc {
    line: Vec<u8>,
    hash: u64,
    ranks: Vec<Option<f64>>,
    properties: Option<Properties>,
    clashes: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn write_part(
    ctx: &WorkerContext,
    me: usize,
    range: &std::ops::Range<u32>,
    dict: &SortedIds,
    pre_primary: &[u32],
    correlators: Option<&cco::Correlators>,
    rank_values: &[Vec<Option<f64>>],
    facts: &facts::RangeFacts,
    layout: &DocumentLayout,
    stats: &mut LocalModelStats,
    hashes: &mut Vec<(u32, u64)>,
    mut cache: Option<(&mut [Option<CachedDoc>], &[bool])>,
) -> Result<(), String> {
    let in_place = ctx.es.as_ref().is_some_and(|es| es.in_place);
    let mut file = match &ctx.output {
        Some(out) => {
            let path = join(&out.parts_dir, &crate::sink::directory::part_name(me));
            // One process: the parts are concatenated into items.jsonl (synced), then removed.
            let file = if ctx.processes == 1 { out.store.create_scratch(&path)? } else { out.store.create(&path)? };
            Some((file, path))
        }
        None => None,
    };
    let mut bulk = ctx.es.as_ref().map(|es| es.writer(&es.model_index, me));
    let mut line = Vec::with_capacity(4096);
    stats.correlators = vec![0; layout.indicators.len()];
    stats.ranked = vec![0; layout.rankings.len()];
    let mut ranks = vec![None; layout.rankings.len()];
    for (x, item) in range.clone().enumerate() {
        let correlators = correlators
            .filter(|_| pre_primary.get(item as usize).is_some_and(|&c| c > 0))
            .map(|c| c.rows[x].as_slice());
        for (slot, values) in ranks.iter_mut().zip(rank_values) {
            *slot = values[x];
        }
        let properties = facts.properties[x].as_ref();
        let prev = facts.prev_hash[x];
        let nothing = correlators.is_none() && properties.is_none() && ranks.iter().all(Option::is_none);
        if nothing || facts.deleted[x] {
            // No document (any more): an item `$delete`d leaves the live index.
            if !in_place || prev == 0 {
                continue;
            }
            if let Some(bulk) = &mut bulk {
                bulk.delete(dict.get(item))?;
                stats.deleted += 1;
            }
            continue;
        }
        if let Some(c) = correlators {
            for (total, list) in stats.correlators.iter_mut().zip(c) {
                *total += list.len() as u64;
            }
        }
        for (total, v) in stats.ranked.iter_mut().zip(&ranks) {
            *total += v.is_some() as u64;
        }
        stats.items_with_properties += properties.is_some() as u64;
        stats.documents += 1;
        let doc = Document { id: dict.get(item), correlators, ranks: &ranks, properties };
        // Following: a document whose inputs did not change is copied.
        let cached = cache.as_mut().and_then(|(docs, rescored)| {
            let hit = docs[x]
                .as_ref()
                .is_some_and(|c| !rescored[x] && c.ranks == ranks && c.properties.as_ref() == properties);
            if !hit {
                docs[x] = None;
            }
            docs[x].as_ref()
        });
        let (hash, written) = match cached {
            Some(c) => {
                for field in &c.clashes {
                    *stats.clashes.entry(field.clone()).or_default() += 1;
                }
                (c.hash, c.line.as_slice())
            }
            None => {
                line.clear();
                let mut clashes = BTreeMap::new();
                layout.write(&mut line, &doc, dict, &mut clashes);
                let hash = xxhash_rust::xxh3::xxh3_64(&line);
                if let Some((docs, _)) = cache.as_mut() {
                    docs[x] = Some(CachedDoc {
                        line: line.clone(),
                        hash,
                        ranks: ranks.clone(),
                        properties: properties.cloned(),
                        clashes: clashes.keys().cloned().collect(),
                    });
                }
                for (field, n) in clashes {
                    *stats.clashes.entry(field).or_default() += n;
                }
                (hash, line.as_slice())
            }
        };
        if let Some((out, path)) = &mut file {
            out.write_all(written).map_err(|e| format!("cannot write {path}: {e}"))?;
        }
        hashes.push((item, hash));
        if let Some(bulk) = &mut bulk
            && (!in_place || hash != prev)
        {
            bulk.add(doc.id, written)?;
            stats.documents_sent += 1;
        }
    }
    if let Some(bulk) = bulk {
        bulk.finish()?;
    }
    match file {
        Some((out, path)) => out.finish().map_err(|e| format!("cannot write {path}: {e}")),
        None => Ok(()),
    }
}

/// The user-history documents of `users` (index, id): `{"user": id,
/// <indicator>: [most recent first], ...}`; `recent(user, k)` gives the
/// items. Only documents whose hash changed are sent when in place.
#[allow(clippy::too_many_arguments)]
fn write_histories<'a>(
    es: &EsTarget,
    me: usize,
    users: impl Iterator<Item = (usize, &'a str)>,
    recent: impl Fn(usize, usize) -> Vec<u32>,
    dict: &SortedIds,
    engine: &Engine,
    hashes: &mut [u64],
) -> Result<u64, String> {
    let mut bulk = es.writer(&es.users_index, me);
    let mut sent = 0;
    let mut line = Vec::with_capacity(1024);
    for (user, id) in users {
        let previous = &mut hashes[user];
        line.clear();
        line.extend_from_slice(b"{\"user\":");
        serde_json::to_writer(&mut line, id).expect("JSON");
        for (k, indicator) in engine.indicators.iter().enumerate() {
            line.push(b',');
            serde_json::to_writer(&mut line, &indicator.name).expect("JSON");
            line.extend_from_slice(b":[");
            for (n, &item) in recent(user, k).iter().enumerate() {
                if n > 0 {
                    line.push(b',');
                }
                serde_json::to_writer(&mut line, dict.get(item)).expect("JSON");
            }
            line.push(b']');
        }
        line.push(b'}');
        let hash = xxhash_rust::xxh3::xxh3_64(&line);
        if !es.in_place || *previous != hash {
            bulk.add(id, &line)?;
            sent += 1;
        }
        *previous = hash;
    }
    bulk.finish()?;
    Ok(sent)
}
