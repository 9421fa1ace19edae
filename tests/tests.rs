//! Integration tests: the `ur-train` binary and library on real files.
//! One binary, a module per topic.

mod util;

mod bad_input;
mod cluster;
mod conformance;
mod determinism;
mod elasticsearch;
mod events;
mod events_hdfs;
mod faults;
mod follow;
mod hdfs;
mod incremental;
mod live_history;
mod paths;
mod properties_and_ranks;
mod reference;
mod serve;
mod state_integrity;
mod tls;
