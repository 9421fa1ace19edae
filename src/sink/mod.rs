//! Sink: the model's documents and where they go. Today a directory
//! (`items.jsonl` + `manifest.json`); the documents are already the ones
//! Elasticsearch will index.

pub mod directory;
pub mod document;
pub mod elasticsearch;
