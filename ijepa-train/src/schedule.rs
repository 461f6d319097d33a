//! The schedules of a run: the official learning rate and weight decay
//! (facebookresearch/ijepa `WarmupCosineSchedule`, `CosineWDSchedule`) and
//! the EMA teacher's momentum of either recipe.
//!
//! The first two count optimizer steps; the official code increments its counter
//! before computing a value, so the first update uses step 1. Past
//! `total_steps` the values stay at their final ones (the official formulas
//! would wrap around the cosine).

/// Linear warm-up from `start_lr` to `ref_lr` over `warmup_steps`, then a
/// cosine from `ref_lr` down to `final_lr` at `total_steps`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupCosine {
    /// Learning rate at step 0.
    pub start_lr: f64,
    /// Peak learning rate, reached at the end of the warm-up.
    pub ref_lr: f64,
    /// Learning rate at the end of training.
    pub final_lr: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: u64,
    /// Steps in all (`iterations/epoch · epochs · ipe_scale`).
    pub total_steps: u64,
}

impl WarmupCosine {
    /// The learning rate for step `step` (the official counter: 1 for the
    /// first update).
    pub fn at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            let progress = step as f64 / self.warmup_steps.max(1) as f64;
            return self.start_lr + progress * (self.ref_lr - self.start_lr);
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        // Clamped: past the end the official formula wraps around the cosine.
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let lr = self.final_lr
            + (self.ref_lr - self.final_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        lr.max(self.final_lr)
    }
}

/// Weight decay on a half cosine from `ref_wd` to `final_wd` (I-JEPA goes
/// *up*, 0.04 → 0.4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineWeightDecay {
    /// Weight decay at step 0.
    pub ref_wd: f64,
    /// Weight decay at `total_steps`.
    pub final_wd: f64,
    /// Steps in all.
    pub total_steps: u64,
}

impl CosineWeightDecay {
    /// The weight decay for step `step`.
    pub fn at(&self, step: u64) -> f64 {
        let progress = (step as f64 / self.total_steps.max(1) as f64).min(1.0);
        let wd = self.final_wd
            + (self.ref_wd - self.final_wd) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        if self.final_wd <= self.ref_wd {
            wd.max(self.final_wd)
        } else {
            wd.min(self.final_wd)
        }
    }
}

/// The EMA momentum's start and end: the paper's (every published config)
/// and stable-pretraining's `ema_decay_start` / `ema_decay_end`.
pub const MOMENTUM: (f64, f64) = (0.996, 1.0);

/// The EMA teacher's momentum over a run, from `start` to `end`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Momentum {
    /// The official schedule, linear per step: `m_i = start + i·(end −
    /// start)/span`, `i` counting optimizer steps from 0, `span =
    /// iterations/epoch · epochs · ipe_scale` as a float (7.5 for 2 · 3 ·
    /// 1.25: the official generator does not round it).
    PerStep {
        /// Momentum at step 0.
        start: f64,
        /// Momentum at step `span`.
        end: f64,
        /// Steps of the schedule (unrounded).
        span: f64,
    },
    /// stable-pretraining's schedule, cosine per epoch: `m = end − (end −
    /// start)·(cos(π·epoch/epochs) + 1)/2`.
    PerEpoch {
        /// Momentum in epoch 0.
        start: f64,
        /// Momentum in epoch `epochs`.
        end: f64,
        /// Epochs of the run.
        epochs: u64,
    },
}

impl Momentum {
    /// The momentum of the teacher update after optimizer step `step`
    /// (from 0), taken in epoch `epoch`.
    pub fn at(&self, step: u64, epoch: u64) -> f64 {
        match *self {
            Self::PerStep { start, end, span } => {
                if span <= 0.0 {
                    return end;
                }
                start + step as f64 * (end - start) / span
            }
            Self::PerEpoch { start, end, epochs } => {
                if epochs == 0 {
                    return end;
                }
                let c = (std::f64::consts::PI * epoch as f64 / epochs as f64).cos();
                end - (end - start) * (c + 1.0) / 2.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ViT-H/14 recipe at 1000 steps per epoch: 40 warm-up epochs of 300.
    fn lr() -> WarmupCosine {
        WarmupCosine {
            start_lr: 2e-4,
            ref_lr: 1e-3,
            final_lr: 1e-6,
            warmup_steps: 40_000,
            total_steps: 300_000,
        }
    }

    #[test]
    fn learning_rate_closed_forms() {
        let s = lr();
        assert_eq!(s.at(0), 2e-4);
        assert!((s.at(20_000) - 6e-4).abs() < 1e-15);
        assert!((s.at(40_000) - 1e-3).abs() < 1e-15);
        // Halfway through the cosine: (ref + final) / 2.
        assert!((s.at(170_000) - (1e-3 + 1e-6) / 2.0).abs() < 1e-15);
        assert!((s.at(300_000) - 1e-6).abs() < 1e-15);
        assert_eq!(s.at(400_000), 1e-6, "never below final_lr");
    }

    #[test]
    fn weight_decay_rises_on_a_half_cosine() {
        let s = CosineWeightDecay {
            ref_wd: 0.04,
            final_wd: 0.4,
            total_steps: 1000,
        };
        assert!((s.at(0) - 0.04).abs() < 1e-15);
        assert!((s.at(500) - 0.22).abs() < 1e-12);
        assert!((s.at(1000) - 0.4).abs() < 1e-15);
        assert_eq!(s.at(2000), 0.4, "never above final_wd");
        // A quarter in: 0.4 + (0.04 − 0.4)·(1 + cos(π/4))/2.
        let expected = 0.4 + (0.04 - 0.4) * 0.5 * (1.0 + std::f64::consts::FRAC_PI_4.cos());
        assert!((s.at(250) - expected).abs() < 1e-15);
    }

    #[test]
    fn momentum_schedules_hit_their_closed_forms() {
        let linear = |step, span| {
            Momentum::PerStep {
                start: 0.996,
                end: 1.0,
                span,
            }
            .at(step, 0)
        };
        assert_eq!(linear(0, 1000.0), 0.996);
        assert!((linear(250, 1000.0) - 0.997).abs() < 1e-15);
        assert_eq!(linear(1000, 1000.0), 1.0);
        // The official generator at ipe 2, 3 epochs, ipe_scale 1.25: i / 7.5.
        assert!((linear(3, 7.5) - (0.996 + 3.0 * 0.004 / 7.5)).abs() < 1e-15);
        let cosine = |epoch| {
            Momentum::PerEpoch {
                start: 0.996,
                end: 1.0,
                epochs: 100,
            }
            .at(7, epoch)
        };
        assert_eq!(cosine(0), 0.996);
        assert!((cosine(50) - 0.998).abs() < 1e-15);
        assert!((cosine(100) - 1.0).abs() < 1e-15);
    }
}
