//! Fused CPU kernels of the optimizer step: AdamW ([`adamw`]) and the EMA
//! teacher update ([`ema`]), each one in-place pass per tensor where the
//! candle composition takes about ten tensor ops and as many fresh
//! allocations. Each computes exactly what that composition computes, in
//! the same order and f32 rounding (candle's `x * c` is `x·c + 0`, its
//! `x / c` is `x·(1/c) + 0`), so results — and resumed runs — are
//! bit-identical either way. With the `cuda` feature each has a CUDA half
//! (`cuda/optim.cu`, beside its CPU half) with the same arithmetic, each
//! product and sum rounded on its own, so the GPU's update equals the CPU's
//! bit for bit on the same values. Other devices and dtypes use the
//! composition.

pub(crate) mod adamw;
pub(crate) mod ema;

use candle_core::{CpuStorage, DType, Layout, Tensor};

/// Tensors at least this long are split over the cores.
const CHUNK: usize = 1 << 15;

/// The CUDA halves of the optimizer kernels.
#[cfg(feature = "cuda")]
const PTX: ijepa_encoder::cuda::Ptx = ijepa_encoder::cuda::Ptx {
    module: "ijepa-optim",
    code: include_str!(concat!(env!("OUT_DIR"), "/optim.ptx")),
};

/// Whether every tensor is contiguous f32, all on the CPU or (with the
/// `cuda` feature, the kernels enabled) all on a GPU: the fused path.
pub(crate) fn fusable(tensors: &[&Tensor]) -> bool {
    let plain = tensors
        .iter()
        .all(|t| t.dtype() == DType::F32 && t.is_contiguous());
    let cpu = tensors.iter().all(|t| t.device().is_cpu());
    #[cfg(feature = "cuda")]
    let gpu = tensors.iter().all(|t| ijepa_encoder::cuda::eligible(t));
    #[cfg(not(feature = "cuda"))]
    let gpu = false;
    plain && (cpu || gpu)
}

/// Launches `name` over the `n` values of the CUDA tensor `dst` (written in
/// place) and the views of `srcs`, then `tail`'s scalars.
#[cfg(feature = "cuda")]
macro_rules! in_place_launch {
    ($name:expr, $dst:expr, $ldst:expr, [$(($s:expr, $l:expr)),*]; $($tail:expr),*) => {{
        use ijepa_encoder::cuda::{elements, view, view_mut};
        let n = $ldst.shape().elem_count();
        $(
            if $l.shape().elem_count() != n {
                candle_core::bail!(
                    "{}: a source of shape {:?} for a destination of {n} values",
                    $name,
                    $l.shape()
                );
            }
        )*
        let dev = $dst.device.clone();
        ijepa_encoder::cuda_launch!(dev, &crate::kernels::PTX, $name, elements(n);
            &mut view_mut::<f32>($dst, $ldst)?, $(&view::<f32>($s, $l)?,)* &(n as u64), $($tail),*)
    }};
}
#[cfg(feature = "cuda")]
pub(crate) use in_place_launch;

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
