//! AdamW, PyTorch's `torch.optim.AdamW` update, in place: the moments, then
//! the parameter, one pass each, after a read-only pass that says whether
//! the new values would all be finite (so a refused step changes nothing).

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Tensor};
use rayon::prelude::*;

use super::{slice, slice_mut, CHUNK};

/// The f32 constants of one step of one parameter group, rounded from f64
/// as candle rounds them (laid out as `optim.cu`'s `Adam`, which the CUDA
/// kernels take by value).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
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

// SAFETY: plain f32 fields in C layout, as the kernels' `Adam` (eight
// floats, checked below).
#[cfg(feature = "cuda")]
unsafe impl ijepa_encoder::cuda::DeviceRepr for Coefficients {}
const _: () = assert!(std::mem::size_of::<Coefficients>() == 32);

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
/// f32, one shape) leaves the parameter and the second moment finite.
/// Reads only. On the CPU the answer is returned; on a GPU it is `true` and
/// the answer goes to the device scalar `flag` (made on first use, shared
/// by every tensor of the step): NaN is written there if a value would not
/// be finite, so the step reads it back with the rest of the step.
///
/// # Errors
/// A tensor that is not contiguous f32 on the CPU or a GPU.
pub(crate) fn finite(
    c: &Coefficients,
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    flag: &mut Option<Tensor>,
) -> candle_core::Result<bool> {
    #[cfg(feature = "cuda")]
    if p.device().is_cuda() {
        check_on_gpu(c, [p, g, m, v], flag)?;
        return Ok(true);
    }
    let _ = flag;
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

/// The GPU's finiteness check of one update: NaN into `flag` if needed.
#[cfg(feature = "cuda")]
fn check_on_gpu(
    c: &Coefficients,
    tensors: [&Tensor; 4],
    flag: &mut Option<Tensor>,
) -> candle_core::Result<()> {
    use ijepa_encoder::cuda::{cuda_storage, elements, storage_of, view};
    let flag = match flag {
        Some(f) => f.clone(),
        None => flag
            .insert(Tensor::zeros(
                1,
                candle_core::DType::F32,
                tensors[0].device(),
            )?)
            .clone(),
    };
    let [p, g, m, v] = tensors.map(storage_of);
    let ((p, lp), (g, lg), (m, lm), (v, lv)) = (p?, g?, m?, v?);
    let (f, lf) = storage_of(&flag)?;
    let n = lp.shape().elem_count();
    let dev = cuda_storage(&p)?.device.clone();
    ijepa_encoder::cuda_launch!(dev, &super::PTX, "ijepa_adamw_check", elements(n);
        &view::<f32>(cuda_storage(&p)?, &lp)?, &view::<f32>(cuda_storage(&g)?, &lg)?,
        &view::<f32>(cuda_storage(&m)?, &lm)?, &view::<f32>(cuda_storage(&v)?, &lv)?,
        // The flag is this step's own tensor, written through a view of a
        // read guard: safe on the one stream candle computes on (every
        // kernel of the step is ordered on it); the writes race with
        // nothing but each other, and all write NaN.
        &view::<f32>(cuda_storage(&f)?, &lf)?, &(n as u64), c)
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

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        m: &mut candle_core::CudaStorage,
        lm: &Layout,
        g: &candle_core::CudaStorage,
        lg: &Layout,
    ) -> candle_core::Result<()> {
        super::in_place_launch!("ijepa_adamw_first", m, lm, [(g, lg)]; &self.0)
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

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        v: &mut candle_core::CudaStorage,
        lv: &Layout,
        g: &candle_core::CudaStorage,
        lg: &Layout,
    ) -> candle_core::Result<()> {
        super::in_place_launch!("ijepa_adamw_second", v, lv, [(g, lg)]; &self.0)
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

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        p: &mut candle_core::CudaStorage,
        lp: &Layout,
        m: &candle_core::CudaStorage,
        lm: &Layout,
        v: &candle_core::CudaStorage,
        lv: &Layout,
    ) -> candle_core::Result<()> {
        super::in_place_launch!("ijepa_adamw_param", p, lp, [(m, lm), (v, lv)]; &self.0)
    }
}

/// The update, in place: `m` and `v` take their new values, then `p`.
///
/// # Errors
/// A tensor that is not contiguous f32 on the CPU or a GPU.
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
