//! AdamW, PyTorch's `torch.optim.AdamW` update, in place: the moments, then
//! the parameter, one pass each, after a read-only pass that says whether
//! the new values would all be finite (so a refused step changes nothing).

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Tensor};
use rayon::prelude::*;

use super::{slice, slice_mut, CHUNK};

/// The f32 constants of one step of one parameter group, rounded from f64
/// as candle rounds them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Coefficients {
    decay: f32,
    b1: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    inv_sqrt_bias2: f32,
    eps: f32,
    step_size: f32,
}

impl Coefficients {
    /// Step `step` (from 1) at `lr`, decoupled decay `weight_decay`.
    pub(crate) fn new(lr: f64, weight_decay: f64, betas: (f64, f64), eps: f64, step: u64) -> Self {
        let (b1, b2) = betas;
        let bias1 = 1.0 - b1.powi(step as i32);
        let bias2 = 1.0 - b2.powi(step as i32);
        Self {
            decay: (1.0 - lr * weight_decay) as f32,
            b1: b1 as f32,
            one_minus_b1: (1.0 - b1) as f32,
            b2: b2 as f32,
            one_minus_b2: (1.0 - b2) as f32,
            inv_sqrt_bias2: (1.0 / bias2.sqrt()) as f32,
            eps: eps as f32,
            step_size: (lr / bias1) as f32,
        }
    }

    #[inline(always)]
    fn m(&self, m: f32, g: f32) -> f32 {
        (m * self.b1 + 0.0) + (g * self.one_minus_b1 + 0.0)
    }

    #[inline(always)]
    fn v(&self, v: f32, g: f32) -> f32 {
        (v * self.b2 + 0.0) + ((g * g) * self.one_minus_b2 + 0.0)
    }

    /// The new parameter from the new moments.
    #[inline(always)]
    fn p(&self, p: f32, m: f32, v: f32) -> f32 {
        let denom = (v.sqrt() * self.inv_sqrt_bias2 + 0.0) * 1.0 + self.eps;
        (p * self.decay + 0.0) - ((m / denom) * self.step_size + 0.0)
    }
}

/// Whether the update of `p` by `g` with moments `m`, `v` (all contiguous
/// f32 on the CPU, one shape) leaves the parameter and the second moment
/// finite. Reads only.
///
/// # Errors
/// A tensor that is not contiguous f32 on the CPU.
pub(crate) fn finite(
    c: &Coefficients,
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
) -> candle_core::Result<bool> {
    let guards = [p, g, m, v].map(|t| t.storage_and_layout());
    let mut s = [&[][..]; 4];
    for (slot, (storage, layout)) in s.iter_mut().zip(&guards) {
        let candle_core::Storage::Cpu(cpu) = &**storage else {
            candle_core::bail!("fused AdamW: a tensor is not on the CPU");
        };
        *slot = slice(cpu, layout)?;
    }
    let [p, g, m, v] = s;
    Ok(p.par_chunks(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
        .all(|((p, g), (m, v))| {
            let mut ok = true;
            for i in 0..p.len() {
                let (m1, v1) = (c.m(m[i], g[i]), c.v(v[i], g[i]));
                // x·0 is 0 for finite x and NaN otherwise, as Update::non_finite.
                ok &= (c.p(p[i], m1, v1) * 0.0 + v1 * 0.0) == 0.0;
            }
            ok
        }))
}

struct FirstMoment(Coefficients);
struct SecondMoment(Coefficients);
struct Parameter(Coefficients);

impl InplaceOp2 for FirstMoment {
    fn name(&self) -> &'static str {
        "ijepa-adamw-exp-avg"
    }

    fn cpu_fwd(
        &self,
        m: &mut CpuStorage,
        lm: &Layout,
        g: &CpuStorage,
        lg: &Layout,
    ) -> candle_core::Result<()> {
        let g = slice(g, lg)?;
        slice_mut(m, lm)?
            .par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .for_each(|(m, g)| m.iter_mut().zip(g).for_each(|(m, &g)| *m = self.0.m(*m, g)));
        Ok(())
    }
}

impl InplaceOp2 for SecondMoment {
    fn name(&self) -> &'static str {
        "ijepa-adamw-exp-avg-sq"
    }

    fn cpu_fwd(
        &self,
        v: &mut CpuStorage,
        lv: &Layout,
        g: &CpuStorage,
        lg: &Layout,
    ) -> candle_core::Result<()> {
        let g = slice(g, lg)?;
        slice_mut(v, lv)?
            .par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .for_each(|(v, g)| v.iter_mut().zip(g).for_each(|(v, &g)| *v = self.0.v(*v, g)));
        Ok(())
    }
}

impl InplaceOp3 for Parameter {
    fn name(&self) -> &'static str {
        "ijepa-adamw-param"
    }

    fn cpu_fwd(
        &self,
        p: &mut CpuStorage,
        lp: &Layout,
        m: &CpuStorage,
        lm: &Layout,
        v: &CpuStorage,
        lv: &Layout,
    ) -> candle_core::Result<()> {
        let (m, v) = (slice(m, lm)?, slice(v, lv)?);
        slice_mut(p, lp)?
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
            .for_each(|(p, (m, v))| {
                for i in 0..p.len() {
                    p[i] = self.0.p(p[i], m[i], v[i]);
                }
            });
        Ok(())
    }
}

/// The update, in place: `m` and `v` take their new values, then `p`.
///
/// # Errors
/// A tensor that is not contiguous f32 on the CPU.
pub(crate) fn apply(
    c: &Coefficients,
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
) -> candle_core::Result<()> {
    m.inplace_op2(g, &FirstMoment(*c))?;
    v.inplace_op2(g, &SecondMoment(*c))?;
    p.inplace_op3(m, v, &Parameter(*c))
}
