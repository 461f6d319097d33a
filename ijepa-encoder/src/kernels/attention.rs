//! The attention core as one kernel: from the fused projection `qkv`
//! `(B, N, 3D)` (rows `q | k | v`, head-major inside each, as timm's) to
//! the heads' outputs side by side `(B, N, D)`, i.e. per image and head
//! `softmax(scale·Q·Kᵀ)·V`, with its own backward.
//!
//! The candle composition it replaces splits q, k and v out of `qkv` with
//! three copies, scales q, and — in the backward — builds a zero tensor per
//! edge of that graph, pads each of q's, k's and v's gradients back to the
//! full `qkv` width and adds them up. Here every (image, head) pair is one
//! task: its scores `N × N` in a scratch buffer, products read straight
//! from `qkv` by strides (the gemm crate, which candle's CPU matmul runs),
//! and the backward writes each head's q, k and v gradients into their
//! place in one `(B, N, 3D)` tensor. The backward recomputes the scores
//! rather than keeping them (one more `N × N × D/heads` product per head).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::product::product;
use super::{contiguous_f32, cpu_f32, softmax_slice};

/// The geometry of one call.
#[derive(Debug, Clone, Copy)]
struct Heads {
    batch: usize,
    tokens: usize,
    heads: usize,
    head_dim: usize,
    scale: f32,
}

impl Heads {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Offset of head `h`'s q (`part` 0), k (1) or v (2) for image `b`'s
    /// first token in `qkv`.
    fn qkv_offset(&self, b: usize, part: usize, h: usize) -> usize {
        b * self.tokens * 3 * self.width() + part * self.width() + h * self.head_dim
    }

    /// Offset of head `h`'s output for image `b`'s first token.
    fn out_offset(&self, b: usize, h: usize) -> usize {
        b * self.tokens * self.width() + h * self.head_dim
    }
}

/// A pointer that tasks writing disjoint parts of one buffer share.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every task writes elements no other task reads or writes (its
// own image and head), and the buffer outlives the parallel loop.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The element `offset` past the start (a method, so closures capture
    /// the whole `Shared`, not its raw pointer).
    ///
    /// # Safety
    /// `offset` must be inside the buffer.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's contract.
        unsafe { self.0.add(offset) }
    }
}

/// `P = softmax(scale·Q·Kᵀ)` of image `b`, head `h`, into `p` (`N × N`).
fn probabilities(g: &Heads, qkv: &[f32], b: usize, h: usize, p: &mut [f32], scores: &mut [f32]) {
    let (n, dh, row) = (g.tokens, g.head_dim, 3 * g.width());
    let q = qkv[g.qkv_offset(b, 0, h)..].as_ptr();
    let k = qkv[g.qkv_offset(b, 1, h)..].as_ptr();
    // SAFETY: Q and K span N rows of `row` floats from their offsets, inside
    // `qkv` (checked by the caller's shape); `scores` is N × N.
    unsafe {
        product(
            (n, dh, n),
            (scores.as_mut_ptr(), n, 1),
            (q, row, 1),
            (k, 1, row),
            g.scale,
        );
    }
    softmax_slice(scores, p, n);
}

struct Attention(Heads);
struct AttentionGrad(Heads);

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "ijepa-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let qkv = contiguous_f32(s, l)?;
        let (n, dh, d) = (g.tokens, g.head_dim, g.width());
        let mut out = vec![0f32; g.batch * n * d];
        let dst = Shared(out.as_mut_ptr());
        (0..g.batch * g.heads).into_par_iter().for_each_init(
            || (vec![0f32; n * n], vec![0f32; n * n]),
            |(p, scores), task| {
                let (b, h) = (task / g.heads, task % g.heads);
                probabilities(&g, qkv, b, h, p, scores);
                let v = qkv[g.qkv_offset(b, 2, h)..].as_ptr();
                // SAFETY: this task alone writes head h of image b: N rows of
                // dh floats, D apart, inside `out`; V spans N rows of `qkv`.
                unsafe {
                    product(
                        (n, n, dh),
                        (dst.at(g.out_offset(b, h)), d, 1),
                        (p.as_ptr(), n, 1),
                        (v, 3 * d, 1),
                        1.0,
                    );
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((g.batch, n, d))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(qkv.apply_op2_no_bwd(&grad, &AttentionGrad(self.0))?))
    }
}

impl CustomOp2 for AttentionGrad {
    fn name(&self) -> &'static str {
        "ijepa-attention-grad"
    }

    /// Inputs: `qkv`, the output's gradient; output: `qkv`'s gradient.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (qkv, d_out) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        let (n, dh, d) = (g.tokens, g.head_dim, g.width());
        let row = 3 * d;
        let mut d_qkv = vec![0f32; qkv.len()];
        let dst = Shared(d_qkv.as_mut_ptr());
        (0..g.batch * g.heads).into_par_iter().for_each_init(
            || (vec![0f32; n * n], vec![0f32; n * n]),
            |(p, ds), task| {
                let (b, h) = (task / g.heads, task % g.heads);
                probabilities(&g, qkv, b, h, p, ds);
                let at = |part| qkv[g.qkv_offset(b, part, h)..].as_ptr();
                let (q, k, v) = (at(0), at(1), at(2));
                let d_o = d_out[g.out_offset(b, h)..].as_ptr();
                // SAFETY: this task alone writes head h of image b's q, k and
                // v gradients (N rows of dh floats each, `row` apart, inside
                // `d_qkv`); every read stays inside `qkv`, `d_out` and the
                // task's own N × N buffers.
                unsafe {
                    // dV = Pᵀ·dO
                    product(
                        (n, n, dh),
                        (dst.at(g.qkv_offset(b, 2, h)), row, 1),
                        (p.as_ptr(), 1, n),
                        (d_o, d, 1),
                        1.0,
                    );
                    // dP = dO·Vᵀ
                    product(
                        (n, dh, n),
                        (ds.as_mut_ptr(), n, 1),
                        (d_o, d, 1),
                        (v, 1, row),
                        1.0,
                    );
                }
                // dS = P ⊙ (dP − Σ dP⊙P), row by row (softmax's backward).
                for (ds, p) in ds.chunks_exact_mut(n).zip(p.chunks_exact(n)) {
                    let dot: f32 = ds.iter().zip(p.iter()).map(|(a, b)| a * b).sum();
                    ds.iter_mut().zip(p).for_each(|(x, &p)| *x = p * (*x - dot));
                }
                // SAFETY: as above.
                unsafe {
                    // dQ = scale·dS·K
                    product(
                        (n, n, dh),
                        (dst.at(g.qkv_offset(b, 0, h)), row, 1),
                        (ds.as_ptr(), n, 1),
                        (k, row, 1),
                        g.scale,
                    );
                    // dK = scale·dSᵀ·Q
                    product(
                        (n, n, dh),
                        (dst.at(g.qkv_offset(b, 1, h)), row, 1),
                        (ds.as_ptr(), 1, n),
                        (q, row, 1),
                        g.scale,
                    );
                }
            },
        );
        Ok((CpuStorage::F32(d_qkv), l1.shape().clone()))
    }
}

/// Multi-head attention's core on a fused projection `qkv` `(B, N, 3D)`
/// with `heads` heads: `softmax(scale·Q·Kᵀ)·V` per image and head, the
/// heads' outputs side by side, `(B, N, D)`; differentiable. `None` where
/// the kernel does not apply (not f32 on the CPU), for the caller's
/// composition.
///
/// # Errors
/// A `qkv` whose last dimension is not `3 · heads · head_dim`.
pub fn attention(qkv: &Tensor, heads: usize, scale: f64) -> candle_core::Result<Option<Tensor>> {
    if !cpu_f32(qkv) {
        return Ok(None);
    }
    let (batch, tokens, width3) = qkv.dims3()?;
    if batch * tokens == 0 {
        return Ok(None);
    }
    if heads == 0 || !width3.is_multiple_of(3 * heads) {
        candle_core::bail!("attention: qkv width {width3} is not 3 x {heads} heads");
    }
    let g = Heads {
        batch,
        tokens,
        heads,
        head_dim: width3 / 3 / heads,
        scale: scale as f32,
    };
    Ok(Some(qkv.contiguous()?.apply_op1(Attention(g))?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::max_diff;
    use candle_core::{Device, Var, D};

    /// The composition `Attention::forward` runs elsewhere.
    fn composed(qkv: &Tensor, heads: usize, scale: f64) -> Tensor {
        let (b, n, w) = qkv.dims3().unwrap();
        let d = w / 3;
        let qkv = qkv
            .reshape((b, n, 3, heads, d / heads))
            .and_then(|t| t.permute((2, 0, 3, 1, 4)))
            .unwrap();
        let part = |i| qkv.get(i).and_then(|t| t.contiguous()).unwrap();
        let (q, k, v) = ((part(0) * scale).unwrap(), part(1), part(2));
        let s = q.matmul(&k.t().unwrap()).unwrap();
        let e = s
            .broadcast_sub(&s.max_keepdim(D::Minus1).unwrap().detach())
            .and_then(|t| t.exp())
            .unwrap();
        let p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        p.matmul(&v)
            .and_then(|t| t.transpose(1, 2))
            .and_then(|t| t.reshape((b, n, d)))
            .unwrap()
    }

    #[test]
    fn fused_attention_matches_the_composition_values_and_gradients() {
        let dev = &Device::Cpu;
        // (batch, tokens, heads, head dim): one token, odd sizes, ViT-Ti's.
        for (b, n, h, dh) in [(1, 1, 1, 4), (2, 7, 3, 5), (3, 50, 4, 16), (2, 196, 3, 64)] {
            let qkv = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, n, 3 * h * dh), dev).unwrap())
                .unwrap();
            let probe = Tensor::randn(0f32, 1.0, (b, n, h * dh), dev).unwrap();
            let scale = (dh as f64).powf(-0.5);
            let ours = attention(qkv.as_tensor(), h, scale).unwrap().unwrap();
            let reference = composed(qkv.as_tensor(), h, scale);
            assert!(max_diff(&ours, &reference) < 1e-5, "{b}x{n}x{h}x{dh}");
            let grad = |y: Tensor| {
                let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
                g.get(qkv.as_tensor()).unwrap().clone()
            };
            let (ga, gb) = (grad(ours), grad(reference));
            let scale = gb
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let diff = max_diff(&ga, &gb);
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "{b}x{n}x{h}x{dh}: {diff} of {scale}"
            );
        }
    }

    #[test]
    fn other_inputs_are_left_to_the_composition_or_refused() {
        let dev = &Device::Cpu;
        let bf16 = Tensor::zeros((1, 2, 6), candle_core::DType::BF16, dev).unwrap();
        assert!(attention(&bf16, 1, 1.0).unwrap().is_none());
        let empty = Tensor::zeros((1, 0, 6), candle_core::DType::F32, dev).unwrap();
        assert!(attention(&empty, 1, 1.0).unwrap().is_none());
        let odd = Tensor::zeros((1, 2, 7), candle_core::DType::F32, dev).unwrap();
        let err = attention(&odd, 1, 1.0).unwrap_err().to_string();
        assert!(err.contains("qkv width 7"), "{err}");
    }
}
