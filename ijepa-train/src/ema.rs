//! The EMA teacher: its update and the two momentum schedules.

use ijepa_encoder::WeightMap;

use crate::error::{Result, TrainError};

/// `teacher ← m·teacher + (1 − m)·student` for every tensor, written into
/// the teacher's own storage, so every tensor sharing it (the teacher
/// network built over these tensors) sees the new values without being
/// rebuilt. The student's values are read detached: the teacher never
/// enters an autograd graph. Contiguous f32 tensors on the CPU take one
/// pass (`kernels/ema.rs`); others compose the same bits and copy them in.
///
/// # Errors
/// A key of the teacher that the student lacks (the two must be twins), of
/// another shape, or a teacher tensor that is not contiguous (the model
/// keeps contiguous copies).
pub fn ema_update(teacher: &mut WeightMap, student: &WeightMap, momentum: f64) -> Result<()> {
    for (name, t) in teacher.iter_mut() {
        let s = student
            .get(name)
            .ok_or_else(|| TrainError::Config(format!("EMA: the student has no tensor {name}")))?;
        if t.dims() != s.dims() {
            return Err(TrainError::Config(format!(
                "EMA: {name} is {:?} in the teacher, {:?} in the student",
                t.dims(),
                s.dims()
            )));
        }
        if crate::kernels::fusable(&[t, s]) {
            crate::kernels::ema::update(t, s, momentum)?;
        } else {
            let new = ((&*t * momentum)? + (s.detach() * (1.0 - momentum))?)?;
            // Views of the whole storage: 0-d tensors too.
            t.flatten_all()?
                .slice_set(&new.flatten_all()?.contiguous()?, 0, 0)?;
        }
    }
    Ok(())
}

/// The EMA momentum's start and end: the paper's (every published config)
/// and stable-pretraining's `ema_decay_start` / `ema_decay_end`.
pub const MOMENTUM: (f64, f64) = (0.996, 1.0);

/// Official schedule, linear per step: `m_i = start + i·(end − start)/span`,
/// `i` counting optimizer steps from 0, `span = iterations/epoch · epochs ·
/// ipe_scale` as a float (7.5 for 2 · 3 · 1.25: the official generator does
/// not round it).
pub fn linear_momentum(start: f64, end: f64, step: u64, span: f64) -> f64 {
    if span <= 0.0 {
        return end;
    }
    start + step as f64 * (end - start) / span
}

/// stable-pretraining's schedule, cosine per epoch:
/// `m = end − (end − start)·(cos(π·epoch/epochs) + 1)/2`.
pub fn cosine_momentum(start: f64, end: f64, epoch: u64, epochs: u64) -> f64 {
    if epochs == 0 {
        return end;
    }
    let c = (std::f64::consts::PI * epoch as f64 / epochs as f64).cos();
    end - (end - start) * (c + 1.0) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_place_update_is_bit_identical_to_the_composition() {
        use candle_core::{Device, Tensor};
        let dev = Device::Cpu;
        let mk = |seed: f64| {
            let t = Tensor::arange(0f32, 100_000.0, &dev).unwrap();
            t.affine(seed, 0.3)
                .unwrap()
                .sin()
                .unwrap()
                .reshape((250, 400))
                .unwrap()
        };
        let (t0, s0) = (mk(0.37), mk(1.91));
        let student = WeightMap::from([("w".to_string(), s0.clone())]);
        let mut fused = WeightMap::from([("w".to_string(), t0.copy().unwrap())]);
        let shared = fused["w"].clone();
        ema_update(&mut fused, &student, 0.996).unwrap();
        // The composition, as the other devices run it.
        let composed = ((&t0 * 0.996).unwrap() + (&s0 * (1.0 - 0.996)).unwrap()).unwrap();
        let bits = |t: &Tensor| -> Vec<u32> {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        assert_eq!(bits(&fused["w"]), bits(&composed));
        // In place: a tensor sharing the teacher's storage sees it.
        assert_eq!(bits(&shared), bits(&composed));
        let wrong = WeightMap::from([(
            "w".to_string(),
            Tensor::zeros(3, candle_core::DType::F32, &dev).unwrap(),
        )]);
        let err = ema_update(&mut fused, &wrong, 0.5).unwrap_err().to_string();
        assert!(err.contains("[250, 400]") && err.contains("[3]"), "{err}");

        // Where the kernel does not apply (here f64), the composition is
        // written in place as well.
        let (t64, s64) = (
            t0.to_dtype(candle_core::DType::F64).unwrap(),
            s0.to_dtype(candle_core::DType::F64).unwrap(),
        );
        let student = WeightMap::from([("w".to_string(), s64.clone())]);
        let mut other = WeightMap::from([("w".to_string(), t64.copy().unwrap())]);
        let shared = other["w"].clone();
        ema_update(&mut other, &student, 0.996).unwrap();
        let composed = ((&t64 * 0.996).unwrap() + (&s64 * (1.0 - 0.996)).unwrap()).unwrap();
        let bits64 = |t: &Tensor| -> Vec<u64> {
            let v = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        assert_eq!(bits64(&shared), bits64(&composed));
    }

    #[test]
    fn schedules_hit_their_closed_forms() {
        assert_eq!(linear_momentum(0.996, 1.0, 0, 1000.0), 0.996);
        assert!((linear_momentum(0.996, 1.0, 250, 1000.0) - 0.997).abs() < 1e-15);
        assert_eq!(linear_momentum(0.996, 1.0, 1000, 1000.0), 1.0);
        // The official generator at ipe 2, 3 epochs, ipe_scale 1.25: i / 7.5.
        assert!((linear_momentum(0.996, 1.0, 3, 7.5) - (0.996 + 3.0 * 0.004 / 7.5)).abs() < 1e-15);
        assert_eq!(cosine_momentum(0.996, 1.0, 0, 100), 0.996);
        assert!((cosine_momentum(0.996, 1.0, 50, 100) - 0.998).abs() < 1e-15);
        assert!((cosine_momentum(0.996, 1.0, 100, 100) - 1.0).abs() < 1e-15);
    }
}
