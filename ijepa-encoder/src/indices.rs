//! Patch-index tensors (kept patches, target masks): their bounds check and
//! the tokens they select.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// The largest index of `idx` if it is `n` or more — checked where the
/// indices live on the CPU. Indices on a GPU are not read back (that would
/// stop the GPU's queue once per forward): whoever uploads them checks them
/// on the host first, as `ijepa_train::step::StepBatch` does.
///
/// # Errors
/// A tensor error.
pub fn out_of_range(idx: &Tensor, n: usize) -> Result<Option<u32>> {
    if !idx.device().is_cpu() || idx.elem_count() == 0 {
        return Ok(None);
    }
    let max = idx.max_all()?.to_dtype(DType::U32)?.to_scalar::<u32>()?;
    Ok((max as usize >= n).then_some(max))
}

/// The tokens of `tokens` `(B, N, D)` at `idx` `(B, K)` (any integer dtype):
/// `(B, K, D)`, row `k` of image `b` being token `idx[b, k]` — what a masked
/// encoder keeps and the loss compares. Differentiable in `tokens`. Indices
/// are not checked here ([`out_of_range`] does that where they are on the
/// host).
///
/// # Errors
/// Shapes that do not fit, or an index out of range on the CPU.
pub fn gather_tokens(tokens: &Tensor, idx: &Tensor) -> Result<Tensor> {
    let (b, k) = idx.dims2()?;
    let d = tokens.dim(2)?;
    let index = idx
        .to_dtype(DType::U32)?
        .unsqueeze(2)?
        .broadcast_as((b, k, d))?
        .contiguous()?;
    Ok(tokens.contiguous()?.gather(&index, 1)?)
}
