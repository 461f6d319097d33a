//! One training step's loss and gradients computed two ways — on another
//! device, at another precision — and compared variable by variable: how
//! `ijepa-cli bench parity` (run by `bench/gpu.sh`) proves a GPU build and
//! the bf16 policy against the f32 CPU step.
//!
//! The deviation of a tensor is `max |a − b| / max |a|` over its elements,
//! `a` the reference: relative to the tensor's own scale, so that elements
//! near zero (where bf16 has few digits) do not dominate.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use ijepa_encoder::precision::Precision;
//! use ijepa_train::model::{IJepa, IJepaConfig};
//! use ijepa_train::parity::{compare, gradients};
//! use ijepa_train::step::StepBatch;
//!
//! let mut cfg = IJepaConfig::from_timm_name("vit_tiny_patch16_224")?;
//! cfg.encoder.depth = 1;
//! cfg.predictor_embed_dim = 96;
//! cfg.predictor_depth = 1;
//! let model = IJepa::new(cfg, &Device::Cpu)?;
//! let images = Tensor::randn(0f32, 1.0, (2, 3, 224, 224), &Device::Cpu)?;
//! let batch = StepBatch::new(images, &model.sample_masks(2, 0))?;
//! let reference = gradients(&model, &batch)?;
//! let mut low = model.to_device(&Device::Cpu)?;
//! low.set_precision(Precision::Bf16);
//! let report = compare(&reference, &gradients(&low, &batch)?)?;
//! assert!(report.worst().relative < 2e-2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use candle_core::{DType, Device, Tensor};

use crate::error::{Result, TrainError};
use crate::model::IJepa;
use crate::step::StepBatch;

/// A step's loss and the gradient of every trainable variable, on the CPU
/// in f32.
#[derive(Debug, Clone)]
pub struct Gradients {
    /// The loss.
    pub loss: f32,
    /// `(name, gradient)` in [`IJepa::trainable_vars`] order.
    pub grads: Vec<(String, Tensor)>,
}

/// Forward and backward of `model` on `batch` (moved to the model's
/// device), changing nothing.
///
/// # Errors
/// A variable that received no gradient (named), or a model error.
pub fn gradients(model: &IJepa, batch: &StepBatch) -> Result<Gradients> {
    let device = model
        .trainable_vars()
        .first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(Device::Cpu);
    batch.check(model.num_patches())?;
    let batch = batch.to_device(&device)?;
    let out = model.objective(batch.images(), batch.context(), batch.targets())?;
    let store = out.loss.backward()?;
    let loss = out.loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    let grads = model
        .trainable_vars()
        .into_iter()
        .map(|(name, var)| {
            let g = store.get(var.as_tensor()).ok_or_else(|| {
                TrainError::Config(format!("parity: {name} received no gradient"))
            })?;
            let g = g.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
            Ok((name, g))
        })
        .collect::<Result<_>>()?;
    Ok(Gradients { loss, grads })
}

/// How far one tensor of the candidate is from the reference's.
#[derive(Debug, Clone, PartialEq)]
pub struct Deviation {
    /// The variable (or `loss`).
    pub name: String,
    /// `max |a − b|`.
    pub max_abs: f64,
    /// `max |a|` of the reference.
    pub scale: f64,
    /// `max_abs / scale` (`max_abs` itself when the reference is all 0).
    pub relative: f64,
}

/// The loss's and every gradient's deviation.
#[derive(Debug, Clone)]
pub struct ParityReport {
    /// `loss` first, then the gradients in the reference's order.
    pub rows: Vec<Deviation>,
}

impl ParityReport {
    /// The row of largest relative deviation (NaN counts as largest).
    pub fn worst(&self) -> &Deviation {
        self.rows
            .iter()
            .max_by(|a, b| match (a.relative.is_nan(), b.relative.is_nan()) {
                (true, _) => std::cmp::Ordering::Greater,
                (_, true) => std::cmp::Ordering::Less,
                _ => a.relative.total_cmp(&b.relative),
            })
            .expect("a report has the loss row")
    }

    /// Whether every row is within `tolerance` (relative).
    pub fn within(&self, tolerance: f64) -> bool {
        self.rows.iter().all(|r| r.relative <= tolerance)
    }
}

fn deviation(name: &str, a: &Tensor, b: &Tensor) -> Result<Deviation> {
    if a.dims() != b.dims() {
        return Err(TrainError::Config(format!(
            "parity: {name} is {:?} in the reference, {:?} in the candidate",
            a.dims(),
            b.dims()
        )));
    }
    let a = a.flatten_all()?.to_vec1::<f32>()?;
    let b = b.flatten_all()?.to_vec1::<f32>()?;
    let (mut max_abs, mut scale) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(&b) {
        let d = (f64::from(x) - f64::from(y)).abs();
        // NaN must not vanish in a max.
        max_abs = if d.is_nan() { f64::NAN } else { max_abs.max(d) };
        scale = scale.max(f64::from(x).abs());
    }
    let relative = if scale > 0.0 {
        max_abs / scale
    } else {
        max_abs
    };
    Ok(Deviation {
        name: name.to_string(),
        max_abs,
        scale,
        relative,
    })
}

/// Compares `candidate` with `reference`, the loss and each gradient.
///
/// # Errors
/// The two name different variables or shapes.
pub fn compare(reference: &Gradients, candidate: &Gradients) -> Result<ParityReport> {
    if reference.grads.len() != candidate.grads.len() {
        return Err(TrainError::Config(format!(
            "parity: the reference has {} gradients, the candidate {}",
            reference.grads.len(),
            candidate.grads.len()
        )));
    }
    let scalar = |x: f32| Tensor::new(&[x], &Device::Cpu);
    let mut rows = vec![deviation(
        "loss",
        &scalar(reference.loss)?,
        &scalar(candidate.loss)?,
    )?];
    for ((name, a), (other, b)) in reference.grads.iter().zip(&candidate.grads) {
        if name != other {
            return Err(TrainError::Config(format!(
                "parity: gradient {name} of the reference meets {other} of the candidate"
            )));
        }
        rows.push(deviation(name, a, b)?);
    }
    Ok(ParityReport { rows })
}

/// The state after two AdamW steps (I-JEPA's parameter groups, `lr`
/// 1e-3) from the gradients `grads` and an EMA update of the teacher
/// (momentum 0.99), made on a copy of `model` on its own device: every
/// parameter, moment and teacher weight, on the CPU in f32, named (in the
/// `grads` field; `loss` 0). Two models' states side by side ([`compare`])
/// check an optimizer on one device against another: the fused optimizer
/// kernels do the same arithmetic on the CPU and on a GPU, so between them
/// every deviation is 0.
///
/// # Errors
/// `grads` names other variables than the model's, or a model error.
pub fn updated(model: &IJepa, grads: &Gradients) -> Result<Gradients> {
    {
        let device = model
            .trainable_vars()
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(Device::Cpu);
        let mut model = model.to_device(&device)?;
        let vars = model.trainable_vars();
        let mut store = {
            // A store holding every variable (candle has no empty one to fill).
            let sums = vars
                .iter()
                .map(|(_, v)| v.as_tensor().sum_all())
                .collect::<candle_core::Result<Vec<_>>>()?;
            (Tensor::stack(&sums, 0)?.sum_all()? * 0.0)?.backward()?
        };
        for ((name, var), (other, g)) in vars.iter().zip(&grads.grads) {
            if name != other {
                return Err(TrainError::Config(format!(
                    "parity: variable {name} meets gradient {other}"
                )));
            }
            store.insert(var.as_tensor(), g.to_device(&device)?);
        }
        let mut optimizer =
            crate::optim::AdamW::new(crate::optim::AdamW::ijepa_groups(vars.clone(), 0.04), 1e-3);
        optimizer.step(&store)?;
        optimizer.step(&store)?;
        model.update_teacher(0.99)?;
        let host = |t: &Tensor| t.to_dtype(DType::F32)?.to_device(&Device::Cpu);
        let mut out = vec![];
        for (name, var) in &vars {
            out.push((name.clone(), host(var.as_tensor())?));
        }
        let mut state: Vec<_> = optimizer.state_tensors().into_iter().collect();
        state.sort_by(|a, b| a.0.cmp(&b.0));
        let mut teacher: Vec<_> = model.teacher_weights().clone().into_iter().collect();
        teacher.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, t) in state {
            out.push((format!("optimizer {name}"), host(&t)?));
        }
        for (name, t) in teacher {
            out.push((format!("teacher {name}"), host(&t)?));
        }
        Ok(Gradients {
            loss: 0.0,
            grads: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IJepaConfig;
    use ijepa_encoder::precision::Precision;

    fn tiny() -> (IJepa, StepBatch) {
        let mut cfg = IJepaConfig::from_timm_name("vit_tiny_patch16_224").unwrap();
        // The official masks need a 14 x 14 grid (blocks over min_keep).
        cfg.encoder.depth = 2;
        cfg.predictor_embed_dim = 48;
        cfg.predictor_depth = 2;
        let model = IJepa::new(cfg, &Device::Cpu).unwrap();
        let images = Tensor::randn(0f32, 1.0, (2, 3, 224, 224), &Device::Cpu).unwrap();
        let batch = StepBatch::new(images, &model.sample_masks(2, 0)).unwrap();
        (model, batch)
    }

    #[test]
    fn the_update_is_the_same_on_two_copies_and_moves_every_parameter() {
        let (model, batch) = tiny();
        let grads = gradients(&model, &batch).unwrap();
        let copy = model.to_device(&Device::Cpu).unwrap();
        let (a, b) = (
            updated(&model, &grads).unwrap(),
            updated(&copy, &grads).unwrap(),
        );
        let report = compare(&a, &b).unwrap();
        assert_eq!(report.worst().relative, 0.0, "{:?}", report.worst());
        // Parameters, both moments of each, and the teacher's weights.
        let params = grads.grads.len();
        assert!(a.grads.len() > 3 * params, "{} rows", a.grads.len());
        for ((name, after), (_, before)) in a.grads.iter().zip(&model.trainable_vars()) {
            let moved = (after - before.as_tensor()).unwrap().abs().unwrap();
            let moved = moved.max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(moved > 0.0, "{name} did not move");
        }
    }

    #[test]
    fn the_same_step_twice_is_identical() {
        let (model, batch) = tiny();
        let a = gradients(&model, &batch).unwrap();
        let b = gradients(&model.to_device(&Device::Cpu).unwrap(), &batch).unwrap();
        let report = compare(&a, &b).unwrap();
        assert_eq!(report.rows.len(), 1 + model.trainable_vars().len());
        assert_eq!(report.worst().max_abs, 0.0, "{:?}", report.worst());
    }

    /// The bf16 policy on the CPU against f32: every variable still gets a
    /// gradient (the casts are differentiable), all f32, each within 2e-2
    /// of the f32 step relative to its scale (bench/gpu.sh's tolerance) —
    /// and not equal to it, so the matrix products really ran in bf16.
    #[test]
    fn bf16_autocast_stays_within_tolerance_of_f32() {
        let (model, batch) = tiny();
        let reference = gradients(&model, &batch).unwrap();
        let mut low = model.to_device(&Device::Cpu).unwrap();
        low.set_precision(Precision::Bf16);
        let candidate = gradients(&low, &batch).unwrap();
        for (name, g) in &candidate.grads {
            assert_eq!(g.dtype(), DType::F32, "{name}");
        }
        let report = compare(&reference, &candidate).unwrap();
        let worst = report.worst();
        assert!(report.within(2e-2), "{worst:?}");
        assert!(worst.relative > 1e-4, "bf16 left no trace: {worst:?}");
        for (_, v) in low.trainable_vars() {
            assert_eq!(v.dtype(), DType::F32, "master weights stay f32");
        }
    }

    #[test]
    fn a_nan_is_the_worst_deviation() {
        let a = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let b = Tensor::new(&[1f32, f32::NAN], &Device::Cpu).unwrap();
        let reference = Gradients {
            loss: 1.0,
            grads: vec![("w".into(), a.clone())],
        };
        let candidate = Gradients {
            loss: 1.0,
            grads: vec![("w".into(), b)],
        };
        let report = compare(&reference, &candidate).unwrap();
        assert_eq!(report.worst().name, "w");
        assert!(!report.within(1.0));
    }
}
