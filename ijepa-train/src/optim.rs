//! AdamW with parameter groups and inspectable state.
//!
//! candle's `AdamW` keeps its moments private (so no checkpoint can hold
//! them) and applies one weight decay to every variable; I-JEPA decays only
//! weights of rank ≥ 2 (and the mask token). This one follows PyTorch's
//! `torch.optim.AdamW` operation for operation.

use candle_core::{backprop::GradStore, Tensor, Var};
use ijepa_encoder::Result;

/// One group of variables sharing a weight decay.
#[derive(Debug)]
pub struct ParamGroup {
    /// `(name, variable)` pairs.
    pub params: Vec<(String, Var)>,
    /// Decoupled weight decay of this group.
    pub weight_decay: f64,
}

/// Adam moments of one variable.
#[derive(Debug, Clone)]
pub struct Moments {
    /// First moment.
    pub exp_avg: Tensor,
    /// Second moment.
    pub exp_avg_sq: Tensor,
}

/// AdamW (Loshchilov & Hutter) with decoupled weight decay per group.
#[derive(Debug)]
pub struct AdamW {
    /// Parameter groups.
    pub groups: Vec<ParamGroup>,
    /// Learning rate of the next step.
    pub lr: f64,
    /// `(β1, β2)`.
    pub betas: (f64, f64),
    /// Denominator epsilon.
    pub eps: f64,
    /// Steps taken.
    pub step: u64,
    /// Moments, by group then parameter (created at the first step).
    pub state: Vec<Vec<Option<Moments>>>,
}

impl AdamW {
    /// An optimizer over `groups` with β (0.9, 0.999) and eps 1e-8.
    pub fn new(groups: Vec<ParamGroup>, lr: f64) -> Self {
        let state = groups.iter().map(|g| vec![None; g.params.len()]).collect();
        Self {
            groups,
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            step: 0,
            state,
        }
    }

    /// I-JEPA's two groups: decay `weight_decay` on every variable of rank
    /// ≥ 2 (including `mask_token`), none on biases and other 1-D variables.
    pub fn ijepa_groups(named: Vec<(String, Var)>, weight_decay: f64) -> Vec<ParamGroup> {
        let (decay, plain): (Vec<_>, Vec<_>) = named
            .into_iter()
            .partition(|(name, v)| v.rank() >= 2 || name.ends_with("mask_token"));
        vec![
            ParamGroup {
                params: decay,
                weight_decay,
            },
            ParamGroup {
                params: plain,
                weight_decay: 0.0,
            },
        ]
    }

    /// Sets the weight decay of the groups that decay (I-JEPA's schedule).
    pub fn set_weight_decay(&mut self, weight_decay: f64) {
        for g in self.groups.iter_mut().filter(|g| g.weight_decay != 0.0) {
            g.weight_decay = weight_decay;
        }
    }

    /// One update from `grads`; variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let (b1, b2) = self.betas;
        let bias1 = 1.0 - b1.powi(self.step as i32);
        let bias2 = 1.0 - b2.powi(self.step as i32);
        for (group, states) in self.groups.iter().zip(self.state.iter_mut()) {
            for ((_, var), state) in group.params.iter().zip(states.iter_mut()) {
                let Some(g) = grads.get(var.as_tensor()) else {
                    continue;
                };
                let m = state.get_or_insert_with(|| Moments {
                    exp_avg: g.zeros_like().expect("zeros"),
                    exp_avg_sq: g.zeros_like().expect("zeros"),
                });
                // PyTorch: param *= 1 − lr·wd; then the Adam step.
                let p = (var.as_tensor() * (1.0 - self.lr * group.weight_decay))?;
                m.exp_avg = ((&m.exp_avg * b1)? + (g * (1.0 - b1))?)?;
                m.exp_avg_sq = ((&m.exp_avg_sq * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                let denom = ((m.exp_avg_sq.sqrt()? / bias2.sqrt())? + self.eps)?;
                let update = (m.exp_avg.div(&denom)? * (self.lr / bias1))?;
                var.set(&(p - update)?)?;
            }
        }
        Ok(())
    }
}
