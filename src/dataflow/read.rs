//! Reading: this worker's files → its [`Share`] of the events.
//!
//! Each line is parsed once and sorted into what training needs: usage
//! pairs per indicator (user and item interned to local `u32`s), raw primary
//! event counts per user (for `minEventsPerUser`), per-item event counts in
//! each ranking's time buckets, the items of the `random` ranking, and item
//! property events. Nothing else about an event is kept. Lines that are not
//! events are counted by reason and the first few remembered as
//! `file:line: reason`; events the engine does not use are counted as
//! ignored. Nothing is dropped without being counted.

use crate::config::{Engine, RankingKind};
use crate::intern::{Batch, Interner};
use crate::model::{PropertyEvent, PropertyOp};
use crate::source::event::{Event, Reject, parse_event};
use crate::source::lines::{DEFAULT_MAX_LINE_BYTES, Line, read_unit_limited};
use crate::source::{InputFile, WorkUnit};
use crate::stats::{ReadStats, RejectedLine};
use crate::storage::Store;
use crate::time::Millis;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

/// One ranking's time window, split into the buckets its kind compares.
#[derive(Debug, Clone)]
pub struct RankWindow {
    pub kind: RankingKind,
    pub start: Millis,
    pub end: Millis,
}

impl RankWindow {
    /// The bucket of an event time: `[start, end]` split into halves
    /// (trending) or thirds (hot) as the UR's Joda intervals do.
    #[inline]
    pub fn bucket(&self, t: Millis) -> Option<usize> {
        if t < self.start || t > self.end {
            return None;
        }
        let span = self.end - self.start;
        Some(match self.kind {
            RankingKind::Trending => usize::from(t >= self.start + span / 2),
            RankingKind::Hot => {
                let third = span / 3;
                if t < self.start + third {
                    0
                } else if t < self.start + 2 * third {
                    1
                } else {
                    2
                }
            }
            _ => 0,
        })
    }
}

/// How events map to indicators and rankings, built once from the engine.
pub struct ReadPlan {
    indicator_of: HashMap<String, usize>,
    /// Event names counted by popular, trending or hot rankings.
    pub rank_names: Vec<String>,
    rank_name_of: HashMap<String, u32>,
    /// Per rank name: the rankings that count it.
    rankings_of_name: Vec<Vec<usize>>,
    pub windows: Vec<RankWindow>,
    /// Rankings of kind `random`.
    pub random: Vec<usize>,
    /// Events older than this are ignored (`eventWindow`).
    not_before: Option<Millis>,
    pub indicators: usize,
    /// Lines longer than this are rejected without being held (`--max-line-bytes`).
    pub max_line_bytes: usize,
    /// The engine's date properties, which a `$set` must give as dates.
    date_names: Vec<String>,
    /// Keep each ranking event in [`Share::rank_events`] (for a state or a
    /// resident model); otherwise events are counted as they are read.
    pub keep_rank_events: bool,
    /// Keep usage events' times ([`Share::usage_times`]: for histories, a
    /// state or a resident model).
    pub keep_times: bool,
}

impl ReadPlan {
    pub fn new(engine: &Engine, now: Millis) -> ReadPlan {
        let mut indicator_of = HashMap::new();
        for (k, ind) in engine.indicators.iter().enumerate() {
            for e in &ind.event_names {
                indicator_of.insert(e.clone(), k);
            }
        }
        let mut rank_names: Vec<String> = Vec::new();
        let mut rankings_of_name: Vec<Vec<usize>> = Vec::new();
        let mut windows = Vec::new();
        let mut random = Vec::new();
        for (r, ranking) in engine.rankings.iter().enumerate() {
            let end = ranking.offset_date.unwrap_or(now);
            windows.push(RankWindow { kind: ranking.kind, start: end - ranking.duration_secs * 1000, end });
            match ranking.kind {
                RankingKind::Popular | RankingKind::Trending | RankingKind::Hot => {
                    for e in &ranking.event_names {
                        let idx = match rank_names.iter().position(|n| n == e) {
                            Some(i) => i,
                            None => {
                                rank_names.push(e.clone());
                                rankings_of_name.push(Vec::new());
                                rank_names.len() - 1
                            }
                        };
                        rankings_of_name[idx].push(r);
                    }
                }
                RankingKind::Random => random.push(r),
                RankingKind::UserDefined => {}
            }
        }
        let rank_name_of = rank_names.iter().enumerate().map(|(i, n)| (n.clone(), i as u32)).collect();
        ReadPlan {
            indicator_of,
            rank_names,
            rank_name_of,
            rankings_of_name,
            windows,
            random,
            not_before: engine.event_window_secs.map(|s| now - s * 1000),
            indicators: engine.indicators.len(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            date_names: engine.date_names(),
            keep_rank_events: true,
            keep_times: true,
        }
    }

    /// The same plan rejecting lines longer than `bytes`.
    pub fn with_max_line_bytes(self, bytes: usize) -> ReadPlan {
        ReadPlan { max_line_bytes: bytes, ..self }
    }

    /// The same plan keeping usage events' times (`true`) or not.
    pub fn keeping_times(self, keep: bool) -> ReadPlan {
        ReadPlan { keep_times: keep, ..self }
    }

    /// The same plan keeping the ranking events (`true`) or only counting
    /// them into their buckets as they are read.
    pub fn keeping_rank_events(self, keep: bool) -> ReadPlan {
        ReadPlan { keep_rank_events: keep, ..self }
    }
}

/// Elements per chunk of a [`Chunked`] list.
const CHUNK: usize = 1 << 18;

/// A list that grows by fixed-size chunks: a push never moves what is held,
/// so a long list has no doubling slack and leaves no freed copies behind.
#[derive(Debug)]
pub struct Chunked<T> {
    chunks: Vec<Vec<T>>,
}

impl<T> Default for Chunked<T> {
    fn default() -> Chunked<T> {
        Chunked { chunks: Vec::new() }
    }
}

impl<T> Chunked<T> {
    #[inline]
    pub fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(value),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.iter().all(Vec::is_empty)
    }

    /// The elements in push order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    /// The chunks in push order, each freed once the caller is done with it.
    pub fn into_chunks(self) -> impl Iterator<Item = Vec<T>> {
        self.chunks.into_iter()
    }

    /// The elements in push order, in one vector of exactly their number;
    /// each chunk is freed as soon as it is copied.
    pub fn into_vec(self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.len());
        for chunk in self.chunks {
            out.extend(chunk);
        }
        out
    }
}

/// The events of this worker's files, with local ids.
pub struct Share {
    pub users: Interner,
    pub items: Interner,
    /// Per indicator: (local user, local item), duplicates included.
    pub usage: Vec<Chunked<(u32, u32)>>,
    /// Per indicator, with [`ReadPlan::keep_times`]: each usage event's
    /// time in seconds since the epoch (0 before 1970); else empty.
    pub usage_times: Vec<Chunked<u32>>,
    /// Raw primary events per local user (duplicates count).
    pub primary_events: Vec<u32>,
    /// Events counted by rankings: (local item, index in `ReadPlan::rank_names`,
    /// time); only with [`ReadPlan::keep_rank_events`] (or from a state).
    pub rank_events: Vec<(u32, u32, Millis)>,
    /// Per local item: first and last time it was the target of any event
    /// (for `random` rankings; empty without one).
    pub spans: Vec<(Millis, Millis)>,
    /// Per ranking, per bucket: event counts by local item ([`Share::count_ranks`]).
    pub rank_counts: Vec<Vec<Vec<u32>>>,
    /// Per ranking: local items with an event in the window (`random` rankings).
    pub random_items: Vec<Vec<u32>>,
    pub property_events: Vec<PropertyEvent>,
    /// From the state: (local item, hash of its document as last written).
    pub prev_docs: Vec<(u32, u64)>,
    /// From the state: per local user, hash of its history document (0: none).
    pub prev_history: Vec<u64>,
    pub stats: ReadStats,
}

impl Share {
    /// Counts the ranking events into each ranking's time buckets (over
    /// the counts made while reading, when the plan does not keep the
    /// events), and the items of `random` rankings: those with an event
    /// between their first and last event time overlapping the window.
    pub fn count_ranks(&mut self, plan: &ReadPlan) {
        let items = self.items.len();
        if plan.keep_rank_events {
            self.rank_counts = plan.windows.iter().map(|w| vec![vec![0u32; items]; w.kind.buckets()]).collect();
        } else {
            self.rank_counts.iter_mut().flatten().for_each(|counts| counts.resize(items, 0));
        }
        for &(item, name, time) in &self.rank_events {
            count_rank(&mut self.rank_counts, plan, item, name, time);
        }
        self.random_items = vec![Vec::new(); plan.windows.len()];
        for &r in &plan.random {
            let w = &plan.windows[r];
            self.random_items[r] = self
                .spans
                .iter()
                .enumerate()
                .filter(|&(_, &(first, last))| first <= w.end && last >= w.start)
                .map(|(item, _)| item as u32)
                .collect();
        }
    }

    /// Adds a usage event of indicator `k` (its time only if the plan keeps times).
    #[inline]
    pub fn push_usage(&mut self, plan: &ReadPlan, k: usize, pair: (u32, u32), secs: u32) {
        self.usage[k].push(pair);
        if plan.keep_times {
            self.usage_times[k].push(secs);
        }
    }

    pub fn empty(plan: &ReadPlan) -> Share {
        Share {
            users: Interner::new(),
            items: Interner::new(),
            usage: (0..plan.indicators).map(|_| Chunked::default()).collect(),
            usage_times: (0..plan.indicators).map(|_| Chunked::default()).collect(),
            primary_events: Vec::new(),
            rank_events: Vec::new(),
            spans: Vec::new(),
            rank_counts: plan.windows.iter().map(|w| vec![Vec::new(); w.kind.buckets()]).collect(),
            random_items: vec![Vec::new(); plan.windows.len()],
            property_events: Vec::new(),
            prev_docs: Vec::new(),
            prev_history: Vec::new(),
            stats: ReadStats::default(),
        }
    }
}

/// Counts one ranking event into the buckets of the rankings of its name.
fn count_rank(rank_counts: &mut [Vec<Vec<u32>>], plan: &ReadPlan, item: u32, name: u32, time: Millis) {
    for &r in &plan.rankings_of_name[name as usize] {
        if let Some(b) = plan.windows[r].bucket(time) {
            let counts = &mut rank_counts[r][b];
            if counts.len() <= item as usize {
                counts.resize(item as usize + 1, 0);
            }
            counts[item as usize] += 1;
        }
    }
}

/// What a worker reads.
pub struct Input<'a> {
    pub store: &'a Store,
    pub files: &'a [InputFile],
    pub units: &'a [WorkUnit],
}

/// Reads `units[i]` for each `i` in `mine`. An I/O error ends the read.
pub fn read_share(
    plan: &ReadPlan,
    input: &Input,
    mine: &[usize],
    keep_samples: usize,
    bytes_read: &AtomicU64,
) -> Result<Share, String> {
    let mut share = Share::empty(plan);
    let mut reader = LineHandler { plan, share: &mut share, keep_samples, pending: Pending::default() };
    for (i, &u) in mine.iter().enumerate() {
        if i == 1 {
            crate::hold::once(crate::hold::Point::Reading);
        }
        let unit = &input.units[u];
        let file = &input.files[unit.file as usize];
        if unit.start == 0 {
            reader.share.stats.files += 1;
        }
        reader.share.stats.bytes += unit.end.min(file.len) - unit.start;
        let limit = plan.max_line_bytes;
        let lines = read_unit_limited(input.store, file, unit, limit, bytes_read, |line_no, line| match line {
            Line::Text(text) => reader.line(unit.file, unit.start, file, line_no, text),
            Line::TooLong { .. } => {
                reader.share.stats.lines += 1;
                reader.reject(None, (unit.file, unit.start, file, line_no), Reject::LineTooLong(limit));
            }
        })?;
        reader.flush();
        reader.share.stats.unit_lines.push((unit.file, unit.start, lines));
    }
    Ok(share)
}

/// Usage and ranking events waiting for their ids: they are interned a
/// batch at a time so that the table lookups of many events overlap
/// ([`Interner::intern_all`]). Ids come out as interning line by line
/// would give them: every other interning flushes the batch first.
#[derive(Default)]
struct Pending {
    items: Batch,
    users: Batch,
    events: Vec<PendingEvent>,
    item_ids: Vec<u32>,
    user_ids: Vec<u32>,
}

/// A usage or ranking event: its item is `items[i]` for the i-th event.
struct PendingEvent {
    /// The indicator and the event's index in `users`.
    usage: Option<(usize, u32)>,
    /// Seconds since the epoch, 0 before 1970.
    secs: u32,
    /// Index in `ReadPlan::rank_names` and the time, if a ranking counts it.
    ranked: Option<(u32, Millis)>,
}

/// Events batched before interning.
const PENDING: usize = 1024;

struct LineHandler<'a> {
    plan: &'a ReadPlan,
    share: &'a mut Share,
    keep_samples: usize,
    pending: Pending,
}

impl LineHandler<'_> {
    fn line(&mut self, file_index: u32, unit_start: u64, file: &InputFile, line_no: u64, line: &[u8]) {
        let at = (file_index, unit_start, file, line_no);
        if line.iter().all(u8::is_ascii_whitespace) {
            self.share.stats.blank_lines += 1;
            return;
        }
        self.share.stats.lines += 1;
        let event = match parse_event(line) {
            Ok(e) => e,
            Err(rejected) => {
                if let Some(name) = &rejected.event {
                    self.count(name, |c| c.read += 1);
                }
                return self.reject(rejected.event.as_deref(), at, rejected.reason);
            }
        };
        self.count(&event.event, |c| c.read += 1);
        if let Some(first) = self.plan.not_before
            && event.event_time < first
        {
            return self.ignore(&event.event, "older than the eventWindow");
        }
        let mut kept = false;
        match &*event.event {
            "$set" | "$unset" | "$delete" => {
                if event.entity_type != "item" {
                    return self.ignore(&event.event, "property event on a non-item entity");
                }
                match self.property_event(&event) {
                    Ok(()) => kept = true,
                    Err(reason) => {
                        return self.reject(Some(&event.event), at, reason);
                    }
                }
            }
            name => {
                let indicator = self.plan.indicator_of.get(name).copied();
                let counted = self.plan.rank_name_of.get(name).copied();
                if indicator.is_some() || counted.is_some() {
                    let target = match event.target() {
                        Ok(t) => t,
                        Err(reason) => {
                            return self.reject(Some(name), at, reason);
                        }
                    };
                    if event.entity_type != "user" {
                        return self.ignore(name, "entityType is not user");
                    }
                    if event.target_entity_type.as_deref() != Some("item") {
                        return self.ignore(name, "targetEntityType is not item");
                    }
                    let user = match indicator.map(|_| event.entity()).transpose() {
                        Ok(user) => user,
                        Err(reason) => return self.reject(Some(name), at, reason),
                    };
                    let pending = &mut self.pending;
                    pending.items.push(target);
                    let usage = indicator.zip(user).map(|(k, user)| {
                        pending.users.push(user);
                        (k, pending.users.len() as u32 - 1)
                    });
                    let secs = (event.event_time.div_euclid(1000)).clamp(0, u32::MAX as i64) as u32;
                    let ranked = counted.map(|name| (name, event.event_time));
                    pending.events.push(PendingEvent { usage, secs, ranked });
                    if pending.events.len() >= PENDING {
                        self.flush();
                    }
                    kept = true;
                }
            }
        }
        kept |= self.random_rankings(&event);
        if kept {
            self.count(&event.event, |c| c.kept += 1);
        } else {
            self.ignore(&event.event, "event name not used by the engine");
        }
    }

    /// Interns the pending events' ids and records them, in line order.
    fn flush(&mut self) {
        let Pending { items, users, events, item_ids, user_ids } = &mut self.pending;
        if events.is_empty() {
            return;
        }
        item_ids.clear();
        self.share.items.intern_all(items, item_ids);
        user_ids.clear();
        self.share.users.intern_all(users, user_ids);
        for (e, &item) in events.iter().zip(item_ids.iter()) {
            if let Some((k, u)) = e.usage {
                let user = user_ids[u as usize];
                self.share.push_usage(self.plan, k, (user, item), e.secs);
                if k == 0 {
                    let counts = &mut self.share.primary_events;
                    if counts.len() <= user as usize {
                        counts.resize(user as usize + 1, 0);
                    }
                    counts[user as usize] += 1;
                }
            }
            if let Some((name, time)) = e.ranked {
                if self.plan.keep_rank_events {
                    self.share.rank_events.push((item, name, time));
                } else {
                    count_rank(&mut self.share.rank_counts, self.plan, item, name, time);
                }
            }
        }
        items.clear();
        users.clear();
        events.clear();
    }

    fn property_event(&mut self, event: &Event) -> Result<(), Reject> {
        self.flush();
        let op = match &*event.event {
            "$set" => PropertyOp::Set,
            "$unset" => PropertyOp::Unset,
            _ => PropertyOp::Delete,
        };
        let properties = match op {
            PropertyOp::Delete => String::from("{}"),
            PropertyOp::Set => serde_json::to_string(&event.set_properties(&self.plan.date_names)?).unwrap_or_default(),
            PropertyOp::Unset => serde_json::to_string(&event.properties_object()?).unwrap_or_default(),
        };
        let item = self.share.items.intern(event.entity()?);
        self.share.property_events.push(PropertyEvent { item, time: event.event_time, op, properties });
        Ok(())
    }

    /// The UR's random ranking covers the targets of *all* events in its
    /// window, whatever their name: remember each target's first and last time.
    fn random_rankings(&mut self, event: &Event) -> bool {
        if self.plan.random.is_empty() {
            return false;
        }
        let Some(target) = event.target().ok() else {
            return false;
        };
        self.flush();
        let item = self.share.items.intern(target) as usize;
        let spans = &mut self.share.spans;
        if spans.len() <= item {
            spans.resize(item + 1, (Millis::MAX, Millis::MIN));
        }
        let span = &mut spans[item];
        span.0 = span.0.min(event.event_time);
        span.1 = span.1.max(event.event_time);
        self.plan.random.iter().any(|&r| self.plan.windows[r].bucket(event.event_time).is_some())
    }

    fn count(&mut self, name: &str, f: impl FnOnce(&mut crate::stats::EventCounts)) {
        let events = &mut self.share.stats.events;
        match events.get_mut(name) {
            Some(c) => f(c),
            None => f(events.entry(name.to_string()).or_default()),
        }
    }

    fn ignore(&mut self, name: &str, reason: &'static str) {
        self.count(name, |c| c.ignored += 1);
        let ignored = &mut self.share.stats.ignored;
        match ignored.get_mut(reason) {
            Some(n) => *n += 1,
            None => {
                ignored.insert(reason.to_string(), 1);
            }
        }
    }

    fn reject(&mut self, name: Option<&str>, at: (u32, u64, &InputFile, u64), reason: Reject) {
        let (file_index, unit_start, file, line) = at;
        if let Some(name) = name {
            self.count(name, |c| c.rejected += 1);
        }
        *self.share.stats.rejected.entry(reason.reason()).or_default() += 1;
        if self.share.stats.samples.len() < self.keep_samples {
            self.share.stats.samples.push(RejectedLine {
                file_index,
                unit_start,
                line,
                file: file.display(),
                message: reason.to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(kind: RankingKind) -> RankWindow {
        RankWindow { kind, start: 0, end: 90 }
    }

    #[test]
    fn buckets_follow_the_ur_intervals() {
        let p = window(RankingKind::Popular);
        assert_eq!((p.bucket(-1), p.bucket(0), p.bucket(90), p.bucket(91)), (None, Some(0), Some(0), None));
        let t = window(RankingKind::Trending);
        assert_eq!((t.bucket(44), t.bucket(45), t.bucket(90)), (Some(0), Some(1), Some(1)));
        let h = window(RankingKind::Hot);
        assert_eq!(
            (h.bucket(29), h.bucket(30), h.bucket(59), h.bucket(60), h.bucket(90)),
            (Some(0), Some(1), Some(1), Some(2), Some(2))
        );
    }
}
