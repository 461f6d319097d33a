//! What a sampler returns: index lists ready to become `[B, K]` tensors.

use crate::grid::BlockShape;

/// One mask across a batch: `batch` rows of `len` sorted patch indices, stored
/// row-major in one buffer (the layout of a `[B, K]` index tensor).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexBatch {
    batch: usize,
    len: usize,
    data: Vec<u32>,
}

impl IndexBatch {
    /// Wraps a row-major buffer of `batch` rows of `len` indices.
    ///
    /// # Panics
    /// If `data.len() != batch * len` (a programming error, not bad input).
    pub fn from_flat(batch: usize, len: usize, data: Vec<u32>) -> Self {
        assert_eq!(data.len(), batch * len, "IndexBatch buffer size");
        Self { batch, len, data }
    }

    /// Number of rows (images).
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Indices per row, `K`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether rows hold no index.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sorted indices of image `b`.
    pub fn row(&self, b: usize) -> &[u32] {
        &self.data[b * self.len..(b + 1) * self.len]
    }

    /// All rows, in batch order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[u32]> + '_ {
        (0..self.batch).map(|b| self.row(b))
    }

    /// The row-major `[B, K]` buffer.
    pub fn as_flat(&self) -> &[u32] {
        &self.data
    }

    /// Takes the row-major `[B, K]` buffer.
    pub fn into_flat(self) -> Vec<u32> {
        self.data
    }

    /// Rows `start..start + count` (the masks of a share of the batch).
    ///
    /// # Panics
    /// If the rows are not all in the batch (a programming error).
    pub fn slice_rows(&self, start: usize, count: usize) -> Self {
        assert!(
            start + count <= self.batch,
            "rows {start}..{} of {}",
            start + count,
            self.batch
        );
        let data = self.data[start * self.len..(start + count) * self.len].to_vec();
        Self::from_flat(count, self.len, data)
    }
}

/// Masks for one batch.
///
/// `contexts[c]` is the `c`-th context mask, `[batch][K_ctx]`; `targets[t]` is
/// the `t`-th target mask, `[batch][K_tgt]`. Every row is sorted ascending and
/// free of duplicates; all rows of one mask have the same length.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MaskBatch {
    /// Context masks, `[n_context][batch][K_ctx]`.
    pub contexts: Vec<IndexBatch>,
    /// Target masks, `[n_targets][batch][K_tgt]`.
    pub targets: Vec<IndexBatch>,
    /// How the batch was drawn.
    pub stats: MaskStats,
}

impl MaskBatch {
    /// The masks of images `start..start + count` of the batch: what one
    /// process of a data-parallel job takes of a batch drawn for all. Rows
    /// are cut, never redrawn, so every share keeps the batch's lengths;
    /// the statistics stay those of the whole batch.
    ///
    /// # Panics
    /// If the images are not all in the batch (a programming error).
    pub fn slice_images(&self, start: usize, count: usize) -> Self {
        let cut = |m: &Vec<IndexBatch>| m.iter().map(|b| b.slice_rows(start, count)).collect();
        Self {
            contexts: cut(&self.contexts),
            targets: cut(&self.targets),
            stats: self.stats.clone(),
        }
    }
}

/// Statistics of one sampled batch, to log and to check a recipe against its
/// reference.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MaskStats {
    /// Shape of the target blocks when the recipe draws one per batch.
    pub target_shape: Option<BlockShape>,
    /// Shape of the context blocks when the recipe draws one per batch.
    pub context_shape: Option<BlockShape>,
    /// Shortest context before collation (equals the kept length `K_ctx`).
    pub context_len_min: usize,
    /// Longest context before collation.
    pub context_len_max: usize,
    /// Mean context length before collation.
    pub context_len_mean: f64,
    /// Context masks (image × context block) for which target constraints
    /// had to be dropped to keep more than `min_keep` patches.
    pub relaxed_contexts: usize,
    /// The most target constraints dropped for one context mask.
    pub max_relaxation: usize,
    /// Whether some context index also lies in a target of the same image
    /// (only after relaxation, with overlap allowed, or after the seed
    /// recipe's fallback).
    pub context_overlaps_targets: bool,
    /// Target blocks that could not be placed and were left out (seed recipe).
    pub dropped_target_blocks: usize,
    /// Block positions drawn in total: the work the batch took.
    pub position_draws: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_of_a_batch_is_its_rows() {
        let ctx = IndexBatch::from_flat(4, 2, (0..8).collect());
        let tgt = IndexBatch::from_flat(4, 1, vec![9, 8, 7, 6]);
        let batch = MaskBatch {
            contexts: vec![ctx],
            targets: vec![tgt.clone(), tgt],
            stats: MaskStats::default(),
        };
        let share = batch.slice_images(2, 2);
        assert_eq!(share.contexts[0].as_flat(), &[4, 5, 6, 7]);
        assert_eq!(share.targets.len(), 2);
        assert_eq!(share.targets[1].as_flat(), &[7, 6]);
        assert_eq!(share.contexts[0].batch_size(), 2);
        assert_eq!(share.contexts[0].len(), 2);
    }
}
