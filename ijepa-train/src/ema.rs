//! The EMA teacher: its update and the two momentum schedules.

use ijepa_encoder::WeightMap;

use crate::error::{Result, TrainError};

/// `teacher ← m·teacher + (1 − m)·student` for every tensor, in place of
/// the map's values. The student's values are read detached: the teacher
/// never enters an autograd graph.
///
/// # Errors
/// A key of the teacher that the student lacks (the two must be twins).
pub fn ema_update(teacher: &mut WeightMap, student: &WeightMap, momentum: f64) -> Result<()> {
    for (name, t) in teacher.iter_mut() {
        let s = student
            .get(name)
            .ok_or_else(|| TrainError::Config(format!("EMA: the student has no tensor {name}")))?;
        *t = ((&*t * momentum)? + (s.detach() * (1.0 - momentum))?)?;
    }
    Ok(())
}

/// Official schedule, linear per step: `m_i = start + i·(end − start)/total`,
/// `i` counting optimizer steps from 0, `total = iterations/epoch · epochs ·
/// ipe_scale`.
pub fn linear_momentum(start: f64, end: f64, step: u64, total_steps: u64) -> f64 {
    if total_steps == 0 {
        return end;
    }
    start + step as f64 * (end - start) / total_steps as f64
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
    fn schedules_hit_their_closed_forms() {
        assert_eq!(linear_momentum(0.996, 1.0, 0, 1000), 0.996);
        assert!((linear_momentum(0.996, 1.0, 250, 1000) - 0.997).abs() < 1e-15);
        assert_eq!(linear_momentum(0.996, 1.0, 1000, 1000), 1.0);
        assert_eq!(cosine_momentum(0.996, 1.0, 0, 100), 0.996);
        assert!((cosine_momentum(0.996, 1.0, 50, 100) - 0.998).abs() < 1e-15);
        assert!((cosine_momentum(0.996, 1.0, 100, 100) - 1.0).abs() < 1e-15);
    }
}
