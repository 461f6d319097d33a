//! A fixed-size set of patch indices, one bit per patch.
//!
//! Sampling works on bits (a 14×14 grid is four words), which is what makes
//! the collator run at millions of mask sets per second.

/// A set of patches of one grid, stored as bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatchSet {
    words: Vec<u64>,
}

impl PatchSet {
    /// An empty set able to hold patches `0..num_patches`.
    pub fn new(num_patches: usize) -> Self {
        Self {
            words: vec![0; num_patches.div_ceil(64)],
        }
    }

    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Adds the patches `start..start + len`.
    pub fn insert_run(&mut self, start: usize, len: usize) {
        let end = start + len;
        let mut s = start;
        while s < end {
            let bit = s % 64;
            let n = (64 - bit).min(end - s);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << bit
            };
            self.words[s / 64] |= mask;
            s += n;
        }
    }

    /// Adds every patch of `other`.
    pub fn union_with(&mut self, other: &PatchSet) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// Removes every patch of `other`.
    pub fn subtract(&mut self, other: &PatchSet) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= !b;
        }
    }

    pub fn intersects(&self, other: &PatchSet) -> bool {
        self.words.iter().zip(&other.words).any(|(a, b)| a & b != 0)
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Adds patch `i`.
    pub fn insert(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    pub fn contains(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    /// The members, ascending.
    pub fn members(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(k, &w)| bits(k, w))
    }

    /// The patches `0..num_patches` that are *not* members, ascending.
    pub fn non_members(&self, num_patches: usize) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(move |(k, &w)| {
            let valid = num_patches.saturating_sub(k * 64).min(64);
            let mask = if valid == 64 {
                u64::MAX
            } else {
                (1u64 << valid) - 1
            };
            bits(k, !w & mask)
        })
    }

    /// Appends the members, ascending, to `out`.
    pub fn extend_indices(&self, out: &mut Vec<u32>) {
        out.extend(self.members());
    }
}

/// The set bits of word `k`, as patch indices.
fn bits(k: usize, mut w: u64) -> impl Iterator<Item = u32> {
    std::iter::from_fn(move || {
        (w != 0).then(|| {
            let i = (k * 64) as u32 + w.trailing_zeros();
            w &= w - 1;
            i
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cross_word_boundaries() {
        let mut s = PatchSet::new(200);
        s.insert_run(60, 70);
        s.insert_run(0, 1);
        assert_eq!(s.len(), 71);
        let mut v = vec![];
        s.extend_indices(&mut v);
        let expected: Vec<u32> = std::iter::once(0).chain(60..130).collect();
        assert_eq!(v, expected);
        let c: Vec<u32> = s.non_members(200).collect();
        assert_eq!(c.len(), 129);
        assert_eq!(c[0], 1);
        assert_eq!(*c.last().unwrap(), 199);
    }

    #[test]
    fn set_algebra() {
        let mut a = PatchSet::new(130);
        a.insert_run(0, 128);
        let mut b = PatchSet::new(130);
        b.insert_run(64, 64);
        assert!(a.intersects(&b));
        a.subtract(&b);
        assert_eq!(a.len(), 64);
        assert!(!a.intersects(&b));
        a.union_with(&b);
        assert_eq!(a.len(), 128);
        assert!(a.contains(127) && !a.contains(128));
        a.insert(129);
        assert!(a.contains(129));
        a.clear();
        assert_eq!(a.len(), 0);
    }
}
