//! timm's layout: `model.safetensors` + `config.json` (`architecture`,
//! `model_args`, `pretrained_cfg`), read as `timm.create_model` reads a hub
//! model: the architecture from the registry ([`crate::registry`]), the
//! `model_args` over its arguments, the `pretrained_cfg`'s input size and
//! classes where timm's builder takes them.

use std::path::Path;

use serde_json::{json, Value};

use super::{
    drop_non_encoder, read_json, read_safetensors, DataConfig, Fields, LoadOptions, LoadedWeights,
    WeightLayout,
};
use crate::config::VitConfig;
use crate::error::{EncoderError, Result};
use crate::layout::WeightMap;
use crate::registry::{self, TagConfig, TimmArgs};

pub(super) fn load(
    weights_path: &Path,
    config_path: &Path,
    _opts: &LoadOptions,
) -> Result<LoadedWeights> {
    let (cfg, data, notes) = config_and_notes(&read_json(config_path)?, config_path)?;
    let mut weights = read_safetensors(weights_path)?;
    let ignored = drop_non_encoder(&mut weights, &["head.", "head_dist.", "attn_pool."]);
    Ok(LoadedWeights {
        layout: WeightLayout::Timm,
        source: weights_path.to_path_buf(),
        config: cfg,
        data,
        weights,
        ignored,
        notes,
    })
}

/// The architecture and data configuration of a timm `config.json`.
pub(super) fn config(json: &Value, config_path: &Path) -> Result<(VitConfig, DataConfig)> {
    config_and_notes(json, config_path).map(|(c, d, _)| (c, d))
}

/// As timm's `load_model_config_from_hf`: a file without `pretrained_cfg`
/// is the old form, whose top level is the pretrained configuration; a
/// top-level `num_classes` overrides the pretrained one.
fn config_and_notes(json: &Value, path: &Path) -> Result<(VitConfig, DataConfig, Vec<String>)> {
    let err = |reason: String| EncoderError::ConfigFile {
        path: path.to_path_buf(),
        reason,
    };
    let arch = json["architecture"]
        .as_str()
        .ok_or_else(|| err("\"architecture\" is not a string".into()))?;
    let pretrained = json.get("pretrained_cfg").unwrap_or(json);
    let f = Fields::new(path, "pretrained_cfg.", pretrained);
    let input = match f.integers("input_size")?.as_deref() {
        None => [3, 224, 224], // timm's PretrainedCfg default
        Some(&[c, h, w]) => [c, h, w],
        Some(_) => {
            return Err(err(format!(
                "pretrained_cfg.input_size = {} is not [channels, height, width]",
                pretrained["input_size"]
            )))
        }
    };
    let fixed = match pretrained.get("fixed_input_size") {
        None | Some(Value::Null) => false,
        Some(v) => v.as_bool().ok_or_else(|| {
            err(format!(
                "pretrained_cfg.fixed_input_size = {v} is not a boolean"
            ))
        })?,
    };
    let top_classes = json
        .get("num_classes")
        .filter(|_| json.get("pretrained_cfg").is_some());
    let num_classes = top_classes
        .or_else(|| pretrained.get("num_classes"))
        .filter(|v| !v.is_null())
        .map(|v| {
            v.as_i64()
                .ok_or_else(|| err(format!("num_classes = {v} is not an integer")))
        })
        .transpose()?;
    let tag = TagConfig {
        input_size: input,
        fixed_input_size: fixed,
        num_classes,
        global_pool: f.string("global_pool")?.map(str::to_string),
    };
    let args = match json.get("model_args") {
        None | Some(Value::Null) => TimmArgs::default(),
        Some(v) => TimmArgs::from_json(v).map_err(|e| err(format!("model_args: {e}")))?,
    };
    let (_, entry, _) = registry::lookup(arch)?;
    let resolved = registry::resolve_with(arch, entry, Some(&tag), &args)?;
    let mut cfg = resolved.config;
    if let Some(eps) = json.pointer("/ijepa_rs/norm_eps").and_then(Value::as_f64) {
        // Our exports of encoders with an epsilon timm cannot name.
        cfg.norm_eps = eps;
    }
    cfg.validate()?;
    let data = data_config(path, Some(pretrained), cfg.image_size)?;
    Ok((cfg, data, resolved.notes))
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

/// Writes `weights` as a timm model folder: `model.safetensors` and a
/// `config.json` whose `model_args` state every hyper-parameter, so
/// `timm.create_model(config["architecture"], **config["model_args"])`
/// rebuilds this exact architecture. An epsilon timm cannot name is kept
/// under `ijepa_rs.norm_eps` for ijepa-rs (timm would use the base
/// architecture's).
pub fn save_timm(
    dir: &Path,
    cfg: &VitConfig,
    data: &DataConfig,
    weights: &WeightMap,
) -> Result<()> {
    crate::VisionTransformer::check_weights(cfg, weights, dir)?;
    std::fs::create_dir_all(dir).map_err(|error| EncoderError::Io {
        path: dir.to_path_buf(),
        error,
    })?;
    let pool = cfg.global_pool.timm_name();
    let base = registry::base_for(cfg);
    let mut config = json!({
        "architecture": base.unwrap_or("vit_base_patch16_224"),
        "num_classes": 0,
        "num_features": cfg.embed_dim,
        "global_pool": pool,
        "model_args": TimmArgs::from_config(cfg),
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
    if base.is_none() {
        config["ijepa_rs"] = json!({ "norm_eps": cfg.norm_eps });
    }
    let text = serde_json::to_string_pretty(&config).expect("JSON values serialise");
    crate::io::output::write_file(&dir.join("config.json"), (text + "\n").as_bytes())?;
    crate::io::output::write_safetensors(
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
            assert_eq!((d as f64 * registry::mlp_ratio(d, h)) as usize, h);
        }
    }
}
