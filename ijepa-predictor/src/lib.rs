//! The I-JEPA predictor: a narrow transformer that predicts the target
//! encoder's representations of target blocks from the context tokens.
//!
//! One [`Predictor`] serves both recipes; they differ only in
//! configuration ([`PredictorConfig::official`], [`PredictorConfig::seed`]):
//!
//! - context tokens `(B, K_ctx, D)` → Linear `D→d` → plus the predictor's
//!   fixed 2-D sin-cos position embedding at the context indices;
//! - for each target mask `t`, one sequence `[context ; mask_token + pos at
//!   the target indices]`; sequences are stacked target-major, batch row
//!   `t·B + b` (the official order);
//! - pre-norm blocks (the encoder's), LayerNorm, keep the mask-token
//!   outputs, Linear `d→D`: predictions `(M·B, K_tgt, D)`.
//!
//! The official predictor uses the encoder's head count and a column-first
//! table; stable-pretraining's uses `d/64` heads, a row-first table, LayerNorm
//! eps 1e-5, and a single target mask (the union of its blocks). Weight names
//! are the official ones (`predictor_embed`, `mask_token`,
//! `predictor_pos_embed`, `predictor_blocks.N`, `predictor_norm`,
//! `predictor_proj`), so official checkpoints load as they are.
//!
//! It knows nothing of training.
#![warn(missing_docs)]

mod init;
mod predictor;

pub use init::init_weights;
pub use predictor::{Predictor, PredictorConfig, TargetPredictor};
