//! The mask-sampler trait, and the trivial all-context sampler.

use crate::grid::Grid;
use crate::output::{IndexBatch, MaskBatch, MaskStats};

/// Anything that draws context and target masks for a batch of images.
///
/// Implementations are deterministic: the same sampler (configuration and
/// seed) and the same `batch_index` give the same masks, on every run and
/// platform. `batch_index` is the global batch counter, so a data loader can
/// draw batches on any thread, in any order, and a resumed run continues with
/// exactly the masks it would have drawn.
///
/// Implement it to add another masking strategy (random, tube, …) that the
/// trainer can use in place of the multi-block recipes:
///
/// ```
/// use ijepa_masking::{Grid, IndexBatch, MaskBatch, MaskSampler};
///
/// /// Context = even patches, target = odd patches.
/// struct Checkerboard(Grid);
///
/// impl MaskSampler for Checkerboard {
///     fn grid(&self) -> Grid {
///         self.0
///     }
///     fn sample(&self, batch_size: usize, _batch_index: u64) -> MaskBatch {
///         let n = self.0.num_patches() as u32;
///         let rows = |parity: u32| {
///             let row: Vec<u32> = (0..n).filter(|i| i % 2 == parity).collect();
///             IndexBatch::from_flat(batch_size, row.len(), row.repeat(batch_size))
///         };
///         MaskBatch { contexts: vec![rows(0)], targets: vec![rows(1)], ..Default::default() }
///     }
/// }
///
/// let masks = Checkerboard(Grid::new_2d(4, 4)?).sample(2, 0);
/// assert_eq!(masks.targets[0].row(1), &[1, 3, 5, 7, 9, 11, 13, 15]);
/// # Ok::<(), ijepa_masking::MaskingError>(())
/// ```
pub trait MaskSampler: Send + Sync {
    /// The patch grid the indices refer to.
    fn grid(&self) -> Grid;

    /// Masks for `batch_size` images forming global batch number `batch_index`.
    fn sample(&self, batch_size: usize, batch_index: u64) -> MaskBatch;
}

/// Evaluation mode: every patch is context, there is no target.
///
/// This is what stable-pretraining's `IJEPAMasking` returns outside training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullContext {
    grid: Grid,
}

impl FullContext {
    /// All-context masks on `grid`.
    pub fn new(grid: Grid) -> Self {
        Self { grid }
    }
}

impl MaskSampler for FullContext {
    fn grid(&self) -> Grid {
        self.grid
    }

    fn sample(&self, batch_size: usize, _batch_index: u64) -> MaskBatch {
        let n = self.grid.num_patches();
        let row: Vec<u32> = (0..n as u32).collect();
        MaskBatch {
            contexts: vec![IndexBatch::from_flat(batch_size, n, row.repeat(batch_size))],
            targets: vec![],
            stats: MaskStats {
                context_len_min: n,
                context_len_max: n,
                context_len_mean: n as f64,
                ..MaskStats::default()
            },
        }
    }
}
