//! stable-pretraining's `IJEPAMasking` (the user's seed document), the
//! recipe selected with `recipe = "seed"`.

use rand::Rng;

use crate::bitset::PatchSet;
use crate::error::MaskingError;
use crate::grid::{Block, Grid};
use crate::output::{IndexBatch, MaskBatch, MaskStats};
use crate::rng::{batch_rng, below};
use crate::sampler::MaskSampler;
use crate::shape::{
    check_aspect_ratio, check_count, check_fraction, check_range, lerp, Range, SeedShape,
};
use crate::subset::SubsetScratch;

/// Placement attempts per target block before it is left out.
const MAX_ATTEMPTS: usize = 100;

/// Hyper-parameters of stable-pretraining's I-JEPA masks; defaults as in
/// its `IJEPA` class.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedMaskingConfig {
    /// Target blocks drawn per batch.
    pub num_targets: usize,
    /// Fraction of a frame's patches per target block, in `(0, 1)`.
    pub target_scale: Range,
    /// Width / height of target blocks, drawn log-uniformly.
    pub target_aspect_ratio: Range,
    /// Fraction of the non-target patches kept as context, in `(0, 1]`,
    /// drawn once per batch.
    pub context_scale: Range,
    /// Fraction of the frames a block spans on 3-D grids (ignored on 2-D).
    pub temporal_scale: Range,
    /// Let target blocks overlap each other.
    pub allow_target_overlap: bool,
    /// Seed of every random draw; with the batch counter it fixes the masks.
    pub seed: u64,
}

impl Default for SeedMaskingConfig {
    /// [`MaskConfig`](crate::MaskConfig)'s defaults (also `IJEPA`'s), whole
    /// frames on 3-D grids, no target overlap, seed 0.
    fn default() -> Self {
        let m = crate::MaskConfig::default();
        Self {
            num_targets: m.num_targets,
            target_scale: m.target_scale,
            target_aspect_ratio: m.target_aspect_ratio,
            context_scale: m.context_scale,
            temporal_scale: (1.0, 1.0),
            allow_target_overlap: false,
            seed: 0,
        }
    }
}

/// stable-pretraining's multi-block masks.
///
/// Unlike the official collator, target blocks are drawn once per batch and
/// shared by every image; each block redraws shape and position up to 100
/// times to avoid the blocks placed before it, and is left out if it cannot
/// (counted in [`MaskStats::dropped_target_blocks`]). There is a single
/// target mask, the sorted union of the blocks, and a single context mask:
/// a per-image random subset of the non-target patches whose size (a ratio
/// drawn once per batch) is the same for every image. If the targets cover
/// the whole grid, every patch becomes context, as in the Python code
/// (reported in [`MaskStats::context_overlaps_targets`]).
///
/// ```
/// use ijepa_masking::{Grid, MaskSampler, SeedMasking, SeedMaskingConfig};
///
/// let masks = SeedMasking::new(Grid::new_2d(14, 14)?, SeedMaskingConfig::default())?;
/// let batch = masks.sample(8, 0);
/// assert_eq!((batch.contexts.len(), batch.targets.len()), (1, 1));
/// assert_eq!(batch.targets[0].row(0), batch.targets[0].row(7));
/// # Ok::<(), ijepa_masking::MaskingError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SeedMasking {
    grid: Grid,
    config: SeedMaskingConfig,
    rule: SeedShape,
}

impl SeedMasking {
    /// Checks `config` and builds the sampler.
    ///
    /// # Errors
    /// `num_targets` of zero, a target scale outside `(0, 1)`, an aspect
    /// ratio not positive, or a context scale outside `(0, 1]`.
    pub fn new(grid: Grid, config: SeedMaskingConfig) -> Result<Self, MaskingError> {
        check_count("num_targets", config.num_targets)?;
        check_range(
            "target_scale",
            config.target_scale,
            true,
            1.0,
            true,
            "0 < min <= max < 1",
        )?;
        check_aspect_ratio("target_aspect_ratio", config.target_aspect_ratio)?;
        check_fraction("context_scale", config.context_scale)?;
        check_fraction("temporal_scale", config.temporal_scale)?;
        let rule = SeedShape {
            scale: config.target_scale,
            aspect_ratio: config.target_aspect_ratio,
            temporal_scale: config.temporal_scale,
        };
        Ok(Self { grid, config, rule })
    }

    /// The configuration this sampler was built with.
    pub fn config(&self) -> &SeedMaskingConfig {
        &self.config
    }
}

impl MaskSampler for SeedMasking {
    fn grid(&self) -> Grid {
        self.grid
    }

    fn sample(&self, batch_size: usize, batch_index: u64) -> MaskBatch {
        let grid = &self.grid;
        let n = grid.num_patches();
        let mut rng = batch_rng(self.config.seed, batch_index);
        let mut stats = MaskStats::default();

        let mut union = PatchSet::new(n);
        let mut candidate = PatchSet::new(n);
        for _ in 0..self.config.num_targets {
            let mut placed = false;
            for _ in 0..MAX_ATTEMPTS {
                let shape = self.rule.draw(grid, &mut rng);
                let frame = if grid.frames() > 1 {
                    below(&mut rng, 0, grid.frames() - shape.frames + 1)
                } else {
                    0
                };
                let block = Block {
                    shape,
                    frame,
                    top: below(&mut rng, 0, grid.height() - shape.height + 1),
                    left: below(&mut rng, 0, grid.width() - shape.width + 1),
                };
                stats.position_draws += 1;
                candidate.clear();
                block.for_each_run(grid, |start, len| candidate.insert_run(start, len));
                if self.config.allow_target_overlap || !candidate.intersects(&union) {
                    union.union_with(&candidate);
                    placed = true;
                    break;
                }
            }
            stats.dropped_target_blocks += usize::from(!placed);
        }

        let mut target = Vec::new();
        union.extend_indices(&mut target);
        let available: Vec<u32> = union.non_members(n).collect();

        let (k_ctx, context) = if available.is_empty() {
            stats.context_overlaps_targets = true;
            let all: Vec<u32> = (0..n as u32).collect();
            (n, all.repeat(batch_size))
        } else {
            let ratio = lerp(self.config.context_scale, rng.random());
            let k = ((available.len() as f64 * ratio) as usize).max(1);
            let mut rows = Vec::with_capacity(batch_size * k);
            let mut scratch = SubsetScratch::new(n);
            for _ in 0..batch_size {
                scratch.extend_random_subset(&available, k, &mut rng, &mut rows);
            }
            (k, rows)
        };
        if batch_size > 0 {
            stats.context_len_min = k_ctx;
            stats.context_len_max = k_ctx;
            stats.context_len_mean = k_ctx as f64;
        }
        MaskBatch {
            contexts: vec![IndexBatch::from_flat(batch_size, k_ctx, context)],
            targets: vec![IndexBatch::from_flat(
                batch_size,
                target.len(),
                target.repeat(batch_size),
            )],
            stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_shared_and_disjoint_from_context() {
        let masks =
            SeedMasking::new(Grid::new_2d(14, 14).unwrap(), SeedMaskingConfig::default()).unwrap();
        for b in 0..50 {
            let m = masks.sample(16, b);
            let t = &m.targets[0];
            assert!(t.rows().all(|r| r == t.row(0)));
            // Non-overlapping blocks of at least 30 patches: 4 of them rarely
            // fail to fit on 196 patches, and a placed block is never empty.
            assert!(t.len() >= 30 * (4 - m.stats.dropped_target_blocks));
            for (c, tr) in m.contexts[0].rows().zip(t.rows()) {
                assert!(c.iter().all(|i| !tr.contains(i)));
                assert!(c.len() >= ((196 - tr.len()) as f64 * 0.85) as usize);
            }
        }
    }

    #[test]
    fn refuses_a_target_scale_of_one() {
        let cfg = SeedMaskingConfig {
            target_scale: (0.5, 1.0),
            ..Default::default()
        };
        let err = SeedMasking::new(Grid::new_2d(14, 14).unwrap(), cfg).unwrap_err();
        assert!(err.to_string().contains("target_scale"), "{err}");
    }

    #[test]
    fn full_cover_falls_back_to_all_context() {
        // One target covering the whole 2×2 grid: scale just under 1 rounds to 2×2.
        let cfg = SeedMaskingConfig {
            num_targets: 1,
            target_scale: (0.99, 0.99),
            target_aspect_ratio: (1.0, 1.0),
            ..Default::default()
        };
        let m = SeedMasking::new(Grid::new_2d(2, 2).unwrap(), cfg)
            .unwrap()
            .sample(3, 0);
        assert!(m.stats.context_overlaps_targets);
        assert_eq!(m.contexts[0].row(2), &[0, 1, 2, 3]);
    }
}
