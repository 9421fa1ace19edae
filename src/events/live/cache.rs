//! What this server knows of the live documents it wrote, so a write need
//! not read them back first: a bounded cache of the documents it wrote last
//! with their versions, and whether users it does not know are better read
//! first or created blindly.
//!
//! Nothing here is trusted: every write from the cache is conditional on
//! the cached version (`if_seq_no`/`if_primary_term`), and a user not in
//! the cache is written with `create`. A document another writer (another
//! `ur events`, a restart's predecessor, anyone) changed meanwhile fails
//! that write with a conflict (409); the entry is then gone, the document
//! is read and the user's events applied again to what was read.

use super::ops::Stored;
use std::collections::HashMap;

/// The live documents this server wrote last, with their versions; at
/// most about `capacity` of them (the least recently written go first).
#[derive(Debug)]
pub struct Written {
    /// Written since the last turn-over; `old` holds the turn before.
    new: HashMap<String, Stored>,
    old: HashMap<String, Stored>,
    half: usize,
}

impl Written {
    pub fn new(capacity: usize) -> Written {
        Written { new: HashMap::new(), old: HashMap::new(), half: (capacity / 2).max(1) }
    }

    /// Whether `user`'s document is known.
    pub fn knows(&self, user: &str) -> bool {
        self.new.contains_key(user) || self.old.contains_key(user)
    }

    /// Takes `user`'s entry out: from the write on, it is known again only
    /// once Elasticsearch acknowledged the write ([`Written::put`]); a write
    /// that failed or whose outcome is unknown leaves the user unknown.
    pub fn take(&mut self, user: &str) -> Option<Stored> {
        self.new.remove(user).or_else(|| self.old.remove(user))
    }

    /// Remembers `user`'s document as written, at its new version.
    pub fn put(&mut self, user: String, stored: Stored) {
        self.old.remove(&user);
        if self.new.len() >= self.half {
            self.old = std::mem::take(&mut self.new);
        }
        self.new.insert(user, stored);
    }

    pub fn len(&self) -> usize {
        self.new.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether users not in the cache are read before the write (`_mget`) or
/// written blindly with `create` (a 409 then says the document exists:
/// read it and write again). New users cost one read fewer blindly; users
/// that exist cost a failed create more. The last batch decides.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ReadFirst(pub bool);

impl ReadFirst {
    /// After a batch read first: `found` of the `read` unknown users existed.
    pub fn after_read(&mut self, read: usize, found: usize) {
        if read > 0 {
            self.0 = found * 2 > read;
        }
    }

    /// After a batch created blindly: `conflicts` of `created` existed.
    pub fn after_create(&mut self, created: usize, conflicts: usize) {
        if created > 0 {
            self.0 = conflicts * 2 > created;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(seq_no: u64) -> Stored {
        Stored { source: json!({"user": "u"}).as_object().unwrap().clone(), seq_no, primary_term: 1 }
    }

    #[test]
    fn an_entry_is_gone_while_its_write_is_in_flight() {
        let mut w = Written::new(10);
        w.put("u".into(), stored(3));
        assert!(w.knows("u"));
        assert_eq!(w.take("u").map(|s| s.seq_no), Some(3));
        assert!(!w.knows("u"), "a failed write leaves the user unknown: read again");
        assert_eq!(w.take("u"), None);
        w.put("u".into(), stored(4));
        assert_eq!(w.take("u").map(|s| s.seq_no), Some(4));
    }

    #[test]
    fn bounded_the_least_recently_written_go_first() {
        let mut w = Written::new(4);
        for (n, u) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            w.put(u.into(), stored(n as u64));
        }
        assert!(w.len() <= 4);
        assert!(!w.knows("a") && !w.knows("b"), "the oldest are dropped");
        assert!(w.knows("e") && w.knows("d"));
        // Re-writing an old entry moves it to the new half, once.
        w.put("c".into(), stored(9));
        assert_eq!(w.take("c").map(|s| s.seq_no), Some(9));
        assert_eq!(w.take("c"), None);
    }

    #[test]
    fn read_first_follows_the_last_batch() {
        let mut r = ReadFirst::default();
        assert!(!r.0, "new users are the common case: create blindly");
        r.after_create(10, 6);
        assert!(r.0, "most existed: read them first");
        r.after_read(10, 2);
        assert!(!r.0, "most were new again");
        r.after_read(0, 0);
        r.after_create(0, 0);
        assert!(!r.0, "an empty batch changes nothing");
    }
}
