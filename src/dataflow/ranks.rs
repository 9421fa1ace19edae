//! popRank and friends: the ranking fields used for backfill and sorting.
//!
//! Counted while reading (events per item in each time bucket of each
//! ranking window), summed at the owner of the item, then turned into the
//! UR's values:
//! - `popular`: events in `[end − duration, end]`;
//! - `trending`: newer half minus older half, for items with events in both
//!   halves (the UR joins the two counts, so an item in one half only gets
//!   no value);
//! - `hot`: (newer − middle) − (middle − older) over thirds, for items with
//!   events in all three (the UR's inner joins);
//! - `random`: a seeded uniform value for every item with any event in the
//!   window or with properties;
//! - `userDefined`: the item property of the ranking's name, as given.

use crate::config::{Ranking, RankingKind};
use crate::hash::unit_interval;
use crate::intern::SortedIds;
use std::ops::Range;

/// Per ranking, per bucket: event counts of the owned items (index = item − start).
pub type RangeCounts = Vec<Vec<Vec<u32>>>;

/// Rank values of the owned items: `values[ranking][item − start]`.
pub fn rank_values(
    rankings: &[Ranking],
    counts: &RangeCounts,
    random_items: &[Vec<bool>],
    has_properties: &[bool],
    range: &Range<u32>,
    dict: &SortedIds,
    seed: u64,
) -> Vec<Vec<Option<f64>>> {
    let len = (range.end - range.start) as usize;
    rankings
        .iter()
        .enumerate()
        .map(|(r, ranking)| {
            let c = &counts[r];
            (0..len)
                .map(|x| match ranking.kind {
                    RankingKind::Popular => (c[0][x] > 0).then_some(c[0][x] as f64),
                    RankingKind::Trending => {
                        let (older, newer) = (c[0][x], c[1][x]);
                        (older > 0 && newer > 0).then_some(newer as f64 - older as f64)
                    }
                    RankingKind::Hot => {
                        let (older, middle, newer) = (c[0][x], c[1][x], c[2][x]);
                        (older > 0 && middle > 0 && newer > 0)
                            .then_some((newer as f64 - middle as f64) - (middle as f64 - older as f64))
                    }
                    RankingKind::Random => (random_items[r][x] || has_properties[x])
                        .then(|| unit_interval(seed, &ranking.name, dict.get(range.start + x as u32))),
                    RankingKind::UserDefined => None,
                })
                .collect()
        })
        .collect()
}
