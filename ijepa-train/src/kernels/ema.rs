//! The EMA teacher update `t ← m·t + (1 − m)·s`, in place over the teacher.

use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor};
use rayon::prelude::*;

use super::{slice, slice_mut, CHUNK};

struct Ema {
    momentum: f32,
    one_minus: f32,
}

impl InplaceOp2 for Ema {
    fn name(&self) -> &'static str {
        "ijepa-ema"
    }

    fn cpu_fwd(
        &self,
        t: &mut CpuStorage,
        lt: &Layout,
        s: &CpuStorage,
        ls: &Layout,
    ) -> candle_core::Result<()> {
        let s = slice(s, ls)?;
        let (m, n) = (self.momentum, self.one_minus);
        slice_mut(t, lt)?
            .par_chunks_mut(CHUNK)
            .zip(s.par_chunks(CHUNK))
            .for_each(|(t, s)| {
                t.iter_mut()
                    .zip(s)
                    .for_each(|(t, &s)| *t = (*t * m + 0.0) + (s * n + 0.0));
            });
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        t: &mut candle_core::CudaStorage,
        lt: &Layout,
        s: &candle_core::CudaStorage,
        ls: &Layout,
    ) -> candle_core::Result<()> {
        super::in_place_launch!("ijepa_ema", t, lt, [(s, ls)]; &self.momentum, &self.one_minus)
    }
}

/// `teacher ← momentum·teacher + (1 − momentum)·student`, writing the
/// teacher's storage (both contiguous f32, on the CPU or a GPU, one shape).
///
/// # Errors
/// A tensor that is not contiguous f32 on the CPU or a GPU.
pub(crate) fn update(teacher: &Tensor, student: &Tensor, momentum: f64) -> candle_core::Result<()> {
    teacher.inplace_op2(
        student,
        &Ema {
            momentum: momentum as f32,
            one_minus: (1.0 - momentum) as f32,
        },
    )
}
