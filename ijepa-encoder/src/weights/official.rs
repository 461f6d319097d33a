//! facebookresearch/ijepa training checkpoints (`*.pth.tar`): dictionaries
//! `encoder`, `target_encoder`, `predictor`, … with `module.` prefixes,
//! already in timm's key names. Read as data with candle's pickle reader.

use std::path::Path;

use super::{DataConfig, LoadOptions, LoadedWeights, WeightLayout};
use crate::config::VitConfig;
use crate::error::{EncoderError, Result};
use crate::layout::WeightMap;
use crate::weights::Branch;

pub(super) fn load(path: &Path, opts: &LoadOptions) -> Result<LoadedWeights> {
    let key = match opts.branch {
        Branch::Context => "encoder",
        Branch::Target => "target_encoder",
    };
    let file = std::fs::File::open(path).map_err(|error| EncoderError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let tensors = super::read_pytorch(std::io::BufReader::new(file), Some(key), path)?;
    if tensors.is_empty() {
        return Err(EncoderError::UnknownLayout {
            path: path.to_path_buf(),
            reason: format!("no {key:?} tensors in this checkpoint (an official I-JEPA checkpoint has encoder and target_encoder)"),
        });
    }
    let weights: WeightMap = tensors
        .into_iter()
        .map(|(k, t)| (super::without_ddp_prefix(&k).to_string(), t))
        .collect();
    let config =
        infer_config(&weights, opts.num_heads, opts.model.as_deref()).map_err(|reason| {
            EncoderError::UnknownLayout {
                path: path.to_path_buf(),
                reason,
            }
        })?;
    config.validate()?;
    Ok(LoadedWeights {
        layout: WeightLayout::Official,
        source: path.to_path_buf(),
        data: DataConfig::imagenet(config.image_size),
        config,
        weights,
        ignored: vec![],
        notes: vec![],
    })
}

/// Head count of the standard widths (the official models are ViT-B/L/H/G).
fn standard_heads(dim: usize) -> Option<usize> {
    match dim {
        192 => Some(3),
        384 => Some(6),
        768 => Some(12),
        1024 | 1280 | 1408 => Some(16),
        _ => None,
    }
}

/// The architecture, read off the tensor shapes (the official files carry
/// no config): width and patch from the patch embedding, depth from the
/// blocks, grid from the position embedding; heads from `heads`, else
/// `model`, else the standard head count of the width.
fn infer_config(
    w: &WeightMap,
    heads: Option<usize>,
    model: Option<&str>,
) -> std::result::Result<VitConfig, String> {
    let dims = |k: &str| {
        w.get(k)
            .map(|t| t.dims().to_vec())
            .ok_or_else(|| format!("no {k:?} in the encoder"))
    };
    let patch = dims("patch_embed.proj.weight")?;
    let [dim, channels, p, _] = patch[..] else {
        return Err(format!(
            "patch_embed.proj.weight has shape {patch:?}, expected (D, C, p, p)"
        ));
    };
    let pos = dims("pos_embed")?;
    let tokens = pos[1];
    let side = (tokens as f64).sqrt().round() as usize;
    if side * side != tokens {
        return Err(format!(
            "pos_embed has {tokens} rows: not a square patch grid"
        ));
    }
    let depth = (0..)
        .take_while(|l| w.contains_key(&format!("blocks.{l}.norm1.weight")))
        .count();
    let hidden = dims("blocks.0.mlp.fc1.weight")?[0];
    let num_heads = match (heads, model) {
        (Some(h), _) => h,
        (None, Some(name)) => VitConfig::from_timm_name(name).map_err(|e| e.to_string())?.num_heads,
        (None, None) => standard_heads(dim).ok_or_else(|| {
            format!("cannot tell the number of attention heads of width {dim}: name the model (e.g. --model vit_huge_patch14_224)")
        })?,
    };
    let mut cfg = VitConfig::ijepa((side * p, side * p), p, dim, depth, num_heads, hidden, 1e-6);
    cfg.in_channels = channels;
    cfg.qkv_bias = w.contains_key("blocks.0.attn.qkv.bias");
    // A non-trainable sin-cos buffer in the official model.
    cfg.fixed_pos_embed = true;
    Ok(cfg)
}
