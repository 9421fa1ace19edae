//! Dataflow.
pub mod exchange;
pub mod llr;
