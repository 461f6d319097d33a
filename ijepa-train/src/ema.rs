//! The EMA teacher's update (its momentum schedules are in
//! [`crate::schedule`]).

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
}
