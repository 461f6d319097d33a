//! The official I-JEPA multi-block collator (facebookresearch/ijepa
//! `src/masks/multiblock.py`), hang-free, with its two known biases fixed
//! unless `official_compat` asks for them.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::bitset::PatchSet;
use crate::error::MaskingError;
use crate::grid::{Block, BlockShape, Grid};
use crate::output::{IndexBatch, MaskBatch, MaskStats};
use crate::rng::{batch_rng, below};
use crate::sampler::MaskSampler;
use crate::shape::{check_aspect_ratio, check_count, check_fraction, OfficialShape, Range};
use crate::subset::SubsetScratch;

/// Failed context draws after which the last still-applied target constraint
/// is dropped (the official `timeout`).
const RELAX_AFTER: usize = 20;

/// Hyper-parameters of the official multi-block masks.
///
/// The defaults are the paper's (every published config of
/// facebookresearch/ijepa): 4 targets of scale 0.15–0.2 and aspect ratio
/// 0.75–1.5, one context block of scale 0.85–1.0, `min_keep` 10, no overlap.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiBlockConfig {
    /// Target blocks per image (`npred`).
    pub num_targets: usize,
    /// Fraction of a frame's patches a target block covers (`pred_mask_scale`).
    pub target_scale: Range,
    /// Height / width of target blocks (`aspect_ratio`).
    pub target_aspect_ratio: Range,
    /// Context blocks per image (`nenc`).
    pub num_contexts: usize,
    /// Fraction of a frame's patches the context block covers before the
    /// targets are cut out (`enc_mask_scale`); its aspect ratio is 1.
    pub context_scale: Range,
    /// Fraction of the frames a block spans on 3-D grids (ignored on 2-D).
    pub temporal_scale: Range,
    /// A context must keep strictly more patches than this (`min_keep`).
    pub min_keep: usize,
    /// Let context and targets overlap (`allow_overlap`).
    pub allow_overlap: bool,
    /// Reproduce the official code's two biases exactly: block corners drawn
    /// with an exclusive upper bound, so the last row and column are never
    /// masked (ijepa issues #40/#59), and contexts cut to the batch minimum by
    /// keeping their lowest indices, which favours the top rows (issue #60).
    /// Off by default: corners may reach the last row/column, and contexts
    /// are cut to a uniformly random subset (then sorted).
    pub official_compat: bool,
    /// Seed of every random draw; with the batch counter it fixes the masks.
    pub seed: u64,
}

impl Default for MultiBlockConfig {
    /// [`MaskConfig`](crate::MaskConfig)'s defaults, one context, whole
    /// frames on 3-D grids, seed 0.
    fn default() -> Self {
        let m = crate::MaskConfig::default();
        Self {
            num_targets: m.num_targets,
            target_scale: m.target_scale,
            target_aspect_ratio: m.target_aspect_ratio,
            num_contexts: 1,
            context_scale: m.context_scale,
            temporal_scale: (1.0, 1.0),
            min_keep: m.min_keep,
            allow_overlap: m.allow_overlap,
            official_compat: m.official_compat,
            seed: 0,
        }
    }
}

/// The official I-JEPA multi-block mask sampler.
///
/// Per batch, one target shape and one context shape are drawn (from a
/// stream seeded by the seed and the batch counter); per image, every block
/// gets its own position. The context is the context block minus all target
/// blocks; if that keeps `min_keep` patches or fewer, the context position is
/// redrawn, and after every 20 failures the last still-applied target is no
/// longer cut out (reported in [`MaskStats::relaxed_contexts`]). Contexts are
/// then cut to the shortest one in the batch.
///
/// Sampling never hangs: a configuration whose blocks could be too small to
/// keep is refused by [`MultiBlock::new`], and the context search ends after
/// at most `20·num_targets + 1` draws — once every target constraint has been
/// dropped, the bare context block is always large enough.
///
/// ```
/// use ijepa_masking::{Grid, MaskSampler, MultiBlock, MultiBlockConfig};
///
/// let masks = MultiBlock::new(Grid::new_2d(14, 14)?, MultiBlockConfig::default())?;
/// let batch = masks.sample(128, 0);
/// assert_eq!(batch.targets.len(), 4);
/// let k = batch.targets[0].len();
/// assert!((30..=40).contains(&k));
/// assert_eq!(batch.contexts[0].batch_size(), 128);
/// # Ok::<(), ijepa_masking::MaskingError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MultiBlock {
    grid: Grid,
    config: MultiBlockConfig,
    target_rule: OfficialShape,
    context_rule: OfficialShape,
}

impl MultiBlock {
    /// Checks `config` on `grid` and builds the sampler.
    ///
    /// # Errors
    /// A count of zero, a scale outside `(0, 1]`, an aspect ratio not
    /// positive, or a grid on which some target or context block could keep
    /// `min_keep` patches or fewer (blocks are at most `(H−1)×(W−1)`).
    pub fn new(grid: Grid, config: MultiBlockConfig) -> Result<Self, MaskingError> {
        check_count("num_targets", config.num_targets)?;
        check_count("num_contexts", config.num_contexts)?;
        check_fraction("target_scale", config.target_scale)?;
        check_fraction("context_scale", config.context_scale)?;
        check_fraction("temporal_scale", config.temporal_scale)?;
        check_aspect_ratio("target_aspect_ratio", config.target_aspect_ratio)?;
        let target_rule = OfficialShape {
            scale: config.target_scale,
            aspect_ratio: config.target_aspect_ratio,
            temporal_scale: config.temporal_scale,
        };
        let context_rule = OfficialShape {
            scale: config.context_scale,
            aspect_ratio: (1.0, 1.0),
            temporal_scale: config.temporal_scale,
        };
        for (which, rule) in [("target", &target_rule), ("context", &context_rule)] {
            let shape = rule.smallest(&grid);
            if shape.area() <= config.min_keep {
                return Err(MaskingError::BlockTooSmall {
                    which,
                    shape: shape.dims(),
                    area: shape.area(),
                    min_keep: config.min_keep,
                    grid: grid.dims(),
                });
            }
        }
        Ok(Self {
            grid,
            config,
            target_rule,
            context_rule,
        })
    }

    /// The configuration this sampler was built with.
    pub fn config(&self) -> &MultiBlockConfig {
        &self.config
    }

    /// A uniformly drawn position for a block of `shape`.
    fn place(&self, shape: BlockShape, rng: &mut ChaCha8Rng) -> Block {
        let g = &self.grid;
        // Number of valid corner positions along one side; the official code
        // draws from `[0, side − extent)` and so never reaches the last one.
        let corners =
            |side: usize, extent: usize| side - extent + !self.config.official_compat as usize;
        let frame = if g.frames() > 1 {
            below(rng, 0, g.frames() - shape.frames + 1)
        } else {
            0
        };
        Block {
            shape,
            frame,
            top: below(rng, 0, corners(g.height(), shape.height)),
            left: below(rng, 0, corners(g.width(), shape.width)),
        }
    }
}

impl MaskSampler for MultiBlock {
    fn grid(&self) -> Grid {
        self.grid
    }

    fn sample(&self, batch_size: usize, batch_index: u64) -> MaskBatch {
        let grid = &self.grid;
        let cfg = &self.config;
        let n = grid.num_patches();
        let mut rng = batch_rng(cfg.seed, batch_index);
        // Same order as the official collator: target size, then context size.
        let target_shape = self.target_rule.shape(grid, rng.random());
        let context_shape = self.context_rule.shape(grid, rng.random());

        let k_tgt = target_shape.area();
        let mut targets: Vec<Vec<u32>> = (0..cfg.num_targets)
            .map(|_| Vec::with_capacity(batch_size * k_tgt))
            .collect();
        let mut target_sets = vec![PatchSet::new(n); cfg.num_targets];
        let mut context = PatchSet::new(n);
        // Contexts vary in length until collation: one buffer, entry (b, c)
        // at `starts[b·num_contexts + c]`.
        let entries = batch_size * cfg.num_contexts;
        let mut flat: Vec<u32> = Vec::with_capacity(entries * context_shape.area());
        let mut starts: Vec<usize> = Vec::with_capacity(entries + 1);
        let mut stats = MaskStats {
            target_shape: Some(target_shape),
            context_shape: Some(context_shape),
            ..MaskStats::default()
        };

        for _ in 0..batch_size {
            for (indices, set) in targets.iter_mut().zip(target_sets.iter_mut()) {
                let block = self.place(target_shape, &mut rng);
                set.clear();
                block.for_each_run(grid, |start, len| set.insert_run(start, len));
                block.for_each_index(grid, |i| indices.push(i));
            }
            stats.position_draws += cfg.num_targets;
            for _ in 0..cfg.num_contexts {
                let mut dropped = 0;
                let mut failures = 0;
                loop {
                    let block = self.place(context_shape, &mut rng);
                    stats.position_draws += 1;
                    context.clear();
                    block.for_each_run(grid, |start, len| context.insert_run(start, len));
                    if !cfg.allow_overlap {
                        for set in &target_sets[..cfg.num_targets - dropped] {
                            context.subtract(set);
                        }
                    }
                    if context.len() > cfg.min_keep {
                        break;
                    }
                    failures += 1;
                    if failures == RELAX_AFTER {
                        failures = 0;
                        dropped = (dropped + 1).min(cfg.num_targets);
                    }
                }
                if dropped > 0 {
                    stats.relaxed_contexts += 1;
                    stats.max_relaxation = stats.max_relaxation.max(dropped);
                }
                if (dropped > 0 || cfg.allow_overlap) && !stats.context_overlaps_targets {
                    stats.context_overlaps_targets =
                        target_sets.iter().any(|t| t.intersects(&context));
                }
                starts.push(flat.len());
                context.extend_indices(&mut flat);
            }
        }
        starts.push(flat.len());

        let lens = starts.windows(2).map(|w| w[1] - w[0]);
        let k_ctx = lens.clone().min().unwrap_or(0);
        if entries > 0 {
            stats.context_len_min = k_ctx;
            stats.context_len_max = lens.clone().max().unwrap_or(0);
            stats.context_len_mean = flat.len() as f64 / entries as f64;
        }
        let mut scratch = SubsetScratch::new(n);
        let contexts = (0..cfg.num_contexts)
            .map(|c| {
                let mut rows = Vec::with_capacity(batch_size * k_ctx);
                for b in 0..batch_size {
                    let e = b * cfg.num_contexts + c;
                    let indices = &flat[starts[e]..starts[e + 1]];
                    if cfg.official_compat {
                        rows.extend_from_slice(&indices[..k_ctx]);
                    } else {
                        scratch.extend_random_subset(indices, k_ctx, &mut rng, &mut rows);
                    }
                }
                IndexBatch::from_flat(batch_size, k_ctx, rows)
            })
            .collect();
        let targets = targets
            .into_iter()
            .map(|rows| IndexBatch::from_flat(batch_size, k_tgt, rows))
            .collect();
        MaskBatch {
            contexts,
            targets,
            stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid14() -> Grid {
        Grid::new_2d(14, 14).unwrap()
    }

    #[test]
    fn refuses_targets_that_official_code_would_loop_on() {
        // Official issue #68: a 2×2 grid of 0.15-scale targets is never > 10.
        let cfg = MultiBlockConfig {
            target_scale: (0.01, 0.05),
            ..MultiBlockConfig::default()
        };
        let err = MultiBlock::new(grid14(), cfg).unwrap_err();
        assert!(
            matches!(
                err,
                MaskingError::BlockTooSmall {
                    which: "target",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("min_keep = 10"), "{err}");
        assert!(
            err.to_string().contains("patches on the 14x14 grid"),
            "{err}"
        );
    }

    #[test]
    fn refuses_grids_smaller_than_a_block() {
        let err = MultiBlock::new(Grid::new_2d(1, 40).unwrap(), MultiBlockConfig::default());
        assert!(matches!(err, Err(MaskingError::BlockTooSmall { .. })));
    }

    #[test]
    fn refuses_bad_ranges_and_counts() {
        let bad = [
            MultiBlockConfig {
                target_scale: (0.0, 0.2),
                ..Default::default()
            },
            MultiBlockConfig {
                context_scale: (0.85, 1.2),
                ..Default::default()
            },
            MultiBlockConfig {
                target_aspect_ratio: (1.5, 0.75),
                ..Default::default()
            },
            MultiBlockConfig {
                target_scale: (f64::NAN, 0.2),
                ..Default::default()
            },
            MultiBlockConfig {
                num_targets: 0,
                ..Default::default()
            },
            MultiBlockConfig {
                num_targets: 99_999,
                ..Default::default()
            },
        ];
        for cfg in bad {
            let err = MultiBlock::new(grid14(), cfg.clone()).unwrap_err();
            assert!(
                matches!(
                    err,
                    MaskingError::InvalidRange { .. } | MaskingError::Count { .. }
                ),
                "{cfg:?}: {err}"
            );
        }
    }

    #[test]
    fn compat_never_reaches_the_last_row_or_column() {
        let masks = MultiBlock::new(
            grid14(),
            MultiBlockConfig {
                official_compat: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut covered = [false; 196];
        for batch in 0..50 {
            let m = masks.sample(64, batch);
            for idx in m.targets.iter().chain(&m.contexts) {
                for &i in idx.as_flat() {
                    covered[i as usize] = true;
                }
            }
        }
        let g = grid14();
        for (i, &c) in covered.iter().enumerate() {
            let (_, r, col) = g.coords(i as u32);
            assert_eq!(c, r < 13 && col < 13, "patch ({r}, {col})");
        }
    }

    #[test]
    fn default_covers_the_whole_grid() {
        let masks = MultiBlock::new(grid14(), MultiBlockConfig::default()).unwrap();
        let mut covered = [false; 196];
        for batch in 0..50 {
            for idx in masks.sample(64, batch).targets {
                for &i in idx.as_flat() {
                    covered[i as usize] = true;
                }
            }
        }
        assert!(covered.iter().all(|&c| c));
    }

    #[test]
    fn relaxation_is_reported() {
        // Context blocks of scale 0.3 on a small grid with large targets
        // often keep fewer than 10 patches: constraints must be dropped.
        let cfg = MultiBlockConfig {
            target_scale: (0.3, 0.35),
            context_scale: (0.3, 0.35),
            ..Default::default()
        };
        let masks = MultiBlock::new(Grid::new_2d(8, 8).unwrap(), cfg).unwrap();
        let relaxed: usize = (0..20)
            .map(|b| masks.sample(32, b).stats.relaxed_contexts)
            .sum();
        assert!(relaxed > 0);
        for b in 0..20 {
            let s = masks.sample(32, b).stats;
            assert!(s.position_draws <= 32 * (4 + 20 * 4 + 1));
            assert!(s.max_relaxation <= 4);
        }
    }
}
