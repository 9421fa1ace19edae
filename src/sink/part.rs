//! One worker's part of the model: the documents of its row range, in item
//! order, written to its part file in the model directory and/or sent to the
//! Elasticsearch model index.
//!
//! An item with nothing to say (no correlators, properties or ranks) or whose
//! last word was `$delete` has no document; when Elasticsearch is updated in
//! place, such an item that had a document is deleted from the live index and
//! only documents whose bytes changed are sent. While following, the
//! documents last written are cached ([`CachedDoc`]) and a document whose
//! inputs did not change is written again from the cache.

use super::document::{Document, DocumentLayout};
use super::elasticsearch::EsTarget;
use crate::intern::SortedIds;
use crate::model::Properties;
use crate::storage::{FileSink, Store};
use std::collections::BTreeMap;
use std::ops::Range;

/// Writing a part failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The part file could not be created or written.
    #[error("{0}")]
    Directory(String),
    /// A bulk request to Elasticsearch failed.
    #[error("{0}")]
    Elasticsearch(String),
}

/// Where one worker's part goes: a part file, an Elasticsearch index, both
/// or neither.
pub struct PartOutput<'a> {
    pub file: Option<PartFile<'a>>,
    pub es: Option<&'a EsTarget>,
    /// The worker writing (names its bulk requests).
    pub worker: usize,
}

/// A part file in the model directory being written.
pub struct PartFile<'a> {
    pub store: &'a Store,
    pub path: String,
    /// Created as scratch: the parts are concatenated into `items.jsonl`
    /// (synced) and removed.
    pub scratch: bool,
}

impl PartFile<'_> {
    fn create(&self) -> Result<Box<dyn FileSink>, SinkError> {
        let file = if self.scratch { self.store.create_scratch(&self.path) } else { self.store.create(&self.path) };
        file.map_err(SinkError::Directory)
    }

    fn write(&self, file: &mut dyn FileSink, bytes: &[u8]) -> Result<(), SinkError> {
        file.write_all(bytes).map_err(|e| SinkError::Directory(format!("cannot write {}: {e}", self.path)))
    }
}

/// The documents of a row range: what each item's document is made of,
/// indexed by item − range start (`primary_users` by global item).
pub struct PartDocuments<'a> {
    pub range: Range<u32>,
    pub dict: &'a SortedIds,
    pub layout: &'a DocumentLayout,
    /// Per item: users with it in the primary indicator before downsampling;
    /// items without any have no indicator fields.
    pub primary_users: &'a [u32],
    /// Per row, per indicator: the correlators (`None`: no indicators in the model).
    pub correlators: Option<&'a [Vec<Vec<u32>>]>,
    /// Per ranking, per row: the value, if any.
    pub ranks: &'a [Vec<Option<f64>>],
    pub properties: &'a [Option<Properties>],
    pub deleted: &'a [bool],
    /// Hash of the document as last written (0: none).
    pub prev_hash: &'a [u64],
}

impl<'a> PartDocuments<'a> {
    /// Row `x`'s correlators, if item `item` is a primary item.
    fn correlators(&self, x: usize, item: u32) -> Option<&'a [Vec<u32>]> {
        self.correlators
            .filter(|_| self.primary_users.get(item as usize).is_some_and(|&c| c > 0))
            .map(|rows| rows[x].as_slice())
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

/// The documents last written, by row, and the rows whose correlators
/// were scored again since (their cached documents are stale).
pub struct DocCache<'a> {
    pub docs: &'a mut [Option<CachedDoc>],
    pub rescored: &'a [bool],
}

impl DocCache<'_> {
    /// Row `x`'s cached document if its inputs did not change; a stale one
    /// is dropped.
    fn reuse(&mut self, x: usize, ranks: &[Option<f64>], properties: Option<&Properties>) -> Option<&CachedDoc> {
        let hit = self.docs[x]
            .as_ref()
            .is_some_and(|c| !self.rescored[x] && c.ranks == ranks && c.properties.as_ref() == properties);
        if !hit {
            self.docs[x] = None;
        }
        self.docs[x].as_ref()
    }
}

/// Counts of the documents of a part (summed over the parts for the manifest).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct PartStats {
    pub documents: u64,
    /// Documents sent to Elasticsearch.
    pub documents_sent: u64,
    /// Documents deleted from the live index.
    pub deleted: u64,
    /// Per indicator: correlators written.
    pub correlators: Vec<u64>,
    pub items_with_properties: u64,
    /// Per ranking: documents with a value.
    pub ranked: Vec<u64>,
    /// Properties not written because the model uses their name, by name.
    pub clashes: BTreeMap<String, u64>,
}

impl PartStats {
    fn count(&mut self, correlators: Option<&[Vec<u32>]>, ranks: &[Option<f64>], properties: Option<&Properties>) {
        if let Some(c) = correlators {
            for (total, list) in self.correlators.iter_mut().zip(c) {
                *total += list.len() as u64;
            }
        }
        for (total, v) in self.ranked.iter_mut().zip(ranks) {
            *total += v.is_some() as u64;
        }
        self.items_with_properties += properties.is_some() as u64;
        self.documents += 1;
    }

    pub fn add(&mut self, other: PartStats) {
        self.documents += other.documents;
        self.documents_sent += other.documents_sent;
        self.deleted += other.deleted;
        self.items_with_properties += other.items_with_properties;
        add_vec(&mut self.correlators, &other.correlators);
        add_vec(&mut self.ranked, &other.ranked);
        for (k, v) in other.clashes {
            *self.clashes.entry(k).or_default() += v;
        }
    }

    /// Properties not written because the model uses their name.
    pub fn clash_warnings(&self) -> impl Iterator<Item = String> + '_ {
        self.clashes.iter().map(|(field, count)| {
            format!("property `{field}` of {count} item(s) is not written: the model uses that field name")
        })
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

/// What writing a part produced, kept even when it failed part way.
#[derive(Default)]
pub struct PartWritten {
    pub stats: PartStats,
    /// (item, hash of its document) of every document written, in item order.
    pub hashes: Vec<(u32, u64)>,
}

/// Writes the documents of a part to its outputs.
pub fn write_part(
    out: &PartOutput,
    docs: &PartDocuments,
    mut cache: Option<DocCache>,
    written: &mut PartWritten,
) -> Result<(), SinkError> {
    let in_place = out.es.is_some_and(|es| es.in_place);
    let mut file = match &out.file {
        Some(f) => Some((f, f.create()?)),
        None => None,
    };
    let mut bulk = out.es.map(|es| es.writer(&es.model_index, out.worker));
    let mut line = Vec::with_capacity(4096);
    let stats = &mut written.stats;
    stats.correlators = vec![0; docs.layout.indicators.len()];
    stats.ranked = vec![0; docs.layout.rankings.len()];
    let mut ranks = vec![None; docs.layout.rankings.len()];
    for (x, item) in docs.range.clone().enumerate() {
        let correlators = docs.correlators(x, item);
        for (slot, values) in ranks.iter_mut().zip(docs.ranks) {
            *slot = values[x];
        }
        let properties = docs.properties[x].as_ref();
        let prev = docs.prev_hash[x];
        let nothing = correlators.is_none() && properties.is_none() && ranks.iter().all(Option::is_none);
        if nothing || docs.deleted[x] {
            // No document (any more): an item `$delete`d leaves the live index.
            if in_place
                && prev != 0
                && let Some(bulk) = &mut bulk
            {
                bulk.delete(docs.dict.get(item)).map_err(SinkError::Elasticsearch)?;
                stats.deleted += 1;
            }
            continue;
        }
        stats.count(correlators, &ranks, properties);
        let doc = Document { id: docs.dict.get(item), correlators, ranks: &ranks, properties };
        // Following: a document whose inputs did not change is copied.
        let (hash, bytes) = match cache.as_mut().and_then(|c| c.reuse(x, &ranks, properties)) {
            Some(c) => {
                for field in &c.clashes {
                    *stats.clashes.entry(field.clone()).or_default() += 1;
                }
                (c.hash, c.line.as_slice())
            }
            None => {
                line.clear();
                let mut clashes = BTreeMap::new();
                docs.layout.write(&mut line, &doc, docs.dict, &mut clashes);
                let hash = xxhash_rust::xxh3::xxh3_64(&line);
                if let Some(c) = cache.as_mut() {
                    c.docs[x] = Some(CachedDoc {
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
        if let Some((f, sink)) = &mut file {
            f.write(sink.as_mut(), bytes)?;
        }
        written.hashes.push((item, hash));
        if let Some(bulk) = &mut bulk
            && (!in_place || hash != prev)
        {
            bulk.add(doc.id, bytes).map_err(SinkError::Elasticsearch)?;
            stats.documents_sent += 1;
        }
    }
    if let Some(bulk) = bulk {
        bulk.finish().map_err(SinkError::Elasticsearch)?;
    }
    match file {
        Some((f, sink)) => sink.finish().map_err(|e| SinkError::Directory(format!("cannot write {}: {e}", f.path))),
        None => Ok(()),
    }
}
