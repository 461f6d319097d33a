//! Vision Transformer hyper-parameters and the timm presets.

use serde::{Deserialize, Serialize};

use crate::error::{EncoderError, Result};

/// Most patches per image an encoder accepts: a 128 × 128 grid (2,048 px at
/// patch 16, 1,792 px at patch 14). Attention over more tokens needs tens of
/// GiB per image and head; larger requests are typos, refused before any
/// memory is taken.
pub const MAX_PATCHES: usize = 16_384;

/// Widest token or hidden layer a model may have (ViT-22B is 6,144 wide,
/// its MLP 24,576): larger values are typos, refused before any weight is
/// allocated.
pub const MAX_WIDTH: usize = 1 << 16;
/// Deepest stack of blocks (ViT-22B has 48).
pub const MAX_DEPTH: usize = 1024;
/// Most register tokens (DINOv2 and timm use up to 16).
pub const MAX_REGISTERS: usize = 256;

/// Checks one size of a model: `1..=max`, named.
///
/// # Errors
/// The value and the accepted range.
pub fn check_size(name: &str, value: usize, max: usize) -> Result<()> {
    if (1..=max).contains(&value) {
        return Ok(());
    }
    Err(EncoderError::InvalidConfig(format!(
        "{name} = {value} is out of range: 1 to {max}"
    )))
}

/// The patch grid of a `height × width` input at `patch` pixels per patch:
/// `⌊height / patch⌋ × ⌊width / patch⌋`, as timm's stride-`patch`
/// convolution (trailing pixels are not seen; with `dynamic_img_pad` the
/// image is padded instead, see [`crate::PatchEmbed`]).
///
/// # Errors
/// A side smaller than `patch`, or more than [`MAX_PATCHES`] patches.
pub fn patch_grid(height: usize, width: usize, patch: usize) -> Result<(usize, usize)> {
    if patch == 0 || height < patch || width < patch {
        return Err(EncoderError::OutOfRange(format!(
            "image size {height}x{width} is smaller than one patch of {patch} pixels"
        )));
    }
    let (gh, gw) = (height / patch, width / patch);
    if gh.saturating_mul(gw) > MAX_PATCHES {
        return Err(EncoderError::OutOfRange(format!(
            "image size {height}x{width} at patch {patch} is {gh}x{gw} = {} patches per image; \
             at most {MAX_PATCHES} (e.g. 2048x2048 at patch 16)",
            gh.saturating_mul(gw)
        )));
    }
    Ok((gh, gw))
}

/// timm's `global_pool`. It decides whether the final norm sits before
/// pooling (`norm`) or after (`fc_norm`) and which weights a checkpoint
/// holds; the encoder's own pooled features ([`crate::VisionTransformer::pool_patches`])
/// are always the mean of the patch tokens, as I-JEPA probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// The class token (`'token'`).
    Token,
    /// The mean of the patch tokens (`'avg'`).
    Avg,
    /// Mean and max of the patch tokens (`'avgmax'`).
    AvgMax,
    /// The max of the patch tokens (`'max'`).
    Max,
    /// Attention pooling head (`'map'`; its weights are not loaded).
    Map,
    /// Attention pooling head (`'prr'`; its weights are not loaded).
    Prr,
    /// No pooling (`''`).
    None,
}

impl Pool {
    /// timm's name.
    pub fn timm_name(self) -> &'static str {
        match self {
            Pool::Token => "token",
            Pool::Avg => "avg",
            Pool::AvgMax => "avgmax",
            Pool::Max => "max",
            Pool::Map => "map",
            Pool::Prr => "prr",
            Pool::None => "",
        }
    }
}

/// The MLP's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact (erf) GELU, `nn.GELU()`.
    #[default]
    Gelu,
    /// tanh-approximated GELU (`gelu_tanh`, SigLIP).
    GeluTanh,
    /// `x·sigmoid(1.702x)` (`quick_gelu`, OpenAI CLIP).
    QuickGelu,
    /// `x·sigmoid(x)` (`silu`, DINOv2-giant's gated MLP).
    Silu,
}

impl Activation {
    /// timm's name.
    pub fn timm_name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_tanh",
            Activation::QuickGelu => "quick_gelu",
            Activation::Silu => "silu",
        }
    }
}

/// The MLP of every block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MlpKind {
    /// timm's `Mlp`: fc1 → activation → fc2.
    #[default]
    Plain,
    /// timm's `GluMlp` with the gate first (DINOv2-giant): fc1's output
    /// halves `(a, b)` give `act(a)·b`, then fc2 (half as wide). timm's
    /// block passes its `act_layer`, which overrides the layer's own.
    Glu,
}

/// Whether the model adds an absolute position embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PosEmbed {
    /// A table `pos_embed` (learned in timm; I-JEPA's sin-cos one is a
    /// table too, see [`VitConfig::fixed_pos_embed`]).
    #[default]
    Learned,
    /// None (`pos_embed='none'`).
    None,
}

fn yes() -> bool {
    true
}

/// Hyper-parameters of a Vision Transformer in timm's layout: every
/// `VisionTransformer` argument that changes what it computes.
///
/// Names resolve through timm's registry ([`VitConfig::from_timm_name`]); every field
/// can then be changed.
///
/// ```
/// use ijepa_encoder::VitConfig;
///
/// let cfg = VitConfig::from_timm_name("vit_huge_patch14_gap_224.in1k_ijepa")?;
/// assert_eq!((cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size), (1280, 32, 16, 14));
/// assert!(!cfg.class_token && cfg.norm && !cfg.fc_norm);
/// assert_eq!(cfg.grid_size(), (16, 16));
/// # Ok::<(), ijepa_encoder::EncoderError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Image size `(height, width)` the position embedding is laid out for.
    pub image_size: (usize, usize),
    /// Side of a square patch in pixels.
    pub patch_size: usize,
    /// Image channels.
    pub in_channels: usize,
    /// Token width `D`.
    pub embed_dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads per block.
    pub num_heads: usize,
    /// Hidden width of each MLP.
    pub mlp_hidden_dim: usize,
    /// Bias in the fused qkv projection.
    pub qkv_bias: bool,
    /// LayerNorm of queries and keys per head (`qk_norm`).
    #[serde(default)]
    pub qk_norm: bool,
    /// LayerNorm of the attention output before its projection.
    #[serde(default)]
    pub scale_attn_norm: bool,
    /// LayerNorm of the MLP's hidden layer before `fc2`.
    #[serde(default)]
    pub scale_mlp_norm: bool,
    /// Bias in `attn.proj`, `mlp.fc1` and `mlp.fc2` (`proj_bias`).
    #[serde(default = "yes")]
    pub proj_bias: bool,
    /// A class token is prepended.
    pub class_token: bool,
    /// Register tokens prepended after the class token.
    pub reg_tokens: usize,
    /// The position embedding covers patches only, not the prefix tokens.
    pub no_embed_class: bool,
    /// Layer-scale initial value (timm `init_values`); `None` for no layer scale.
    pub layer_scale: Option<f64>,
    /// timm's pooling (see [`Pool`]).
    pub global_pool: Pool,
    /// LayerNorm after the position embedding, before the blocks
    /// (`pre_norm`, CLIP); the patch projection then has no bias.
    #[serde(default)]
    pub pre_norm: bool,
    /// LayerNorm of every token after the blocks (`norm`).
    #[serde(default = "yes")]
    pub norm: bool,
    /// LayerNorm after pooling instead (`fc_norm`); neither with
    /// `final_norm=False`.
    pub fc_norm: bool,
    /// LayerNorm epsilon (every norm of the model).
    pub norm_eps: f64,
    /// MLP activation.
    #[serde(default)]
    pub activation: Activation,
    /// The MLP's form.
    #[serde(default)]
    pub mlp: MlpKind,
    /// Pad images to a multiple of the patch size (`dynamic_img_pad`)
    /// instead of leaving the trailing pixels out.
    #[serde(default)]
    pub dynamic_img_pad: bool,
    /// Absolute position embedding.
    #[serde(default)]
    pub pos_embed: PosEmbed,
    /// The position embedding is a constant (I-JEPA's sin-cos table, a
    /// non-trainable buffer in the official code): it never receives a
    /// gradient, even when built from a variable.
    #[serde(default)]
    pub fixed_pos_embed: bool,
}

impl VitConfig {
    /// The official I-JEPA encoder of these sizes (facebookresearch/ijepa's
    /// `VisionTransformer`, also Hugging Face's `IJepaModel`): no class or
    /// register token, qkv and projection biases, exact GELU, a final norm
    /// on every token, average pooling, LayerNorm `norm_eps`.
    pub fn ijepa(
        image_size: (usize, usize),
        patch_size: usize,
        embed_dim: usize,
        depth: usize,
        num_heads: usize,
        mlp_hidden_dim: usize,
        norm_eps: f64,
    ) -> Self {
        Self {
            image_size,
            patch_size,
            in_channels: 3,
            embed_dim,
            depth,
            num_heads,
            mlp_hidden_dim,
            qkv_bias: true,
            qk_norm: false,
            scale_attn_norm: false,
            scale_mlp_norm: false,
            proj_bias: true,
            class_token: false,
            reg_tokens: 0,
            no_embed_class: false,
            layer_scale: None,
            global_pool: Pool::Avg,
            pre_norm: false,
            norm: true,
            fc_norm: false,
            norm_eps,
            activation: Activation::Gelu,
            mlp: MlpKind::Plain,
            dynamic_img_pad: false,
            pos_embed: PosEmbed::Learned,
            fixed_pos_embed: false,
        }
    }

    /// Patch grid `(rows, cols)` at the configured image size, the one the
    /// position table is laid out for: `⌊size / patch⌋`, as timm's
    /// `PatchEmbed.grid_size` (also with `dynamic_img_pad`, whose padded
    /// grid is reached by resampling the table).
    pub fn grid_size(&self) -> (usize, usize) {
        let p = self.patch_size.max(1);
        (self.image_size.0 / p, self.image_size.1 / p)
    }

    /// Class and register tokens in front of the patch tokens.
    pub fn num_prefix_tokens(&self) -> usize {
        usize::from(self.class_token) + self.reg_tokens
    }

    /// Rows of the stored position embedding (0 without one).
    pub fn pos_embed_len(&self) -> usize {
        if self.pos_embed == PosEmbed::None {
            return 0;
        }
        let (h, w) = self.grid_size();
        h * w
            + if self.no_embed_class {
                0
            } else {
                self.num_prefix_tokens()
            }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Checks the values fit together.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EncoderError::InvalidConfig(m));
        for (name, value, max) in [
            ("embed_dim", self.embed_dim, MAX_WIDTH),
            ("mlp_hidden_dim", self.mlp_hidden_dim, MAX_WIDTH),
            ("num_heads", self.num_heads, self.embed_dim.max(1)),
            ("depth", self.depth, MAX_DEPTH),
            ("in_channels", self.in_channels, 64),
        ] {
            check_size(name, value, max)?;
        }
        if self.patch_size == 0 {
            return bad("patch_size must be positive, got 0".into());
        }
        if self.reg_tokens > MAX_REGISTERS {
            return bad(format!(
                "reg_tokens = {} is out of range: 0 to {MAX_REGISTERS}",
                self.reg_tokens
            ));
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return bad(format!(
                "embed_dim {} is not divisible by num_heads {}",
                self.embed_dim, self.num_heads
            ));
        }
        patch_grid(self.image_size.0, self.image_size.1, self.patch_size)
            .map_err(|e| EncoderError::InvalidConfig(e.to_string()))?;
        if self.global_pool == Pool::Token && !self.class_token {
            return bad("token pooling needs a class token".into());
        }
        if self.norm && self.fc_norm {
            return bad(
                "norm and fc_norm are exclusive (the final norm is before or after pooling)".into(),
            );
        }

        if !self.norm_eps.is_finite() || self.norm_eps <= 0.0 {
            return bad(format!("norm_eps must be positive, got {}", self.norm_eps));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_follow_timm() {
        let s = VitConfig::from_timm_name("vit_small_patch16_224").unwrap();
        assert_eq!(
            (s.embed_dim, s.depth, s.num_heads, s.grid_size()),
            (384, 12, 6, (14, 14))
        );
        assert!(s.class_token && s.global_pool == Pool::Token);
        assert_eq!(s.pos_embed_len(), 197);
        let g = VitConfig::from_timm_name("vit_giant_patch14_224").unwrap();
        assert_eq!((g.embed_dim, g.mlp_hidden_dim), (1408, 6144));
        let h = VitConfig::from_timm_name("vit_huge_patch16_gap_448").unwrap();
        assert_eq!((h.grid_size(), h.num_prefix_tokens()), ((28, 28), 0));
        let r = VitConfig::from_timm_name("vit_base_patch16_reg4_gap_256").unwrap();
        assert_eq!(
            (r.reg_tokens, r.num_prefix_tokens(), r.pos_embed_len()),
            (4, 4, 256)
        );
    }

    #[test]
    fn unknown_names_say_what_is_registered() {
        for (name, close) in [
            ("resnet50", ""),
            ("vit_medium_patch16_224", "vit_medium_patch16_"),
            ("vit_base_p16_224", "vit_base_p"),
        ] {
            let err = VitConfig::from_timm_name(name).unwrap_err().to_string();
            assert!(
                err.contains(name) && err.contains("registers no such"),
                "{err}"
            );
            assert!(err.contains(close), "{err}");
        }
        let err = VitConfig::from_timm_name("vit_base_patch16_224.nosuchtag")
            .unwrap_err()
            .to_string();
        assert!(err.contains("augreg_in1k"), "{err}");
    }

    #[test]
    fn names_mean_what_timm_builds_not_what_they_suggest() {
        // The issue's case: "base" with 16 heads.
        let c = VitConfig::from_timm_name("vit_base_patch16_gap_224").unwrap();
        assert_eq!(
            (c.num_heads, c.class_token, c.norm, c.fc_norm),
            (16, false, true, false)
        );
        let m = VitConfig::from_timm_name("vit_medium_patch16_gap_256").unwrap();
        assert_eq!(
            (m.qkv_bias, m.layer_scale, m.image_size),
            (false, Some(1e-6), (256, 256))
        );
        let clip = VitConfig::from_timm_name("vit_base_patch16_clip_quickgelu_224").unwrap();
        assert!(clip.pre_norm && clip.activation == Activation::QuickGelu);
        assert_eq!(clip.norm_eps, 1e-5);
        let err = VitConfig::from_timm_name("aimv2_large_patch14_224").unwrap_err();
        assert!(err.to_string().contains("does not implement"), "{err}");
    }

    #[test]
    fn validation_names_the_bad_value() {
        let mut c = VitConfig::from_timm_name("vit_tiny_patch16_224").unwrap();
        c.num_heads = 5;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("192 is not divisible by num_heads 5"));
        c.num_heads = 3;
        c.image_size = (15, 224);
        assert!(c.validate().unwrap_err().to_string().contains("15x224"));
        // timm's convolution floors: 225 px at patch 16 is 14 patches.
        c.image_size = (225, 224);
        assert_eq!(c.grid_size(), (14, 14));
        c.validate().unwrap();
    }
}
