//! Sink: the model's documents and where they go — a model directory
//! (`items.jsonl` + `manifest.json`) and/or Elasticsearch (a model index and
//! a users index). Each worker writes its part ([`part`]) and, with
//! Elasticsearch, its users' histories ([`history`]).

pub mod directory;
pub mod document;
pub mod elasticsearch;
pub mod history;
pub mod part;
