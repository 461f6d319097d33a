//! The parts of I-JEPA over any encoder and predictor: a context encoder
//! (the student) and a predictor that train, an EMA target encoder (the
//! teacher, a twin of the student), and the masks they are trained on.
//!
//! [`Jepa`] is generic over the seams of the other crates —
//! [`TokenEncoder`], [`TargetPredictor`] and [`MaskSampler`] — and is what
//! [`crate::step::TrainStep`] trains: the same step, objective, AdamW and EMA
//! as [`crate::model::IJepa`], whose ViT and predictor are the default parts
//! (`Jepa<VisionTransformer, Predictor>` inside). A part is built over a
//! candle [`VarBuilder`], as candle's own layers are; it must keep the
//! tensors the builder gives it (no copies made at construction), since the
//! EMA writes the teacher's values into them in place.
//!
//! See `ijepa-train/examples/custom_encoder.rs` for a user-defined encoder
//! trained this way.

use std::collections::BTreeSet;
use std::sync::Arc;

use candle_core::{Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use ijepa_encoder::layout::{dtype_device, to_varmap, var_tensors, WeightMap};
use ijepa_encoder::precision::{autocast, Precision};
use ijepa_encoder::TokenEncoder;
use ijepa_masking::{MaskBatch, MaskSampler};
use ijepa_predictor::TargetPredictor;

use crate::ema::ema_update;
use crate::error::{Result, TrainError};
use crate::loss::Objective;

/// Student, EMA teacher, predictor and mask sampler.
pub struct Jepa<E, P> {
    sampler: Arc<dyn MaskSampler>,
    student_vars: VarMap,
    student: E,
    teacher_weights: WeightMap,
    teacher: E,
    predictor_vars: VarMap,
    predictor: P,
    /// Variables the step leaves as they are (`encoder.*` / `predictor.*`).
    frozen: BTreeSet<String>,
    precision: Precision,
}

/// Copies of the variables' values (a detached tensor would share the
/// storage the optimizer updates in place).
fn snapshot(vars: &VarMap) -> Result<WeightMap> {
    vars.data()
        .lock()
        .expect("VarMap lock")
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().detach().copy()?)))
        .collect()
}

/// Own contiguous copies, detached: the EMA writes into them in place.
fn owned(weights: WeightMap) -> Result<WeightMap> {
    weights
        .into_iter()
        .map(|(k, t)| Ok((k, t.detach().force_contiguous()?)))
        .collect()
}

impl<E: TokenEncoder, P: TargetPredictor> Jepa<E, P> {
    /// The parts from their initial weights: `build_encoder` builds the
    /// student over variables holding `encoder` and the teacher over a copy
    /// of it; `build_predictor` the predictor over variables holding
    /// `predictor`. The weights name what each builder reads (see
    /// [`ijepa_encoder::layout::record_layout`], and
    /// [`ijepa_encoder::init::init_layout`] for seeded initial values);
    /// masks are drawn from `sampler`, on the encoder's patch grid.
    ///
    /// # Errors
    /// What a builder returns, e.g. a tensor missing from the weights or of
    /// another shape.
    pub fn from_weights<Ee, Ep>(
        sampler: Arc<dyn MaskSampler>,
        encoder: WeightMap,
        build_encoder: impl Fn(VarBuilder) -> std::result::Result<E, Ee>,
        predictor: WeightMap,
        build_predictor: impl FnOnce(VarBuilder) -> std::result::Result<P, Ep>,
    ) -> Result<Self>
    where
        TrainError: From<Ee> + From<Ep>,
    {
        let teacher = encoder.clone();
        Self::from_parts(
            sampler,
            encoder,
            teacher,
            build_encoder,
            predictor,
            build_predictor,
        )
    }

    /// [`Jepa::from_weights`] with the teacher's own weights (a checkpoint's
    /// three parts), which must name the same tensors as the student's.
    ///
    /// # Errors
    /// As [`Jepa::from_weights`].
    pub fn from_parts<Ee, Ep>(
        sampler: Arc<dyn MaskSampler>,
        student: WeightMap,
        teacher: WeightMap,
        build_encoder: impl Fn(VarBuilder) -> std::result::Result<E, Ee>,
        predictor: WeightMap,
        build_predictor: impl FnOnce(VarBuilder) -> std::result::Result<P, Ep>,
    ) -> Result<Self>
    where
        TrainError: From<Ee> + From<Ep>,
    {
        let (dtype, device) = dtype_device(&student);
        let student_vars = to_varmap(&student)?;
        let student_net = build_encoder(VarBuilder::from_varmap(&student_vars, dtype, &device))?;
        // Copies, not shared storage: the optimizer updates the student in
        // place, the EMA the teacher (which needs them contiguous).
        let teacher_weights = owned(teacher)?;
        let teacher = build_encoder(VarBuilder::from_tensors(
            teacher_weights.clone(),
            dtype,
            &device,
        ))?;
        let predictor_vars = to_varmap(&predictor)?;
        let predictor = build_predictor(VarBuilder::from_varmap(&predictor_vars, dtype, &device))?;
        Ok(Self {
            sampler,
            student_vars,
            student: student_net,
            teacher_weights,
            teacher,
            predictor_vars,
            predictor,
            frozen: BTreeSet::new(),
            precision: Precision::F32,
        })
    }

    /// The same parts with the variables `frozen` names (`encoder.*` /
    /// `predictor.*`) left out of [`Jepa::trainable_vars`]: what never
    /// reaches the loss, or what the recipe keeps fixed.
    pub fn with_frozen(mut self, frozen: impl IntoIterator<Item = String>) -> Self {
        self.frozen = frozen.into_iter().collect();
        self
    }

    /// Replaces the mask sampler (shared with whoever else holds it).
    pub fn set_sampler(&mut self, sampler: Arc<dyn MaskSampler>) {
        self.sampler = sampler;
    }

    /// The mask sampler (shared: a loader can draw the same masks from it).
    pub fn sampler(&self) -> Arc<dyn MaskSampler> {
        self.sampler.clone()
    }

    /// Patches of the sampler's grid (what mask indices count).
    pub fn num_patches(&self) -> usize {
        let g = self.sampler.grid();
        g.frames() * g.height() * g.width()
    }

    /// Masks for global batch `batch_index`.
    pub fn sample_masks(&self, batch_size: usize, batch_index: u64) -> MaskBatch {
        self.sampler.sample(batch_size, batch_index)
    }

    /// Runs the forwards at `precision` (see [`Precision`]).
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// The precision the forwards run at.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The student (context) encoder.
    pub fn student(&self) -> &E {
        &self.student
    }

    /// The EMA teacher (target) encoder.
    pub fn teacher(&self) -> &E {
        &self.teacher
    }

    /// The predictor.
    pub fn predictor(&self) -> &P {
        &self.predictor
    }

    /// The student's variables.
    pub fn student_vars(&self) -> &VarMap {
        &self.student_vars
    }

    /// The teacher's weights (updated in place by [`Jepa::update_teacher`]).
    pub fn teacher_weights(&self) -> &WeightMap {
        &self.teacher_weights
    }

    /// A copy of the student's current weights.
    ///
    /// # Errors
    /// A tensor error.
    pub fn student_weights(&self) -> Result<WeightMap> {
        snapshot(&self.student_vars)
    }

    /// A copy of the predictor's current weights.
    ///
    /// # Errors
    /// A tensor error.
    pub fn predictor_weights(&self) -> Result<WeightMap> {
        snapshot(&self.predictor_vars)
    }

    /// Every variable the step trains, named `encoder.*` / `predictor.*`,
    /// sorted: all but the frozen ones.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        let mut out = vec![];
        for (prefix, vars) in [
            ("encoder", &self.student_vars),
            ("predictor", &self.predictor_vars),
        ] {
            let vars = vars.data().lock().expect("VarMap lock");
            out.extend(
                vars.iter()
                    .map(|(k, v)| (format!("{prefix}.{k}"), v.clone()))
                    .filter(|(k, _)| !self.frozen.contains(k)),
            );
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Moves the teacher toward the student: `t ← m·t + (1 − m)·s`, in
    /// place (the teacher network sees the new values, nothing is rebuilt).
    ///
    /// # Errors
    /// A student and teacher that are not twins.
    pub fn update_teacher(&mut self, momentum: f64) -> Result<()> {
        let student = var_tensors(&self.student_vars);
        ema_update(&mut self.teacher_weights, &student, momentum)
    }

    /// The objective on explicit masks — context indices `(B, K_ctx)` and
    /// target masks `(B, K_tgt)` (`u32`) — at the parts' precision: what a
    /// training step differentiates ([`crate::loss::objective`]).
    ///
    /// # Errors
    /// Masks or images that do not fit the parts.
    pub fn objective(
        &self,
        images: &Tensor,
        context_idx: &Tensor,
        targets: &[Tensor],
    ) -> Result<Objective> {
        let _scope = autocast(self.precision);
        crate::loss::objective(
            &self.student,
            &self.teacher,
            &self.predictor,
            images,
            context_idx,
            targets,
        )
    }
}

/// A model a training step ([`crate::step::TrainStep`]) can train: the
/// generic parts it is made of ([`Jepa`] itself, or
/// [`crate::model::IJepa`]: our ViT and predictor in them).
pub trait Trainable {
    /// The context and target encoder.
    type Encoder: TokenEncoder;
    /// The predictor.
    type Predictor: TargetPredictor;
    /// The parts the step reads.
    fn parts(&self) -> &Jepa<Self::Encoder, Self::Predictor>;
    /// The parts, for the EMA update after the optimizer step.
    fn parts_mut(&mut self) -> &mut Jepa<Self::Encoder, Self::Predictor>;
}

impl<E: TokenEncoder, P: TargetPredictor> Trainable for Jepa<E, P> {
    type Encoder = E;
    type Predictor = P;
    fn parts(&self) -> &Self {
        self
    }
    fn parts_mut(&mut self) -> &mut Self {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::SingleProcess;
    use crate::step::{StepBatch, StepHyper, StepOutcome, TrainStep};
    use candle_core::{Device, Module};
    use ijepa_encoder::indices::gather_tokens;
    use ijepa_encoder::init::{init_layout, InitOptions};
    use ijepa_encoder::layout::record_layout;
    use ijepa_masking::{Grid, MaskConfig, SamplerKind};
    use ijepa_predictor::{Predictor, PredictorConfig};

    /// The smallest encoder of our own: each 4 × 4 patch of a 1-channel
    /// 32 × 32 image through one Linear.
    struct PatchLinear(candle_nn::Linear);

    impl PatchLinear {
        fn patches(images: &Tensor) -> candle_core::Result<Tensor> {
            let b = images.dim(0)?;
            images
                .reshape((b, 1, 8, 4, 8, 4))?
                .permute((0, 2, 4, 1, 3, 5))?
                .reshape((b, 64, 16))
        }
    }

    impl TokenEncoder for PatchLinear {
        fn embed_dim(&self) -> usize {
            32
        }
        fn forward_patches(
            &self,
            images: &Tensor,
            kept: Option<&Tensor>,
        ) -> ijepa_encoder::Result<Tensor> {
            let x = self.0.forward(&Self::patches(images)?)?;
            Ok(match kept {
                None => x,
                Some(idx) => gather_tokens(&x, idx)?,
            })
        }
    }

    #[test]
    fn an_encoder_of_our_own_trains_with_the_same_step_and_ema() {
        let dev = Device::Cpu;
        let opts = InitOptions::default();
        let build = |vb: VarBuilder| candle_nn::linear(16, 32, vb.pp("proj")).map(PatchLinear);
        let layout = record_layout(|vb| Ok(build(vb)?)).unwrap();
        let encoder = init_layout(&layout, &opts, "", &dev, |_, _| None).unwrap();
        let pcfg = PredictorConfig {
            embed_dim: 32,
            predictor_embed_dim: 32,
            depth: 1,
            num_heads: 2,
            mlp_hidden_dim: 64,
            grid: (8, 8),
            column_first: true,
            norm_eps: 1e-6,
        };
        let predictor = ijepa_predictor::init_weights(&pcfg, &opts, &dev).unwrap();
        let grid = Grid::new_2d(8, 8).unwrap();
        let sampler: Arc<dyn MaskSampler> = Arc::from(
            MaskConfig {
                min_keep: 4,
                ..MaskConfig::default()
            }
            .build(grid, SamplerKind::MultiBlock, 0)
            .unwrap(),
        );
        let parts = Jepa::from_weights(sampler.clone(), encoder, build, predictor, |vb| {
            Predictor::new(&pcfg, vb)
        })
        .unwrap()
        .with_frozen(Predictor::FIXED.iter().map(|k| format!("predictor.{k}")));
        assert_eq!(parts.num_patches(), 64);
        let names: Vec<String> = parts.trainable_vars().into_iter().map(|(n, _)| n).collect();
        assert!(
            names.contains(&"encoder.proj.weight".to_string()),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.ends_with("predictor_pos_embed")));

        // Every trainable variable reaches the loss.
        // Fixed inputs: the values are made, not drawn.
        let wave = |n: usize, shape: (usize, usize, usize, usize)| {
            let t = Tensor::arange(0f32, n as f32, &dev).unwrap();
            (t * 0.37).unwrap().sin().unwrap().reshape(shape).unwrap()
        };
        let images = wave(4 * 32 * 32, (4, 1, 32, 32));
        let batch = StepBatch::new(images, &sampler.sample(4, 0)).unwrap();
        let out = parts
            .objective(batch.images(), batch.context(), batch.targets())
            .unwrap();
        let grads = out.loss.backward().unwrap();
        for (name, var) in parts.trainable_vars() {
            assert!(
                grads.get(var.as_tensor()).is_some(),
                "{name} has no gradient"
            );
        }

        // One step: the student moves, the teacher follows by the EMA.
        let before = parts.student_weights().unwrap()["proj.weight"].clone();
        let teacher_before = parts.teacher_weights()["proj.weight"].copy().unwrap();
        let mut step = TrainStep::new(parts, 0.04, None, Box::new(SingleProcess));
        let hyper = StepHyper {
            lr: 1e-2,
            weight_decay: 0.04,
            momentum: 0.9,
        };
        let StepOutcome::Applied(report) = step.run(&[batch], hyper).unwrap() else {
            panic!("refused")
        };
        assert!(report.loss.is_finite() && report.grad_norm > 0.0);
        let parts = step.model();
        let after = parts.student_weights().unwrap()["proj.weight"].clone();
        let moved = (&after - &before)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(moved.to_scalar::<f32>().unwrap() > 0.0);
        let expected = ((teacher_before * 0.9).unwrap() + (after * 0.1).unwrap()).unwrap();
        let teacher = &parts.teacher_weights()["proj.weight"];
        let diff = (teacher - expected)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-7);
        // The teacher network reads the updated values (no rebuild).
        let x = wave(32 * 32, (1, 1, 32, 32));
        let direct = PatchLinear::patches(&x)
            .unwrap()
            .broadcast_matmul(&teacher.t().unwrap())
            .unwrap()
            .broadcast_add(&parts.teacher_weights()["proj.bias"])
            .unwrap();
        let via = parts.teacher().forward(&x).unwrap();
        let gap = (direct - via).unwrap().abs().unwrap().max_all().unwrap();
        assert!(gap.to_scalar::<f32>().unwrap() < 1e-5);
    }
}
