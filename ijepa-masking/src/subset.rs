//! Uniformly random subsets of a sorted index list, kept sorted.
//!
//! Used to cut context masks to a common length without the official
//! collator's bias toward low indices (top rows), and by the seed recipe to
//! subsample the context.

use rand_chacha::ChaCha8Rng;

use crate::bitset::PatchSet;
use crate::rng::below;

/// Reusable buffer, so that drawing a subset allocates nothing.
#[derive(Debug)]
pub(crate) struct SubsetScratch {
    chosen: PatchSet,
}

impl SubsetScratch {
    /// Scratch for lists of at most `capacity` indices.
    pub fn new(capacity: usize) -> Self {
        Self {
            chosen: PatchSet::new(capacity),
        }
    }

    /// Appends to `out` a uniformly random `k`-element subset of `sorted`, in
    /// the order of `sorted`.
    ///
    /// Robert Floyd's algorithm picks `m = min(k, n − k)` distinct positions
    /// with exactly `m` draws; the positions kept (or dropped, whichever is
    /// fewer) are marked in a bit set and read back in order.
    pub fn extend_random_subset(
        &mut self,
        sorted: &[u32],
        k: usize,
        rng: &mut ChaCha8Rng,
        out: &mut Vec<u32>,
    ) {
        let n = sorted.len();
        debug_assert!(k <= n);
        if k == n {
            out.extend_from_slice(sorted);
            return;
        }
        let mark_kept = k <= n - k;
        let m = if mark_kept { k } else { n - k };
        self.chosen.clear();
        for j in n - m..n {
            let t = below(rng, 0, j + 1);
            self.chosen
                .insert(if self.chosen.contains(t) { j } else { t });
        }
        if mark_kept {
            out.extend(self.chosen.members().map(|p| sorted[p as usize]));
        } else {
            out.extend(self.chosen.non_members(n).map(|p| sorted[p as usize]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::batch_rng;

    #[test]
    fn subsets_are_sorted_of_the_right_size_and_unbiased() {
        let sorted: Vec<u32> = (0..10).map(|i| i * 3).collect();
        let mut scratch = SubsetScratch::new(10);
        let mut rng = batch_rng(1, 2);
        let (mut hits3, mut hits7) = ([0usize; 10], [0usize; 10]);
        let trials = 20_000;
        for trial in 0..trials {
            let k = [0, 3, 7, 10][trial % 4];
            let mut out = vec![];
            scratch.extend_random_subset(&sorted, k, &mut rng, &mut out);
            assert_eq!(out.len(), k);
            assert!(out.windows(2).all(|w| w[0] < w[1]));
            assert!(out.iter().all(|i| sorted.contains(i)));
            let hits = match k {
                3 => &mut hits3,
                7 => &mut hits7,
                _ => continue,
            };
            for &i in &out {
                hits[(i / 3) as usize] += 1;
            }
        }
        // 5,000 trials each: every element is kept 1,500 (k = 3) or 3,500
        // (k = 7) times on average, sd ≈ 32; a bias toward low indices, or
        // toward either branch of the algorithm, would show here.
        for (hits, mean) in [(hits3, 1_500), (hits7, 3_500)] {
            for h in hits {
                assert!(h.abs_diff(mean) < 150, "{hits:?}");
            }
        }
    }
}
