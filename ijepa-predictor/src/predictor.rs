//! The predictor transformer.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use ijepa_encoder::precision::promoted;
use ijepa_encoder::{
    Block, BlockConfig, EncoderError, LayerNorm, Linear, Result, VitConfig, WeightMap,
};

/// Anything that predicts target representations from context tokens.
///
/// This is the seam the I-JEPA model is generic over.
pub trait TargetPredictor {
    /// `context` `(B, K_ctx, D)` encoded at `context_idx` `(B, K_ctx)`;
    /// `targets`: `M` index tensors `(B, K_tgt)` → predictions
    /// `(M·B, K_tgt, D)`, target-major (row `t·B + b`).
    fn predict(&self, context: &Tensor, context_idx: &Tensor, targets: &[Tensor])
        -> Result<Tensor>;
}

/// Hyper-parameters of the predictor.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictorConfig {
    /// Encoder width `D` (input and output).
    pub embed_dim: usize,
    /// Predictor width `d`.
    pub predictor_embed_dim: usize,
    /// Number of blocks.
    pub depth: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// MLP hidden width.
    pub mlp_hidden_dim: usize,
    /// Patch grid `(rows, cols)` of the position table.
    pub grid: (usize, usize),
    /// Sin-cos table with the column first (official) or the row first (seed).
    pub column_first: bool,
    /// LayerNorm epsilon.
    pub norm_eps: f64,
}

impl PredictorConfig {
    /// The official predictor for `encoder`: width `d`, `depth` blocks, the
    /// encoder's head count, MLP ratio 4, eps 1e-6, column-first table.
    pub fn official(encoder: &VitConfig, predictor_embed_dim: usize, depth: usize) -> Self {
        Self {
            embed_dim: encoder.embed_dim,
            predictor_embed_dim,
            depth,
            num_heads: encoder.num_heads,
            // Saturating: an absurd width is refused by `validate`, never wrapped.
            mlp_hidden_dim: predictor_embed_dim.saturating_mul(4),
            grid: encoder.grid_size(),
            column_first: true,
            norm_eps: 1e-6,
        }
    }

    /// stable-pretraining's predictor: `max(1, d/64)` heads, eps 1e-5,
    /// row-first table.
    pub fn seed(encoder: &VitConfig, predictor_embed_dim: usize, depth: usize) -> Self {
        Self {
            num_heads: (predictor_embed_dim / 64).max(1),
            column_first: false,
            norm_eps: 1e-5,
            ..Self::official(encoder, predictor_embed_dim, depth)
        }
    }

    /// Checks the values fit together.
    pub fn validate(&self) -> Result<()> {
        let d = self.predictor_embed_dim;
        let bad = |m: String| Err(EncoderError::InvalidConfig(m));
        for (name, value, max) in [
            ("predictor_embed_dim", d, ijepa_encoder::MAX_WIDTH),
            (
                "predictor MLP width",
                self.mlp_hidden_dim,
                ijepa_encoder::MAX_WIDTH,
            ),
            ("predictor_depth", self.depth, ijepa_encoder::MAX_DEPTH),
            ("predictor heads", self.num_heads, d.max(1)),
            ("embed_dim", self.embed_dim, ijepa_encoder::MAX_WIDTH),
        ] {
            ijepa_encoder::check_size(name, value, max)?;
        }
        if !d.is_multiple_of(self.num_heads) {
            return bad(format!(
                "predictor width {d} is not divisible by {} heads",
                self.num_heads
            ));
        }
        if !d.is_multiple_of(4) {
            return bad(format!(
                "predictor width {d} must be a multiple of 4 for the 2-D sin-cos table"
            ));
        }
        Ok(())
    }

    /// Patches of the grid, the rows of the position table.
    pub fn num_patches(&self) -> usize {
        self.grid.0 * self.grid.1
    }
}

/// The I-JEPA predictor.
#[derive(Debug, Clone)]
pub struct Predictor {
    config: PredictorConfig,
    embed: Linear,
    mask_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    proj: Linear,
}

impl Predictor {
    /// The tensors it reads that never train: the position table, a
    /// constant (detached here, as in the official code).
    pub const FIXED: &'static [&'static str] = &["predictor_pos_embed"];

    /// Reads every weight from `vb` under the official names. The position
    /// table is a constant (never trained, as in the official code).
    pub fn new(config: &PredictorConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let (big, d) = (config.embed_dim, config.predictor_embed_dim);
        let block = BlockConfig::plain(d, config.num_heads, config.mlp_hidden_dim, config.norm_eps);
        Ok(Self {
            embed: Linear::new(big, d, true, vb.pp("predictor_embed"))?,
            mask_token: vb.get((1, 1, d), "mask_token")?,
            pos_embed: vb
                .get((1, config.num_patches(), d), Self::FIXED[0])?
                .detach(),
            blocks: (0..config.depth)
                .map(|i| Block::new(&block, vb.pp("predictor_blocks").pp(i)))
                .collect::<Result<_>>()?,
            norm: LayerNorm::new(d, config.norm_eps, vb.pp("predictor_norm"))?,
            proj: Linear::new(d, big, true, vb.pp("predictor_proj"))?,
            config: config.clone(),
        })
    }

    /// Builds a frozen predictor from tensors under the official names.
    pub fn from_weights(config: &PredictorConfig, weights: WeightMap) -> Result<Self> {
        let (dtype, device) = ijepa_encoder::dtype_device(&weights);
        Self::new(config, VarBuilder::from_tensors(weights, dtype, &device))
    }

    /// The configuration.
    pub fn config(&self) -> &PredictorConfig {
        &self.config
    }

    /// Rows of the position table at `idx` `(B, K)` → `(B, K, d)`.
    fn positions(&self, idx: &Tensor) -> Result<Tensor> {
        let (b, k) = idx.dims2()?;
        let n = self.config.num_patches();
        if let Some(max) = ijepa_encoder::indices::out_of_range(idx, n)? {
            return Err(EncoderError::InputShape {
                shape: idx.dims().to_vec(),
                reason: format!("index {max} is outside the predictor's {n} positions"),
            });
        }
        let table = self.pos_embed.squeeze(0)?;
        let flat = idx.to_dtype(candle_core::DType::U32)?.flatten_all()?;
        Ok(table
            .index_select(&flat, 0)?
            .reshape((b, k, self.config.predictor_embed_dim))?)
    }
}

impl TargetPredictor for Predictor {
    fn predict(
        &self,
        context: &Tensor,
        context_idx: &Tensor,
        targets: &[Tensor],
    ) -> Result<Tensor> {
        let (b, kc, _) = context.dims3()?;
        if context_idx.dims() != [b, kc] {
            return Err(EncoderError::InputShape {
                shape: context_idx.dims().to_vec(),
                reason: format!("context indices must be ({b}, {kc}) like the context tokens"),
            });
        }
        let first = targets.first().ok_or_else(|| EncoderError::InputShape {
            shape: vec![],
            reason: "at least one target mask is needed".into(),
        })?;
        let kt = first.dim(1)?;
        // (B, K_ctx, D) -> (B, K_ctx, d) + positions
        let (x, positions) =
            promoted(&self.embed.forward(context)?, &self.positions(context_idx)?)?;
        let x = x.broadcast_add(&positions)?;
        let mut sequences = Vec::with_capacity(targets.len());
        for t in targets {
            if t.dims() != [b, kt] {
                return Err(EncoderError::InputShape {
                    shape: t.dims().to_vec(),
                    reason: format!("every target mask must be ({b}, {kt})"),
                });
            }
            let queries = self.positions(t)?.broadcast_add(&self.mask_token)?;
            sequences.push(Tensor::cat(&[&x, &queries], 1)?);
        }
        // (M·B, K_ctx + K_tgt, d), target-major
        let mut x = Tensor::cat(&sequences, 0)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        let x = self.norm.forward(&x)?.narrow(1, kc, kt)?;
        Ok(self.proj.forward(&x)?)
    }
}
