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

/// The patch grid of a `height × width` input at `patch` pixels per patch.
///
/// # Errors
/// A side that is zero or not a multiple of `patch`, or more than
/// [`MAX_PATCHES`] patches.
pub fn patch_grid(height: usize, width: usize, patch: usize) -> Result<(usize, usize)> {
    if patch == 0
        || height == 0
        || width == 0
        || !height.is_multiple_of(patch)
        || !width.is_multiple_of(patch)
    {
        return Err(EncoderError::OutOfRange(format!(
            "image size {height}x{width} is not a positive multiple of the patch size {patch}"
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

/// How the encoder's output is pooled into one vector per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// The class token (timm `global_pool='token'`).
    Token,
    /// The mean of the patch tokens (timm `global_pool='avg'`), as I-JEPA probes.
    Avg,
}

/// Hyper-parameters of a Vision Transformer in timm's layout.
///
/// Presets are data, not code paths: [`VitConfig::from_timm_name`] turns a
/// timm model name into one of these, and every field can then be changed.
///
/// ```
/// use ijepa_encoder::VitConfig;
///
/// let cfg = VitConfig::from_timm_name("vit_huge_patch14_gap_224.in1k_ijepa")?;
/// assert_eq!((cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size), (1280, 32, 16, 14));
/// assert!(!cfg.class_token);
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
    /// A class token is prepended.
    pub class_token: bool,
    /// Register tokens prepended after the class token.
    pub reg_tokens: usize,
    /// The position embedding covers patches only, not the prefix tokens.
    pub no_embed_class: bool,
    /// Layer-scale initial value (timm `init_values`); `None` for no layer scale.
    pub layer_scale: Option<f64>,
    /// Pooling of the output.
    pub global_pool: Pool,
    /// Normalise after pooling (`fc_norm`) instead of every token (`norm`).
    pub fc_norm: bool,
    /// LayerNorm epsilon.
    pub norm_eps: f64,
    /// The position embedding is a constant (I-JEPA's sin-cos table, a
    /// non-trainable buffer in the official code): it never receives a
    /// gradient, even when built from a variable.
    #[serde(default)]
    pub fixed_pos_embed: bool,
}

impl VitConfig {
    /// A ViT of one of the standard widths (`tiny` … `giant`) with the given
    /// patch and image size, timm's defaults otherwise (class token, token
    /// pooling, qkv bias, LayerNorm eps 1e-6).
    pub fn standard(size: &str, patch_size: usize, image_size: usize) -> Result<Self> {
        let (embed_dim, depth, num_heads, mlp_hidden_dim) = match size {
            "tiny" => (192, 12, 3, 768),
            "small" => (384, 12, 6, 1536),
            "base" => (768, 12, 12, 3072),
            "large" => (1024, 24, 16, 4096),
            "huge" => (1280, 32, 16, 5120),
            // timm: mlp_ratio 48/11, so 1408 · 48/11 = 6144.
            "giant" => (1408, 40, 16, 6144),
            _ => {
                return Err(EncoderError::UnknownModel {
                    name: size.to_string(),
                    reason: "size must be tiny, small, base, large, huge or giant".into(),
                })
            }
        };
        Ok(Self {
            image_size: (image_size, image_size),
            patch_size,
            in_channels: 3,
            embed_dim,
            depth,
            num_heads,
            mlp_hidden_dim,
            qkv_bias: true,
            class_token: true,
            reg_tokens: 0,
            no_embed_class: false,
            layer_scale: None,
            global_pool: Pool::Token,
            fc_norm: false,
            norm_eps: 1e-6,
            fixed_pos_embed: false,
        })
    }

    /// The configuration of a timm ViT name such as `vit_small_patch16_224`,
    /// `vit_base_patch16_reg4_gap_256` or `vit_huge_patch14_gap_224.in1k_ijepa`
    /// (a `.tag` suffix is ignored).
    ///
    /// `_gap` models have no class token and average-pool, as timm's I-JEPA
    /// encoders; `_regN` adds `N` register tokens.
    pub fn from_timm_name(name: &str) -> Result<Self> {
        let base = name.split('.').next().unwrap_or(name);
        let unknown = |reason: &str| {
            EncoderError::UnknownModel {
            name: name.to_string(),
            reason: format!(
                "{reason}; expected vit_{{tiny,small,base,large,huge,giant}}_patch{{N}}[_regN][_gap]_{{size}}, \
                 e.g. vit_small_patch16_224 or vit_huge_patch14_gap_224"
            ),
        }
        };
        let parts: Vec<&str> = base.split('_').collect();
        let (size, patch, rest) = match parts.as_slice() {
            ["vit", size, patch, rest @ ..] if !rest.is_empty() => (*size, *patch, rest),
            _ => return Err(unknown("not a ViT name")),
        };
        let patch_size = patch
            .strip_prefix("patch")
            .and_then(|p| p.parse::<usize>().ok())
            .ok_or_else(|| unknown(&format!("{patch:?} is not patchN")))?;
        let (flags, res) = rest.split_at(rest.len() - 1);
        let image_size = res[0]
            .parse::<usize>()
            .map_err(|_| unknown(&format!("{:?} is not an image size", res[0])))?;
        let mut cfg =
            Self::standard(size, patch_size, image_size).map_err(|_| unknown("unknown size"))?;
        for flag in flags {
            if *flag == "gap" {
                cfg.class_token = false;
                cfg.global_pool = Pool::Avg;
            } else if let Some(n) = flag.strip_prefix("reg").and_then(|n| n.parse().ok()) {
                cfg.reg_tokens = n;
                cfg.no_embed_class = true;
            } else {
                return Err(unknown(&format!("unsupported variant {flag:?}")));
            }
        }
        Ok(cfg)
    }

    /// Patch grid `(rows, cols)` at the configured image size.
    pub fn grid_size(&self) -> (usize, usize) {
        (
            self.image_size.0 / self.patch_size,
            self.image_size.1 / self.patch_size,
        )
    }

    /// Class and register tokens in front of the patch tokens.
    pub fn num_prefix_tokens(&self) -> usize {
        usize::from(self.class_token) + self.reg_tokens
    }

    /// Rows of the stored position embedding.
    pub fn pos_embed_len(&self) -> usize {
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
    fn unknown_names_say_what_is_expected() {
        for name in [
            "resnet50",
            "vit_medium_patch16_224",
            "vit_base_patch16_clip_224",
            "vit_base_p16_224",
        ] {
            let err = VitConfig::from_timm_name(name).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains("expected vit_"), "{err}");
        }
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
        c.image_size = (225, 224);
        assert!(c.validate().unwrap_err().to_string().contains("225x224"));
    }
}
