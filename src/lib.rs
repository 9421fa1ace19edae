//! ur-train: the Universal Recommender's training job on timely dataflow.

pub mod cluster;
pub mod cmd;
pub mod config;
pub mod dataflow;
pub mod es;
pub mod events;
pub mod hash;
pub mod hold;
pub mod intern;
pub mod memory;
pub mod model;
pub mod query;
pub mod runtime;
pub mod serving;
pub mod sink;
pub mod source;
pub mod state;
pub mod stats;
pub mod storage;
pub mod time;
pub mod train;
