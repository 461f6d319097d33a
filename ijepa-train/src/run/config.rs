//! The configuration of a training run: one serde struct tree, TOML on disk.
//!
//! Every field has a default, so a file names only what it changes; unknown
//! keys are errors. [`TrainConfig::default`] is the built-in demonstration
//! run (a small ViT on the synthetic garments, about 10 minutes on two CPU
//! cores); the paper's values are given beside each field, and
//! [`crate::run::official`] maps the official facebookresearch/ijepa YAML files
//! onto this tree.
//!
//! ```
//! use ijepa_train::run::config::TrainConfig;
//!
//! let mut cfg = TrainConfig::from_toml_str("[optim]\nepochs = 3\n")?;
//! cfg.set("data.batch_size=16")?;
//! assert_eq!((cfg.optim.epochs, cfg.data.batch_size), (3, 16));
//! assert!(cfg.set("optim.epoch=3").is_err()); // a typo is an error
//! # Ok::<(), ijepa_train::TrainError>(())
//! ```

use std::path::PathBuf;

use ijepa_encoder::registry::{self, Size, TimmArgs};
use ijepa_encoder::VitConfig;
use ijepa_masking::{MaskConfig, MaskSampler};
use serde::{Deserialize, Serialize};

use crate::data::{ColorDistortion, DataError, TrainTransform};
use crate::error::{Result, TrainError};
use crate::model::{IJepaConfig, Recipe};

/// Optional fields in TOML: unset is written `""` (TOML has no null), so a
/// saved configuration reads back exactly, including an override that
/// unsets a field whose default is set.
mod optional {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => v.serialize(s),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        /// Only the empty string.
        struct Unset;
        impl<'de> Deserialize<'de> for Unset {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                match String::deserialize(d)?.as_str() {
                    "" => Ok(Unset),
                    _ => Err(serde::de::Error::custom("not empty")),
                }
            }
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either<T> {
            Unset(Unset),
            Value(T),
        }
        match Either::deserialize(d) {
            Ok(Either::Unset(_)) => Ok(None),
            Ok(Either::Value(v)) => Ok(Some(v)),
            Err(_) => Err(serde::de::Error::custom(
                "expected a value of the field's type, or \"\" for unset",
            )),
        }
    }
}

/// Most images per batch (the paper's global batch is 2,048).
pub const MAX_BATCH: usize = 65_536;
/// Most decoding threads (`data.workers`).
pub const MAX_WORKERS: usize = 256;
/// Most batches prepared ahead (`data.prefetch`).
pub const MAX_PREFETCH: usize = 64;

/// A whole training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Encoder and predictor.
    pub model: ModelSection,
    /// Images and augmentation.
    pub data: DataSection,
    /// Context and target masks ([`MaskConfig`]: the paper's by default).
    pub mask: MaskConfig,
    /// Optimizer and schedules.
    pub optim: OptimSection,
    /// Run directory, seed, checkpoints, logging.
    pub run: RunSection,
    /// The online k-NN probe (off by default).
    pub probe: ProbeSection,
}

/// A k-NN probe of the target encoder every few steps, logged in
/// `metrics.csv` (column `knn_top1`), as stable-pretraining's online probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeSection {
    /// Probe every this many optimizer steps; 0: never (default).
    pub every: u64,
    /// Labelled folder (one sub-folder per class) the neighbours come from.
    /// Unset while pretraining on the synthetic shapes: held-out shapes.
    #[serde(with = "optional")]
    pub train: Option<PathBuf>,
    /// Labelled folder classified, with the same class folders.
    #[serde(with = "optional")]
    pub val: Option<PathBuf>,
    /// At most this many images of each folder, spread over its classes.
    pub max_images: usize,
    /// Probe the learned encoders once the run ends (`ijepa-cli pretrain`
    /// on the synthetic shapes; `--no-probe` sets it false, and a resumed
    /// run keeps it).
    pub at_end: bool,
}

impl Default for ProbeSection {
    fn default() -> Self {
        Self {
            every: 0,
            train: None,
            val: None,
            max_images: 2000,
            at_end: true,
        }
    }
}

/// The encoder and predictor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// The encoder: an architecture timm registers (see
    /// `ijepa_encoder::registry`), e.g. `vit_huge_patch14_gap_224` as in
    /// the paper. Default `vit_tiny_patch16_224`, shrunk by `args`.
    pub name: String,
    /// timm's keyword arguments over the architecture's, as
    /// `timm.create_model(name, **args)` and a `config.json`'s `model_args`
    /// take them (`patch_size`, `img_size`, `embed_dim`, `depth`,
    /// `num_heads`, `class_token`, `global_pool`, …). Default: the
    /// demonstration ViT, 128 wide and 4 deep at 36 px / patch 4 (a 9 × 9
    /// grid), without class token, average-pooled, final norm on every token
    /// as the official I-JEPA encoders.
    pub args: TimmArgs,
    /// `official` (the paper's masks and predictor, default) or `seed`
    /// (stable-pretraining's variant).
    pub recipe: Recipe,
    /// Predictor width; unset: 384 as in the paper, but never wider than the
    /// encoder.
    #[serde(with = "optional")]
    pub predictor_embed_dim: Option<usize>,
    /// Predictor depth; unset: half the encoder depth, at least 2 and at
    /// most 12 (the paper: 12 for ViT-H/14, 16 for ViT-g/16).
    #[serde(with = "optional")]
    pub predictor_depth: Option<usize>,
    /// Weights a new run starts from instead of random ones (see
    /// [`crate::run::init`]): a timm or Hugging Face folder, a `.safetensors`
    /// file, `hf-hub:org/name[@revision]`, an official `.pth.tar`, an
    /// ijepa-rs run or checkpoint. Their architecture must be `name` with
    /// `args`. Unused on resume (the checkpoint is the state).
    #[serde(with = "optional")]
    pub init: Option<String>,
    /// Start from `name`'s default pretrained weights on the hub (as
    /// `timm.create_model(name, pretrained=True)`; the seed's
    /// `IJEPA(name, pretrained=True)`): `init = "hf-hub:timm/{name}.{tag}"`.
    pub pretrained: bool,
}

impl ModelSection {
    /// The weights a new run starts from: `init`, or with `pretrained` the
    /// architecture's default pretrained weights on the Hugging Face hub
    /// (`hf-hub:timm/{architecture}.{tag}`, as `timm.create_model(model,
    /// pretrained=True)` picks them); `None` for random ones.
    ///
    /// # Errors
    /// Both `init` and `pretrained` set, or `pretrained` for an architecture
    /// without pretrained weights.
    pub fn init_spec(&self) -> Result<Option<String>> {
        match (&self.init, self.pretrained) {
            (Some(init), true) => Err(TrainError::Config(format!(
                "model.init = {init:?} and model.pretrained = true name two starting points: keep one"
            ))),
            (Some(init), false) => Ok(Some(init.clone())),
            (None, true) => Ok(Some(format!(
                "hf-hub:{}",
                ijepa_encoder::registry::pretrained_id(&self.name)?
            ))),
            (None, false) => Ok(None),
        }
    }
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            name: "vit_tiny_patch16_224".into(),
            args: TimmArgs {
                img_size: Some(Size::Square(36)),
                patch_size: Some(Size::Square(4)),
                embed_dim: Some(128),
                depth: Some(4),
                num_heads: Some(4),
                ..TimmArgs::gap()
            },
            recipe: Recipe::Official,
            predictor_embed_dim: None,
            predictor_depth: None,
            init: None,
            pretrained: false,
        }
    }
}

/// Images and their augmentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Image folder (any nesting; `.jpg`/`.jpeg`/`.png`; sub-folder names
    /// are class labels for evaluation), or tar shards in the WebDataset
    /// layout: a brace pattern (`shards/train-{000000..001281}.tar`), one
    /// `.tar`, or a list file of shard paths ([`crate::data::TarShards`]).
    /// Unset: the built-in synthetic shapes.
    #[serde(with = "optional")]
    pub path: Option<PathBuf>,
    /// Number of synthetic images when `path` is unset.
    pub synthetic_images: usize,
    /// Images per optimizer step (the paper: 2048 over 16+ GPUs); at most
    /// 65,536.
    pub batch_size: usize,
    /// RandomResizedCrop area fraction (the paper: 0.3 – 1.0).
    pub crop_scale: (f64, f64),
    /// RandomResizedCrop aspect ratio (torchvision's 3/4 – 4/3).
    pub crop_ratio: (f64, f64),
    /// Random horizontal flip (off in the paper).
    pub horizontal_flip: bool,
    /// The official colour distortion after the crop and flip (off in the
    /// paper's configs): `ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)` with
    /// probability 0.8, then grey with probability 0.2
    /// ([`crate::data::ColorDistortion`]).
    pub color_distortion: bool,
    /// The colour distortion's strength `s`, 0 to 2.5 (the official
    /// `color_jitter_strength`).
    pub color_jitter_strength: f64,
    /// The official Gaussian blur after the colour distortion (off in the
    /// paper's configs): probability 0.5, radius uniform on 0.1 – 2
    /// ([`crate::data::RandomBlur`]).
    pub gaussian_blur: bool,
    /// Normalisation mean (ImageNet's).
    pub mean: [f32; 3],
    /// Normalisation standard deviation (ImageNet's).
    pub std: [f32; 3],
    /// Decoding threads; 0: one per core; at most 256.
    pub workers: usize,
    /// Batches prepared ahead of the training step (bounds memory); 1 to 64.
    pub prefetch: usize,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            path: None,
            synthetic_images: 8192,
            batch_size: 32,
            crop_scale: (0.3, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            horizontal_flip: false,
            color_distortion: false,
            color_jitter_strength: 1.0,
            gaussian_blur: false,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            workers: 0,
            prefetch: 2,
        }
    }
}

impl DataSection {
    /// The training transform of these settings, cropping to `size`
    /// `(height, width)`.
    ///
    /// # Errors
    /// A setting [`TrainTransform`] or [`ColorDistortion`] refuses.
    pub fn transform(&self, size: (usize, usize)) -> Result<TrainTransform> {
        let mut t = TrainTransform::new(
            size,
            self.crop_scale,
            self.crop_ratio,
            self.horizontal_flip,
            self.mean,
            self.std,
        )?;
        if self.color_distortion {
            t = t.with_color_distortion(ColorDistortion::new(self.color_jitter_strength)?);
        }
        if self.gaussian_blur {
            t = t.with_blur();
        }
        Ok(t)
    }
}

/// AdamW and the learning-rate, weight-decay and EMA schedules of the
/// official recipe (see [`crate::schedule`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    /// Passes over the data (default 6; the paper: 300 for ViT-H/14).
    pub epochs: u64,
    /// Epochs of linear learning-rate warm-up (default 1; the paper: 40).
    pub warmup_epochs: f64,
    /// Learning rate at the start of the warm-up (default 5e-5; the paper:
    /// 2e-4 at batch 2,048).
    pub start_lr: f64,
    /// Peak learning rate (default 1.5e-4, for batch 32; the paper: 1e-3 at
    /// batch 2,048).
    pub lr: f64,
    /// Learning rate at the end (1e-6).
    pub final_lr: f64,
    /// Weight decay at the start (0.04).
    pub weight_decay: f64,
    /// Weight decay at the end (0.4).
    pub final_weight_decay: f64,
    /// EMA momentum of the teacher, start and end (0.996 → 1.0).
    pub ema: (f64, f64),
    /// Stretches every schedule by this factor (1.0).
    pub ipe_scale: f64,
    /// Clip the global gradient norm to this value (off, as in the paper).
    #[serde(with = "optional")]
    pub grad_clip: Option<f64>,
    /// Batches whose gradients are summed per optimizer step (1: off).
    pub accumulate: usize,
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            epochs: 6,
            warmup_epochs: 1.0,
            start_lr: 5e-5,
            lr: 1.5e-4,
            final_lr: 1e-6,
            weight_decay: 0.04,
            final_weight_decay: 0.4,
            ema: crate::schedule::MOMENTUM,
            ipe_scale: 1.0,
            grad_clip: None,
            accumulate: 1,
        }
    }
}

/// Where and how the run is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// Run directory: config, metrics, plot, checkpoints.
    pub out: PathBuf,
    /// Seed of the weights, the data order, the augmentation and the masks.
    pub seed: u64,
    /// Checkpoint every this many optimizer steps; 0: at the end of every
    /// epoch. A checkpoint is always written at the end.
    pub checkpoint_every: u64,
    /// Checkpoints kept (the newest; `latest` names the newest).
    pub keep_checkpoints: usize,
    /// Log a line every this many steps.
    pub log_every: u64,
    /// Stop after this many optimizer steps in all (the schedules still
    /// span every epoch); unset: run every epoch.
    #[serde(with = "optional")]
    pub max_steps: Option<u64>,
    /// `cpu`, `cuda` (each process its local rank's GPU) or `cuda:N`
    /// (needs the `cuda` feature).
    pub device: String,
    /// `f32`, or `bf16` (the official configs' `use_bfloat16`): PyTorch's
    /// bf16 autocast on CUDA (`ijepa_encoder::precision`); a CPU run stays
    /// f32 and says so, as the official code's CUDA autocast does there.
    pub precision: String,
    /// Continue from the run directory's latest checkpoint.
    pub resume: bool,
    /// An official facebookresearch/ijepa training checkpoint (`.pth.tar`,
    /// as its `train.py` saves them) whose run this one continues: its
    /// encoder, target encoder, predictor, AdamW moments and step, from the
    /// epoch after the one it saved ([`crate::run::official_checkpoint`]). Read
    /// only while the run directory has no checkpoint of its own; once it
    /// has, `resume` continues from that.
    #[serde(with = "optional")]
    pub resume_from: Option<PathBuf>,
}

impl Default for RunSection {
    fn default() -> Self {
        Self {
            out: PathBuf::from("runs/ijepa"),
            seed: 0,
            checkpoint_every: 0,
            keep_checkpoints: 3,
            log_every: 10,
            max_steps: None,
            device: "cpu".into(),
            precision: "f32".into(),
            resume: false,
            resume_from: None,
        }
    }
}

impl TrainConfig {
    /// Parses TOML; missing fields take their defaults.
    ///
    /// # Errors
    /// Syntax errors, unknown keys and wrong types, with their location.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        Ok(Self::from_toml_noting(text)?.0)
    }

    /// [`TrainConfig::from_toml_str`], with a note when the text is an
    /// ijepa-rs 0.1 configuration (its model section is translated).
    pub(crate) fn from_toml_noting(text: &str) -> Result<(Self, Option<String>)> {
        let bad = |e: toml::de::Error| TrainError::Config(e.to_string());
        let mut table: toml::Table = toml::from_str(text).map_err(bad)?;
        let note = match table.get_mut("model").and_then(toml::Value::as_table_mut) {
            Some(model) => crate::run::legacy::upgrade_model(model)?,
            None => None,
        };
        Ok((table.try_into().map_err(bad)?, note))
    }

    /// A configuration from a JSON value (a checkpoint's `state.json`),
    /// an ijepa-rs 0.1 one translated as [`TrainConfig::from_toml_str`] does.
    ///
    /// # Errors
    /// A value that is not a configuration.
    pub fn from_json(value: serde_json::Value) -> Result<Self> {
        let text = toml::to_string(
            &toml::Value::try_from(value).map_err(|e| TrainError::Config(e.to_string()))?,
        )
        .map_err(|e| TrainError::Config(e.to_string()))?;
        Self::from_toml_str(&text)
    }

    /// The configuration as TOML (every field, defaults included).
    ///
    /// # Errors
    /// A path that is not valid UTF-8 (TOML holds UTF-8 text only; see
    /// [`TrainConfig::validate`]).
    pub fn to_toml(&self) -> Result<String> {
        self.check_paths()?;
        toml::to_string(self).map_err(|e| TrainError::Config(format!("cannot write as TOML: {e}")))
    }

    /// Every path field is UTF-8, so `config.toml` can hold it.
    fn check_paths(&self) -> Result<()> {
        let paths = [
            ("data.path", self.data.path.as_deref()),
            ("probe.train", self.probe.train.as_deref()),
            ("probe.val", self.probe.val.as_deref()),
            ("run.out", Some(self.run.out.as_path())),
            ("run.resume_from", self.run.resume_from.as_deref()),
        ];
        for (name, path) in paths {
            if let Some(p) = path.filter(|p| p.to_str().is_none()) {
                return Err(TrainError::Config(format!(
                    "{name} = {p:?} is not valid UTF-8, and a run's config.toml can hold UTF-8 paths only: \
                     rename it, or reach it through a symbolic link with a UTF-8 name"
                )));
            }
        }
        Ok(())
    }

    /// Applies one `section.key=value` override; `value` is read as TOML
    /// (`8`, `0.5`, `true`, `[0.3, 1.0]`, `"text"`) and falls back to a
    /// string. An empty value (`optim.lr=`) restores the field's default;
    /// `""` (`'model.predictor_depth=""'` in a shell) unsets an optional
    /// field, as `predictor_depth = ""` does in a file.
    ///
    /// # Errors
    /// No `=`, a key that does not exist, or a value of the wrong type.
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        let (key, raw) = assignment.split_once('=').ok_or_else(|| {
            TrainError::Config(format!(
                "override {assignment:?} is not of the form key=value"
            ))
        })?;
        let key = key.trim();
        self.check_paths()?;
        let to_table = |c: &TrainConfig| {
            toml::Table::try_from(c)
                .map_err(|e| TrainError::Config(format!("cannot serialise the configuration: {e}")))
        };
        let mut tree = to_table(self)?;
        let mut parts = key.split('.').collect::<Vec<_>>();
        let leaf = parts.pop().filter(|l| !l.is_empty()).ok_or_else(|| {
            TrainError::Config(format!("override {assignment:?} has an empty key"))
        })?;
        let value = if raw.trim().is_empty() {
            let defaults = to_table(&TrainConfig::default())?;
            let mut node = Some(&defaults);
            for part in &parts {
                node = node
                    .and_then(|t| t.get(*part))
                    .and_then(toml::Value::as_table);
            }
            node.and_then(|t| t.get(leaf)).cloned().ok_or_else(|| {
                TrainError::Config(format!("{key}: no such setting (see --print-config)"))
            })?
        } else {
            toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()))
        };
        let mut table = &mut tree;
        for part in parts {
            table = table
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| TrainError::Config(format!("{key}: {part} is not a section")))?;
        }
        table.insert(leaf.to_string(), value);
        *self = tree
            .try_into()
            .map_err(|e: toml::de::Error| TrainError::Config(format!("override {key}: {e}")))?;
        Ok(())
    }

    /// The encoder architecture: what timm builds for `model.name` with
    /// `model.args`.
    ///
    /// # Errors
    /// An unknown name, an argument of the wrong type, or a feature
    /// ijepa-rs does not implement (named).
    pub fn encoder(&self) -> Result<VitConfig> {
        Ok(registry::resolve(&self.model.name, &self.model.args)?.config)
    }

    /// The model configuration (encoder, predictor, EMA, recipe, seed).
    ///
    /// # Errors
    /// See [`TrainConfig::validate`].
    pub fn ijepa(&self) -> Result<IJepaConfig> {
        let mut cfg = IJepaConfig::new(self.encoder()?);
        let enc = &cfg.encoder;
        cfg.predictor_embed_dim = self.model.predictor_embed_dim.unwrap_or_else(|| {
            // The paper's 384, never wider than the encoder, divisible by its heads.
            let d = 384.min(enc.embed_dim);
            d - d % enc.num_heads
        });
        cfg.predictor_depth = self
            .model
            .predictor_depth
            .unwrap_or((enc.depth / 2).clamp(2, 12));
        cfg.mask = self.mask.clone();
        cfg.ema_decay_start = self.optim.ema.0;
        cfg.ema_decay_end = self.optim.ema.1;
        cfg.recipe = self.model.recipe;
        cfg.seed = self.run.seed;
        cfg.predictor().validate()?;
        Ok(cfg)
    }

    /// The mask sampler of this run.
    ///
    /// # Errors
    /// A mask setting the samplers reject (e.g. blocks too small for
    /// `min_keep` on this grid).
    pub fn sampler(&self) -> Result<Box<dyn MaskSampler>> {
        self.ijepa()?
            .sampler()
            .map_err(|e| TrainError::Config(format!("mask: {e}")))
    }

    /// Checks every value and their consistency (model, masks, schedules,
    /// data) without touching the disk.
    ///
    /// # Errors
    /// The first field out of range, named with its value and what is
    /// expected.
    pub fn validate(&self) -> Result<()> {
        self.check_paths()?;
        self.ijepa()?;
        self.sampler()?;
        let init = self.model.init_spec()?;
        let bad = |msg: String| Err(TrainError::Config(msg));
        if let (Some(from), Some(init)) = (&self.run.resume_from, init) {
            return bad(format!(
                "run.resume_from = {:?} and model.init = {init:?} name two starting points: keep one \
                 (an official checkpoint continues its run through resume_from, weights alone start one through init)",
                from.display().to_string()
            ));
        }
        // A configuration is kept as TOML, whose integers are i64.
        let r = &self.run;
        for (name, value) in [
            ("run.seed", Some(r.seed)),
            ("run.max_steps", r.max_steps),
            ("run.checkpoint_every", Some(r.checkpoint_every)),
            ("run.log_every", Some(r.log_every)),
        ] {
            if let Some(v) = value.filter(|&v| v > i64::MAX as u64) {
                return bad(format!(
                    "{name} = {v} is out of range: 0 to {} (a TOML integer)",
                    i64::MAX
                ));
            }
        }
        let d = &self.data;
        for (name, value, max) in [
            ("data.batch_size", d.batch_size, MAX_BATCH),
            ("data.prefetch", d.prefetch, MAX_PREFETCH),
        ] {
            if !(1..=max).contains(&value) {
                return bad(format!("{name} = {value} is out of range: 1 to {max}"));
            }
        }
        if d.workers > MAX_WORKERS {
            return bad(format!(
                "data.workers = {} is out of range: 0 (one per core) to {MAX_WORKERS}",
                d.workers
            ));
        }
        if d.path.is_none() && d.synthetic_images < d.batch_size {
            return bad(format!(
                "data.synthetic_images ({}) must be at least data.batch_size ({})",
                d.synthetic_images, d.batch_size
            ));
        }
        let (lo, hi) = d.crop_scale;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return bad(format!(
                "data.crop_scale {:?} must satisfy 0 < lo <= hi <= 1",
                d.crop_scale
            ));
        }
        let (lo, hi) = d.crop_ratio;
        if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
            return bad(format!(
                "data.crop_ratio {:?} must satisfy 0 < lo <= hi",
                d.crop_ratio
            ));
        }
        if d.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return bad(format!("data.std {:?} must be positive", d.std));
        }
        if d.color_distortion {
            if let Err(DataError::InvalidTransform(why)) =
                ColorDistortion::new(d.color_jitter_strength)
            {
                return bad(format!("data.{why}"));
            }
        }
        let o = &self.optim;
        if o.epochs == 0 {
            return bad("optim.epochs must be at least 1".into());
        }
        for (name, v) in [
            ("optim.start_lr", o.start_lr),
            ("optim.lr", o.lr),
            ("optim.final_lr", o.final_lr),
            ("optim.weight_decay", o.weight_decay),
            ("optim.final_weight_decay", o.final_weight_decay),
            ("optim.warmup_epochs", o.warmup_epochs),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{name} = {v} must be finite and >= 0"));
            }
        }
        if !(o.ipe_scale.is_finite() && o.ipe_scale > 0.0) {
            return bad(format!("optim.ipe_scale = {} must be > 0", o.ipe_scale));
        }
        let (m0, m1) = o.ema;
        if !((0.0..=1.0).contains(&m0) && (0.0..=1.0).contains(&m1)) {
            return bad(format!("optim.ema {:?} must lie in [0, 1]", o.ema));
        }
        if let Some(c) = o.grad_clip {
            if !(c.is_finite() && c > 0.0) {
                return bad(format!("optim.grad_clip = {c} must be > 0"));
            }
        }
        if o.accumulate == 0 {
            return bad("optim.accumulate must be at least 1".into());
        }
        let p = &self.probe;
        if p.every > 0 && self.data.path.is_some() && (p.train.is_none() || p.val.is_none()) {
            return bad(
                "probe.every > 0 needs probe.train and probe.val (labelled folders) when pretraining on data.path"
                    .into(),
            );
        }
        if p.every > 0 && p.max_images < 2 {
            return bad(format!(
                "probe.max_images = {} must be at least 2",
                p.max_images
            ));
        }
        let r = &self.run;
        if r.keep_checkpoints == 0 {
            return bad("run.keep_checkpoints must be at least 1".into());
        }
        if let Err(e) = r.device.parse::<ijepa_encoder::device::DeviceSpec>() {
            return bad(format!("run.device: {e}"));
        }
        if let Err(e) = r.precision.parse::<ijepa_encoder::precision::Precision>() {
            return bad(format!("run.precision: {e}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_and_ema_defaults_have_one_home() {
        // The [mask] section is ijepa-masking's MaskConfig itself, and the
        // model's configuration takes it and the EMA momentum as they are.
        let cfg = TrainConfig::default();
        assert_eq!(cfg.mask, MaskConfig::default());
        assert_eq!(cfg.optim.ema, crate::schedule::MOMENTUM);
        let model = cfg.ijepa().unwrap();
        assert_eq!(model.mask, MaskConfig::default());
        assert_eq!(
            (model.ema_decay_start, model.ema_decay_end),
            crate::schedule::MOMENTUM
        );
        let bare = IJepaConfig::new(model.encoder.clone());
        assert_eq!(bare.mask, MaskConfig::default());
        assert_eq!(
            (bare.ema_decay_start, bare.ema_decay_end),
            crate::schedule::MOMENTUM
        );
    }

    #[test]
    fn the_default_is_valid_and_round_trips_through_toml() {
        let cfg = TrainConfig::default();
        cfg.validate().unwrap();
        assert_eq!(
            TrainConfig::from_toml_str(&cfg.to_toml().unwrap()).unwrap(),
            cfg
        );
    }

    #[test]
    fn overrides_take_toml_values_and_reject_unknown_keys() {
        let mut cfg = TrainConfig::default();
        cfg.set("optim.lr=0.5").unwrap();
        cfg.set("data.crop_scale=[0.5, 1.0]").unwrap();
        cfg.set("data.path=/tmp/images").unwrap();
        cfg.set("model.recipe=seed").unwrap();
        cfg.set("run.max_steps=7").unwrap();
        cfg.set("model.predictor_depth=3").unwrap();
        cfg.set("model.predictor_depth=\"\"").unwrap();
        assert_eq!(cfg.model.predictor_depth, None);
        cfg.set("model.args.qkv_bias=false").unwrap();
        cfg.set("model.args.img_size=[48, 32]").unwrap();
        assert_eq!(cfg.model.args.qkv_bias, Some(false));
        assert_eq!(cfg.model.args.img_size, Some(Size::Pair([48, 32])));
        // Unset fields read back unset (the saved config of a resumed run).
        assert_eq!(
            TrainConfig::from_toml_str(&cfg.to_toml().unwrap()).unwrap(),
            cfg
        );
        assert_eq!(cfg.optim.lr, 0.5);
        assert_eq!(cfg.data.crop_scale, (0.5, 1.0));
        assert_eq!(cfg.data.path, Some(PathBuf::from("/tmp/images")));
        assert_eq!(cfg.model.recipe, Recipe::Seed);
        assert_eq!(cfg.run.max_steps, Some(7));
        for bad in [
            "optim.lrr=1",
            "nosuch.key=1",
            "optim.lr=fast",
            "optim.lr",
            "optim.lr.x=1",
        ] {
            let err = cfg.set(bad).unwrap_err().to_string();
            assert!(
                err.contains("optim") || err.contains("nosuch") || err.contains("key=value"),
                "{bad}: {err}"
            );
        }
        let err = TrainConfig::from_toml_str("[optim]\nlearning_rate = 1\n").unwrap_err();
        assert!(err.to_string().contains("learning_rate"), "{err}");
    }

    #[test]
    fn an_empty_value_restores_the_default_and_quotes_unset() {
        let mut cfg = TrainConfig::default();
        cfg.set("optim.lr=0.5").unwrap();
        cfg.set("model.args.depth=9").unwrap();
        cfg.set("optim.lr=").unwrap();
        cfg.set("model.args.depth=").unwrap();
        assert_eq!(cfg, TrainConfig::default());
        cfg.set("model.predictor_depth=\"\"").unwrap();
        assert_eq!(cfg.model.predictor_depth, None);
        let err = cfg.set("optim.nosuch=").unwrap_err().to_string();
        assert!(err.contains("optim.nosuch: no such setting"), "{err}");
    }

    #[test]
    fn paths_that_toml_cannot_hold_are_refused_not_a_panic() {
        use std::os::unix::ffi::OsStrExt;
        let bad = PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/\xff"));
        let mut cfg = TrainConfig::default();
        cfg.data.path = Some(bad);
        for err in [
            cfg.validate().unwrap_err(),
            cfg.to_toml().unwrap_err(),
            cfg.set("optim.lr=1").unwrap_err(),
        ] {
            let err = err.to_string();
            assert!(
                err.contains("data.path") && err.contains("not valid UTF-8"),
                "{err}"
            );
        }
    }

    #[test]
    fn validation_names_the_field() {
        for (set, field) in [
            ("data.batch_size=0", "data.batch_size"),
            (
                "data.batch_size=100000000",
                "data.batch_size = 100000000 is out of range",
            ),
            (
                "data.workers=100000",
                "data.workers = 100000 is out of range",
            ),
            ("data.prefetch=1000", "data.prefetch = 1000 is out of range"),
            (
                "mask.num_targets=99999",
                "num_targets = 99999 is invalid: expected 1 to 64",
            ),
            ("model.args.img_size=100000", "at most 16384"),
            // Found by the fuzzer: 4·d overflowed.
            (
                "model.predictor_embed_dim=4611686018427387904",
                "predictor_embed_dim = 4611686018427387904 is out of range",
            ),
            (
                "model.args.embed_dim=4611686018427387904",
                "embed_dim = 4611686018427387904 is out of range",
            ),
            (
                "model.args.depth=100000",
                "depth = 100000 is out of range: 1 to 1024",
            ),
            // An architecture timm does not register, and one we cannot build.
            (
                "model.name=\"vit_tiny_patch4_gap_36\"",
                "registers no such Vision Transformer",
            ),
            (
                "model.name=\"aimv2_large_patch14_224\"",
                "does not implement",
            ),
            ("data.crop_scale=[0.0, 1.0]", "data.crop_scale"),
            ("optim.lr=-1.0", "optim.lr"),
            ("optim.ema=[0.9, 1.5]", "optim.ema"),
            ("run.device=\"tpu\"", "run.device"),
            ("model.name=\"resnet50\"", "resnet50"),
            ("mask.target_scale=[0.01, 0.02]", "mask"),
        ] {
            let mut cfg = TrainConfig::default();
            cfg.set(set).unwrap();
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{set}: {err}");
        }
    }

    #[test]
    fn automatic_predictor_follows_the_encoder() {
        let cfg = TrainConfig::default();
        let m = cfg.ijepa().unwrap();
        assert_eq!((m.predictor_embed_dim, m.predictor_depth), (128, 2));
        let mut big = TrainConfig::default();
        big.set("model.name=\"vit_huge_patch14_gap_224\"").unwrap();
        big.set("model.args={}").unwrap();
        let m = big.ijepa().unwrap();
        assert_eq!((m.predictor_embed_dim, m.predictor_depth), (384, 12));
    }
}
