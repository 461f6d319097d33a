//! timm's Vision Transformer registry, as data.
//!
//! `data/timm_vit_registry.json` lists every architecture timm 1.0.31
//! registers in `timm.models.vision_transformer`, with the exact keyword
//! arguments its entrypoint passes to the constructor, the arguments each
//! pretrained tag supplies, `VisionTransformer.__init__`'s defaults, and what
//! timm's constructor builds (state-dict shapes, heads, norms, activation),
//! all captured from timm itself by `data/make_timm_registry.py`. Names
//! resolve through this table only, as `timm.create_model(name, **kwargs)`
//! does; an architecture that uses a feature this crate does not implement
//! is refused with the feature named.
//!
//! ```
//! use ijepa_encoder::registry::{self, TimmArgs};
//!
//! // timm builds this one with 16 heads, whatever "base" suggests.
//! let cfg = registry::resolve("vit_base_patch16_gap_224", &TimmArgs::default())?.config;
//! assert_eq!((cfg.embed_dim, cfg.num_heads, cfg.class_token), (768, 16, false));
//! // Keyword arguments override the entrypoint's, as in timm.create_model.
//! let small = TimmArgs { depth: Some(2), ..TimmArgs::default() };
//! assert_eq!(registry::resolve("vit_base_patch16_224.augreg_in1k", &small)?.config.depth, 2);
//! # Ok::<(), ijepa_encoder::EncoderError>(())
//! ```

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::{Activation, MlpKind, Pool, PosEmbed, VitConfig};
use crate::error::{EncoderError, Result};

impl VitConfig {
    /// The configuration timm builds for a registered name such as
    /// `vit_small_patch16_224` or `vit_huge_patch14_gap_224.in1k_ijepa`
    /// (see [`resolve`] for keyword arguments).
    ///
    /// # Errors
    /// A name timm does not register, or an architecture using a feature
    /// this crate does not implement (named).
    pub fn from_timm_name(name: &str) -> Result<Self> {
        Ok(resolve(name, &Default::default())?.config)
    }
}

/// `None` when absent, `Some(None)` for an explicit `null`.
fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A size given as one number or as `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Size {
    /// Square.
    Square(usize),
    /// `[height, width]`.
    Pair([usize; 2]),
}

impl Size {
    /// `(height, width)`.
    pub fn pair(self) -> (usize, usize) {
        match self {
            Size::Square(s) => (s, s),
            Size::Pair([h, w]) => (h, w),
        }
    }
}

/// timm's `VisionTransformer` keyword arguments, named and typed as
/// `timm.create_model(name, **kwargs)` and a `config.json`'s `model_args`
/// take them. Unset fields keep the entrypoint's (then the constructor's)
/// value; `null` (`Some(None)`) is an explicit `None`. Layer arguments are
/// timm names (`"gelu_tanh"`, `"layernorm"`) or the registry's
/// `{"type": …, "eps": …}` form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // the fields are timm's, documented there
pub struct TimmArgs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub img_size: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_size: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_chans: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_pool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed_dim: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_heads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlp_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qkv_bias: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qk_norm: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_attn_norm: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_mlp_norm: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proj_bias: Option<bool>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub init_values: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_token: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pos_embed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_embed_class: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reg_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_norm: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_norm: Option<bool>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub fc_norm: Option<Option<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_include_prefix: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_img_size: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_img_pad: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pos_drop_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_drop_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proj_drop_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attn_drop_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_path_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_init: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix_init: Option<bool>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub norm_layer: Option<Option<serde_json::Value>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub act_layer: Option<Option<serde_json::Value>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub embed_norm_layer: Option<Option<serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed_layer: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_fn: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlp_layer: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attn_layer: Option<serde_json::Value>,
}

impl TimmArgs {
    /// The official I-JEPA encoders' arguments over any size (timm's `_gap`
    /// ViTs): no class token, average pooling, the final norm on every
    /// token (not after pooling).
    pub fn gap() -> Self {
        Self {
            class_token: Some(false),
            global_pool: Some("avg".into()),
            fc_norm: Some(Some(false)),
            ..Self::default()
        }
    }

    /// Arguments that rebuild `cfg` over any architecture whose norm
    /// epsilon and MLP form are `cfg`'s (see [`base_for`]): every other
    /// field is stated, in values timm's `create_model` accepts.
    pub fn from_config(cfg: &VitConfig) -> Self {
        Self {
            img_size: Some(Size::Pair([cfg.image_size.0, cfg.image_size.1])),
            patch_size: Some(Size::Square(cfg.patch_size)),
            in_chans: Some(cfg.in_channels),
            num_classes: Some(0),
            global_pool: Some(cfg.global_pool.timm_name().to_string()),
            embed_dim: Some(cfg.embed_dim),
            depth: Some(cfg.depth),
            num_heads: Some(cfg.num_heads),
            mlp_ratio: Some(mlp_ratio(cfg.embed_dim, cfg.mlp_hidden_dim)),
            qkv_bias: Some(cfg.qkv_bias),
            qk_norm: Some(cfg.qk_norm),
            scale_attn_norm: Some(cfg.scale_attn_norm),
            scale_mlp_norm: Some(cfg.scale_mlp_norm),
            proj_bias: Some(cfg.proj_bias),
            init_values: Some(cfg.layer_scale),
            class_token: Some(cfg.class_token),
            pos_embed: Some(
                match cfg.pos_embed {
                    PosEmbed::Learned => "learn",
                    PosEmbed::None => "none",
                }
                .to_string(),
            ),
            no_embed_class: Some(cfg.no_embed_class),
            reg_tokens: Some(cfg.reg_tokens),
            pre_norm: Some(cfg.pre_norm),
            final_norm: Some(cfg.norm || cfg.fc_norm),
            fc_norm: Some(Some(cfg.fc_norm)),
            dynamic_img_pad: Some(cfg.dynamic_img_pad),
            act_layer: Some(Some(serde_json::json!(cfg.activation.timm_name()))),
            ..Self::default()
        }
    }

    /// These arguments with every field `over` sets taken from `over`.
    pub fn overlaid(&self, over: &TimmArgs) -> TimmArgs {
        macro_rules! pick {
            ($($f:ident),*) => { TimmArgs { $($f: over.$f.clone().or_else(|| self.$f.clone()),)* } };
        }
        pick!(
            img_size,
            patch_size,
            in_chans,
            num_classes,
            global_pool,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio,
            qkv_bias,
            qk_norm,
            scale_attn_norm,
            scale_mlp_norm,
            proj_bias,
            init_values,
            class_token,
            pos_embed,
            no_embed_class,
            reg_tokens,
            pre_norm,
            final_norm,
            fc_norm,
            pool_include_prefix,
            dynamic_img_size,
            dynamic_img_pad,
            drop_rate,
            pos_drop_rate,
            patch_drop_rate,
            proj_drop_rate,
            attn_drop_rate,
            drop_path_rate,
            weight_init,
            fix_init,
            norm_layer,
            act_layer,
            embed_norm_layer,
            embed_layer,
            block_fn,
            mlp_layer,
            attn_layer
        )
    }

    /// Parses a `config.json`'s `model_args` object.
    ///
    /// # Errors
    /// A key that is not a timm ViT argument, or a value of the wrong type.
    pub fn from_json(v: &serde_json::Value) -> std::result::Result<Self, String> {
        serde_json::from_value(v.clone()).map_err(|e| e.to_string())
    }
}

/// What a pretrained tag contributes to the constructor's arguments.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TagConfig {
    /// `(channels, height, width)`.
    pub input_size: [usize; 3],
    /// Whether `img_size` is taken from `input_size`.
    pub fixed_input_size: bool,
    /// Classes of its head.
    pub num_classes: Option<i64>,
    /// Pooling, if the tag sets it.
    #[serde(default)]
    pub global_pool: Option<String>,
}

/// What timm's constructor builds (for the tests).
#[derive(Debug, Clone, Deserialize)]
pub struct Built {
    /// Shapes of the state-dict entries outside the blocks.
    pub state: BTreeMap<String, Vec<usize>>,
    /// Shapes of block 0's entries (every block is alike).
    pub block: BTreeMap<String, Vec<usize>>,
    /// Heads, norms, activation, layer classes, pooling, sizes.
    pub facts: serde_json::Value,
}

/// One registered architecture.
#[derive(Debug, Clone, Deserialize)]
pub struct Architecture {
    /// The entrypoint's keyword arguments.
    pub args: TimmArgs,
    /// The tag `name` alone means.
    pub default_tag: String,
    /// Pretrained tags and what they set.
    pub tags: BTreeMap<String, TagConfig>,
    /// What timm builds with the default tag.
    pub built: Built,
}

/// The registry file.
#[derive(Debug, Deserialize)]
pub struct Registry {
    /// timm's version.
    pub timm_version: String,
    /// `VisionTransformer.__init__`'s defaults.
    pub constructor_defaults: TimmArgs,
    /// Every architecture, by name.
    pub architectures: BTreeMap<String, Architecture>,
}

/// `mlp_ratio` such that timm's `int(dim · ratio)` gives back `hidden`.
pub fn mlp_ratio(dim: usize, hidden: usize) -> f64 {
    let mut r = hidden as f64 / dim as f64;
    while ((dim as f64) * r) < hidden as f64 {
        r = f64::from_bits(r.to_bits() + 1);
    }
    r
}

/// A registered architecture whose norm epsilon and MLP form are `cfg`'s,
/// so [`TimmArgs::from_config`] over it rebuilds `cfg` (timm's keyword
/// arguments cannot state an epsilon or an MLP class in JSON); `None` when
/// none has them.
pub fn base_for(cfg: &VitConfig) -> Option<&'static str> {
    // timm's LayerNorm (1e-6); nn.LayerNorm (1e-5); DINOv2-giant's GluMlp.
    [
        "vit_base_patch16_224",
        "vit_base_patch16_clip_224",
        "vit_giant_patch14_dinov2",
    ]
    .into_iter()
    .find(|name| {
        resolve(name, &TimmArgs::default())
            .is_ok_and(|r| r.config.norm_eps == cfg.norm_eps && r.config.mlp == cfg.mlp)
    })
}

/// The table (parsed once).
pub fn registry() -> &'static Registry {
    static TABLE: OnceLock<Registry> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str(include_str!("../data/timm_vit_registry.json"))
            .expect("the committed registry parses (tested)")
    })
}

/// A resolved architecture: the configuration, and one note per argument
/// accepted although it changes something ijepa-rs does not reproduce
/// (to be logged).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The encoder.
    pub config: VitConfig,
    /// What differs from timm, one line each.
    pub notes: Vec<String>,
    /// The full arguments (defaults, entrypoint, tag, caller).
    pub args: TimmArgs,
}

/// Names of the registry closest to `name` (sharing its longest prefix).
fn similar(name: &str) -> Vec<&'static str> {
    let common = |a: &str| {
        a.chars()
            .zip(name.chars())
            .take_while(|(x, y)| x == y)
            .count()
    };
    let table = &registry().architectures;
    let best = table.keys().map(|k| common(k)).max().unwrap_or(0);
    table
        .keys()
        .filter(|k| common(k) == best)
        .take(5)
        .map(String::as_str)
        .collect()
}

/// An architecture and the tag a name gives (`arch.tag`; the default tag
/// when there is none).
///
/// # Errors
/// A name timm does not register (with the closest ones), or an unknown tag.
pub fn lookup(
    name: &str,
) -> Result<(
    &'static str,
    &'static Architecture,
    Option<&'static TagConfig>,
)> {
    let (arch, tag) = name.split_once('.').unwrap_or((name, ""));
    let Some((key, entry)) = registry().architectures.get_key_value(arch) else {
        return Err(EncoderError::UnknownModel {
            name: name.to_string(),
            reason: format!(
                "timm {} registers no such Vision Transformer; close names: {}. \
                 Sizes other than a registered model's are set by its arguments \
                 (timm's model_args: patch_size, img_size, embed_dim, depth, num_heads, …)",
                registry().timm_version,
                similar(arch).join(", ")
            ),
        });
    };
    let tag = if tag.is_empty() {
        entry.default_tag.as_str()
    } else {
        tag
    };
    let cfg = match entry.tags.get(tag) {
        Some(c) => Some(c),
        None if entry.tags.is_empty() => None,
        None => {
            return Err(EncoderError::UnknownModel {
                name: name.to_string(),
                reason: format!(
                    "{arch} has no pretrained tag {tag:?} (it has {})",
                    entry.tags.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })
        }
    };
    Ok((key.as_str(), entry, cfg))
}

/// The Hugging Face hub repository of `name`'s pretrained weights, as
/// `timm.create_model(name, pretrained=True)` fetches them:
/// `timm/{architecture}.{tag}`, the tag `name` gives or the architecture's
/// default.
///
/// # Errors
/// An unknown name or tag, or an architecture without pretrained weights.
pub fn pretrained_id(name: &str) -> Result<String> {
    let (arch, entry, _) = lookup(name)?;
    let tag = name
        .split_once('.')
        .map_or(entry.default_tag.as_str(), |(_, t)| t);
    if entry.tags.is_empty() || tag.is_empty() {
        return Err(EncoderError::UnknownModel {
            name: name.to_string(),
            reason: format!("timm has no pretrained weights for {arch}"),
        });
    }
    Ok(format!("timm/{arch}.{tag}"))
}

/// The configuration `timm.create_model(name, **args)` builds.
///
/// # Errors
/// An unknown name or tag, an argument of the wrong type, or an
/// architecture using a feature ijepa-rs does not implement (named).
pub fn resolve(name: &str, args: &TimmArgs) -> Result<Resolved> {
    let (_, entry, tag) = lookup(name)?;
    resolve_with(name, entry, tag, args)
}

/// [`resolve`] with the pretrained configuration given (that of a hub
/// `config.json`) instead of a registry tag's.
pub fn resolve_with(
    name: &str,
    entry: &Architecture,
    tag: Option<&TagConfig>,
    args: &TimmArgs,
) -> Result<Resolved> {
    // timm.create_model: the caller's arguments over the entrypoint's …
    let mut merged = entry.args.overlaid(args);
    // … then the builder's setdefault from the pretrained configuration …
    if let Some(t) = tag {
        let from_tag = TimmArgs {
            num_classes: t.num_classes.and_then(|n| usize::try_from(n).ok()),
            global_pool: t.global_pool.clone(),
            in_chans: Some(t.input_size[0]),
            img_size: t
                .fixed_input_size
                .then_some(Size::Pair([t.input_size[1], t.input_size[2]])),
            ..TimmArgs::default()
        };
        merged = from_tag.overlaid(&merged);
    }
    // … then the constructor's defaults.
    let full = registry().constructor_defaults.overlaid(&merged);
    let (config, notes) = to_config(name, &full)?;
    Ok(Resolved {
        config,
        notes,
        args: full,
    })
}

/// The norm a `norm_layer` argument names: LayerNorm and its epsilon.
fn layer_norm_eps(v: &Option<serde_json::Value>) -> std::result::Result<f64, String> {
    match v {
        // timm's own LayerNorm (eps 1e-6) is the constructor's default.
        None | Some(serde_json::Value::Null) => Ok(1e-6),
        Some(serde_json::Value::String(s)) if s == "layernorm" => Ok(1e-6),
        Some(v) => match (
            v.get("type").and_then(|t| t.as_str()),
            v.get("eps").and_then(|e| e.as_f64()),
        ) {
            (Some("layernorm"), Some(eps)) if v.get("keywords").is_none() => Ok(eps),
            _ => Err(format!("norm_layer {v} (only LayerNorm is implemented)")),
        },
    }
}

fn activation(v: &Option<serde_json::Value>) -> std::result::Result<Activation, String> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(Activation::Gelu),
        Some(serde_json::Value::String(s)) => match s.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "gelu_tanh" => Ok(Activation::GeluTanh),
            "quick_gelu" => Ok(Activation::QuickGelu),
            "silu" | "swish" => Ok(Activation::Silu),
            other => Err(format!(
                "act_layer {other:?} (gelu, gelu_tanh, quick_gelu and silu are implemented)"
            )),
        },
        Some(v) => Err(format!("act_layer {v}")),
    }
}

/// A layer argument equal to timm's default class (`default`) or unset.
fn default_layer(
    name: &str,
    v: &Option<serde_json::Value>,
    default: &[&str],
) -> std::result::Result<(), String> {
    match v {
        None => Ok(()),
        Some(serde_json::Value::String(s)) if default.contains(&s.as_str()) => Ok(()),
        Some(v) => Err(format!("{name} {v}")),
    }
}

fn to_config(name: &str, a: &TimmArgs) -> Result<(VitConfig, Vec<String>)> {
    let unsupported = |feature: String| EncoderError::UnknownModel {
        name: name.to_string(),
        reason: format!(
            "uses {feature}, which ijepa-rs does not implement; refused rather than approximated"
        ),
    };
    let get = |v: Option<usize>, field: &str| -> Result<usize> {
        v.ok_or_else(|| EncoderError::InvalidConfig(format!("{name}: {field} is not set")))
    };
    for (field, v, defaults) in [
        ("embed_layer", &a.embed_layer, &["PatchEmbed"][..]),
        ("block_fn", &a.block_fn, &["Block"]),
        ("attn_layer", &a.attn_layer, &["Attention", "attn", ""]),
    ] {
        default_layer(field, v, defaults).map_err(&unsupported)?;
    }
    // DINOv2-giant's MLP: timm's GluMlp, gate first (the block's act_layer
    // overrides the partial's own).
    let gate_first = |v: &serde_json::Value| {
        v.get("type").and_then(|t| t.as_str()) == Some("GluMlp")
            && v.pointer("/keywords/gate_last").and_then(|g| g.as_str()) == Some("False")
    };
    let mlp = match &a.mlp_layer {
        Some(v) if gate_first(v) => MlpKind::Glu,
        v => {
            default_layer("mlp_layer", v, &["Mlp"]).map_err(&unsupported)?;
            MlpKind::Plain
        }
    };
    if let Some(Some(v)) = &a.embed_norm_layer {
        if !v.is_null() {
            return Err(unsupported(format!(
                "embed_norm_layer {v} (a norm inside the patch embedding)"
            )));
        }
    }
    let norm_eps = layer_norm_eps(&a.norm_layer.clone().flatten()).map_err(&unsupported)?;
    let activation = activation(&a.act_layer.clone().flatten()).map_err(&unsupported)?;
    let pos_embed = match a.pos_embed.as_deref().unwrap_or("learn") {
        "learn" => PosEmbed::Learned,
        "" | "none" => PosEmbed::None,
        other => return Err(unsupported(format!("pos_embed {other:?}"))),
    };
    let global_pool = match a.global_pool.as_deref().unwrap_or("token") {
        "token" => Pool::Token,
        "avg" => Pool::Avg,
        "avgmax" => Pool::AvgMax,
        "max" => Pool::Max,
        "map" => Pool::Map,
        "prr" => Pool::Prr,
        "" => Pool::None,
        other => {
            return Err(EncoderError::InvalidConfig(format!(
                "{name}: global_pool {other:?} is not one of timm's ('', avg, avgmax, max, token, map, prr)"
            )))
        }
    };
    let mut notes = vec![];
    if matches!(global_pool, Pool::Map | Pool::Prr) {
        notes.push(format!(
            "{name}: global_pool {:?} is an attention-pool head; its weights are not loaded and pooled features are the mean of the patch tokens",
            a.global_pool.as_deref().unwrap_or_default()
        ));
    }
    if a.pool_include_prefix == Some(true) {
        notes.push(format!(
            "{name}: pool_include_prefix = true; pooled features here are the mean of the patch tokens only"
        ));
    }
    let patch_size = match a.patch_size {
        Some(Size::Pair([h, w])) if h != w => {
            return Err(unsupported(format!("non-square patches {h}x{w}")))
        }
        Some(s) => s.pair().0,
        None => get(None, "patch_size")?,
    };
    let embed_dim = get(a.embed_dim, "embed_dim")?;
    let mlp_ratio = a.mlp_ratio.unwrap_or(4.0);
    if !(mlp_ratio.is_finite() && mlp_ratio > 0.0) {
        return Err(EncoderError::InvalidConfig(format!(
            "{name}: mlp_ratio {mlp_ratio} must be a positive number"
        )));
    }
    let class_token = a.class_token.unwrap_or(true);
    if global_pool == Pool::Token && !class_token {
        return Err(EncoderError::InvalidConfig(format!(
            "{name}: global_pool 'token' needs the class token (timm asserts this too)"
        )));
    }
    let use_fc_norm = match a.fc_norm.flatten() {
        Some(f) => f,
        None => matches!(global_pool, Pool::Avg | Pool::AvgMax | Pool::Max),
    };
    let final_norm = a.final_norm.unwrap_or(true);
    let config = VitConfig {
        image_size: a.img_size.map_or((224, 224), Size::pair),
        patch_size,
        in_channels: a.in_chans.unwrap_or(3),
        embed_dim,
        depth: get(a.depth, "depth")?,
        num_heads: get(a.num_heads, "num_heads")?,
        // timm: int(dim * mlp_ratio).
        mlp_hidden_dim: (embed_dim as f64 * mlp_ratio) as usize,
        qkv_bias: a.qkv_bias.unwrap_or(true),
        qk_norm: a.qk_norm.unwrap_or(false),
        scale_attn_norm: a.scale_attn_norm.unwrap_or(false),
        scale_mlp_norm: a.scale_mlp_norm.unwrap_or(false),
        proj_bias: a.proj_bias.unwrap_or(true),
        class_token,
        reg_tokens: a.reg_tokens.unwrap_or(0),
        no_embed_class: a.no_embed_class.unwrap_or(false),
        layer_scale: a.init_values.flatten().filter(|v| *v != 0.0),
        global_pool,
        pre_norm: a.pre_norm.unwrap_or(false),
        norm: final_norm && !use_fc_norm,
        fc_norm: final_norm && use_fc_norm,
        norm_eps,
        activation,
        mlp,
        dynamic_img_pad: a.dynamic_img_pad.unwrap_or(false),
        pos_embed,
        fixed_pos_embed: false,
    };
    config.validate()?;
    Ok((config, notes))
}
