//! Weight files: layout detection, loading into timm's key layout, checking
//! against the architecture, and saving.
//!
//! Three layouts load: timm (`model.safetensors` + `config.json` with
//! `pretrained_cfg`), Hugging Face `IJepaModel` (transformers 4 and 5 key
//! names) and official I-JEPA `.pth.tar` checkpoints (read as data by
//! candle's pickle reader; no code runs). All are converted to timm's names,
//! the one layout [`crate::VisionTransformer`] reads.

mod hf;
mod official;
mod timm;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::config::VitConfig;
use crate::error::{EncoderError, Result};
use crate::layout::WeightMap;
use crate::vit::VisionTransformer;

pub use hf::save_hf;
pub use timm::save_timm;

/// The layout a weight file was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightLayout {
    /// timm `VisionTransformer` (`model.safetensors` + `config.json`).
    Timm,
    /// Hugging Face transformers `IJepaModel`.
    Hf,
    /// facebookresearch/ijepa training checkpoint (`.pth.tar`).
    Official,
}

/// Which encoder of a training checkpoint to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Branch {
    /// The context encoder (`encoder`).
    Context,
    /// The EMA target encoder (`target_encoder`), the one I-JEPA evaluates.
    #[default]
    Target,
}

/// How images must be prepared for a model (timm's `pretrained_cfg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    /// `(height, width)` fed to the model.
    pub input_size: (usize, usize),
    /// Per-channel mean subtracted after scaling to `[0, 1]`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
    /// Fraction of the resized image kept by the centre crop.
    pub crop_pct: f64,
    /// Resampling filter name (`bicubic`, `bilinear`).
    pub interpolation: String,
    /// `center`: resize the shorter side to `size / crop_pct`, then crop the
    /// centre (timm); `squash`: resize to `size / crop_pct` exactly, ignoring
    /// the aspect ratio, then crop (Hugging Face image processors).
    pub crop_mode: String,
}

impl DataConfig {
    /// ImageNet mean/std, bicubic, crop 0.875 — timm's defaults.
    pub fn imagenet(input_size: (usize, usize)) -> Self {
        Self {
            input_size,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            crop_pct: 0.875,
            interpolation: "bicubic".into(),
            crop_mode: "center".into(),
        }
    }
}

/// Options of [`load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// A timm model name for what the files do not say (e.g. the head count
    /// of an official checkpoint of non-standard width).
    pub model: Option<String>,
    /// The head count where the files do not say it (an official
    /// checkpoint), before `model`'s: a run's own `model.args.num_heads`.
    pub num_heads: Option<usize>,
    /// Which encoder of a training checkpoint.
    pub branch: Branch,
    /// Where the tensors go.
    pub device: Device,
    /// The dtype they are converted to.
    pub dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            model: None,
            num_heads: None,
            branch: Branch::default(),
            device: Device::Cpu,
            dtype: DType::F32,
        }
    }
}

/// Weights read from disk, in timm's layout, with the architecture and data
/// configuration they came with.
#[derive(Debug, Clone)]
pub struct LoadedWeights {
    /// The layout of the source.
    pub layout: WeightLayout,
    /// The file the tensors came from.
    pub source: PathBuf,
    /// The architecture.
    pub config: VitConfig,
    /// Image preparation.
    pub data: DataConfig,
    /// The tensors, under timm's names.
    pub weights: WeightMap,
    /// Keys of the file that are not part of the encoder and were left out
    /// (a classifier head, a pooler).
    pub ignored: Vec<String>,
    /// What this encoder does differently from the file's own library,
    /// one line each, to be logged (e.g. an attention-pool head not loaded).
    pub notes: Vec<String>,
}

impl LoadedWeights {
    /// Builds a frozen encoder from these weights.
    pub fn build(&self) -> Result<VisionTransformer> {
        let (dtype, device) = crate::layout::dtype_device(&self.weights);
        VisionTransformer::new(
            &self.config,
            VarBuilder::from_tensors(self.weights.clone(), dtype, &device),
        )
    }
}

/// The local path of a weights argument: `hf-hub:org/name[@revision]` is
/// fetched into the Hugging Face cache (see [`crate::io::hub`]), anything else
/// is a path.
pub fn resolve(spec: &str, hub: &crate::io::hub::HubOptions) -> Result<PathBuf> {
    if spec.starts_with(crate::io::hub::HUB_PREFIX) {
        crate::io::hub::fetch(&crate::io::hub::HubModel::parse(spec)?, hub)
    } else {
        Ok(PathBuf::from(spec))
    }
}

/// Loads an encoder from a timm folder, a Hugging Face `IJepaModel` folder,
/// an official `.pth.tar`, or a `.safetensors` file; the layout is detected.
///
/// ```no_run
/// use ijepa_encoder::weights::{load, LoadOptions};
///
/// let loaded = load("checkpoints/vit_huge_patch14_gap_224".as_ref(), &LoadOptions::default())?;
/// let encoder = loaded.build()?;
/// # Ok::<(), ijepa_encoder::EncoderError>(())
/// ```
pub fn load(path: &Path, opts: &LoadOptions) -> Result<LoadedWeights> {
    let mut loaded = if path.is_dir() {
        load_dir(path, opts)?
    } else if !path.exists() {
        return Err(EncoderError::Io {
            path: path.to_path_buf(),
            error: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        });
    } else if is_pickle(path) {
        official::load(path, opts)?
    } else if has_extension(path, "safetensors") {
        let dir = path.parent().unwrap_or(Path::new("."));
        let config = dir.join("config.json");
        match detect_config(&config)? {
            Some(WeightLayout::Hf) => hf::load(path, &config, opts)?,
            Some(_) => timm::load(path, &config, opts)?,
            None => {
                return Err(EncoderError::UnknownLayout {
                    path: path.to_path_buf(),
                    reason: format!(
                        "no {} beside it to say the architecture; put the timm or Hugging Face config.json there",
                        config.display()
                    ),
                })
            }
        }
    } else {
        return Err(EncoderError::UnknownLayout {
            path: path.to_path_buf(),
            reason: "expected a folder, a .safetensors file or an official .pth.tar checkpoint"
                .into(),
        });
    };
    for t in loaded.weights.values_mut() {
        *t = t.to_device(&opts.device)?.to_dtype(opts.dtype)?;
    }
    VisionTransformer::check_weights(&loaded.config, &loaded.weights, &loaded.source)?;
    let bad = non_finite(&loaded.weights)?;
    if !bad.is_empty() {
        return Err(EncoderError::ConfigFile {
            path: loaded.source.clone(),
            reason: format!(
                "{} of its tensors hold NaN or infinite values ({}): the weights are corrupt",
                bad.len(),
                some_names(&bad)
            ),
        });
    }
    Ok(loaded)
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

fn is_pickle(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    name.ends_with(".pth.tar")
        || name.ends_with(".pth")
        || name.ends_with(".pt")
        || name.ends_with(".ckpt")
}

fn load_dir(dir: &Path, opts: &LoadOptions) -> Result<LoadedWeights> {
    let config = dir.join("config.json");
    let weights = dir.join("model.safetensors");
    if let Some(layout) = detect_config(&config)? {
        if !weights.exists() {
            return Err(EncoderError::UnknownLayout {
                path: dir.to_path_buf(),
                reason: "has config.json but no model.safetensors".into(),
            });
        }
        return match layout {
            WeightLayout::Hf => hf::load(&weights, &config, opts),
            _ => timm::load(&weights, &config, opts),
        };
    }
    let pickles: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|error| EncoderError::Io {
            path: dir.to_path_buf(),
            error,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_pickle(p))
        .collect();
    match pickles.as_slice() {
        [one] => official::load(one, opts),
        [] => Err(EncoderError::UnknownLayout {
            path: dir.to_path_buf(),
            reason:
                "no config.json + model.safetensors (timm, Hugging Face) and no .pth.tar checkpoint"
                    .into(),
        }),
        many => Err(EncoderError::UnknownLayout {
            path: dir.to_path_buf(),
            reason: format!(
                "several checkpoints ({}); name the one to load",
                many.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// The layout a `config.json` describes, `None` if there is no such file.
fn detect_config(path: &Path) -> Result<Option<WeightLayout>> {
    if !path.exists() {
        return Ok(None);
    }
    layout_of(&read_json(path)?, path).map(Some)
}

/// The architecture a timm or Hugging Face `config.json` (its text, read
/// from `origin`) describes: the layout, the encoder configuration and how
/// images are prepared (for Hugging Face, before its
/// `preprocessor_config.json` is read).
///
/// # Errors
/// Text that is not JSON, neither layout, or a field that is missing, of the
/// wrong type or not supported (named).
pub fn parse_config(text: &str, origin: &Path) -> Result<(WeightLayout, VitConfig, DataConfig)> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| EncoderError::ConfigFile {
            path: origin.to_path_buf(),
            reason: format!("not valid JSON: {e}"),
        })?;
    Ok(match layout_of(&json, origin)? {
        WeightLayout::Hf => {
            let cfg = hf::config(&json, origin)?;
            (
                WeightLayout::Hf,
                cfg.clone(),
                DataConfig::imagenet(cfg.image_size),
            )
        }
        layout => {
            let (cfg, data) = timm::config(&json, origin)?;
            (layout, cfg, data)
        }
    })
}

fn layout_of(json: &serde_json::Value, path: &Path) -> Result<WeightLayout> {
    if json.get("architecture").is_some_and(|a| a.is_string()) {
        return Ok(WeightLayout::Timm);
    }
    let is_ijepa = json.get("model_type").and_then(|m| m.as_str()) == Some("ijepa")
        || json
            .get("architectures")
            .and_then(|a| a.as_array())
            .is_some_and(|a| {
                a.iter()
                    .any(|s| s.as_str().is_some_and(|s| s.starts_with("IJepa")))
            });
    if is_ijepa {
        return Ok(WeightLayout::Hf);
    }
    Err(EncoderError::ConfigFile {
        path: path.to_path_buf(),
        reason: "neither a timm config (\"architecture\") nor a Hugging Face IJepa config (\"model_type\": \"ijepa\")".into(),
    })
}

/// Optional fields of a JSON object, read with their type checked: an
/// absent (or `null`) field is `None`, a present one of another type is an
/// error naming the file, the field and the value.
pub(crate) struct Fields<'a> {
    file: &'a Path,
    /// Where the fields sit in the file, e.g. `pretrained_cfg.`.
    prefix: &'a str,
    json: &'a serde_json::Value,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(file: &'a Path, prefix: &'a str, json: &'a serde_json::Value) -> Self {
        Self { file, prefix, json }
    }

    fn get(&self, key: &str) -> Option<&'a serde_json::Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    fn bad(&self, key: &str, expected: &str) -> EncoderError {
        EncoderError::ConfigFile {
            path: self.file.to_path_buf(),
            reason: format!(
                "{}{key} = {} is not {expected}",
                self.prefix,
                self.get(key).map_or("null".into(), |v| v.to_string())
            ),
        }
    }

    /// Three finite numbers (a per-channel mean or std); `positive` for a std.
    pub(crate) fn triple(&self, key: &str, positive: bool) -> Result<Option<[f32; 3]>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let expected = if positive {
            "a list of 3 positive numbers"
        } else {
            "a list of 3 numbers"
        };
        let numbers: Option<Vec<f64>> = v
            .as_array()
            .filter(|a| a.len() == 3)
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect());
        match numbers {
            Some(n)
                if n.len() == 3 && n.iter().all(|x| x.is_finite() && (!positive || *x > 0.0)) =>
            {
                Ok(Some([n[0] as f32, n[1] as f32, n[2] as f32]))
            }
            _ => Err(self.bad(key, expected)),
        }
    }

    /// A finite number in `range`.
    pub(crate) fn number(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<f64>,
    ) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64().filter(|x| range.contains(x)) {
                Some(x) => Ok(Some(x)),
                None => Err(self.bad(
                    key,
                    &format!("a number from {} to {}", range.start(), range.end()),
                )),
            },
        }
    }

    /// A non-negative integer.
    pub(crate) fn integer(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.bad(key, "a non-negative integer")),
        }
    }

    /// A string.
    pub(crate) fn string(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.bad(key, "a string")),
        }
    }

    /// A list of non-negative integers.
    pub(crate) fn integers(&self, key: &str) -> Result<Option<Vec<usize>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let list: Option<Vec<usize>> = v
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|n| n as usize)).collect());
        list.map(Some)
            .ok_or_else(|| self.bad(key, "a list of non-negative integers"))
    }
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|error| EncoderError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    serde_json::from_str(&text).map_err(|e| EncoderError::ConfigFile {
        path: path.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })
}

pub(crate) fn read_safetensors(path: &Path) -> Result<WeightMap> {
    let bytes = std::fs::read(path).map_err(|error| EncoderError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    parse_safetensors(&bytes, path)
}

/// The tensors of a `.safetensors` file's bytes (read from `origin`), on
/// the CPU.
///
/// # Errors
/// A header or data that is not valid safetensors, named with `origin`.
pub fn parse_safetensors(bytes: &[u8], origin: &Path) -> Result<WeightMap> {
    candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| {
        EncoderError::ConfigFile {
            path: origin.to_path_buf(),
            reason: format!("cannot read safetensors: {e}"),
        }
    })
}

/// A state-dict key without the `module.` prefix that PyTorch's
/// `DistributedDataParallel` puts on every parameter (the official I-JEPA
/// checkpoints have it): the one place it is removed.
pub fn without_ddp_prefix(key: &str) -> &str {
    key.strip_prefix("module.").unwrap_or(key)
}

/// The tensors of a PyTorch checkpoint (`torch.save`'s zip format, read
/// from `origin`): those of the saved dictionary's entry `key`, or of the
/// whole object (a bare state dict) when `None`, on the CPU. Read as data;
/// no code in the file runs.
///
/// # Errors
/// Not a PyTorch zip checkpoint (a legacy file is named as such), a
/// malformed pickle, no entry `key` (the entries there are listed), or a
/// storage that does not hold its tensors.
pub fn read_pytorch(
    file: impl std::io::Read + std::io::Seek,
    key: Option<&str>,
    origin: &Path,
) -> Result<Vec<(String, candle_core::Tensor)>> {
    crate::io::torch::read_tensors(file, key).map_err(|reason| EncoderError::UnknownLayout {
        path: origin.to_path_buf(),
        reason,
    })
}

/// Names of the tensors of `weights` holding a NaN or an infinity, sorted.
///
/// # Errors
/// A tensor error.
pub fn non_finite(weights: &WeightMap) -> Result<Vec<String>> {
    let mut bad = vec![];
    for (name, t) in weights {
        // x·0 is 0 for every finite x and NaN otherwise.
        let probe = (t.to_dtype(DType::F32)? * 0.0)?
            .sum_all()?
            .to_scalar::<f32>()?;
        if !probe.is_finite() {
            bad.push(name.clone());
        }
    }
    bad.sort();
    Ok(bad)
}

/// A one-line list of at most a few names, with the count of the rest.
pub fn some_names(names: &[String]) -> String {
    match names.len() {
        0..=4 => names.join(", "),
        n => format!("{} and {} more", names[..4].join(", "), n - 4),
    }
}

/// Removes keys that are not part of the encoder (classifier heads, poolers)
/// and returns them, sorted.
pub(crate) fn drop_non_encoder(weights: &mut WeightMap, prefixes: &[&str]) -> Vec<String> {
    let mut dropped: Vec<String> = weights
        .keys()
        .filter(|k| prefixes.iter().any(|p| k.starts_with(p)))
        .cloned()
        .collect();
    for k in &dropped {
        weights.remove(k);
    }
    dropped.sort();
    dropped
}
