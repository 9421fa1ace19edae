//! Item facts other than correlators — property events, ranking counts and
//! the items of `random` rankings — sent from the workers that read them to
//! the worker that writes the item's document.

use super::cco::RowRanges;
use super::exchange::Comm;
use super::properties::aggregate;
use super::ranks::RangeCounts;
use super::read::Share;
use crate::config::Ranking;
use crate::model::{Properties, PropertyEvent};
use std::ops::Range;

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Facts {
    properties: Vec<PropertyEvent>,
    /// (ranking, bucket, item, count)
    counts: Vec<(u32, u32, u32, u32)>,
    /// (ranking, item)
    random: Vec<(u32, u32)>,
    /// (item, hash of its document as last written)
    prev_docs: Vec<(u32, u64)>,
}

/// The facts about the items of one worker's range.
pub struct RangeFacts {
    /// Items with properties (after aggregation), by item − range.start.
    pub properties: Vec<Option<Properties>>,
    pub counts: RangeCounts,
    /// Per ranking: item − range.start seen in a random ranking's window.
    pub random: Vec<Vec<bool>>,
    /// Per item − range.start: hash of its document as last written (0: none).
    pub prev_hash: Vec<u64>,
    /// Per item − range.start: deleted by `$delete` (no document).
    pub deleted: Vec<bool>,
    /// Per item − range.start: its property events, when asked to keep them.
    pub events: Vec<Vec<PropertyEvent>>,
}

/// Which facts an exchange moves.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub properties: bool,
    pub ranks: bool,
    /// Keep each item's property events in the result.
    pub keep_events: bool,
}

/// Moves this worker's facts to the owners of the items and aggregates
/// what arrives for the own range.
pub fn exchange_facts(
    comm: &mut Comm,
    share: &mut Share,
    global_item: &[u32],
    ranges: &RowRanges,
    rankings: &[Ranking],
    wanted: Wanted,
) -> RangeFacts {
    let Wanted { properties: with_properties, ranks: with_ranks, keep_events } = wanted;
    let peers = comm.peers;
    let mut parcels: Vec<Facts> = (0..peers).map(|_| Facts::default()).collect();
    if with_properties {
        for mut e in share.property_events.iter().cloned() {
            e.item = global_item[e.item as usize];
            parcels[ranges.owner(e.item)].properties.push(e);
        }
    }
    if with_ranks {
        for (r, buckets) in share.rank_counts.iter().enumerate() {
            for (b, counts) in buckets.iter().enumerate() {
                for (local, &c) in counts.iter().enumerate() {
                    if c > 0 {
                        let item = global_item[local];
                        parcels[ranges.owner(item)].counts.push((r as u32, b as u32, item, c));
                    }
                }
            }
        }
        for (r, items) in share.random_items.iter().enumerate() {
            for &local in items {
                let item = global_item[local as usize];
                parcels[ranges.owner(item)].random.push((r as u32, item));
            }
        }
    }
    for (local, hash) in std::mem::take(&mut share.prev_docs) {
        let item = global_item[local as usize];
        parcels[ranges.owner(item)].prev_docs.push((item, hash));
    }
    let received = comm.shuffle("item facts", parcels.into_iter().enumerate().collect());

    let range: Range<u32> = ranges.range(comm.index);
    let len = (range.end - range.start) as usize;
    let mut events = Vec::new();
    let mut counts: RangeCounts = rankings.iter().map(|r| vec![vec![0u32; len]; r.kind.buckets()]).collect();
    let mut random = vec![vec![false; len]; rankings.len()];
    let mut prev_hash = vec![0u64; len];
    for (_, facts) in received {
        for (item, hash) in facts.prev_docs {
            prev_hash[(item - range.start) as usize] = hash;
        }
        events.extend(facts.properties);
        for (r, b, item, c) in facts.counts {
            counts[r as usize][b as usize][(item - range.start) as usize] += c;
        }
        for (r, item) in facts.random {
            random[r as usize][(item - range.start) as usize] = true;
        }
    }
    let mut kept = Vec::new();
    if keep_events {
        kept = vec![Vec::new(); len];
        for e in &events {
            kept[(e.item - range.start) as usize].push(e.clone());
        }
    }
    let mut properties = vec![None; len];
    let mut deleted = vec![false; len];
    let aggregated = aggregate(events);
    for (item, props) in aggregated.items {
        properties[(item - range.start) as usize] = Some(props);
    }
    for item in aggregated.deleted {
        deleted[(item - range.start) as usize] = true;
    }
    RangeFacts { properties, counts, random, prev_hash, deleted, events: kept }
}
