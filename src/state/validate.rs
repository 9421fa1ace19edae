//! A decoded state part is consistent before anything uses it: every index
//! it holds is in range of its own tables and the lengths agree, so the code
//! turning it into a worker's share never indexes out of bounds.

use super::StatePart;

/// What is wrong with a decoded part.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Inconsistent(String);

fn fail<T>(what: String) -> Result<T, Inconsistent> {
    Err(Inconsistent(what))
}

impl StatePart {
    /// Checks every length and index of the part against its own tables.
    pub fn validate(&self) -> Result<(), Inconsistent> {
        self.validate_users()?;
        let items = self.items.len();
        let item_ok = |item: u32| (item as usize) < items;
        if let Some(&(item, _)) = self.pairs.iter().find(|p| !item_ok(p.0)) {
            return fail(format!("a user pair names item {item} of {items}"));
        }
        let names = self.rank_names.len();
        if let Some(&(item, name, _)) = self.rank_events.iter().find(|e| !item_ok(e.0) || e.1 as usize >= names) {
            return fail(format!("a ranking event names item {item} of {items}, event name {name} of {names}"));
        }
        if let Some(&(item, _, _)) = self.spans.iter().find(|s| !item_ok(s.0)) {
            return fail(format!("an event time span names item {item} of {items}"));
        }
        if let Some(e) = self.property_events.iter().find(|e| !item_ok(e.item)) {
            return fail(format!("a property event names item {} of {items}", e.item));
        }
        if let Some(&(item, _)) = self.doc_hashes.iter().find(|d| !item_ok(d.0)) {
            return fail(format!("a document hash names item {item} of {items}"));
        }
        Ok(())
    }

    /// The number of indicators the part records per user (`None` when it
    /// has no user). A valid part holds `users × indicators` lengths.
    pub fn indicators(&self) -> Option<usize> {
        let users = self.user_ends.len();
        (users > 0).then(|| self.lens.len() / users)
    }

    /// The part records `indicators` lengths per user, as the engine
    /// resuming from it has indicators.
    pub fn check_indicators(&self, indicators: usize) -> Result<(), Inconsistent> {
        match self.indicators() {
            Some(k) if k != indicators => {
                fail(format!("it records {k} indicators per user, the engine has {indicators}"))
            }
            _ => Ok(()),
        }
    }

    /// User names, per-user tables, lengths and pairs agree.
    fn validate_users(&self) -> Result<(), Inconsistent> {
        let users = self.user_ends.len();
        let mut start = 0usize;
        for &end in &self.user_ends {
            let end = end as usize;
            if end < start || end > self.user_names.len() || !self.user_names.is_char_boundary(end) {
                return fail(format!("user name end {end} is not within the names ({} bytes)", self.user_names.len()));
            }
            start = end;
        }
        if start != self.user_names.len() {
            return fail(format!("the user names end at {start}, not at {}", self.user_names.len()));
        }
        for (table, len) in
            [("primary event counts", self.primary_events.len()), ("history hashes", self.history_hashes.len())]
        {
            if len != users {
                return fail(format!("{len} {table} for {users} users"));
            }
        }
        if (users == 0 && !self.lens.is_empty()) || (users > 0 && self.lens.len() % users != 0) {
            return fail(format!("{} pair counts for {users} users", self.lens.len()));
        }
        let pairs: u64 = self.lens.iter().map(|&l| u64::from(l)).sum();
        if pairs != self.pairs.len() as u64 {
            return fail(format!("the pair counts add up to {pairs}, the part holds {}", self.pairs.len()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part() -> StatePart {
        StatePart {
            items: vec!["i1".into(), "i2".into()],
            user_names: "u1ü2".into(),
            user_ends: vec![2, 5],
            primary_events: vec![1, 2],
            lens: vec![1, 0, 2, 1],
            pairs: vec![(0, 5), (1, 6), (0, 7), (1, 8)],
            history_hashes: vec![0, 9],
            rank_names: vec!["buy".into()],
            rank_events: vec![(1, 0, 10)],
            spans: vec![(0, 1, 2)],
            property_events: Vec::new(),
            doc_hashes: vec![(1, 3)],
        }
    }

    #[test]
    fn a_consistent_part_passes() {
        part().validate().unwrap();
        assert_eq!(part().indicators(), Some(2));
        part().check_indicators(2).unwrap();
        assert!(part().check_indicators(3).is_err());
        StatePart::default().check_indicators(3).unwrap();
        StatePart::default().validate().unwrap();
    }

    #[test]
    fn every_out_of_range_index_or_length_is_refused() {
        type Change = fn(&mut StatePart);
        let cases: Vec<(&str, Change)> = vec![
            ("pair item", |p| p.pairs[2].0 = 2),
            ("rank item", |p| p.rank_events[0].0 = 7),
            ("rank name", |p| p.rank_events[0].1 = 1),
            ("span item", |p| p.spans[0].0 = 2),
            ("doc item", |p| p.doc_hashes[0].0 = u32::MAX),
            ("name end past names", |p| p.user_ends[1] = 6),
            ("name end inside a character", |p| p.user_ends[0] = 3),
            ("name ends decreasing", |p| p.user_ends = vec![5, 2]),
            ("names not all used", |p| p.user_names.push('x')),
            ("primary counts", |p| p.primary_events.pop().map(drop).unwrap_or(())),
            ("history hashes", |p| p.history_hashes.push(1)),
            ("lens not per user", |p| p.lens.push(0)),
            ("lens sum", |p| p.lens[0] = 2),
            ("lens overflow", |p| p.lens = vec![u32::MAX, u32::MAX, 2, 2]),
            ("lens without users", |p| {
                *p = StatePart { lens: vec![0], ..StatePart::default() };
            }),
        ];
        for (name, change) in cases {
            let mut p = part();
            change(&mut p);
            assert!(p.validate().is_err(), "{name}");
        }
    }
}
