//! Fused CPU kernels with a backward pass: exact-GELU, softmax, LayerNorm,
//! Linear, the attention core.
//!
//! candle 0.11.1 computes `gelu_erf` one element at a time through libm and
//! its fused softmax has no backward (DESIGN §6); on a ViT forward these two
//! cost as much as all the matrix products. These kernels run on all cores
//! (rayon), in loops the compiler vectorises (AVX-512, else AVX2/FMA, when
//! the CPU has them, chosen at run time), with a polynomial `exp` and the
//! Abramowitz–Stegun 7.1.26 `erf` that PyTorch's vectorised CPU kernels
//! use, with a series near zero (|error| ≤ 2e-7).
//! Both have a backward, so the same code serves training and inference.
//! Other devices and dtypes use candle's differentiable compositions.
//! The attention core (scores, softmax, values) is one kernel with its own
//! backward: [`attention`]; so is a Linear layer's product and bias:
//! [`linear`].

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

mod attention;
mod linear;
mod product;
pub use attention::attention;
pub use linear::linear;

const CHUNK: usize = 1 << 14;

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

struct GeluErf;
struct GeluErfGrad;
struct Softmax;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "ijepa-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        map_f32(s, l, 1, gelu_slice)
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let slope = arg.apply_op1_no_bwd(&GeluErfGrad)?;
        Ok(Some(grad.mul(&slope)?))
    }
}

impl CustomOp1 for GeluErfGrad {
    fn name(&self) -> &'static str {
        "ijepa-gelu-erf-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        map_f32(s, l, 1, gelu_grad_slice)
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

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        // dx = y ⊙ (g − Σ g⊙y)
        let dot = (grad * res)?.sum_keepdim(D::Minus1)?;
        Ok(Some((res * grad.broadcast_sub(&dot)?)?))
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
struct Normalize {
    eps: f32,
}
struct LayerNormGradX {
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

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = w.dim(0)?;
        let grad = grad.contiguous()?;
        let dx = x.apply_op3_no_bwd(w, &grad, &LayerNormGradX { eps: self.eps })?;
        let rows = grad.elem_count() / d;
        let g2 = grad.reshape((rows, d))?;
        let xhat = x
            .apply_op1_no_bwd(&Normalize { eps: self.eps })?
            .reshape((rows, d))?;
        let dw = column_sums(&(g2.clone() * xhat)?)?;
        let db = column_sums(&g2)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp1 for Normalize {
    fn name(&self) -> &'static str {
        "ijepa-normalize"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = l.shape().dims().last().copied().unwrap_or(1).max(1);
        map_f32(s, l, d, |x, y| normalize_body(x, y, d, self.eps))
    }
}

impl CustomOp3 for LayerNormGradX {
    fn name(&self) -> &'static str {
        "ijepa-layer-norm-grad"
    }

    /// Inputs: `x`, `w`, `grad`.
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
        let mut dx = vec![0f32; x.len()];
        let chunk = (CHUNK / d).max(1) * d;
        dx.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
            .for_each(|(dx, (x, g))| layer_norm_grad_slice(x, g, dx, w, self.eps));
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// LayerNorm over the last dimension with weight and bias, with a backward
/// to all three (f32 on the CPU; `None` elsewhere, for the caller's
/// composition).
pub fn layer_norm(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f64,
) -> candle_core::Result<Option<Tensor>> {
    if !(fused(x) && fused(w) && fused(b)) {
        return Ok(None);
    }
    let (w, b) = (w.contiguous()?, b.contiguous()?);
    Ok(Some(x.contiguous()?.apply_op3(
        &w,
        &b,
        LayerNormOp { eps: eps as f32 },
    )?))
}

fn fused(x: &Tensor) -> bool {
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
}

/// `x.sum(0)` of a `(rows, d)` matrix (no backward: gradients use it).
fn column_sums(x: &Tensor) -> candle_core::Result<Tensor> {
    if fused(x) {
        x.contiguous()?.apply_op1_no_bwd(&ColumnSums)
    } else {
        x.sum(0)
    }
}

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

/// `x + b` for `x` `(rows, d)` and a bias `b` `(d)`, with a backward whose
/// bias gradient is a column sum of its rows (f32 on the CPU; candle's
/// `broadcast_add` elsewhere).
pub fn bias_add(x: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    match x.dims() {
        [_, d] if fused(x) && fused(b) && b.dims() == [*d] => {
            x.contiguous()?.apply_op2(&b.contiguous()?, BiasAdd)
        }
        _ => x.broadcast_add(b),
    }
}

/// Exact (erf) GELU, `0.5·x·(1 + erf(x/√2))`, with a backward.
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    if fused(x) {
        x.contiguous()?.apply_op1(GeluErf)
    } else {
        x.gelu_erf()
    }
}

/// Softmax over the last dimension, with a backward.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if fused(x) {
        return x.contiguous()?.apply_op1(Softmax);
    }
    // The max is a constant shift: no gradient flows through it.
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
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
