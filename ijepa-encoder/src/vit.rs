//! The Vision Transformer and the token-encoder trait.

use std::collections::BTreeSet;
use std::path::Path;

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::block::{Block, BlockConfig};
use crate::config::{PosEmbed, VitConfig};
use crate::error::{EncoderError, Result};
use crate::layout::{dtype_device, record_layout, var_tensors, Layout, WeightMap};
use crate::nn::LayerNorm;
use crate::patch_embed::PatchEmbed;
use crate::pos_embed;

/// Anything that turns images into tokens, fully or for kept patches only.
///
/// This is the seam the I-JEPA model is generic over: the context encoder
/// sees only the kept (context) patches, the target encoder sees all.
pub trait TokenEncoder {
    /// Token width `D`.
    fn embed_dim(&self) -> usize;

    /// Class/register tokens in front of the patch tokens of
    /// [`TokenEncoder::forward`]; none unless an encoder says otherwise.
    fn num_prefix_tokens(&self) -> usize {
        0
    }

    /// `(B, C, H, W)` images → `(B, prefix + N, D)` tokens for all `N`
    /// patches: timm's `forward_features`. Without prefix tokens, the patch
    /// tokens of every patch.
    fn forward(&self, images: &Tensor) -> Result<Tensor> {
        self.forward_patches(images, None)
    }

    /// I-JEPA's encoding: patch tokens only, of the kept patches `(B, K)`
    /// (`u32`, row-major over the patch grid) or of all when `None` →
    /// `(B, K or N, D)`. Patches are dropped after the position embedding
    /// and before the first block; class and register tokens are not in the
    /// sequence, as in the official encoder (which has none) and
    /// stable-pretraining's `IJEPA._encode` (which leaves them out).
    /// Indices on the CPU are checked against the patch count; on a GPU
    /// that is the caller's ([`crate::indices::out_of_range`]).
    fn forward_patches(&self, images: &Tensor, kept: Option<&Tensor>) -> Result<Tensor>;
}

/// A ViT in timm's layout, built for training and inference alike.
///
/// Built from a [`VarBuilder`]: over a `VarMap` its weights are variables
/// that receive gradients; over plain tensors (a file, a frozen teacher) it
/// runs candle's fused inference kernels.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use ijepa_encoder::{init, TokenEncoder, VisionTransformer, VitConfig};
///
/// let mut cfg = VitConfig::from_timm_name("vit_tiny_patch16_224")?;
/// cfg.depth = 2; // keep the example fast
/// let weights = init::init_weights(&cfg, &init::InitOptions::default(), &Device::Cpu)?;
/// let vit = VisionTransformer::from_weights(&cfg, weights)?;
/// let images = Tensor::zeros((1, 3, 224, 224), DType::F32, &Device::Cpu)?;
/// assert_eq!(vit.forward(&images)?.dims(), &[1, 197, 192]);
/// let kept = Tensor::new(&[[0u32, 5, 17]], &Device::Cpu)?;
/// // I-JEPA's encoding: the three kept patches, no class token.
/// assert_eq!(vit.forward_patches(&images, Some(&kept))?.dims(), &[1, 3, 192]);
/// # Ok::<(), ijepa_encoder::EncoderError>(())
/// ```
#[derive(Debug, Clone)]
pub struct VisionTransformer {
    config: VitConfig,
    patch_embed: PatchEmbed,
    cls_token: Option<Tensor>,
    reg_token: Option<Tensor>,
    pos_embed: Option<Tensor>,
    norm_pre: Option<LayerNorm>,
    blocks: Vec<Block>,
    norm: Option<LayerNorm>,
    fc_norm: Option<LayerNorm>,
}

impl VisionTransformer {
    /// Builds the model, reading every weight from `vb` under timm's names.
    pub fn new(config: &VitConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let d = config.embed_dim;
        let block_cfg = BlockConfig {
            dim: d,
            num_heads: config.num_heads,
            mlp_hidden_dim: config.mlp_hidden_dim,
            qkv_bias: config.qkv_bias,
            qk_norm: config.qk_norm,
            scale_attn_norm: config.scale_attn_norm,
            scale_mlp_norm: config.scale_mlp_norm,
            proj_bias: config.proj_bias,
            activation: config.activation,
            mlp: config.mlp,
            layer_scale: config.layer_scale.is_some(),
            norm_eps: config.norm_eps,
        };
        let blocks = (0..config.depth)
            .map(|i| Block::new(&block_cfg, vb.pp("blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let norm = |on: bool, name: &str| -> Result<Option<LayerNorm>> {
            on.then(|| LayerNorm::new(d, config.norm_eps, vb.pp(name)))
                .transpose()
        };
        Ok(Self {
            // timm: the patch projection has no bias when pre_norm follows it.
            patch_embed: PatchEmbed::new(
                config.in_channels,
                config.patch_size,
                d,
                !config.pre_norm,
                config.dynamic_img_pad,
                vb.pp("patch_embed"),
            )?,
            cls_token: if config.class_token {
                Some(vb.get((1, 1, d), "cls_token")?)
            } else {
                None
            },
            reg_token: if config.reg_tokens > 0 {
                Some(vb.get((1, config.reg_tokens, d), "reg_token")?)
            } else {
                None
            },
            pos_embed: match config.pos_embed {
                PosEmbed::None => None,
                PosEmbed::Learned => {
                    let pos = vb.get((1, config.pos_embed_len(), d), "pos_embed")?;
                    Some(if config.fixed_pos_embed {
                        pos.detach()
                    } else {
                        pos
                    })
                }
            },
            norm_pre: norm(config.pre_norm, "norm_pre")?,
            blocks,
            norm: norm(config.norm, "norm")?,
            fc_norm: norm(config.fc_norm, "fc_norm")?,
            config: config.clone(),
        })
    }

    /// Builds the model from a map of tensors in timm's layout (checked first:
    /// missing, unexpected and mis-shaped keys are all reported at once).
    pub fn from_weights(config: &VitConfig, weights: WeightMap) -> Result<Self> {
        Self::check_weights(config, &weights, Path::new("<weights>"))?;
        let (dtype, device) = dtype_device(&weights);
        Self::new(config, VarBuilder::from_tensors(weights, dtype, &device))
    }

    /// Builds a trainable model over the variables of `varmap` (see
    /// [`crate::layout::to_varmap`]); missing or mis-shaped variables are
    /// reported as for a weight file.
    pub fn from_varmap(config: &VitConfig, varmap: &candle_nn::VarMap) -> Result<Self> {
        let weights = var_tensors(varmap);
        Self::check_weights(config, &weights, Path::new("<variables>"))?;
        let (dtype, device) = dtype_device(&weights);
        Self::new(config, VarBuilder::from_varmap(varmap, dtype, &device))
    }

    /// Every tensor the architecture reads, with its shape, in timm's names
    /// (recorded from [`VisionTransformer::new`]): the key layout.
    ///
    /// # Errors
    /// A configuration that does not validate.
    pub fn layout(cfg: &VitConfig) -> Result<Layout> {
        record_layout(|vb| Self::new(cfg, vb))
    }

    /// Checks `weights` against `cfg`: every missing key, unexpected key and
    /// shape mismatch is reported in one error naming `origin`.
    ///
    /// # Errors
    /// [`EncoderError::Weights`], naming each difference.
    pub fn check_weights(cfg: &VitConfig, weights: &WeightMap, origin: &Path) -> Result<()> {
        let expected = Self::layout(cfg)?;
        let expected_keys: BTreeSet<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();
        let mut missing = vec![];
        let mut mismatched = vec![];
        for (key, shape) in &expected {
            match weights.get(key) {
                None => missing.push(key.clone()),
                Some(t) if t.dims() != shape.as_slice() => {
                    mismatched.push((key.clone(), t.dims().to_vec(), shape.clone()))
                }
                Some(_) => {}
            }
        }
        let mut unexpected: Vec<String> = weights
            .keys()
            .filter(|k| !expected_keys.contains(k.as_str()))
            .cloned()
            .collect();
        unexpected.sort();
        if missing.is_empty() && unexpected.is_empty() && mismatched.is_empty() {
            return Ok(());
        }
        Err(EncoderError::Weights {
            path: origin.to_path_buf(),
            missing,
            unexpected,
            mismatched,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &candle_core::Device {
        self.patch_embed.device()
    }

    /// The stored position embedding, `(1, L, D)`, if the model has one.
    pub fn pos_embed(&self) -> Option<&Tensor> {
        self.pos_embed.as_ref()
    }

    /// Patch tokens with their position embedding, `(B, N, D)`, and the
    /// position rows of the prefix tokens (when the table has them).
    fn patches(&self, images: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let (x, grid) = self.patch_embed.forward(images)?;
        let Some(table) = &self.pos_embed else {
            return Ok((x, None));
        };
        let prefix = if self.config.no_embed_class {
            0
        } else {
            self.config.num_prefix_tokens()
        };
        let pos = pos_embed::resample(table, prefix, self.config.grid_size(), grid)?;
        let patch_pos = pos.narrow(1, prefix, pos.dim(1)? - prefix)?;
        let prefix_pos = (prefix > 0).then(|| pos.narrow(1, 0, prefix)).transpose()?;
        let (x, patch_pos) = crate::precision::promoted(&x, &patch_pos)?;
        Ok((x.broadcast_add(&patch_pos)?, prefix_pos))
    }

    /// Patch tokens plus position embedding, with prefix tokens in front:
    /// `(B, prefix + N, D)`, as timm's `_pos_embed`.
    fn embed(&self, images: &Tensor) -> Result<Tensor> {
        let (x, prefix_pos) = self.patches(images)?;
        let b = x.dim(0)?;
        let mut tokens: Vec<Tensor> = Vec::with_capacity(3);
        for t in self.cls_token.iter().chain(&self.reg_token) {
            tokens.push(t.broadcast_as((b, t.dim(1)?, t.dim(2)?))?);
        }
        if tokens.is_empty() {
            return Ok(x);
        }
        let mut prefix = Tensor::cat(&tokens, 1)?;
        if let Some(pos) = prefix_pos {
            prefix = prefix.broadcast_add(&pos)?;
        }
        Ok(Tensor::cat(&[&prefix, &x], 1)?)
    }

    /// `norm_pre`, the blocks, the final norm.
    fn run_blocks(&self, x: Tensor) -> Result<Tensor> {
        let mut x = match &self.norm_pre {
            Some(norm) => norm.forward(&x)?,
            None => x,
        };
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        Ok(match &self.norm {
            Some(norm) => norm.forward(&x)?,
            None => x,
        })
    }

    /// Checks that `k` blocks can be taken: `1..=depth`.
    ///
    /// # Errors
    /// `k` of 0 or more than the depth.
    pub fn check_last_layers(&self, k: usize) -> Result<()> {
        let depth = self.blocks.len();
        if k == 0 || k > depth {
            return Err(EncoderError::OutOfRange(format!(
                "the last {k} blocks were asked for; this encoder has {depth} (ask for 1 to {depth})"
            )));
        }
        Ok(())
    }

    /// The outputs of the last `k` blocks, each through the final norm (as
    /// the last one is in [`TokenEncoder::forward`]): `k` tensors
    /// `(B, prefix + N, D)`, the last block's last. Linear probes often
    /// concatenate their pooled means.
    ///
    /// # Errors
    /// `k` of 0 or more than the depth.
    pub fn forward_last_layers(&self, images: &Tensor, k: usize) -> Result<Vec<Tensor>> {
        self.check_last_layers(k)?;
        let depth = self.blocks.len();
        let mut x = self.embed(images)?;
        if let Some(norm) = &self.norm_pre {
            x = norm.forward(&x)?;
        }
        let mut out = Vec::with_capacity(k);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x)?;
            if i + k >= depth {
                out.push(match &self.norm {
                    Some(norm) => norm.forward(&x)?,
                    None => x.clone(),
                });
            }
        }
        Ok(out)
    }

    /// One vector per image: mean of the patch tokens (normalised by `fc_norm`
    /// when the model has one), `(B, D)`, from the output of
    /// [`TokenEncoder::forward`].
    pub fn pool_patches(&self, tokens: &Tensor) -> Result<Tensor> {
        let prefix = self.config.num_prefix_tokens();
        let n = tokens.dim(1)? - prefix;
        let mean = tokens.narrow(1, prefix, n)?.mean(1)?;
        Ok(match &self.fc_norm {
            Some(norm) => norm.forward(&mean)?,
            None => mean,
        })
    }
}

impl TokenEncoder for VisionTransformer {
    fn embed_dim(&self) -> usize {
        self.config.embed_dim
    }

    fn num_prefix_tokens(&self) -> usize {
        self.config.num_prefix_tokens()
    }

    fn forward(&self, images: &Tensor) -> Result<Tensor> {
        self.run_blocks(self.embed(images)?)
    }

    fn forward_patches(&self, images: &Tensor, kept: Option<&Tensor>) -> Result<Tensor> {
        let (x, _) = self.patches(images)?;
        let Some(kept) = kept else {
            return self.run_blocks(x);
        };
        let (b, n, _) = x.dims3()?;
        let (kb, _) = kept.dims2().map_err(|_| EncoderError::InputShape {
            shape: kept.dims().to_vec(),
            reason: "kept indices must be (batch, K)".into(),
        })?;
        if kb != b {
            return Err(EncoderError::InputShape {
                shape: kept.dims().to_vec(),
                reason: format!("kept indices are for {kb} images, the batch has {b}"),
            });
        }
        if let Some(max) = crate::indices::out_of_range(kept, n)? {
            return Err(EncoderError::InputShape {
                shape: kept.dims().to_vec(),
                reason: format!("kept index {max} is outside the {n} patches of these images"),
            });
        }
        self.run_blocks(crate::indices::gather_tokens(&x, kept)?)
    }
}
