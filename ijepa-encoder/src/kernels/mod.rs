//! Fused CPU kernels with a backward pass: exact-GELU, softmax, LayerNorm,
//! Linear, the attention core.
//!
//! candle 0.11.1 computes `gelu_erf` one element at a time through libm and
//! its fused `softmax_last_dim` has no backward; on a ViT forward these two
//! cost as much as all the matrix products. These kernels run on all cores
//! (rayon), in loops the compiler vectorises (AVX-512, else AVX2/FMA, when
//! the CPU has them, chosen at run time), with a polynomial `exp` and the
//! Abramowitz–Stegun 7.1.26 `erf` that PyTorch's vectorised CPU kernels
//! use, with a series near zero (|error| ≤ 2e-7).
//! Both have a backward, so the same code serves training and inference.
//!
//! With the `cuda` feature LayerNorm, softmax, GELU, the bias add and the
//! column sums of their gradients have CUDA halves too (`cuda/layers.cu`,
//! beside each op's CPU half here): f32 arithmetic on f32 or bf16 storage,
//! one kernel where candle's composition launches several and keeps their
//! intermediates; `IJEPA_KERNELS=composed` turns them off
//! (`ijepa_encoder::cuda::enabled`). Other devices and dtypes use candle's
//! differentiable compositions.
//! The attention core (scores, softmax, values) is one kernel with its own
//! backward: [`attention`]; so is a Linear layer's product and bias:
//! [`linear`].

#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

mod attention;
mod linear;
mod product;
pub use attention::attention;
pub use linear::linear;

const CHUNK: usize = 1 << 14;

/// The CUDA halves of the layer kernels.
#[cfg(feature = "cuda")]
const PTX: crate::cuda::Ptx = crate::cuda::Ptx {
    module: "ijepa-layers",
    code: include_str!(concat!(env!("OUT_DIR"), "/layers.ptx")),
};

/// Whether `x` goes to the CUDA kernels: on a GPU, f32 (or bf16 when the
/// op takes it), with the kernels enabled.
fn gpu(x: &Tensor, bf16: bool) -> bool {
    #[cfg(feature = "cuda")]
    {
        crate::cuda::eligible(x) && (x.dtype() == DType::F32 || (bf16 && x.dtype() == DType::BF16))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (x, bf16);
        false
    }
}

/// The rows of `n` values of a contiguous tensor whose last dimension is `n`.
#[cfg(feature = "cuda")]
fn row_count(l: &Layout) -> (usize, usize) {
    let n = l.shape().dims().last().copied().unwrap_or(1).max(1);
    (l.shape().elem_count() / n, n)
}

/// Launches the `{name}_f32` or `{name}_bf16` kernel for `x`'s dtype, with
/// the views of `x` (and `more`, of the same dtype) and a fresh output of
/// `x`'s size, then `tail`'s scalars: the element-wise and row kernels'
/// shared shape.
#[cfg(feature = "cuda")]
macro_rules! typed_launch {
    ($name:expr, $cfg:expr, $s:expr, $l:expr, [$(($ms:expr, $ml:expr)),*]; $($tail:expr),*) => {{
        use crate::cuda::{output, storage, view};
        use candle_core::backend::BackendStorage as _;
        let dev = &$s.device;
        let n = $l.shape().elem_count();
        check_width(n, &[$($ml),*])?;
        match $s.dtype() {
            DType::F32 => {
                let y = output::<f32>(dev, n)?;
                crate::cuda_launch!(dev, &PTX, concat!($name, "_f32"), $cfg;
                    &view::<f32>($s, $l)?, $(&view::<f32>($ms, $ml)?,)* &y, $($tail),*)?;
                storage(y, dev)
            }
            DType::BF16 => {
                let y = output::<half::bf16>(dev, n)?;
                crate::cuda_launch!(dev, &PTX, concat!($name, "_bf16"), $cfg;
                    &view::<half::bf16>($s, $l)?, $(&view::<half::bf16>($ms, $ml)?,)* &y, $($tail),*)?;
                storage(y, dev)
            }
            other => candle_core::bail!(concat!($name, ": no CUDA kernel for {:?}"), other),
        }
    }};
}

/// `e^x` for `x ≤ 88`, relative error ≈ 1e-7: `x = n·ln2 + r`, a degree-6
/// Taylor polynomial for `e^r` on `|r| ≤ ln2/2`, `2^n` from the exponent bits.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `erf(x)` with |error| ≤ 2e-7: Abramowitz–Stegun 7.1.26 for `|x| ≥ 0.5`;
/// below, where its `1 − …` loses digits in f32, the Maclaurin series to
/// `x¹¹` (remainder < 2e-8). Both are computed and one selected, so the loop
/// stays branch-free and vectorises.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let tail = (1.0 - poly * exp(-a * a)).copysign(x);
    let x2 = x * x;
    // 2/√π · (x − x³/3 + x⁵/10 − x⁷/42 + x⁹/216 − x¹¹/1320)
    let series = std::f32::consts::FRAC_2_SQRT_PI
        * x
        * (1.0
            + x2 * (-1.0 / 3.0
                + x2 * (0.1 + x2 * (-1.0 / 42.0 + x2 * (1.0 / 216.0 + x2 * (-1.0 / 1320.0))))));
    if a < 0.5 {
        series
    } else {
        tail
    }
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π).
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn gelu_body(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = 0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2));
    }
}

#[inline(always)]
fn gelu_grad_body(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2)) + x * FRAC_1_SQRT_2PI * exp(-0.5 * x * x);
    }
}

/// Reduces `x` with `f` over 8 independent lanes (so the loop vectorises),
/// then across lanes.
#[inline(always)]
fn reduce8(x: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [init; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = f(*l, *v);
        }
    }
    let tail = chunks.remainder().iter().fold(init, |a, v| f(a, *v));
    lanes.iter().fold(tail, |a, v| f(a, *v))
}

#[inline(always)]
fn softmax_body(x: &[f32], y: &mut [f32], row: usize) {
    for (x, y) in x.chunks_exact(row).zip(y.chunks_exact_mut(row)) {
        let max = reduce8(x, f32::NEG_INFINITY, |a, b| if b > a { b } else { a });
        for (y, &x) in y.iter_mut().zip(x) {
            *y = exp(x - max);
        }
        let inv = 1.0 / reduce8(y, 0.0, |a, b| a + b);
        y.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Defines `fn $name(args)` that runs `$body(args)` compiled for AVX2+FMA
/// when the CPU has them, for the baseline target otherwise.
macro_rules! dispatch {
    ($name:ident => $body:ident($($arg:ident: $ty:ty),*)) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
                unsafe fn wide($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512dq")
                {
                    // SAFETY: the CPU supports every feature `wide` is compiled for
                    // (AVX-512 implies AVX2 and FMA).
                    return unsafe { wide($($arg),*) };
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports every feature `fast` is compiled for.
                    return unsafe { fast($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

dispatch!(gelu_slice => gelu_body(x: &[f32], y: &mut [f32]));
dispatch!(gelu_grad_slice => gelu_grad_body(x: &[f32], y: &mut [f32]));
dispatch!(softmax_slice => softmax_body(x: &[f32], y: &mut [f32], row: usize));
dispatch!(layer_norm_slice => layer_norm_body(x: &[f32], y: &mut [f32], w: &[f32], b: &[f32], eps: f32));
dispatch!(layer_norm_grad_slice => layer_norm_grad_body(x: &[f32], g: &[f32], dx: &mut [f32], w: &[f32], eps: f32));

/// Applies `f` to the contiguous f32 data of `storage`, in parallel chunks of
/// whole rows.
fn map_f32(
    storage: &CpuStorage,
    layout: &Layout,
    row: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused kernel needs a contiguous input".into()))?;
    let x = &storage.as_slice::<f32>()?[start..end];
    let mut y = vec![0f32; x.len()];
    let chunk = (CHUNK / row).max(1) * row;
    y.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(y, x)| f(x, y));
    Ok((CpuStorage::F32(y), layout.shape().clone()))
}

/// The gradient of an element-wise or row op's input, by `op` of the input
/// and the output's gradient (in the input's dtype, contiguous).
fn input_gradient(
    arg: &Tensor,
    grad: &Tensor,
    op: &impl CustomOp2,
) -> candle_core::Result<Option<Tensor>> {
    let grad = grad.to_dtype(arg.dtype())?.contiguous()?;
    Ok(Some(arg.contiguous()?.apply_op2_no_bwd(&grad, op)?))
}

struct GeluErf;
/// Inputs `x`, the output's gradient; output: `x`'s gradient.
struct GeluErfGrad;
struct Softmax;
/// Inputs `x`, the output's gradient; output: `x`'s gradient (the
/// probabilities recomputed from `x`, so a bf16 output need not be kept).
struct SoftmaxGrad;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "ijepa-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        map_f32(s, l, 1, gelu_slice)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let n = l.shape().elem_count();
        let y = typed_launch!("ijepa_gelu", crate::cuda::elements(n), s, l, []; &(n as u64));
        Ok((y, l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        input_gradient(arg, grad, &GeluErfGrad)
    }
}

impl CustomOp2 for GeluErfGrad {
    fn name(&self) -> &'static str {
        "ijepa-gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        // The slope, then its product with the gradient (as `grad · slope`).
        let (mut dx, shape) = map_f32(s1, l1, 1, gelu_grad_slice)?;
        let g = contiguous_f32(s2, l2)?;
        if let CpuStorage::F32(dx) = &mut dx {
            dx.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .for_each(|(d, g)| d.iter_mut().zip(g).for_each(|(d, &g)| *d *= g));
        }
        Ok((dx, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let n = l1.shape().elem_count();
        let dx = typed_launch!("ijepa_gelu_grad", crate::cuda::elements(n), s1, l1, [(s2, l2)]; &(n as u64));
        Ok((dx, l1.shape().clone()))
    }
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "ijepa-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let row = l.shape().dims().last().copied().unwrap_or(1).max(1);
        map_f32(s, l, row, |x, y| softmax_slice(x, y, row))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let (rows, n) = row_count(l);
        let y = typed_launch!("ijepa_softmax", crate::cuda::rows(rows), s, l, [];
            &(rows as i32), &(n as i32));
        Ok((y, l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        // dx = y ⊙ (g − Σ g⊙y), y recomputed from x.
        input_gradient(arg, grad, &SoftmaxGrad)
    }
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "ijepa-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let row = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        let g = contiguous_f32(s2, l2)?;
        let (mut dx, shape) = map_f32(s1, l1, row, |x, y| softmax_slice(x, y, row))?;
        if let CpuStorage::F32(dx) = &mut dx {
            let chunk = (CHUNK / row).max(1) * row;
            dx.par_chunks_mut(chunk)
                .zip(g.par_chunks(chunk))
                .for_each(|(y, g)| {
                    for (y, g) in y.chunks_exact_mut(row).zip(g.chunks_exact(row)) {
                        let dot: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
                        y.iter_mut().zip(g).for_each(|(y, &g)| *y *= g - dot);
                    }
                });
        }
        Ok((dx, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (rows, n) = row_count(l1);
        let dx = typed_launch!("ijepa_softmax_grad", crate::cuda::rows(rows), s1, l1, [(s2, l2)];
            &(rows as i32), &(n as i32));
        Ok((dx, l1.shape().clone()))
    }
}

/// Mean and `1/√(var + eps)` of one row (two passes, 8 lanes each).
#[inline(always)]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = reduce8(x, 0.0, |a, b| a + b) / n;
    let mut lanes = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += (v - mean) * (v - mean);
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    let var = (lanes.iter().sum::<f32>() + tail) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

#[inline(always)]
fn layer_norm_body(x: &[f32], y: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let d = w.len();
    for (x, y) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let (mean, rstd) = row_stats(x, eps);
        for i in 0..d {
            y[i] = (x[i] - mean) * rstd * w[i] + b[i];
        }
    }
}

/// `x̂ = (x − mean)·rstd` per row.
#[inline(always)]
fn normalize_body(x: &[f32], y: &mut [f32], d: usize, eps: f32) {
    for (x, y) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let (mean, rstd) = row_stats(x, eps);
        for i in 0..d {
            y[i] = (x[i] - mean) * rstd;
        }
    }
}

/// `dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))` with `ĝ = g·w`, per row.
#[inline(always)]
fn layer_norm_grad_body(x: &[f32], g: &[f32], dx: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    for ((x, g), dx) in x
        .chunks_exact(d)
        .zip(g.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
    {
        let (mean, rstd) = row_stats(x, eps);
        let (mut sum_g, mut sum_gx) = (0f32, 0f32);
        for i in 0..d {
            let gh = g[i] * w[i];
            sum_g += gh;
            sum_gx += gh * (x[i] - mean) * rstd;
        }
        let (mg, mgx) = (sum_g / d as f32, sum_gx / d as f32);
        for i in 0..d {
            let xh = (x[i] - mean) * rstd;
            dx[i] = rstd * (g[i] * w[i] - mg - xh * mgx);
        }
    }
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused kernel needs a contiguous input".into()))?;
    Ok(&s.as_slice::<f32>()?[start..end])
}

struct LayerNormOp {
    eps: f32,
}
/// Inputs `x`, `w`, the output's gradient; output: the gradients of `x`,
/// `w` and `b` packed in one flat tensor, `[dx | dw | db]`.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "ijepa-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (w, b) = (contiguous_f32(s2, l2)?, contiguous_f32(s3, l3)?);
        map_f32(s1, l1, w.len(), |x, y| {
            layer_norm_slice(x, y, w, b, self.eps)
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        use crate::cuda::{output, storage, view};
        let dev = &s1.device;
        let (rows, d) = row_count(l1);
        check_width(d, &[l2, l3])?;
        let y = output::<f32>(dev, rows * d)?;
        crate::cuda_launch!(dev, &PTX, "ijepa_layer_norm_f32", crate::cuda::rows(rows);
            &view::<f32>(s1, l1)?, &view::<f32>(s2, l2)?, &view::<f32>(s3, l3)?, &y, &0u64,
            &(rows as i32), &(d as i32), &self.eps)?;
        Ok((storage(y, dev), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = w.dim(0)?;
        let n = x.elem_count();
        let grad = grad.contiguous()?;
        let packed = x.apply_op3_no_bwd(w, &grad, &LayerNormGrad { eps: self.eps })?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = packed.narrow(0, n, d)?;
        let db = packed.narrow(0, n + d, d)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "ijepa-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, g) = (
            contiguous_f32(s1, l1)?,
            contiguous_f32(s2, l2)?,
            contiguous_f32(s3, l3)?,
        );
        let d = w.len();
        let mut packed = vec![0f32; x.len() + 2 * d];
        let (dx, _) = packed.split_at_mut(x.len());
        let chunk = (CHUNK / d).max(1) * d;
        dx.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
            .for_each(|(dx, (x, g))| layer_norm_grad_slice(x, g, dx, w, self.eps));
        // dw = Σ_rows g·x̂, db = Σ_rows g.
        let mut gx = vec![0f32; x.len()];
        gx.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
            .for_each(|(gx, (x, g))| {
                normalize_body(x, gx, d, self.eps);
                gx.iter_mut().zip(g).for_each(|(v, &g)| *v *= g);
            });
        packed[x.len()..x.len() + d].copy_from_slice(&column_sums_body(&gx, d));
        packed[x.len() + d..].copy_from_slice(&column_sums_body(g, d));
        Ok((CpuStorage::F32(packed), Shape::from(x.len() + 2 * d)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        use crate::cuda::{output, storage, view};
        let dev = &s1.device;
        let (rows, d) = row_count(l1);
        check_width(d, &[l2])?;
        check_width(rows * d, &[l3])?;
        let n = rows * d;
        let packed = output::<f32>(dev, n + 2 * d)?;
        let stats = output::<f32>(dev, 2 * rows)?;
        let x = view::<f32>(s1, l1)?;
        let g = view::<f32>(s3, l3)?;
        crate::cuda_launch!(dev, &PTX, "ijepa_layer_norm_grad_x_f32", crate::cuda::rows(rows);
            &x, &view::<f32>(s2, l2)?, &g, &packed.slice(0..n), &stats,
            &(rows as i32), &(d as i32), &self.eps)?;
        let chunks = Chunks::of(rows);
        let partial = output::<f32>(dev, chunks.count * 2 * d)?;
        crate::cuda_launch!(dev, &PTX, "ijepa_layer_norm_partials_f32", chunks.config(d);
            &g, &x, &stats, &partial, &(rows as i32), &(d as i32), &(chunks.rows as i32))?;
        crate::cuda_launch!(dev, &PTX, "ijepa_sum_partials", crate::cuda::elements(2 * d);
            &partial, &packed.slice(n..), &(chunks.count as i32), &(2 * d as i32))?;
        Ok((storage(packed, dev), Shape::from(n + 2 * d)))
    }
}

/// Refuses operands whose element count is not `n` (a kernel would read
/// past them).
#[cfg(feature = "cuda")]
fn check_width(n: usize, layouts: &[&Layout]) -> candle_core::Result<()> {
    for l in layouts {
        if l.shape().elem_count() != n {
            candle_core::bail!(
                "CUDA kernel: an operand of shape {:?} where {n} values are needed",
                l.shape()
            );
        }
    }
    Ok(())
}

/// How the CUDA column sums split the rows: `count` chunks of `rows` rows.
#[cfg(feature = "cuda")]
struct Chunks {
    rows: usize,
    count: usize,
}

#[cfg(feature = "cuda")]
impl Chunks {
    /// At least 64 rows a chunk, at most 2048 chunks.
    fn of(rows: usize) -> Self {
        let per = rows.div_ceil(2048).max(64);
        Self {
            rows: per,
            count: rows.div_ceil(per).max(1),
        }
    }

    /// Blocks of 32 columns × 8 row lanes, one per (column block, chunk).
    fn config(&self, d: usize) -> crate::cuda::LaunchConfig {
        crate::cuda::LaunchConfig {
            grid_dim: (d.div_ceil(32).max(1) as u32, self.count as u32, 1),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// LayerNorm over the last dimension with weight and bias, with a backward
/// to all three (f32 on the CPU, and on a GPU with the `cuda` feature;
/// `None` elsewhere, for the caller's composition).
pub fn layer_norm(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f64,
) -> candle_core::Result<Option<Tensor>> {
    let cpu = cpu_f32(x) && cpu_f32(w) && cpu_f32(b);
    let cuda = gpu(x, false) && x.dtype() == DType::F32 && gpu(w, false) && gpu(b, false);
    if !(cpu || cuda) || w.dtype() != DType::F32 || b.dtype() != DType::F32 {
        return Ok(None);
    }
    let (w, b) = (w.contiguous()?, b.contiguous()?);
    Ok(Some(x.contiguous()?.apply_op3(
        &w,
        &b,
        LayerNormOp { eps: eps as f32 },
    )?))
}

/// Whether `x` goes to the CPU kernels: f32 on the CPU.
fn cpu_f32(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Sums of the columns of `(rows, d)` data: rows in blocks of about
/// [`CHUNK`] values, each block summed row by row (the inner loop runs
/// along a row, so it vectorises), the blocks' sums added in order — the
/// same result on any number of threads. candle's `sum(0)` walks each
/// column with a stride of `d` instead.
fn column_sums_body(x: &[f32], d: usize) -> Vec<f32> {
    let block = (CHUNK / d).max(1) * d;
    let partials: Vec<Vec<f32>> = x
        .par_chunks(block)
        .map(|rows| {
            let mut acc = vec![0f32; d];
            for row in rows.chunks_exact(d) {
                acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
            }
            acc
        })
        .collect();
    let mut total = vec![0f32; d];
    for p in partials {
        total.iter_mut().zip(&p).for_each(|(t, &v)| *t += v);
    }
    total
}

/// Column sums of `(rows, d)` data, as f32 `(d)` (the input f32, or bf16
/// on a GPU).
struct ColumnSums;

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "ijepa-column-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, d) = l.shape().dims2()?;
        let sums = column_sums_body(contiguous_f32(s, l)?, d);
        Ok((CpuStorage::F32(sums), Shape::from(d)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        use crate::cuda::{output, storage, view};
        use candle_core::backend::BackendStorage;
        let dev = &s.device;
        let (rows, d) = l.shape().dims2()?;
        let chunks = Chunks::of(rows);
        let partial = output::<f32>(dev, chunks.count * d)?;
        let (r, w, c) = (rows as i32, d as i32, chunks.rows as i32);
        match s.dtype() {
            DType::F32 => {
                crate::cuda_launch!(dev, &PTX, "ijepa_column_partials_f32", chunks.config(d);
                &view::<f32>(s, l)?, &partial, &r, &w, &c)?
            }
            DType::BF16 => {
                crate::cuda_launch!(dev, &PTX, "ijepa_column_partials_bf16", chunks.config(d);
                &view::<half::bf16>(s, l)?, &partial, &r, &w, &c)?
            }
            other => candle_core::bail!("column sums: no CUDA kernel for {other:?}"),
        }
        let sums = output::<f32>(dev, d)?;
        crate::cuda_launch!(dev, &PTX, "ijepa_sum_partials", crate::cuda::elements(d);
            &partial, &sums, &(chunks.count as i32), &w)?;
        Ok((storage(sums, dev), Shape::from(d)))
    }
}

/// `x.sum(0)` of a `(rows, d)` matrix, in f32 (no backward: gradients use
/// it).
fn column_sums(x: &Tensor) -> candle_core::Result<Tensor> {
    if cpu_f32(x) || gpu(x, true) {
        x.contiguous()?.apply_op1_no_bwd(&ColumnSums)
    } else {
        x.to_dtype(DType::F32)?.sum(0)
    }
}

/// `x + b` in f32, the result in `x`'s dtype (inputs `x` `(rows, d)` f32,
/// or bf16 on a GPU; `b` `(d)` f32).
struct BiasAdd;

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "ijepa-bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let b = contiguous_f32(s2, l2)?;
        map_f32(s1, l1, b.len(), |x, y| {
            for (y, x) in y.chunks_exact_mut(b.len()).zip(x.chunks_exact(b.len())) {
                for ((y, &x), &b) in y.iter_mut().zip(x).zip(b) {
                    *y = x + b;
                }
            }
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let n = l1.shape().elem_count();
        let d = l2.shape().elem_count();
        let b = crate::cuda::view::<f32>(s2, l2)?;
        let y = typed_launch!("ijepa_bias_add", crate::cuda::elements(n), s1, l1, [];
            &b, &(n as u64), &(d as i32));
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.clone()), Some(column_sums(grad)?)))
    }
}

/// `x + b` for `x` `(rows, d)` and a bias `b` `(d)`, added in f32 and
/// returned in `x`'s dtype — as a GEMM's epilogue adds the bias to its f32
/// accumulator before rounding, so under bf16 autocast the sum is f32 and
/// the result bf16 — with a backward whose bias gradient is an f32 column
/// sum of its rows. One kernel for f32 on the CPU and for f32 or bf16 on
/// a GPU; candle's composition elsewhere.
pub fn bias_add(x: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let fits = matches!(x.dims(), [_, d] if b.dims() == [*d]) && b.dtype() == DType::F32;
    if fits && ((cpu_f32(x) && cpu_f32(b)) || (gpu(x, true) && gpu(b, false))) {
        return x.contiguous()?.apply_op2(&b.contiguous()?, BiasAdd);
    }
    if x.dtype() == b.dtype() {
        return x.broadcast_add(b);
    }
    bias_add(&x.to_dtype(DType::F32)?, &b.to_dtype(DType::F32)?)?.to_dtype(x.dtype())
}

/// Exact (erf) GELU, `0.5·x·(1 + erf(x/√2))`, with a backward.
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    if cpu_f32(x) || gpu(x, true) {
        x.contiguous()?.apply_op1(GeluErf)
    } else {
        x.gelu_erf()
    }
}

/// Softmax over the last dimension, with a backward.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if cpu_f32(x) || gpu(x, false) {
        return x.contiguous()?.apply_op1(Softmax);
    }
    // The max is a constant shift: no gradient flows through it.
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Softmax of attention scores whose probabilities feed a matrix product:
/// in f32, as autocast's f32 list has it. On a GPU, bf16 scores give bf16
/// probabilities in one kernel — the values that widening, the f32
/// softmax and the product's cast to bf16 give in three.
pub fn softmax_scores(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.dtype() == DType::BF16 && gpu(x, true) {
        return x.contiguous()?.apply_op1(Softmax);
    }
    softmax_last_dim(&crate::precision::widened(x)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn exp_and_erf_are_accurate() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let (a, b) = (exp(x) as f64, (x as f64).exp());
            assert!(((a - b) / b).abs() < 3e-7, "exp({x}) = {a}, expected {b}");
        }
        for i in -600..=600 {
            let x = i as f32 / 100.0;
            let reference = libm_erf(x as f64);
            assert!(
                (erf(x) as f64 - reference).abs() < 3e-7,
                "erf({x}) = {}, expected {reference}",
                erf(x)
            );
        }
    }

    /// erf by its Maclaurin series (x small) or continued fraction, in f64.
    fn libm_erf(x: f64) -> f64 {
        // Σ (−1)^n x^(2n+1) / (n! (2n+1)), enough terms for |x| ≤ 6 in f64
        // once summed with compensation; beyond 3.9, erf = ±1 in f32 terms.
        if x.abs() > 3.9 {
            return x.signum();
        }
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 * sum.abs().max(1e-300) {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    /// The largest `|x|` of a tensor (the kernels' tests' scale).
    pub(super) fn abs_max(a: &Tensor) -> f32 {
        a.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

    /// The largest `|a − b|` (shared by the kernels' tests).
    pub(super) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        abs_max(&(a - b).unwrap())
    }

    #[test]
    fn fused_layer_norm_matches_the_composition_and_its_gradients() {
        let dev = &Device::Cpu;
        let x = Var::from_tensor(&(Tensor::randn(0.5f32, 2.0, (3, 5, 37), dev).unwrap())).unwrap();
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.3, 37, dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.3, 37, dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (3, 5, 37), dev).unwrap();
        let composed = |x: &Tensor| {
            let mean = x.mean_keepdim(D::Minus1).unwrap();
            let c = x.broadcast_sub(&mean).unwrap();
            let var = c.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            let n = c
                .broadcast_div(&(var + 1e-6).unwrap().sqrt().unwrap())
                .unwrap();
            n.broadcast_mul(w.as_tensor())
                .unwrap()
                .broadcast_add(b.as_tensor())
                .unwrap()
        };
        let ours = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-6)
            .unwrap()
            .unwrap();
        let reference = composed(x.as_tensor());
        assert!(max_diff(&ours, &reference) < 1e-5);
        let ga = (ours * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gb = (reference * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&x, &w, &b] {
            let (a, r) = (
                ga.get(v.as_tensor()).unwrap(),
                gb.get(v.as_tensor()).unwrap(),
            );
            assert!(max_diff(a, r) < 1e-4, "{}", max_diff(a, r));
        }
    }

    #[test]
    fn fused_ops_match_candle_values_and_gradients() {
        let x =
            Var::from_tensor(&(Tensor::randn(0f32, 3.0, (7, 33), &Device::Cpu).unwrap())).unwrap();
        let w = Tensor::randn(0f32, 1.0, (7, 33), &Device::Cpu).unwrap();
        type Op = fn(&Tensor) -> candle_core::Result<Tensor>;
        let pairs: [(Op, Op); 2] = [
            (gelu_erf, |t| t.gelu_erf()),
            (softmax_last_dim, |t| {
                let e = t
                    .broadcast_sub(&t.max_keepdim(D::Minus1)?.detach())?
                    .exp()?;
                e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
            }),
        ];
        for (ours, reference) in pairs {
            let (a, b) = (
                ours(x.as_tensor()).unwrap(),
                reference(x.as_tensor()).unwrap(),
            );
            assert!(max_diff(&a, &b) < 2e-6);
            let ga = (a * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (b * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let (ga, gb) = (
                ga.get(x.as_tensor()).unwrap(),
                gb.get(x.as_tensor()).unwrap(),
            );
            assert!(max_diff(ga, gb) < 2e-5, "{}", max_diff(ga, gb));
        }
    }

    #[test]
    fn fused_bias_add_matches_broadcast_add_values_and_gradients() {
        let dev = &Device::Cpu;
        // One row, a few rows, and rows over several blocks of CHUNK values.
        for (rows, d) in [(1, 5), (37, 48), (3000, 129)] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (rows, d), dev).unwrap()).unwrap();
            let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, d, dev).unwrap()).unwrap();
            let probe = Tensor::randn(0f32, 1.0, (rows, d), dev).unwrap();
            let ours = bias_add(x.as_tensor(), b.as_tensor()).unwrap();
            let reference = x.as_tensor().broadcast_add(b.as_tensor()).unwrap();
            assert_eq!(max_diff(&ours, &reference), 0.0);
            let grads = |y: Tensor| (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let (ga, gb) = (grads(ours), grads(reference));
            for v in [&x, &b] {
                let (a, r) = (
                    ga.get(v.as_tensor()).unwrap(),
                    gb.get(v.as_tensor()).unwrap(),
                );
                let scale = r
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(
                    max_diff(a, r) <= 1e-5 * scale.max(1.0),
                    "{rows}x{d}: {}",
                    max_diff(a, r)
                );
            }
        }
        // Elsewhere (here: a 3-D input) it is candle's broadcast_add.
        let x3 = Tensor::randn(0f32, 1.0, (2, 3, 4), dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 4, dev).unwrap();
        let y = bias_add(&x3, &b).unwrap();
        assert_eq!(max_diff(&y, &x3.broadcast_add(&b).unwrap()), 0.0);
    }

    #[test]
    fn column_sums_do_not_depend_on_the_thread_count() {
        let x = Tensor::randn(0f32, 1.0, (5000, 77), &Device::Cpu).unwrap();
        let bits = |t: &Tensor| -> Vec<u32> {
            t.to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        let many = bits(&column_sums(&x).unwrap());
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let single = one.install(|| bits(&column_sums(&x).unwrap()));
        assert_eq!(many, single);
        assert!(max_diff(&column_sums(&x).unwrap(), &x.sum(0).unwrap()) < 1e-3);
    }
}
