//! timm's layout: `model.safetensors` + `config.json` (`architecture`,
//! `model_args`, `pretrained_cfg`).

use std::path::Path;

use serde_json::{json, Map, Value};

use super::{
    drop_non_encoder, read_json, read_safetensors, DataConfig, Fields, LoadOptions, LoadedWeights,
    WeightLayout,
};
use crate::config::{Pool, VitConfig};
use crate::error::{EncoderError, Result};
use crate::WeightMap;

/// timm's ViT LayerNorm epsilon; a config.json cannot say another.
const TIMM_EPS: f64 = 1e-6;

/// `model_args` that change nothing at inference.
const HARMLESS_ARGS: &[&str] = &[
    "num_classes",
    "drop_rate",
    "drop_path_rate",
    "attn_drop_rate",
    "proj_drop_rate",
    "pos_drop_rate",
    "patch_drop_rate",
    "dynamic_img_size",
    "dynamic_img_pad",
    "weight_init",
];

/// Whether a timm preset sets `fc_norm` itself (then `global_pool` in
/// `model_args` does not change it): plain `_gap` models set it to false.
fn preset_sets_fc_norm(arch: &str) -> bool {
    arch.contains("_gap") && !arch.contains("_reg")
}

pub(super) fn load(
    weights_path: &Path,
    config_path: &Path,
    _opts: &LoadOptions,
) -> Result<LoadedWeights> {
    let (cfg, data) = config(&read_json(config_path)?, config_path)?;
    let mut weights = read_safetensors(weights_path)?;
    let ignored = drop_non_encoder(&mut weights, &["head.", "head_dist.", "attn_pool."]);
    Ok(LoadedWeights {
        layout: WeightLayout::Timm,
        source: weights_path.to_path_buf(),
        config: cfg,
        data,
        weights,
        ignored,
    })
}

/// The architecture and data configuration of a timm `config.json`.
pub(super) fn config(json: &Value, config_path: &Path) -> Result<(VitConfig, DataConfig)> {
    let err = |reason: String| EncoderError::ConfigFile {
        path: config_path.to_path_buf(),
        reason,
    };
    let arch = json["architecture"]
        .as_str()
        .ok_or_else(|| err("\"architecture\" is not a string".into()))?;
    let mut cfg = VitConfig::from_timm_name(arch)?;
    let empty = Map::new();
    let args = json
        .get("model_args")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    apply_model_args(&mut cfg, arch, args).map_err(err)?;
    // Top-level `global_pool` (older configs) when model_args does not say.
    if let (Some(pool), false) = (
        json.get("global_pool").and_then(Value::as_str),
        args.contains_key("global_pool"),
    ) {
        set_pool(&mut cfg, arch, pool, args).map_err(err)?;
    }
    if let Some(eps) = json.pointer("/ijepa_rs/norm_eps").and_then(Value::as_f64) {
        cfg.norm_eps = eps;
    }
    let data = data_config(config_path, json.get("pretrained_cfg"), cfg.image_size)?;
    if json.get("model_args").is_none() {
        // Published configs carry no model_args: the image size is pretrained_cfg's.
        cfg.image_size = data.input_size;
    }
    cfg.validate()?;
    Ok((cfg, data))
}

fn set_pool(
    cfg: &mut VitConfig,
    arch: &str,
    pool: &str,
    args: &Map<String, Value>,
) -> std::result::Result<(), String> {
    cfg.global_pool = match pool {
        "token" => Pool::Token,
        "avg" => Pool::Avg,
        other => {
            return Err(format!(
                "global_pool {other:?} is not supported (token, avg)"
            ))
        }
    };
    if !args.contains_key("fc_norm") && !preset_sets_fc_norm(arch) {
        cfg.fc_norm = cfg.global_pool == Pool::Avg;
    }
    Ok(())
}

fn apply_model_args(
    cfg: &mut VitConfig,
    arch: &str,
    args: &Map<String, Value>,
) -> std::result::Result<(), String> {
    let usize_of = |k: &str, v: &Value| {
        v.as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| format!("model_args.{k} = {v} is not a non-negative integer"))
    };
    let bool_of = |k: &str, v: &Value| {
        v.as_bool()
            .ok_or_else(|| format!("model_args.{k} = {v} is not a boolean"))
    };
    let mut mlp_ratio = None;
    for (k, v) in args {
        match k.as_str() {
            "img_size" => {
                cfg.image_size = match v {
                    Value::Array(a) if a.len() == 2 => (usize_of(k, &a[0])?, usize_of(k, &a[1])?),
                    _ => {
                        let s = usize_of(k, v)?;
                        (s, s)
                    }
                }
            }
            "patch_size" => cfg.patch_size = usize_of(k, v)?,
            "in_chans" => cfg.in_channels = usize_of(k, v)?,
            "embed_dim" => cfg.embed_dim = usize_of(k, v)?,
            "depth" => cfg.depth = usize_of(k, v)?,
            "num_heads" => cfg.num_heads = usize_of(k, v)?,
            "mlp_ratio" => {
                mlp_ratio = Some(
                    v.as_f64()
                        .ok_or_else(|| format!("model_args.mlp_ratio = {v} is not a number"))?,
                )
            }
            "qkv_bias" => cfg.qkv_bias = bool_of(k, v)?,
            "class_token" => cfg.class_token = bool_of(k, v)?,
            "reg_tokens" => cfg.reg_tokens = usize_of(k, v)?,
            "no_embed_class" => cfg.no_embed_class = bool_of(k, v)?,
            "init_values" => cfg.layer_scale = v.as_f64(),
            "fc_norm" => {
                if !v.is_null() {
                    cfg.fc_norm = bool_of(k, v)?
                }
            }
            "global_pool" => {
                let pool = v
                    .as_str()
                    .ok_or_else(|| format!("model_args.global_pool = {v} is not a string"))?;
                set_pool(cfg, arch, pool, args)?;
            }
            "pre_norm" | "qk_norm" | "no_norm" if v == &Value::Bool(false) => {}
            "final_norm" if v == &Value::Bool(true) => {}
            _ if HARMLESS_ARGS.contains(&k.as_str()) => {}
            _ => {
                return Err(format!(
                    "model_args.{k} = {v} is not supported by ijepa-rs' ViT"
                ))
            }
        }
    }
    // timm: hidden = int(dim · mlp_ratio), with the preset's ratio (48/11 for
    // giant, 4 otherwise) unless model_args gives one.
    if mlp_ratio.is_some() || args.contains_key("embed_dim") {
        let preset = if arch.contains("_giant_") {
            48.0 / 11.0
        } else {
            4.0
        };
        cfg.mlp_hidden_dim = (cfg.embed_dim as f64 * mlp_ratio.unwrap_or(preset)) as usize;
    }
    Ok(())
}

/// timm's `pretrained_cfg`: every field present is used, and one of the
/// wrong type is an error (never the default in its place).
fn data_config(
    file: &Path,
    pretrained: Option<&Value>,
    image_size: (usize, usize),
) -> Result<DataConfig> {
    let mut data = DataConfig::imagenet(image_size);
    let Some(p) = pretrained else { return Ok(data) };
    let f = Fields::new(file, "pretrained_cfg.", p);
    match f.integers("input_size")?.as_deref() {
        None => {}
        Some([_, h, w]) => data.input_size = (*h, *w),
        Some(_) => {
            return Err(EncoderError::ConfigFile {
                path: file.to_path_buf(),
                reason: format!(
                    "pretrained_cfg.input_size = {} is not [channels, height, width]",
                    p["input_size"]
                ),
            })
        }
    }
    if let Some(m) = f.triple("mean", false)? {
        data.mean = m;
    }
    if let Some(s) = f.triple("std", true)? {
        data.std = s;
    }
    if let Some(c) = f.number("crop_pct", 0.01..=4.0)? {
        data.crop_pct = c;
    }
    if let Some(i) = f.string("interpolation")? {
        data.interpolation = i.to_string();
    }
    if let Some(m) = f.string("crop_mode")? {
        data.crop_mode = m.to_string();
    }
    Ok(data)
}

/// timm names registered in timm 1.0 that [`architecture`] may produce.
const REGISTERED: &[&str] = &[
    "vit_tiny_patch16_224",
    "vit_tiny_patch16_384",
    "vit_small_patch16_224",
    "vit_small_patch16_384",
    "vit_small_patch14_dinov2",
    "vit_base_patch16_224",
    "vit_base_patch16_384",
    "vit_base_patch16_gap_224",
    "vit_large_patch16_224",
    "vit_large_patch16_384",
    "vit_huge_patch14_224",
    "vit_huge_patch14_gap_224",
    "vit_huge_patch16_gap_448",
    "vit_giant_patch14_224",
    "vit_giant_patch16_gap_224",
];

/// A registered timm name close to `cfg` (`model_args` carry every
/// hyper-parameter, so the name only has to exist): the preset of this
/// size when timm has it, else `vit_base_patch16[_gap]_224`.
fn architecture(cfg: &VitConfig) -> String {
    let size = match cfg.embed_dim {
        192 => "tiny",
        384 => "small",
        1024 => "large",
        1280 => "huge",
        1408 => "giant",
        _ => "base",
    };
    let gap = if cfg.class_token { "" } else { "_gap" };
    let name = format!(
        "vit_{size}_patch{}{gap}_{}",
        cfg.patch_size, cfg.image_size.0
    );
    if REGISTERED.contains(&name.as_str()) {
        name
    } else {
        format!("vit_base_patch16{gap}_224")
    }
}

/// `mlp_ratio` such that timm's `int(dim · ratio)` gives back `hidden`.
fn mlp_ratio(dim: usize, hidden: usize) -> f64 {
    let mut r = hidden as f64 / dim as f64;
    while ((dim as f64) * r) < hidden as f64 {
        r = f64::from_bits(r.to_bits() + 1);
    }
    r
}

/// Writes `weights` as a timm model folder: `model.safetensors` and a
/// `config.json` whose `model_args` state every hyper-parameter, so
/// `timm.create_model(config["architecture"], **config["model_args"])`
/// rebuilds this exact architecture.
pub fn save_timm(
    dir: &Path,
    cfg: &VitConfig,
    data: &DataConfig,
    weights: &WeightMap,
) -> Result<()> {
    super::check(cfg, weights, dir)?;
    std::fs::create_dir_all(dir).map_err(|error| EncoderError::Io {
        path: dir.to_path_buf(),
        error,
    })?;
    let pool = match cfg.global_pool {
        Pool::Token => "token",
        Pool::Avg => "avg",
    };
    let mut config = json!({
        "architecture": architecture(cfg),
        "num_classes": 0,
        "num_features": cfg.embed_dim,
        "global_pool": pool,
        "model_args": {
            "img_size": [cfg.image_size.0, cfg.image_size.1],
            "patch_size": cfg.patch_size,
            "in_chans": cfg.in_channels,
            "embed_dim": cfg.embed_dim,
            "depth": cfg.depth,
            "num_heads": cfg.num_heads,
            "mlp_ratio": mlp_ratio(cfg.embed_dim, cfg.mlp_hidden_dim),
            "qkv_bias": cfg.qkv_bias,
            "class_token": cfg.class_token,
            "reg_tokens": cfg.reg_tokens,
            "no_embed_class": cfg.no_embed_class,
            "init_values": cfg.layer_scale,
            "global_pool": pool,
            "fc_norm": cfg.fc_norm,
            "num_classes": 0,
        },
        "pretrained_cfg": {
            "input_size": [cfg.in_channels, data.input_size.0, data.input_size.1],
            "fixed_input_size": true,
            "interpolation": data.interpolation,
            "crop_pct": data.crop_pct,
            "crop_mode": data.crop_mode,
            "mean": data.mean,
            "std": data.std,
            "num_classes": 0,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
    });
    if cfg.norm_eps != TIMM_EPS {
        // timm cannot express another epsilon; keep ours for a faithful reload.
        config["ijepa_rs"] = json!({ "norm_eps": cfg.norm_eps });
    }
    let text = serde_json::to_string_pretty(&config).expect("JSON values serialise");
    crate::output::write_file(&dir.join("config.json"), (text + "\n").as_bytes())?;
    crate::output::write_safetensors(
        &dir.join("model.safetensors"),
        weights.iter().map(|(k, t)| (k.as_str(), t)),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlp_ratio_round_trips_through_timm_int() {
        for (d, h) in [
            (1408, 6144),
            (192, 768),
            (48, 192),
            (1280, 5120),
            (100, 333),
        ] {
            assert_eq!((d as f64 * mlp_ratio(d, h)) as usize, h);
        }
    }
}
