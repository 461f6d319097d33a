//! The mask settings a user writes: one type for both samplers, its
//! defaults (the paper's) written once, read from and written to TOML or
//! JSON as they are, and built into a sampler for a grid.

use serde::{Deserialize, Serialize};

use crate::error::MaskingError;
use crate::grid::Grid;
use crate::multiblock::{MultiBlock, MultiBlockConfig};
use crate::sampler::MaskSampler;
use crate::seed::{SeedMasking, SeedMaskingConfig};
use crate::shape::Range;

/// Which sampler draws the masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    /// The official multi-block collator ([`MultiBlock`]).
    MultiBlock,
    /// stable-pretraining's `IJEPAMasking` ([`SeedMasking`]).
    Seed,
}

/// Context and target mask settings; the defaults are the paper's (every
/// published config of facebookresearch/ijepa).
///
/// ```
/// use ijepa_masking::{Grid, MaskConfig, SamplerKind};
///
/// let config = MaskConfig { num_targets: 2, ..MaskConfig::default() };
/// let sampler = config.build(Grid::new_2d(14, 14)?, SamplerKind::MultiBlock, 7)?;
/// assert_eq!(sampler.sample(4, 0).targets.len(), 2);
/// # Ok::<(), ijepa_masking::MaskingError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskConfig {
    /// Target blocks per image (4).
    pub num_targets: usize,
    /// Fraction of the patches in each target block (0.15 – 0.2).
    pub target_scale: Range,
    /// Target block aspect ratio (0.75 – 1.5).
    pub target_aspect_ratio: Range,
    /// Context block scale (0.85 – 1.0) — for the seed sampler, the kept
    /// fraction of the non-target patches.
    pub context_scale: Range,
    /// Fewest context patches a mask may keep (10; the official sampler's
    /// setting, which the seed sampler does not have).
    pub min_keep: usize,
    /// Let the context overlap the targets (off; official sampler).
    pub allow_overlap: bool,
    /// Reproduce the official sampler's two biases (last row/column never
    /// masked, contexts cut to their lowest indices) instead of the fix
    /// (off; official sampler).
    pub official_compat: bool,
}

impl Default for MaskConfig {
    fn default() -> Self {
        Self {
            num_targets: 4,
            target_scale: (0.15, 0.2),
            target_aspect_ratio: (0.75, 1.5),
            context_scale: (0.85, 1.0),
            min_keep: 10,
            allow_overlap: false,
            official_compat: false,
        }
    }
}

impl MaskConfig {
    /// The official sampler's configuration of these settings, drawing
    /// from `seed`.
    pub fn multiblock(&self, seed: u64) -> MultiBlockConfig {
        MultiBlockConfig {
            num_targets: self.num_targets,
            target_scale: self.target_scale,
            target_aspect_ratio: self.target_aspect_ratio,
            context_scale: self.context_scale,
            min_keep: self.min_keep,
            allow_overlap: self.allow_overlap,
            official_compat: self.official_compat,
            seed,
            ..MultiBlockConfig::default()
        }
    }

    /// The seed sampler's configuration of these settings (it has no
    /// `min_keep`, `allow_overlap` or `official_compat`), drawing from
    /// `seed`.
    pub fn seed_masking(&self, seed: u64) -> SeedMaskingConfig {
        SeedMaskingConfig {
            num_targets: self.num_targets,
            target_scale: self.target_scale,
            target_aspect_ratio: self.target_aspect_ratio,
            context_scale: self.context_scale,
            seed,
            ..SeedMaskingConfig::default()
        }
    }

    /// The `kind` sampler of these settings on `grid`, drawing from `seed`.
    ///
    /// # Errors
    /// A setting the sampler refuses on this grid, named.
    pub fn build(
        &self,
        grid: Grid,
        kind: SamplerKind,
        seed: u64,
    ) -> Result<Box<dyn MaskSampler>, MaskingError> {
        Ok(match kind {
            SamplerKind::MultiBlock => Box::new(MultiBlock::new(grid, self.multiblock(seed))?),
            SamplerKind::Seed => Box::new(SeedMasking::new(grid, self.seed_masking(seed))?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_samplers_defaults_are_these() {
        let d = MaskConfig::default();
        assert_eq!(d.multiblock(0), MultiBlockConfig::default());
        assert_eq!(d.seed_masking(0), SeedMaskingConfig::default());
    }

    #[test]
    fn json_round_trips_and_unknown_fields_are_refused() {
        let c = MaskConfig {
            target_scale: (0.1, 0.3),
            ..MaskConfig::default()
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<MaskConfig>(&text).unwrap(), c);
        let partial: MaskConfig = serde_json::from_str(r#"{"num_targets": 2}"#).unwrap();
        assert_eq!(partial.target_scale, MaskConfig::default().target_scale);
        let err = serde_json::from_str::<MaskConfig>(r#"{"num_target": 2}"#).unwrap_err();
        assert!(err.to_string().contains("num_target"), "{err}");
    }
}
