//! One I-JEPA training step, in the paper's order: masks → context encoder
//! → predictor → target encoder → loss → backward → gradient exchange →
//! clip → AdamW → EMA.
//!
//! [`TrainStep`] owns what a step changes (the model and its optimizer)
//! and the [`Collective`] it exchanges gradients through. The trainer
//! ([`crate::run::trainer`]) keeps the loop, the schedules, checkpoints and
//! metrics around it; `ijepa-cli bench train` times this same step.
//!
//! A step that is not finite — its loss, its gradient norm or the weights
//! it would write — changes nothing: [`TrainStep::run`] returns
//! [`StepOutcome::Refused`] and the model and optimizer stay as they were.
//! Everything a step needs to read back (loss, gradient norm, the finite
//! checks) is read once, at the end of the step.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use ijepa_masking::{IndexBatch, MaskBatch};

use crate::collective::Collective;
use crate::error::{Result, TrainError};
use crate::jepa::Trainable;
use crate::model::IJepa;
use crate::optim::AdamW;

/// One micro-batch on the model's device: images and their masks.
#[derive(Debug, Clone)]
pub struct StepBatch {
    images: Tensor,
    context: Tensor,
    targets: Vec<Tensor>,
    /// The largest patch index of every mask, known on the host, so the
    /// step checks the masks without reading them back from a GPU.
    max_index: Option<u32>,
}

impl StepBatch {
    /// `images` `(B, C, H, W)` with one context mask and any number of
    /// target masks for its `B` images; the masks go to the images' device.
    ///
    /// # Errors
    /// Masks drawn for another number of images, or not exactly one
    /// context mask.
    pub fn new(images: Tensor, masks: &MaskBatch) -> Result<Self> {
        let b = images.dim(0)?;
        let [context] = masks.contexts.as_slice() else {
            return Err(TrainError::Config(format!(
                "a step takes one context mask per image, the sampler drew {}",
                masks.contexts.len()
            )));
        };
        let device = images.device().clone();
        let upload = |m: &IndexBatch| -> Result<Tensor> {
            if m.batch_size() != b {
                return Err(TrainError::Config(format!(
                    "masks drawn for {} images, the batch has {b}",
                    m.batch_size()
                )));
            }
            Ok(Tensor::from_slice(
                m.as_flat(),
                (m.batch_size(), m.len()),
                &device,
            )?)
        };
        let max_index = std::iter::once(context)
            .chain(&masks.targets)
            .flat_map(|m| m.as_flat().iter().copied())
            .max();
        Ok(Self {
            context: upload(context)?,
            targets: masks.targets.iter().map(upload).collect::<Result<_>>()?,
            images,
            max_index,
        })
    }

    /// The same batch on `device`.
    ///
    /// # Errors
    /// A device that cannot take it.
    pub fn to_device(&self, device: &candle_core::Device) -> Result<Self> {
        Ok(Self {
            images: self.images.to_device(device)?,
            context: self.context.to_device(device)?,
            targets: self
                .targets
                .iter()
                .map(|t| t.to_device(device))
                .collect::<candle_core::Result<_>>()?,
            max_index: self.max_index,
        })
    }

    /// Checks every mask index against the `patches` of the model's grid
    /// (on the host: nothing is read back from the device).
    ///
    /// # Errors
    /// An index of `patches` or more.
    pub fn check(&self, patches: usize) -> Result<()> {
        match self.max_index {
            Some(max) if max as usize >= patches => Err(TrainError::Config(format!(
                "mask index {max} is outside the model's {patches} patches"
            ))),
            _ => Ok(()),
        }
    }

    /// The images, `(B, C, H, W)`.
    pub fn images(&self) -> &Tensor {
        &self.images
    }

    /// The context indices, `(B, K_ctx)`.
    pub fn context(&self) -> &Tensor {
        &self.context
    }

    /// The target masks' indices, each `(B, K_tgt)`.
    pub fn targets(&self) -> &[Tensor] {
        &self.targets
    }

    /// Images in the batch.
    pub fn len(&self) -> usize {
        self.images.dims()[0]
    }

    /// Whether the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Context patches per image.
    pub fn context_tokens(&self) -> usize {
        self.context.dims()[1]
    }

    /// Target patches per image, over all target masks.
    pub fn target_tokens(&self) -> usize {
        self.targets.iter().map(|t| t.dims()[1]).sum()
    }
}

/// The schedule's values for one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepHyper {
    /// Learning rate.
    pub lr: f64,
    /// Weight decay of the decayed group.
    pub weight_decay: f64,
    /// EMA momentum of the teacher update after the step.
    pub momentum: f64,
}

/// What an applied step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Loss, averaged over the micro-batches and ranks.
    pub loss: f32,
    /// Global gradient norm before clipping (over all ranks).
    pub grad_norm: f64,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// The update was made.
    Applied(StepReport),
    /// Something was not finite: nothing changed. The text says what, with
    /// its value.
    Refused(String),
}

/// The model, its optimizer and the gradient exchange: everything one
/// training step changes or needs.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use ijepa_train::collective::SingleProcess;
/// use ijepa_train::model::{IJepa, IJepaConfig};
/// use ijepa_train::step::{StepBatch, StepHyper, StepOutcome, TrainStep};
///
/// let mut cfg = IJepaConfig::from_timm_name("vit_tiny_patch16_224")?;
/// cfg.encoder.depth = 1; // keep the example fast
/// cfg.predictor_embed_dim = 96;
/// cfg.predictor_depth = 1;
/// let model = IJepa::new(cfg, &Device::Cpu)?;
/// let images = Tensor::randn(0f32, 1.0, (2, 3, 224, 224), &Device::Cpu)?;
/// let batch = StepBatch::new(images, &model.sample_masks(2, 0))?;
/// let mut step = TrainStep::new(model, 0.04, None, Box::new(SingleProcess));
/// let hyper = StepHyper { lr: 1e-4, weight_decay: 0.04, momentum: 0.996 };
/// let StepOutcome::Applied(report) = step.run(&[batch], hyper)? else { panic!() };
/// assert!(report.loss.is_finite() && report.grad_norm > 0.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TrainStep<M = IJepa> {
    model: M,
    optimizer: AdamW,
    grad_clip: Option<f64>,
    collective: Box<dyn Collective>,
    vars: Vec<(String, Var)>,
}

impl<M: Trainable> TrainStep<M> {
    /// A step over `model` with I-JEPA's AdamW groups (`weight_decay` on
    /// weights of rank ≥ 2 and the mask token), gradients clipped to a
    /// global norm of `grad_clip` when set, exchanged through `collective`.
    pub fn new(
        model: M,
        weight_decay: f64,
        grad_clip: Option<f64>,
        collective: Box<dyn Collective>,
    ) -> Self {
        let vars = model.parts().trainable_vars();
        let optimizer = AdamW::new(AdamW::ijepa_groups(vars.clone(), weight_decay), 0.0);
        Self {
            model,
            optimizer,
            grad_clip,
            collective,
            vars,
        }
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The optimizer (its moments and step count are the checkpoint's).
    pub fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }

    /// The optimizer, to restore its state on resume.
    pub fn optimizer_mut(&mut self) -> &mut AdamW {
        &mut self.optimizer
    }

    /// The collective gradients are exchanged through.
    pub fn collective(&self) -> &dyn Collective {
        self.collective.as_ref()
    }

    /// One optimizer step over `batches` (this rank's micro-batches: their
    /// gradients are summed, then averaged with every rank's).
    ///
    /// # Errors
    /// No batch, or a model or collective error. A non-finite step is not
    /// an error here: it is [`StepOutcome::Refused`].
    pub fn run(&mut self, batches: &[StepBatch], hyper: StepHyper) -> Result<StepOutcome> {
        if batches.is_empty() {
            return Err(TrainError::Config("a step needs at least one batch".into()));
        }
        // 1–6. Per micro-batch ([`TrainStep::backward`]), summed.
        let mut loss_sum: Option<Tensor> = None;
        let mut grads: Option<GradStore> = None;
        for b in batches {
            let (loss, g) = self.backward(b)?;
            loss_sum = Some(match loss_sum {
                None => loss,
                Some(sum) => (sum + loss)?,
            });
            grads = Some(match grads {
                None => g,
                Some(sum) => self.add(sum, &g)?,
            });
        }
        let (Some(loss_sum), Some(grads)) = (loss_sum, grads) else {
            unreachable!("at least one batch")
        };

        // 7. Gradient exchange: the mean over micro-batches and ranks.
        let present: Vec<usize> = (0..self.vars.len())
            .filter(|&i| grads.get(self.vars[i].1.as_tensor()).is_some())
            .collect();
        let mut local: Vec<Tensor> = present
            .iter()
            .filter_map(|&i| grads.get(self.vars[i].1.as_tensor()).cloned())
            .collect();
        local.push(loss_sum.reshape(1)?);
        let count = (batches.len() * self.collective.world_size()) as f64;
        let mut mean = self.collective.all_reduce_sum(&local)?;
        if count > 1.0 {
            mean = mean
                .iter()
                .map(|t| t / count)
                .collect::<candle_core::Result<_>>()?;
        }
        let loss = mean.pop().expect("the loss was pushed");
        let mut grads = grads;
        for (&i, g) in present.iter().zip(&mean) {
            grads.insert(self.vars[i].1.as_tensor(), g.clone());
        }

        // 8. Global norm, and clipping as torch's clip_grad_norm_ (scale
        // min(1, max / (norm + 1e-6)), computed on the device).
        let squares = mean
            .iter()
            .map(|g| g.sqr()?.sum_all())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let norm_sq = match squares.is_empty() {
            true => loss.zeros_like()?.reshape(())?,
            false => Tensor::stack(&squares, 0)?.sum_all()?,
        };
        if let Some(max) = self.grad_clip {
            let scale = (norm_sq.sqrt()? + 1e-6)?
                .recip()?
                .affine(max, 0.0)?
                .minimum(1.0)?;
            for (&i, g) in present.iter().zip(&mean) {
                grads.insert(self.vars[i].1.as_tensor(), g.broadcast_mul(&scale)?);
            }
        }
        drop(mean);

        // 9. AdamW, proposed; made below only if every value is finite.
        self.optimizer.lr = hyper.lr;
        self.optimizer.set_weight_decay(hyper.weight_decay);
        let update = self.optimizer.propose(&grads)?;
        drop(grads);

        // The one read-back of the step: loss, squared norm, update check.
        let mut checks = vec![loss.reshape(())?, norm_sq];
        checks.extend(update.non_finite()?);
        let read = Tensor::stack(&checks, 0)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let (loss, grad_norm) = (read[0], f64::from(read[1]).sqrt());
        if !loss.is_finite() {
            return Ok(StepOutcome::Refused(format!("the loss is {loss:e}")));
        }
        if !grad_norm.is_finite() {
            return Ok(StepOutcome::Refused(format!(
                "the gradient norm is {grad_norm:e} (loss {loss:.4e})"
            )));
        }
        if read.get(2).is_some_and(|v| !v.is_finite()) {
            return Ok(StepOutcome::Refused(format!(
                "the update at lr {:.3e} would make weights that are not finite (loss {loss:.4e}, gradient norm {grad_norm:.4e})",
                hyper.lr
            )));
        }
        self.optimizer.apply(update)?;

        // 10. The EMA teacher follows the student.
        self.model.parts_mut().update_teacher(hyper.momentum)?;
        Ok(StepOutcome::Applied(StepReport { loss, grad_norm }))
    }

    /// Steps 1–6 for one micro-batch, changing nothing: the context
    /// encoder on the context patches, the predictor on every target mask,
    /// the target encoder on the whole image, smooth-L1, backward. Returns
    /// the (detached) loss and the gradients.
    ///
    /// # Errors
    /// A model error.
    pub fn backward(&self, batch: &StepBatch) -> Result<(Tensor, GradStore)> {
        batch.check(self.model.parts().num_patches())?;
        let out = self
            .model
            .parts()
            .objective(&batch.images, &batch.context, &batch.targets)?;
        let grads = out.loss.backward()?;
        Ok((out.loss.detach(), grads))
    }

    /// `sum + g`, variable by variable.
    fn add(&self, mut sum: GradStore, g: &GradStore) -> Result<GradStore> {
        for (_, v) in &self.vars {
            if let (Some(a), Some(b)) = (sum.get(v.as_tensor()), g.get(v.as_tensor())) {
                let total = (a + b)?;
                sum.insert(v.as_tensor(), total);
            }
        }
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::SingleProcess;
    use crate::model::{IJepa, IJepaConfig};
    use candle_core::Device;
    use ijepa_masking::IndexBatch;

    #[test]
    fn masks_beyond_the_grid_are_refused_on_the_host() {
        let mut cfg = IJepaConfig::from_timm_name("vit_tiny_patch16_224").unwrap();
        cfg.encoder.depth = 1;
        cfg.predictor_embed_dim = 48;
        cfg.predictor_depth = 1;
        let model = IJepa::new(cfg, &Device::Cpu).unwrap();
        let images =
            Tensor::zeros((1, 3, 224, 224), candle_core::DType::F32, &Device::Cpu).unwrap();
        let masks = MaskBatch {
            contexts: vec![IndexBatch::from_flat(1, 2, vec![0, 1])],
            targets: vec![IndexBatch::from_flat(1, 2, vec![5, 196])],
            ..Default::default()
        };
        let batch = StepBatch::new(images, &masks).unwrap();
        let step = TrainStep::new(model, 0.04, None, Box::new(SingleProcess));
        let err = step.backward(&batch).unwrap_err().to_string();
        assert!(
            err.contains("mask index 196 is outside the model's 196 patches"),
            "{err}"
        );
        assert!(batch.check(197).is_ok());
    }
}
