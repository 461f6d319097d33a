//! Deterministic random streams for mask sampling.
//!
//! Each batch gets its own ChaCha8 stream keyed by the user's seed and the
//! global batch counter: the masks of batch `i` are the same on every run and
//! platform, whichever worker draws them and whether or not training was
//! resumed in between. (`rand`'s `StdRng` is not used: its algorithm may
//! change between releases.)

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Domain tag so that these streams never coincide with another use of the
/// same user seed elsewhere in ijepa-rs.
const TAG: &[u8; 16] = b"ijepa-rs masking";

/// The random stream for batch `batch_index` under `seed`.
pub(crate) fn batch_rng(seed: u64, batch_index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&batch_index.to_le_bytes());
    key[16..].copy_from_slice(TAG);
    ChaCha8Rng::from_seed(key)
}

/// A uniform draw from `lo..hi` (`hi > lo`).
#[inline]
pub(crate) fn below(rng: &mut ChaCha8Rng, lo: usize, hi: usize) -> usize {
    use rand::Rng;
    debug_assert!(hi > lo && hi - lo <= u32::MAX as usize);
    lo + rng.random_range(0..(hi - lo) as u32) as usize
}
