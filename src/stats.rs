//! What a run counted: input statistics, model statistics and timings.
//! Written to `manifest.json` and summarised on stderr.
//!
//! Counts are kept per worker while it works and summed across workers at
//! the end; keys are sorted (`BTreeMap`) so the manifest is reproducible.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counts of one event name.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventCounts {
    /// Lines that parsed as an event with this name.
    pub read: u64,
    /// Used by an indicator, a ranking or the item properties.
    pub kept: u64,
    /// Parsed, but unusable for this engine (see `ignored` for why).
    pub ignored: u64,
    /// Parsed far enough to know the name, then rejected.
    pub rejected: u64,
}

/// A rejected line, for the messages shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RejectedLine {
    /// Index of the file in the sorted input list (orders samples).
    pub file_index: u32,
    /// Start of the byte range the line was read in (0: the whole file);
    /// `line` counts from there until [`ReadStats::resolve_lines`].
    pub unit_start: u64,
    pub line: u64,
    pub file: String,
    pub message: String,
}

impl std::fmt::Display for RejectedLine {
    /// `file:line: message`, control characters escaped (`\u{1b}`): input
    /// text cannot move the cursor or recolour the terminal.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", escape_controls(&self.file), self.line, escape_controls(&self.message))
    }
}

/// `s` with its control characters written as Rust escapes.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Input statistics.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadStats {
    pub files: u64,
    pub bytes: u64,
    /// Non-blank lines.
    pub lines: u64,
    pub blank_lines: u64,
    /// By event name.
    pub events: BTreeMap<String, EventCounts>,
    /// Rejected lines by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Ignored events by reason.
    pub ignored: BTreeMap<String, u64>,
    /// The first rejected lines (by file and line), for messages.
    pub samples: Vec<RejectedLine>,
    /// Lines read per work unit: (file index, unit start, lines).
    pub unit_lines: Vec<(u32, u64, u64)>,
}

impl ReadStats {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    pub fn kept_total(&self) -> u64 {
        self.events.values().map(|c| c.kept).sum()
    }

    /// Adds another worker's counts; keeps the first `keep` samples.
    pub fn merge(&mut self, other: ReadStats, keep: usize) {
        self.files += other.files;
        self.bytes += other.bytes;
        self.lines += other.lines;
        self.blank_lines += other.blank_lines;
        for (name, c) in other.events {
            let e = self.events.entry(name).or_default();
            e.read += c.read;
            e.kept += c.kept;
            e.ignored += c.ignored;
            e.rejected += c.rejected;
        }
        for (k, v) in other.rejected {
            *self.rejected.entry(k).or_default() += v;
        }
        for (k, v) in other.ignored {
            *self.ignored.entry(k).or_default() += v;
        }
        self.samples.extend(other.samples);
        self.samples.sort();
        self.samples.truncate(keep);
        self.unit_lines.extend(other.unit_lines);
    }

    /// Turns line numbers counted from the start of a byte range into line
    /// numbers in the file, from the line counts of every unit (all
    /// workers' statistics must have been merged).
    pub fn resolve_lines(&mut self) {
        self.unit_lines.sort_unstable();
        for s in &mut self.samples {
            if s.unit_start > 0 {
                let before: u64 = self
                    .unit_lines
                    .iter()
                    .filter(|&&(f, start, _)| f == s.file_index && start < s.unit_start)
                    .map(|&(_, _, n)| n)
                    .sum();
                s.line += before;
                s.unit_start = 0;
            }
        }
    }
}

/// The limit on rejected lines (`--max-rejected`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RejectLimit {
    Count(u64),
    Percent(f64),
}

impl RejectLimit {
    pub fn parse(s: &str) -> Result<RejectLimit, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| format!("`{s}` is not a percentage"))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("`{s}`: a percentage must be between 0% and 100%"));
            }
            Ok(RejectLimit::Percent(p))
        } else {
            s.parse().map(RejectLimit::Count).map_err(|_| format!("`{s}` is neither a count nor a percentage like 1%"))
        }
    }

    /// True if `rejected` of `lines` exceeds the limit.
    pub fn exceeded(&self, rejected: u64, lines: u64) -> bool {
        match *self {
            RejectLimit::Count(n) => rejected > n,
            RejectLimit::Percent(p) => rejected as f64 > p / 100.0 * lines as f64,
        }
    }
}

impl std::fmt::Display for RejectLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectLimit::Count(n) => write!(f, "{n}"),
            RejectLimit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Model statistics.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStats {
    /// Users seen in usage events.
    pub users: u64,
    /// Users with at least `minEventsPerUser` primary events: the rows, N.
    pub n: u64,
    /// Distinct items (targets of usage events and items with properties).
    pub items: u64,
    /// Items of the primary indicator: one document each.
    pub primary_items: u64,
    /// Per indicator: user×item interactions before and after downsampling.
    pub interactions: BTreeMap<String, Interactions>,
    /// Σ over users of |A_u| · |B_u| summed over indicators: the work of the
    /// co-occurrence pass.
    pub pair_visits: u64,
    /// Correlators written, per indicator.
    pub correlators: BTreeMap<String, u64>,
    /// Items with properties after `$set`/`$unset`/`$delete`.
    pub items_with_properties: u64,
    /// Items with a value, per ranking.
    pub ranked_items: BTreeMap<String, u64>,
    /// Documents written.
    pub documents: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interactions {
    pub distinct: u64,
    pub after_downsampling: u64,
}

/// Wall-clock seconds per phase.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub read: f64,
    pub dictionary: f64,
    pub group: f64,
    pub downsample: f64,
    pub cco: f64,
    pub properties_and_ranks: f64,
    pub write: f64,
    pub total: f64,
}

/// Peak resident memory of this process, in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_limits() {
        assert_eq!(RejectLimit::parse("1%"), Ok(RejectLimit::Percent(1.0)));
        assert_eq!(RejectLimit::parse("25"), Ok(RejectLimit::Count(25)));
        assert!(RejectLimit::parse("lots").is_err());
        assert!(RejectLimit::parse("150%").is_err());
        assert!(RejectLimit::Percent(1.0).exceeded(2, 100));
        assert!(!RejectLimit::Percent(1.0).exceeded(1, 100));
        assert!(!RejectLimit::Count(0).exceeded(0, 100));
        assert!(RejectLimit::Count(0).exceeded(1, 100));
    }

    #[test]
    fn lines_of_ranges_become_file_lines() {
        let mut s = ReadStats {
            samples: vec![RejectedLine {
                file_index: 1,
                unit_start: 500,
                line: 3,
                file: "f".into(),
                message: "m".into(),
            }],
            unit_lines: vec![(1, 1000, 7), (1, 0, 10), (1, 500, 20), (0, 0, 99)],
            ..Default::default()
        };
        s.resolve_lines();
        assert_eq!(s.samples[0].line, 13);
    }

    #[test]
    fn samples_show_control_characters_escaped() {
        let sample = RejectedLine {
            file_index: 0,
            unit_start: 0,
            line: 3,
            file: "in\u{7}.jsonl".into(),
            message: "field eventTime: `\u{1b}[2J\r\n` is not an ISO-8601 date-time".into(),
        };
        let shown = sample.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(shown, "in\\u{7}.jsonl:3: field eventTime: `\\u{1b}[2J\\r\\n` is not an ISO-8601 date-time");
    }

    #[test]
    fn samples_keep_the_first_lines() {
        let sample =
            |f, l| RejectedLine { file_index: f, unit_start: 0, line: l, file: format!("f{f}"), message: "m".into() };
        let mut a = ReadStats { samples: vec![sample(1, 5), sample(1, 9)], ..Default::default() };
        let b = ReadStats { samples: vec![sample(0, 7), sample(2, 1)], ..Default::default() };
        a.merge(b, 3);
        assert_eq!(a.samples, vec![sample(0, 7), sample(1, 5), sample(1, 9)]);
    }
}
