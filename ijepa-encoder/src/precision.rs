//! Mixed precision as PyTorch's `torch.autocast(dtype=torch.bfloat16)` does
//! it: weights stay f32 (so do the optimizer state and the EMA teacher,
//! which live elsewhere); inside an [`autocast`] scope the matrix products
//! — every [`crate::Linear`] (the patch projection is one), the attention
//! scores and their product with the values — run in bf16 on bf16 copies of
//! their inputs, LayerNorm and softmax cast their input to f32 (autocast's
//! f32 list, as the loss in `ijepa-train`), and an element-wise op between
//! a bf16 and an f32 tensor computes in f32 (PyTorch's type promotion).
//!
//! The scope is per thread, as PyTorch's, and only changes how the forward
//! runs: the backward follows the dtypes the forward chose (the gradient of
//! a cast is the cast back), so every variable's gradient is f32.
//!
//! One difference from the official code: its predictor adds the position
//! embedding in place (`x += pos_embs`), which keeps that sum in bf16;
//! here every such sum promotes to f32.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use ijepa_encoder::precision::{autocast, Precision};
//! use ijepa_encoder::Linear;
//!
//! let layer = Linear::from_tensors(Tensor::ones((4, 3), DType::F32, &Device::Cpu)?, None);
//! let x = Tensor::ones((2, 3), DType::F32, &Device::Cpu)?;
//! assert_eq!(layer.forward(&x)?.dtype(), DType::F32);
//! let _scope = autocast(Precision::Bf16);
//! assert_eq!(layer.forward(&x)?.dtype(), DType::BF16);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Tensor};

/// How a forward computes: all in f32, or PyTorch-autocast-style bf16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// bf16 matrix products, f32 weights, norms, softmax and loss.
    Bf16,
}

impl Precision {
    /// The dtype of the matrix products, `None` for plain f32.
    fn lower(self) -> Option<DType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(DType::BF16),
        }
    }
}

impl FromStr for Precision {
    type Err = crate::EncoderError;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(crate::EncoderError::OutOfRange(format!(
                "precision {other:?}: expected \"f32\" or \"bf16\""
            ))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

thread_local! {
    static LOWER: Cell<Option<DType>> = const { Cell::new(None) };
}

/// While alive, forwards on this thread run at `precision`; dropping it
/// restores the precision that was in force before (scopes nest).
#[derive(Debug)]
#[must_use = "the precision applies only while the scope is alive"]
pub struct AutocastScope {
    previous: Option<DType>,
    // Per thread: the scope must be dropped on the thread that made it.
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Runs this thread's forwards at `precision` until the returned scope is
/// dropped (PyTorch's `with torch.autocast(...)`).
pub fn autocast(precision: Precision) -> AutocastScope {
    let previous = LOWER.with(|c| c.replace(precision.lower()));
    AutocastScope {
        previous,
        _not_send: std::marker::PhantomData,
    }
}

impl Drop for AutocastScope {
    fn drop(&mut self) {
        LOWER.with(|c| c.set(self.previous));
    }
}

/// The precision in force on this thread.
pub fn current() -> Precision {
    match LOWER.with(Cell::get) {
        Some(_) => Precision::Bf16,
        None => Precision::F32,
    }
}

fn is_float(t: &Tensor) -> bool {
    matches!(
        t.dtype(),
        DType::F32 | DType::BF16 | DType::F16 | DType::F64
    )
}

/// `x` in the matrix-product dtype of the scope (unchanged outside one).
pub(crate) fn lowered(x: &Tensor) -> candle_core::Result<Tensor> {
    match LOWER.with(Cell::get) {
        Some(dtype) if is_float(x) => x.to_dtype(dtype),
        _ => Ok(x.clone()),
    }
}

/// `x` in f32 inside a scope (autocast's f32 ops), unchanged outside one.
pub fn widened(x: &Tensor) -> candle_core::Result<Tensor> {
    match LOWER.with(Cell::get) {
        Some(_) if is_float(x) => x.to_dtype(DType::F32),
        _ => Ok(x.clone()),
    }
}

/// `a · b` (matmul) in the scope's matrix-product dtype.
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    lowered(a)?.matmul(&lowered(b)?)
}

/// `a` and `b` in one dtype for an element-wise op: f32 when they differ
/// (a bf16 activation meeting an f32 residual or parameter), as PyTorch
/// promotes.
pub fn promoted(a: &Tensor, b: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    if a.dtype() == b.dtype() {
        return Ok((a.clone(), b.clone()));
    }
    Ok((a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn scopes_nest_and_restore() {
        assert_eq!(current(), Precision::F32);
        {
            let _outer = autocast(Precision::Bf16);
            assert_eq!(current(), Precision::Bf16);
            {
                let _inner = autocast(Precision::F32);
                assert_eq!(current(), Precision::F32);
            }
            assert_eq!(current(), Precision::Bf16);
        }
        assert_eq!(current(), Precision::F32);
    }

    #[test]
    fn casts_follow_the_scope() {
        let x = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
        let idx = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
        assert_eq!(lowered(&x).unwrap().dtype(), DType::F32);
        let _scope = autocast(Precision::Bf16);
        assert_eq!(lowered(&x).unwrap().dtype(), DType::BF16);
        assert_eq!(lowered(&idx).unwrap().dtype(), DType::U32);
        let low = lowered(&x).unwrap();
        assert_eq!(widened(&low).unwrap().dtype(), DType::F32);
        let (a, b) = promoted(&low, &x).unwrap();
        assert_eq!((a.dtype(), b.dtype()), (DType::F32, DType::F32));
    }

    #[test]
    fn names_parse_and_print() {
        for p in [Precision::F32, Precision::Bf16] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        let err = "fp16".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("\"fp16\"") && err.contains("bf16"), "{err}");
    }
}
