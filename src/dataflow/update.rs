//! An update (`--follow`, after the first run): one worker reads only the
//! new files and updates its resident model ([`super::resident`]) with
//! them, then writes its part of the documents, the histories of its users
//! with new events and its part of the new state, as a full run does.

use super::documents::{part_output, range_ranks};
use super::exchange::Comm;
use super::facts::{self, RangeFacts};
use super::intake::{agree_on_read, read_own_share};
use super::outcome::{ModelShape, Stopwatch, WorkerCounts, gather_outcome};
use super::read::Share;
use super::resident::Resident;
use super::state_part::{self, PartSource};
use super::{Failure, Summary, WorkerContext, resident, users};
use crate::config::{Engine, RecsModel};
use crate::intern::SortedIds;
use crate::model::PropertyEvent;
use crate::sink::document::DocumentLayout;
use crate::sink::history::{Histories, write_histories};
use crate::sink::part::{DocCache, PartDocuments, PartWritten, write_part};
use crate::stats::{Interactions, ModelStats, Timings};
use std::time::Instant;
use timely::worker::Worker;

/// One worker's update of its resident model with the new files.
pub(super) fn update(
    worker: &mut Worker,
    ctx: &WorkerContext,
    res: &mut Resident,
    drift: f64,
) -> Result<Summary, Failure> {
    let mut comm = Comm::new(worker, ctx.processes);
    let me = comm.index;
    let engine = &ctx.engine;
    let mut watch = Stopwatch::start();
    let mut timings = Timings::default();
    let (mut share, error) = read_own_share(&comm, ctx);
    let read = agree_on_read(&mut comm, ctx, &mut share, error)?;
    timings.read = watch.lap();

    let global_item = add_new_items(&mut comm, res, &share);
    timings.dictionary = watch.lap();

    // New events to their users' owners, then the model's counts.
    let batches = users::ship_users(&mut share, &global_item, comm.peers, true);
    let received = comm.shuffle("group users", batches);
    timings.group = watch.lap();
    let update = resident::update(&mut comm, engine, res, received, drift);
    timings.cco = watch.lap();
    if me == 0 {
        tracing::info!(
            users_changed = update.users_changed,
            rows_rescored = update.rows_rescored,
            full_rescore = update.full_rescore,
            secs = timings.cco,
            "updated"
        );
    }

    let (mut facts, facts_global) = update_item_facts(&mut comm, ctx, res, share, &global_item);
    let range = res.ranges.range(me);
    let rank_values = range_ranks(engine, &facts, &range, &res.dict);
    timings.properties_and_ranks = watch.lap();

    // Documents of the range, the histories of the users with new events,
    // and the state when it is written.
    let layout = DocumentLayout::of(engine);
    let with_indicators = engine.recs_model != RecsModel::Backfill;
    let docs = PartDocuments {
        range: range.clone(),
        dict: &res.dict,
        layout: &layout,
        primary_users: &res.pre[0],
        correlators: with_indicators.then_some(res.correlators.rows.as_slice()),
        ranks: &rank_values,
        properties: &facts.properties,
        deleted: &facts.deleted,
        prev_hash: &facts.prev_hash,
    };
    let cache = DocCache { docs: &mut res.docs, rescored: &update.rescored };
    let mut written = PartWritten::default();
    let part = write_part(&part_output(ctx, me), &docs, Some(cache), &mut written);
    res.properties = std::mem::take(&mut facts.properties);
    res.deleted = std::mem::take(&mut facts.deleted);
    let mut counts = WorkerCounts { users: res.users.len() as u64, ..WorkerCounts::default() };
    let mut error = match (part, &ctx.es) {
        (Ok(()), Some(es)) => {
            let caps: Vec<u32> = engine.indicators.iter().map(|i| i.history_cap).collect();
            let mut hashes = std::mem::take(&mut res.history_hash);
            let users = update.touched.iter().map(|&u| (u as usize, res.users.resolve(u)));
            let recent = |u: usize, k: usize| res.recent(u as u32, k, caps[k]);
            let histories = Histories { recent, indicators: &layout.indicators, dict: &res.dict };
            let sent = write_histories(es, me, users, &histories, &mut hashes);
            res.history_hash = hashes;
            sent.map(|n| counts.users_sent = n).err().map(Failure::from)
        }
        (part, _) => part.err().map(Failure::from),
    };
    res.doc_hash.iter_mut().for_each(|h| *h = 0);
    for &(item, hash) in &written.hashes {
        res.doc_hash[(item - range.start) as usize] = hash;
    }
    if let (None, Some(out)) = (&error, &ctx.state_out) {
        match write_state(ctx, me, res, &facts_global, &written.hashes, out) {
            Ok(bytes) => counts.state_bytes = bytes,
            Err(e) => error = Some(e),
        }
    }
    counts.part = written.stats;
    let (total, _) = gather_outcome(&mut comm, counts, error, ())?;
    timings.write = watch.lap();
    let model = model_stats(&mut comm, engine, res, &total);
    timings.total = watch.total();
    if me == 0 {
        tracing::info!(documents = model.documents, secs = timings.total, "documents written");
    }
    Ok(Summary {
        network_bytes: comm.sent_remote.clone(),
        shared_output: true,
        update: Some(update),
        ..total.summary(read, model, timings)
    })
}

/// The statistics of the updated model.
fn model_stats(comm: &mut Comm, engine: &Engine, res: &Resident, total: &WorkerCounts) -> ModelStats {
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
    let shape = ModelShape {
        users: total.users,
        n: res.n,
        items: res.dict.len() as u64,
        primary_users: &res.pre[0],
        interactions,
        pair_visits: comm.sum("cco: pair visits", res.correlators.pair_visits),
    };
    total.model_stats(engine, shape)
}

/// New item ids join the dictionary; returns the global id of each item
/// of the share.
fn add_new_items(comm: &mut Comm, res: &mut Resident, share: &Share) -> Vec<u32> {
    let new_items = SortedIds::from_unsorted(share.items.iter().filter(|s| res.dict.position(s).is_none()));
    let added = SortedIds::merge(&comm.all_gather("follow: new items", new_items));
    res.add_items(&added, comm.index);
    share.items.iter().map(|s| res.dict.position(s).expect("every local item is in the dictionary")).collect()
}

/// The new item facts join the ones held; returns the properties and ranks
/// of the range (the properties and deletions lent by the resident model,
/// to be given back), and the global id of each item held.
fn update_item_facts(
    comm: &mut Comm,
    ctx: &WorkerContext,
    res: &mut Resident,
    mut share: Share,
    global_item: &[u32],
) -> (RangeFacts, Vec<u32>) {
    let me = comm.index;
    let engine = &ctx.engine;
    let facts_clock = Instant::now();
    let new_properties: Vec<PropertyEvent> = std::mem::take(&mut share.property_events)
        .into_iter()
        .map(|e| PropertyEvent { item: global_item[e.item as usize], ..e })
        .collect();
    state_part::add_item_facts(&mut res.facts, &ctx.plan, &share);
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
    let wanted = facts::Wanted { properties: false, ranks: with_facts, keep_events: false };
    let mut facts = facts::exchange_facts(comm, &mut res.facts, &facts_global, &ranges, &engine.rankings, wanted);
    facts.prev_hash = res.doc_hash.clone();
    // Lent to the writer, given back after.
    facts.properties = std::mem::take(&mut res.properties);
    facts.deleted = std::mem::take(&mut res.deleted);
    tracing::debug!(worker = me, counted, exchanged = facts_clock.elapsed().as_secs_f64(), "item facts");
    (facts, facts_global)
}

/// Writes this worker's part of the new state from its resident model.
fn write_state(
    ctx: &WorkerContext,
    me: usize,
    res: &Resident,
    facts_global: &[u32],
    doc_hashes: &[(u32, u64)],
    out: &super::DirOutput,
) -> Result<u64, Failure> {
    let (rank_events, spans, _) = state_part::item_facts(&res.facts, facts_global);
    let property_events: Vec<PropertyEvent> = res.property_events.iter().flatten().cloned().collect();
    let pairs = res.pair_lists();
    let source = PartSource {
        users: &res.users,
        primary: &res.primary,
        pairs: &pairs,
        history_hashes: &res.history_hash,
        rank_events: &rank_events,
        spans: &spans,
        property_events: &property_events,
        doc_hashes,
    };
    state_part::write_state_part(out, me, &source, &res.dict, &ctx.plan)
}
