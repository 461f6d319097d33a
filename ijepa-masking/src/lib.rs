//! Multi-block mask sampling for I-JEPA and other JEPA variants.
//!
//! I-JEPA trains an encoder to predict, from a large *context* block of an
//! image, the representations of several *target* blocks. This crate draws
//! those blocks on a patch grid and returns them as sorted index lists, ready
//! to become `[B, K]` index tensors. It depends on `rand` (and `serde` for
//! its settings) only — no tensor library — so video or audio JEPA variants can reuse it on their own grids
//! (rank 3, `T×H×W`).
//!
//! Two recipes:
//! - [`MultiBlock`]: the paper's masks as facebookresearch/ijepa draws them
//!   (the default everywhere in ijepa-rs). Its two biases — the last row and
//!   column never masked, contexts truncated toward the top rows — are fixed
//!   by default and reproduced with `official_compat: true`; its infinite loop
//!   on too-small blocks is a construction error instead.
//! - [`SeedMasking`]: stable-pretraining's `IJEPAMasking` variant.
//!
//! Both implement [`MaskSampler`], the seam at which a trainer accepts any
//! masking strategy; [`FullContext`] is the evaluation-mode sampler.
//! [`MaskConfig`] is the settings a user writes (ijepa-rs's TOML `[mask]`
//! section as is), with the paper's defaults written once, built into
//! either sampler by [`MaskConfig::build`].
//!
//! # Example
//!
//! ```
//! use ijepa_masking::{Grid, MaskSampler, MultiBlock, MultiBlockConfig};
//!
//! // ViT-*/16 at 224 px: a 14×14 patch grid.
//! let grid: Grid = "14x14".parse()?;
//! let sampler = MultiBlock::new(grid, MultiBlockConfig { seed: 42, ..Default::default() })?;
//!
//! // Masks for global batch number 0 of 4 images.
//! let masks = sampler.sample(4, 0);
//! let context = &masks.contexts[0]; // [4][K_ctx]
//! for target in &masks.targets {    // 4 × [4][K_tgt]
//!     for (ctx_row, tgt_row) in context.rows().zip(target.rows()) {
//!         assert!(tgt_row.iter().all(|t| !ctx_row.contains(t)));
//!     }
//! }
//! // Same seed and batch number: same masks, on every run and platform.
//! assert_eq!(sampler.sample(4, 0), masks);
//! # Ok::<(), ijepa_masking::MaskingError>(())
//! ```
#![warn(missing_docs)]

mod bitset;
mod config;
mod error;
mod grid;
mod multiblock;
mod output;
mod rng;
mod sampler;
mod seed;
mod shape;
mod subset;

pub use config::{MaskConfig, SamplerKind};
pub use error::MaskingError;
pub use grid::{Block, BlockShape, Grid};
pub use multiblock::{MultiBlock, MultiBlockConfig};
pub use output::{IndexBatch, MaskBatch, MaskStats};
pub use sampler::{FullContext, MaskSampler};
pub use seed::{SeedMasking, SeedMaskingConfig};
pub use shape::{Range, MAX_BLOCKS};
