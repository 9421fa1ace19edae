//! Configuration: the UR's engine.json ([`engine`]) and its durations.

pub mod duration;
pub mod engine;

pub use engine::{Engine, Indicator, Loaded, Ranking, RankingKind, RecsModel};
