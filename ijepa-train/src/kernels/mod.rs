//! Fused CPU kernels of the optimizer step: AdamW ([`adamw`]) and the EMA
//! teacher update ([`ema`]), each one in-place pass per tensor where the
//! candle composition takes about ten tensor ops and as many fresh
//! allocations. Each computes exactly what that composition computes, in
//! the same order and f32 rounding (candle's `x * c` is `x·c + 0`, its
//! `x / c` is `x·(1/c) + 0`), so results — and resumed runs — are
//! bit-identical either way. Other devices and dtypes use the composition.

pub(crate) mod adamw;
pub(crate) mod ema;

use candle_core::{CpuStorage, DType, Layout, Tensor};

/// Tensors at least this long are split over the cores.
const CHUNK: usize = 1 << 15;

/// Whether every tensor is contiguous f32 on the CPU (the fused path).
pub(crate) fn fusable(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous())
}

/// The contiguous f32 data of a CPU storage.
fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused optimizer kernel: not contiguous".into()))?;
    Ok(&s.as_slice::<f32>()?[start..end])
}

/// The contiguous f32 data of a CPU storage, to write.
fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused optimizer kernel: not contiguous".into()))?;
    match s {
        CpuStorage::F32(v) => Ok(&mut v[start..end]),
        _ => Err(candle_core::Error::Msg(
            "fused optimizer kernel: the storage is not f32".into(),
        )),
    }
}
