//! The bounds check of patch-index tensors (kept patches, target masks).

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
