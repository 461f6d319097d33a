//! The I-JEPA model: student encoder, EMA teacher and predictor, with an
//! API that mirrors stable-pretraining's `IJEPA`.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use candle_core::{Device, Tensor, Var};
use ijepa_encoder::init::{init_weights, InitOptions, Scheme};
use ijepa_encoder::precision::{autocast, Precision};
use ijepa_encoder::{TokenEncoder, VisionTransformer, VitConfig, WeightMap};
use ijepa_masking::{Grid, MaskBatch, MaskConfig, MaskSampler, SamplerKind};
use ijepa_predictor::{Predictor, PredictorConfig};

use crate::error::{Result, TrainError};
use crate::jepa::Jepa;
use crate::loss::Objective;
use crate::schedule::Momentum;

/// Which I-JEPA recipe: masks, predictor and initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recipe {
    /// The paper's, as facebookresearch/ijepa runs it.
    #[default]
    Official,
    /// stable-pretraining's `IJEPA`.
    Seed,
}

impl Recipe {
    /// The mask sampler of this recipe (the one place a recipe picks it).
    pub fn sampler_kind(self) -> SamplerKind {
        match self {
            Self::Official => SamplerKind::MultiBlock,
            Self::Seed => SamplerKind::Seed,
        }
    }
}

/// Which encoder provides [`IJepaOutput::embedding`] in training mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmbeddingSource {
    /// The EMA teacher (default).
    #[default]
    Teacher,
    /// The student.
    Student,
}

impl FromStr for EmbeddingSource {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "teacher" => Ok(Self::Teacher),
            "student" => Ok(Self::Student),
            other => Err(TrainError::Config(format!(
                "embedding_source must be 'teacher' or 'student', got '{other}'"
            ))),
        }
    }
}

/// Hyper-parameters, named and defaulted as stable-pretraining's `IJEPA`.
#[derive(Debug, Clone, PartialEq)]
pub struct IJepaConfig {
    /// The encoder.
    pub encoder: VitConfig,
    /// Predictor width `d`.
    pub predictor_embed_dim: usize,
    /// Predictor blocks.
    pub predictor_depth: usize,
    /// The masks (the paper's by default).
    pub mask: MaskConfig,
    /// EMA momentum at the start of training.
    pub ema_decay_start: f64,
    /// EMA momentum at the end of training.
    pub ema_decay_end: f64,
    /// Recipe.
    pub recipe: Recipe,
    /// Seed of the initial weights and of every mask.
    pub seed: u64,
}

impl IJepaConfig {
    /// Defaults for the timm model `name` (e.g. `vit_base_patch16_224`).
    pub fn from_timm_name(name: &str) -> Result<Self> {
        Ok(Self::new(VitConfig::from_timm_name(name)?))
    }

    /// Defaults around an encoder configuration. The encoder's position
    /// embedding becomes the fixed sin-cos table of the official code.
    pub fn new(mut encoder: VitConfig) -> Self {
        encoder.fixed_pos_embed = true;
        Self {
            encoder,
            predictor_embed_dim: 384,
            predictor_depth: 6,
            mask: MaskConfig::default(),
            ema_decay_start: crate::schedule::MOMENTUM.0,
            ema_decay_end: crate::schedule::MOMENTUM.1,
            recipe: Recipe::Official,
            seed: 0,
        }
    }

    /// The EMA momentum schedule of a run of `epochs` epochs whose
    /// schedules span `span` optimizer steps (unrounded): linear per step
    /// for the official recipe, cosine per epoch for the seed's, from
    /// `ema_decay_start` to `ema_decay_end`.
    pub fn momentum(&self, span: f64, epochs: u64) -> Momentum {
        let (start, end) = (self.ema_decay_start, self.ema_decay_end);
        match self.recipe {
            Recipe::Official => Momentum::PerStep { start, end, span },
            Recipe::Seed => Momentum::PerEpoch { start, end, epochs },
        }
    }

    /// The configuration with what its recipe decides applied: the official
    /// recipe's encoder has the fixed sin-cos table, the seed's a learned
    /// one. Refuses what a recipe's reference cannot do.
    ///
    /// # Errors
    /// A `pre_norm` encoder with the seed recipe (stable-pretraining's
    /// `IJEPA._encode` skips `norm_pre`; we would not reproduce it).
    pub fn checked(mut self) -> Result<Self> {
        self.encoder.fixed_pos_embed = self.recipe == Recipe::Official;
        if self.recipe == Recipe::Seed && self.encoder.pre_norm {
            return Err(TrainError::Config(
                "the seed recipe cannot train a pre_norm encoder (CLIP-style): stable-pretraining's \
                 IJEPA._encode skips norm_pre, which ijepa-rs would not reproduce; use the official recipe"
                    .into(),
            ));
        }
        Ok(self)
    }

    /// How the recipe initialises the encoder.
    pub fn encoder_init(&self) -> InitOptions {
        match self.recipe {
            Recipe::Official => InitOptions {
                seed: self.seed,
                ..InitOptions::default()
            },
            Recipe::Seed => InitOptions {
                seed: self.seed,
                scheme: Scheme::Timm,
                rescale_depth: true,
                sincos_pos_embed: false,
                ..InitOptions::default()
            },
        }
    }

    /// How the recipe initialises the predictor.
    pub fn predictor_init(&self) -> InitOptions {
        match self.recipe {
            Recipe::Official => self.encoder_init(),
            Recipe::Seed => InitOptions {
                seed: self.seed,
                scheme: Scheme::TorchDefault,
                rescale_depth: true,
                ..InitOptions::default()
            },
        }
    }

    /// The predictor this configuration builds.
    pub fn predictor(&self) -> PredictorConfig {
        match self.recipe {
            Recipe::Official => PredictorConfig::official(
                &self.encoder,
                self.predictor_embed_dim,
                self.predictor_depth,
            ),
            Recipe::Seed => PredictorConfig::seed(
                &self.encoder,
                self.predictor_embed_dim,
                self.predictor_depth,
            ),
        }
    }

    /// The mask sampler this configuration uses.
    pub fn sampler(&self) -> Result<Box<dyn MaskSampler>> {
        let (h, w) = self.encoder.grid_size();
        let grid = Grid::new_2d(h, w)?;
        Ok(self
            .mask
            .build(grid, self.recipe.sampler_kind(), self.seed)?)
    }
}

/// What [`IJepa::forward`] returns, as stable-pretraining's `IJEPAOutput`.
#[derive(Debug)]
pub struct IJepaOutput {
    /// Smooth-L1 loss (0 in eval mode).
    pub loss: Tensor,
    /// The patch tokens of the whole image `(B, N, D)` (class and register
    /// tokens are not encoded), for downstream use.
    pub embedding: Tensor,
    /// Predictions `(M·B, K_tgt, D)` (the context tokens in eval mode).
    pub predictions: Tensor,
    /// Targets, shaped as the predictions.
    pub targets: Tensor,
    /// Target patches per image over all masks (0 in eval mode).
    pub num_targets: usize,
    /// Context patches per image (all patches in eval mode).
    pub num_context: usize,
}

/// The I-JEPA model.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use ijepa_train::model::{EmbeddingSource, IJepa, IJepaConfig};
///
/// let mut cfg = IJepaConfig::from_timm_name("vit_tiny_patch16_224")?;
/// cfg.encoder.depth = 2; // keep the example fast
/// cfg.predictor_embed_dim = 96;
/// cfg.predictor_depth = 2;
/// let model = IJepa::new(cfg, &Device::Cpu)?;
/// let images = Tensor::randn(0f32, 1.0, (2, 3, 224, 224), &Device::Cpu)?;
/// let out = model.forward(&images, 0, EmbeddingSource::Teacher)?;
/// let grads = out.loss.backward()?;
/// // Patch tokens only: the class token is not encoded by I-JEPA.
/// assert_eq!(out.embedding.dims(), &[2, 196, 192]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct IJepa {
    config: IJepaConfig,
    /// Our ViT and predictor as the generic parts.
    parts: Jepa<VisionTransformer, Predictor>,
    training: bool,
}

impl IJepa {
    /// A freshly initialised model, as its recipe initialises it; the
    /// teacher starts as an exact copy of the student.
    ///
    /// - official: every Linear and the patch projection truncated-normal
    ///   (0.02), zero biases, the fixed sin-cos position table;
    /// - seed (stable-pretraining): the encoder as timm initialises it (a
    ///   learned position table, truncated-normal Linears, the patch
    ///   convolution at PyTorch's default), the predictor at PyTorch's
    ///   Linear default; both with the depth rescale of `attn.proj` and
    ///   `mlp.fc2` that `IJEPA._fix_init_weight` applies.
    pub fn new(config: IJepaConfig, device: &Device) -> Result<Self> {
        let config = config.checked()?;
        let encoder = init_weights(&config.encoder, &config.encoder_init(), device)?;
        Self::from_encoder(config, encoder)
    }

    /// A model around existing encoder weights (`pretrained`, or an encoder
    /// of another run) and a fresh predictor.
    pub fn from_encoder(config: IJepaConfig, encoder: WeightMap) -> Result<Self> {
        let config = config.checked()?;
        let (_, device) = ijepa_encoder::dtype_device(&encoder);
        let predictor =
            ijepa_predictor::init_weights(&config.predictor(), &config.predictor_init(), &device)?;
        Self::from_weights(config, encoder, predictor)
    }

    /// A model from encoder and predictor weights (teacher = encoder copy).
    pub fn from_weights(
        config: IJepaConfig,
        encoder: WeightMap,
        predictor: WeightMap,
    ) -> Result<Self> {
        let teacher = encoder.clone();
        Self::from_parts(config, encoder, teacher, predictor)
    }

    /// A model from all three parts of a checkpoint: student, teacher and
    /// predictor weights (timm / official predictor names, no prefix).
    ///
    /// # Errors
    /// Weights that do not fit the configuration.
    pub fn from_parts(
        config: IJepaConfig,
        student: WeightMap,
        teacher: WeightMap,
        predictor: WeightMap,
    ) -> Result<Self> {
        let config = config.checked()?;
        // Every missing, unexpected and mis-shaped key at once.
        VisionTransformer::check_weights(&config.encoder, &student, Path::new("<variables>"))?;
        VisionTransformer::check_weights(&config.encoder, &teacher, Path::new("<weights>"))?;
        let sampler: Arc<dyn MaskSampler> = Arc::from(config.sampler()?);
        let frozen = Self::frozen(&config, &student);
        let (encoder, predictor_cfg) = (&config.encoder, config.predictor());
        let parts = Jepa::from_parts(
            sampler,
            student,
            teacher,
            |vb| VisionTransformer::new(encoder, vb),
            predictor,
            |vb| Predictor::new(&predictor_cfg, vb),
        )?
        .with_frozen(frozen);
        Ok(Self {
            config,
            parts,
            training: true,
        })
    }

    /// The encoder variables that never reach the loss: the fixed sin-cos
    /// table; class and register tokens, which I-JEPA does not encode; and
    /// `fc_norm` (timm's `_gap` models), which only the pooled output
    /// applies — and the predictor's fixed table. They keep their initial
    /// values, as in stable-pretraining, where they receive no gradient.
    fn frozen(config: &IJepaConfig, encoder: &WeightMap) -> Vec<String> {
        let fixed_pos = config.encoder.fixed_pos_embed;
        let mut frozen: Vec<String> = encoder
            .keys()
            .filter(|k| match k.as_str() {
                "pos_embed" => fixed_pos,
                "cls_token" | "reg_token" => true,
                k => k.starts_with("fc_norm."),
            })
            .map(|k| format!("encoder.{k}"))
            .collect();
        frozen.extend(Predictor::FIXED.iter().map(|k| format!("predictor.{k}")));
        frozen
    }

    /// The same model (student, teacher, predictor, precision, mode) with
    /// its weights copied to `device`, drawing from the same mask sampler.
    ///
    /// # Errors
    /// A device that cannot take the weights.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        // Copies even on the same device: the teacher is updated in place.
        let moved = |map: WeightMap| -> Result<WeightMap> {
            map.into_iter()
                .map(|(k, t)| Ok((k, t.to_device(device)?.copy()?)))
                .collect()
        };
        let mut model = Self::from_parts(
            self.config.clone(),
            moved(self.student_weights()?)?,
            moved(self.teacher_weights().clone())?,
            moved(self.predictor_weights()?)?,
        )?;
        model.parts.set_precision(self.precision());
        model.parts.set_sampler(self.sampler());
        model.training = self.training;
        Ok(model)
    }

    /// The generic parts: our ViT and predictor in [`Jepa`].
    pub fn parts(&self) -> &Jepa<VisionTransformer, Predictor> {
        &self.parts
    }

    /// A copy of the student's current weights (timm names).
    pub fn student_weights(&self) -> Result<WeightMap> {
        self.parts.student_weights()
    }

    /// A copy of the predictor's current weights (official names).
    pub fn predictor_weights(&self) -> Result<WeightMap> {
        self.parts.predictor_weights()
    }

    /// Replaces the configured mask sampler by any other (random, tube, …
    /// masking): the model is generic over the [`MaskSampler`] seam.
    ///
    /// # Errors
    /// A sampler for another patch grid than the encoder's.
    pub fn with_sampler(mut self, sampler: Box<dyn MaskSampler>) -> Result<Self> {
        let (h, w) = self.config.encoder.grid_size();
        let g = sampler.grid();
        if g.frames() != 1 || g.height() != h || g.width() != w {
            return Err(TrainError::Config(format!(
                "the sampler draws on a {g} grid, the encoder has {h}x{w} patches"
            )));
        }
        self.parts.set_sampler(Arc::from(sampler));
        Ok(self)
    }

    /// The mask sampler [`IJepa::forward`] draws from (shared: a trainer's
    /// loader draws the same masks from it).
    pub fn sampler(&self) -> Arc<dyn MaskSampler> {
        self.parts.sampler()
    }

    /// Runs the forwards at `precision`: [`Precision::Bf16`] is PyTorch's
    /// bf16 autocast (bf16 matrix products over the f32 weights; norms,
    /// softmax and loss in f32), the official `use_bfloat16`.
    pub fn set_precision(&mut self, precision: Precision) {
        self.parts.set_precision(precision);
    }

    /// The precision the forwards run at.
    pub fn precision(&self) -> Precision {
        self.parts.precision()
    }

    /// Training mode (masks, loss).
    pub fn train(&mut self) {
        self.training = true;
    }

    /// Evaluation mode: all patches through the student, zero loss.
    pub fn eval(&mut self) {
        self.training = false;
    }

    /// Patches of the encoder's grid (what mask indices count).
    pub fn num_patches(&self) -> usize {
        let (h, w) = self.config.encoder.grid_size();
        h * w
    }

    /// The configuration.
    pub fn config(&self) -> &IJepaConfig {
        &self.config
    }

    /// The student (context) encoder.
    pub fn student(&self) -> &VisionTransformer {
        self.parts.student()
    }

    /// The EMA teacher (target) encoder.
    pub fn teacher(&self) -> &VisionTransformer {
        self.parts.teacher()
    }

    /// The current value of student tensor `name` (timm names).
    pub fn student_weight(&self, name: &str) -> Option<Tensor> {
        let vars = self
            .parts
            .student_vars()
            .data()
            .lock()
            .expect("VarMap lock");
        vars.get(name).map(|v| v.as_tensor().detach())
    }

    /// The teacher's weights.
    pub fn teacher_weights(&self) -> &WeightMap {
        self.parts.teacher_weights()
    }

    /// The predictor.
    pub fn predictor(&self) -> &Predictor {
        self.parts.predictor()
    }

    /// Every trainable variable — every one that reaches the loss — named
    /// `encoder.*` / `predictor.*`, sorted. Not among them: the fixed
    /// sin-cos tables; class and register tokens, which I-JEPA does not
    /// encode; and `fc_norm` (timm's `_gap` models), which only the pooled
    /// output applies. They keep their initial values, as in
    /// stable-pretraining, where they receive no gradient.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        self.parts.trainable_vars()
    }

    /// Moves the teacher toward the student: `t ← m·t + (1 − m)·s`, in
    /// place (no rebuild, no re-check per step).
    pub fn update_teacher(&mut self, momentum: f64) -> Result<()> {
        self.parts.update_teacher(momentum)
    }

    /// Masks for global batch `batch_index` (from the configured sampler).
    pub fn sample_masks(&self, batch_size: usize, batch_index: u64) -> MaskBatch {
        self.parts.sample_masks(batch_size, batch_index)
    }

    /// One forward: in training mode, masks for `batch_index` are drawn and
    /// the loss computed; in eval mode every patch goes through the student.
    pub fn forward(
        &self,
        images: &Tensor,
        batch_index: u64,
        source: EmbeddingSource,
    ) -> Result<IJepaOutput> {
        if !self.training {
            return self.forward_eval(images);
        }
        let masks = self.sample_masks(images.dim(0)?, batch_index);
        let device = images.device();
        let [context] = masks.contexts.as_slice() else {
            return Err(TrainError::Config(format!(
                "the model takes one context mask per image, the sampler drew {}",
                masks.contexts.len()
            )));
        };
        let to_tensor = |m: &ijepa_masking::IndexBatch| {
            Tensor::from_slice(m.as_flat(), (m.batch_size(), m.len()), device)
        };
        let targets = masks
            .targets
            .iter()
            .map(to_tensor)
            .collect::<candle_core::Result<Vec<_>>>()?;
        self.forward_with_masks(images, &to_tensor(context)?, &targets, source)
    }

    /// The objective on explicit masks — context indices `(B, K_ctx)` and
    /// target masks `(B, K_tgt)` (`u32`) — at the model's precision: what a
    /// training step differentiates ([`crate::step::TrainStep`] calls it).
    ///
    /// # Errors
    /// Masks or images that do not fit the model.
    pub fn objective(
        &self,
        images: &Tensor,
        context_idx: &Tensor,
        targets: &[Tensor],
    ) -> Result<Objective> {
        self.parts.objective(images, context_idx, targets)
    }

    /// One training forward with explicit masks (stable-pretraining's
    /// output around [`IJepa::objective`]): context indices `(B, K_ctx)`
    /// and target masks `(B, K_tgt)` (`u32`).
    pub fn forward_with_masks(
        &self,
        images: &Tensor,
        context_idx: &Tensor,
        targets: &[Tensor],
        source: EmbeddingSource,
    ) -> Result<IJepaOutput> {
        let out = self.objective(images, context_idx, targets)?;
        let embedding = match source {
            EmbeddingSource::Teacher => out.teacher_tokens,
            EmbeddingSource::Student => {
                let _scope = autocast(self.precision());
                self.student().forward_patches(images, None)?
            }
        };
        Ok(IJepaOutput {
            loss: out.loss,
            embedding,
            predictions: out.predictions,
            targets: out.targets,
            num_targets: targets
                .iter()
                .map(|t| t.dim(1))
                .sum::<candle_core::Result<usize>>()?,
            num_context: context_idx.dim(1)?,
        })
    }

    fn forward_eval(&self, images: &Tensor) -> Result<IJepaOutput> {
        let _scope = autocast(self.precision());
        let tokens = self.student().forward_patches(images, None)?.detach();
        Ok(IJepaOutput {
            loss: Tensor::zeros((), tokens.dtype(), tokens.device())?,
            num_context: tokens.dim(1)?,
            predictions: tokens.clone(),
            targets: tokens.clone(),
            embedding: tokens,
            num_targets: 0,
        })
    }
}

impl crate::jepa::Trainable for IJepa {
    type Encoder = VisionTransformer;
    type Predictor = Predictor;
    fn parts(&self) -> &Jepa<VisionTransformer, Predictor> {
        &self.parts
    }
    fn parts_mut(&mut self) -> &mut Jepa<VisionTransformer, Predictor> {
        &mut self.parts
    }
}
