//! Hugging Face transformers' `IJepaModel`, in both key layouts: the
//! transformers 4 names the published `facebook/ijepa_*` checkpoints use
//! (`encoder.layer.N.attention.attention.query`, …) and transformers 5's
//! (`layers.N.attention.q_proj`, …). Separate q/k/v projections are fused
//! into timm's `qkv` (rows `q | k | v`).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;
use serde_json::Value;

use super::{
    drop_non_encoder, read_json, read_safetensors, DataConfig, Fields, LoadOptions, LoadedWeights,
    WeightLayout,
};
use crate::config::VitConfig;
use crate::error::{EncoderError, Result};
use crate::layout::WeightMap;

pub(super) fn load(
    weights_path: &Path,
    config_path: &Path,
    _opts: &LoadOptions,
) -> Result<LoadedWeights> {
    let cfg = config(&read_json(config_path)?, config_path)?;
    let data = data_config(config_path, &cfg)?;
    let mut raw = read_safetensors(weights_path)?;
    // A checkpoint of `IJepaForImageClassification` nests the encoder.
    if raw.keys().any(|k| k.starts_with("ijepa.")) {
        raw = raw
            .into_iter()
            .map(|(k, v)| (k.strip_prefix("ijepa.").map(str::to_string).unwrap_or(k), v))
            .collect();
    }
    let ignored = drop_non_encoder(&mut raw, &["pooler.", "classifier."]);
    let weights = to_timm(raw)?;
    Ok(LoadedWeights {
        layout: WeightLayout::Hf,
        source: weights_path.to_path_buf(),
        config: cfg,
        data,
        weights,
        ignored,
        notes: vec![],
    })
}

/// The architecture of a transformers `IJepaConfig` `config.json`.
pub(super) fn config(json: &Value, config_path: &Path) -> Result<VitConfig> {
    let cfg = read_config(json).map_err(|reason| EncoderError::ConfigFile {
        path: config_path.to_path_buf(),
        reason,
    })?;
    cfg.validate()?;
    Ok(cfg)
}

fn read_config(json: &Value) -> std::result::Result<VitConfig, String> {
    let int = |k: &str| {
        json.get(k)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| format!("\"{k}\" missing or not an integer"))
    };
    let act = json
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("gelu");
    if act != "gelu" {
        return Err(format!(
            "hidden_act {act:?} is not supported (exact \"gelu\" only)"
        ));
    }
    let image = int("image_size")?;
    let mut cfg = VitConfig::ijepa(
        (image, image),
        int("patch_size")?,
        int("hidden_size")?,
        int("num_hidden_layers")?,
        int("num_attention_heads")?,
        int("intermediate_size")?,
        json.get("layer_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-12),
    );
    cfg.in_channels = int("num_channels").unwrap_or(3);
    cfg.qkv_bias = json
        .get("qkv_bias")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    Ok(cfg)
}

/// `preprocessor_config.json` when present (mean, std, size, resample),
/// else ImageNet statistics; images are resized to the model's size without
/// keeping their aspect ratio and not cropped, as `ViTImageProcessor` does.
fn data_config(config_path: &Path, cfg: &VitConfig) -> Result<DataConfig> {
    let mut data = DataConfig::imagenet(cfg.image_size);
    data.crop_pct = 1.0;
    data.crop_mode = "squash".into();
    data.interpolation = "bilinear".into();
    let pre = config_path.with_file_name("preprocessor_config.json");
    if !pre.exists() {
        return Ok(data);
    }
    let json = read_json(&pre)?;
    let f = Fields::new(&pre, "", &json);
    if let Some(m) = f.triple("image_mean", false)? {
        data.mean = m;
    }
    if let Some(s) = f.triple("image_std", true)? {
        data.std = s;
    }
    if let Some(size) = json.get("size").filter(|v| !v.is_null()) {
        let s = Fields::new(&pre, "size.", size);
        if let (Some(h), Some(w)) = (s.integer("height")?, s.integer("width")?) {
            data.input_size = (h as usize, w as usize);
        }
    }
    // PIL resample codes: 2 bilinear, 3 bicubic.
    match f.integer("resample")? {
        Some(3) => data.interpolation = "bicubic".into(),
        Some(2) | None => {}
        Some(other) => {
            return Err(EncoderError::ConfigFile {
                path: pre,
                reason: format!("resample {other} is not supported (2 bilinear, 3 bicubic)"),
            })
        }
    }
    Ok(data)
}

/// The timm name of a transformers key (q/k/v are collected separately).
fn rename(key: &str) -> Option<String> {
    let fixed = match key {
        "embeddings.patch_embeddings.projection.weight" => Some("patch_embed.proj.weight"),
        "embeddings.patch_embeddings.projection.bias" => Some("patch_embed.proj.bias"),
        "embeddings.position_embeddings" => Some("pos_embed"),
        "layernorm.weight" => Some("norm.weight"),
        "layernorm.bias" => Some("norm.bias"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = key
        .strip_prefix("encoder.layer.")
        .or_else(|| key.strip_prefix("layers."))?;
    let (layer, name) = rest.split_once('.')?;
    let name = [
        ("attention.output.dense.", "attn.proj."),
        ("attention.o_proj.", "attn.proj."),
        ("intermediate.dense.", "mlp.fc1."),
        ("output.dense.", "mlp.fc2."),
        ("mlp.fc1.", "mlp.fc1."),
        ("mlp.fc2.", "mlp.fc2."),
        ("layernorm_before.", "norm1."),
        ("layernorm_after.", "norm2."),
    ]
    .iter()
    .find_map(|(from, to)| name.strip_prefix(from).map(|p| format!("{to}{p}")))?;
    Some(format!("blocks.{layer}.{name}"))
}

/// `(layer, q|k|v, weight|bias)` of an attention projection key.
fn qkv_part(key: &str) -> Option<(usize, usize, String)> {
    let rest = key
        .strip_prefix("encoder.layer.")
        .or_else(|| key.strip_prefix("layers."))?;
    let (layer, name) = rest.split_once('.')?;
    let (part, param) = name
        .strip_prefix("attention.attention.")
        .or_else(|| name.strip_prefix("attention."))?
        .split_once('.')?;
    let which = match part {
        "query" | "q_proj" => 0,
        "key" | "k_proj" => 1,
        "value" | "v_proj" => 2,
        _ => return None,
    };
    Some((layer.parse().ok()?, which, param.to_string()))
}

fn to_timm(raw: WeightMap) -> Result<WeightMap> {
    let mut out = WeightMap::new();
    let mut qkv: BTreeMap<(usize, String), [Option<Tensor>; 3]> = BTreeMap::new();
    for (key, tensor) in raw {
        if let Some((layer, which, param)) = qkv_part(&key) {
            qkv.entry((layer, param)).or_default()[which] = Some(tensor);
        } else if let Some(name) = rename(&key) {
            out.insert(name, tensor);
        } else {
            // Left as is: `check` reports it as unexpected, by its own name.
            out.insert(key, tensor);
        }
    }
    for ((layer, param), parts) in qkv {
        let key = format!("blocks.{layer}.attn.qkv.{param}");
        match parts {
            [Some(q), Some(k), Some(v)] => {
                out.insert(key, Tensor::cat(&[&q, &k, &v], 0)?);
            }
            // An incomplete triple: keep what there is so `check` names it.
            parts => {
                for (p, name) in parts.into_iter().zip(["query", "key", "value"]) {
                    if let Some(t) = p {
                        out.insert(
                            format!(
                                "blocks.{layer}.attn.{name}.{param} (without its q/k/v siblings)"
                            ),
                            t,
                        );
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Writes `weights` (timm names) as a Hugging Face `IJepaModel` folder:
/// `config.json`, `model.safetensors` in the key layout of the published
/// `facebook/ijepa_*` checkpoints (transformers 4 names, which transformers
/// 5 reads too; `qkv` split into query/key/value) and a
/// `preprocessor_config.json` with `data`'s size, mean, std and filter.
///
/// # Errors
/// An architecture `IJepaModel` cannot express (class or register tokens,
/// layer scale, `fc_norm`, a non-square image, no qkv bias), weights that do
/// not fit `cfg`, or a file that cannot be written.
pub fn save_hf(dir: &Path, cfg: &VitConfig, data: &DataConfig, weights: &WeightMap) -> Result<()> {
    crate::VisionTransformer::check_weights(cfg, weights, dir)?;
    let unsupported = [
        (cfg.class_token, "a class token"),
        (cfg.reg_tokens > 0, "register tokens"),
        (cfg.layer_scale.is_some(), "layer scale"),
        (cfg.fc_norm, "fc_norm"),
        (cfg.image_size.0 != cfg.image_size.1, "a non-square image"),
        (!cfg.qkv_bias, "attention without qkv bias"),
    ];
    if let Some((_, what)) = unsupported.iter().find(|(bad, _)| *bad) {
        return Err(EncoderError::InvalidConfig(format!(
            "Hugging Face IJepaModel has no {what}: export this encoder as timm instead"
        )));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| EncoderError::Io { path, error }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut out = WeightMap::new();
    let d = cfg.embed_dim;
    for (name, t) in weights {
        let t = t.contiguous()?;
        if let Some(rest) = name.strip_prefix("blocks.") {
            let (layer, param) = rest.split_once('.').unwrap_or((rest, ""));
            let prefix = format!("encoder.layer.{layer}.");
            if let Some(kind) = param.strip_prefix("attn.qkv.") {
                for (i, part) in ["query", "key", "value"].iter().enumerate() {
                    out.insert(
                        format!("{prefix}attention.attention.{part}.{kind}"),
                        t.narrow(0, i * d, d)?.contiguous()?,
                    );
                }
                continue;
            }
            let hf = [
                ("attn.proj.", "attention.output.dense."),
                ("mlp.fc1.", "intermediate.dense."),
                ("mlp.fc2.", "output.dense."),
                ("norm1.", "layernorm_before."),
                ("norm2.", "layernorm_after."),
            ]
            .iter()
            .find_map(|(from, to)| param.strip_prefix(from).map(|p| format!("{prefix}{to}{p}")));
            match hf {
                Some(k) => out.insert(k, t),
                None => return Err(unknown_key(name)),
            };
            continue;
        }
        let key = match name.as_str() {
            "patch_embed.proj.weight" => "embeddings.patch_embeddings.projection.weight",
            "patch_embed.proj.bias" => "embeddings.patch_embeddings.projection.bias",
            "pos_embed" => "embeddings.position_embeddings",
            "norm.weight" => "layernorm.weight",
            "norm.bias" => "layernorm.bias",
            _ => return Err(unknown_key(name)),
        };
        out.insert(key.to_string(), t);
    }
    let config = serde_json::json!({
        "architectures": ["IJepaModel"],
        "model_type": "ijepa",
        "hidden_size": d,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.mlp_hidden_dim,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": cfg.norm_eps,
        "image_size": cfg.image_size.0,
        "patch_size": cfg.patch_size,
        "num_channels": cfg.in_channels,
        "qkv_bias": cfg.qkv_bias,
        "pooler_output_size": d,
        "pooler_act": "tanh",
    });
    let resample = if data.interpolation == "bicubic" {
        3
    } else {
        2
    };
    let pre = serde_json::json!({
        "image_processor_type": "ViTImageProcessor",
        "do_resize": true,
        "size": {"height": data.input_size.0, "width": data.input_size.1},
        "resample": resample,
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": data.mean,
        "image_std": data.std,
    });
    for (file, json) in [("config.json", config), ("preprocessor_config.json", pre)] {
        let path = dir.join(file);
        let text = serde_json::to_string_pretty(&json).expect("JSON values serialise");
        crate::io::output::write_file(&path, (text + "\n").as_bytes())?;
    }
    crate::io::output::write_safetensors(
        &dir.join("model.safetensors"),
        out.iter().map(|(k, t)| (k.as_str(), t)),
        None,
    )
}

fn unknown_key(name: &str) -> EncoderError {
    EncoderError::InvalidConfig(format!(
        "tensor {name} has no place in a Hugging Face IJepaModel"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_both_transformers_layouts() {
        assert_eq!(
            rename("encoder.layer.3.intermediate.dense.weight").unwrap(),
            "blocks.3.mlp.fc1.weight"
        );
        assert_eq!(
            rename("encoder.layer.3.output.dense.bias").unwrap(),
            "blocks.3.mlp.fc2.bias"
        );
        assert_eq!(
            rename("encoder.layer.0.attention.output.dense.weight").unwrap(),
            "blocks.0.attn.proj.weight"
        );
        assert_eq!(
            rename("layers.1.attention.o_proj.bias").unwrap(),
            "blocks.1.attn.proj.bias"
        );
        assert_eq!(
            rename("layers.1.layernorm_after.weight").unwrap(),
            "blocks.1.norm2.weight"
        );
        assert_eq!(
            qkv_part("encoder.layer.2.attention.attention.key.bias"),
            Some((2, 1, "bias".into()))
        );
        assert_eq!(
            qkv_part("layers.0.attention.v_proj.weight"),
            Some((0, 2, "weight".into()))
        );
        assert_eq!(qkv_part("layers.0.attention.o_proj.weight"), None);
    }
}
