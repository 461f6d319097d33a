//! The I-JEPA objective: predict the layer-normalised target-encoder
//! representations of the target blocks, scored with smooth-L1.

use candle_core::{Module, Tensor};
use ijepa_encoder::indices::gather_tokens;
use ijepa_encoder::precision::widened;
use ijepa_encoder::{LayerNorm, TokenEncoder};
use ijepa_predictor::TargetPredictor;

use crate::error::Result;

/// What one forward of the objective produced.
#[derive(Debug)]
pub struct Objective {
    /// Scalar smooth-L1 loss (part of the autograd graph).
    pub loss: Tensor,
    /// Predictions `(M·B, K_tgt, D)`, target-major.
    pub predictions: Tensor,
    /// Targets `(M·B, K_tgt, D)` (constants).
    pub targets: Tensor,
    /// The teacher's patch tokens of the whole image `(B, N, D)`, after its
    /// final norm (prefix tokens are not encoded).
    pub teacher_tokens: Tensor,
}

/// Smooth-L1 (Huber, β = 1) averaged over all elements:
/// `0.5·d²` where `|d| < 1`, `|d| − 0.5` elsewhere, written so every step
/// has a backward. In f32 inside an autocast scope (as PyTorch's).
pub fn smooth_l1(predictions: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (p, t) = (widened(predictions)?, widened(targets)?);
    let a = (p - t)?.abs()?;
    let small = a.minimum(1.0)?;
    let per = ((small.sqr()? * 0.5)? + (&a - &small)?)?;
    Ok(per.mean_all()?)
}

/// The teacher's targets: all patches through `teacher`, LayerNorm without
/// affine (eps 1e-5), then each target mask gathered, stacked target-major.
/// Detached: no gradient ever reaches the teacher.
pub fn target_representations(
    teacher: &impl TokenEncoder,
    images: &Tensor,
    targets: &[Tensor],
) -> Result<(Tensor, Tensor)> {
    let tokens = teacher.forward_patches(images, None)?.detach();
    let normed = LayerNorm::plain(1e-5).forward(&tokens)?;
    let gathered = targets
        .iter()
        .map(|t| gather_tokens(&normed, t))
        .collect::<ijepa_encoder::Result<Vec<_>>>()?;
    Ok((Tensor::cat(&gathered, 0)?.detach(), tokens))
}

/// One forward of the I-JEPA objective on explicit masks: the student
/// encodes the context patches, the predictor predicts every target mask,
/// the teacher provides the targets.
pub fn objective(
    student: &impl TokenEncoder,
    teacher: &impl TokenEncoder,
    predictor: &impl TargetPredictor,
    images: &Tensor,
    context_idx: &Tensor,
    targets: &[Tensor],
) -> Result<Objective> {
    let context = student.forward_patches(images, Some(context_idx))?;
    let predictions = predictor.predict(&context, context_idx, targets)?;
    let (target, teacher_tokens) = target_representations(teacher, images, targets)?;
    let loss = smooth_l1(&predictions, &target)?;
    Ok(Objective {
        loss,
        predictions,
        targets: target,
        teacher_tokens,
    })
}
