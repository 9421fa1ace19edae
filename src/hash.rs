//! Stable hashes of ids: the only source of "randomness" in training.
//!
//! Downsampling and the `random` ranking must give the same model whatever
//! the file order, partitioning, thread or process count, so every random
//! choice is a function of the engine `seed` and the id *strings* (never of
//! interned integers, which depend on what was read). XXH3 is specified and
//! stable across versions and platforms.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// 64-bit hash of an id string (user or item), independent of the seed.
#[inline]
pub fn id_hash(id: &str) -> u64 {
    xxh3_64_with_seed(id.as_bytes(), 0x5552_2d74_7261_696e) // "UR-train"
}

/// SplitMix64 finaliser: a bijective, well-mixing step.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key by which the user×item interaction of one indicator competes for
/// a place when a row or column is downsampled: smaller keys are kept.
#[inline]
pub fn sample_key(indicator_salt: u64, user_hash: u64, item_hash: u64) -> u64 {
    mix(mix(indicator_salt ^ user_hash) ^ item_hash.rotate_left(23))
}

/// Salt of one indicator for a seed: the indicator's *name* is used, so
/// reordering indicators in engine.json does not change their samples.
pub fn indicator_salt(seed: u64, indicator: &str) -> u64 {
    mix(seed ^ xxh3_64_with_seed(indicator.as_bytes(), 0x1d1c))
}

/// A uniform number in [0, 1) for the `random` ranking of an item.
pub fn unit_interval(seed: u64, ranking: &str, item: &str) -> f64 {
    let h = mix(indicator_salt(seed, ranking) ^ id_hash(item));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_values() {
        // Pinned so a dependency upgrade cannot silently change every model.
        assert_eq!(id_hash("u1"), id_hash("u1"));
        assert_ne!(id_hash("u1"), id_hash("u2"));
        let k = sample_key(indicator_salt(0, "purchase"), id_hash("u1"), id_hash("Iphone 6"));
        assert_eq!(k, sample_key(indicator_salt(0, "purchase"), id_hash("u1"), id_hash("Iphone 6")));
        assert_ne!(k, sample_key(indicator_salt(1, "purchase"), id_hash("u1"), id_hash("Iphone 6")));
        assert_ne!(k, sample_key(indicator_salt(0, "view"), id_hash("u1"), id_hash("Iphone 6")));
        assert_eq!(xxh3_64_with_seed(b"", 0), 0x2d06_8005_38d3_94c2);
    }

    #[test]
    fn unit_interval_is_in_range_and_spread() {
        let values: Vec<f64> = (0..1000).map(|i| unit_interval(7, "uniqueRank", &format!("item-{i}"))).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!((mean - 0.5).abs() < 0.05, "mean {mean}");
    }
}
