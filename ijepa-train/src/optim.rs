//! AdamW with parameter groups and inspectable state.
//!
//! candle's `AdamW` keeps its moments private (so no checkpoint can hold
//! them) and applies one weight decay to every variable; I-JEPA decays only
//! weights of rank ≥ 2 (and the mask token). This one follows PyTorch's
//! `torch.optim.AdamW` operation for operation. On the CPU the update runs
//! in place, one pass per tensor (`kernels/adamw.rs`, bit-identical
//! to the composition the other devices run).

use candle_core::{backprop::GradStore, Device, Tensor, Var};

use crate::error::{Result, TrainError};
use crate::kernels::{self, adamw::Coefficients};

/// One group of variables sharing a weight decay.
#[derive(Debug)]
pub struct ParamGroup {
    /// `(name, variable)` pairs.
    pub params: Vec<(String, Var)>,
    /// Decoupled weight decay of this group.
    pub weight_decay: f64,
    /// Whether [`AdamW::set_weight_decay`] (the schedule) sets this
    /// group's decay; groups that never decay say `false`.
    pub scheduled: bool,
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
    /// Whether CPU tensors are updated in place by the fused kernels
    /// (otherwise by the candle composition; the results are identical).
    fused: bool,
}

impl AdamW {
    /// `(β1, β2)` of I-JEPA's AdamW (PyTorch's defaults, as the official
    /// code leaves them).
    pub const BETAS: (f64, f64) = (0.9, 0.999);

    /// The denominator epsilon of I-JEPA's AdamW (PyTorch's default).
    pub const EPS: f64 = 1e-8;

    /// An optimizer over `groups` with [`AdamW::BETAS`] and [`AdamW::EPS`].
    pub fn new(groups: Vec<ParamGroup>, lr: f64) -> Self {
        let state = groups.iter().map(|g| vec![None; g.params.len()]).collect();
        Self {
            groups,
            lr,
            betas: Self::BETAS,
            eps: Self::EPS,
            step: 0,
            state,
            fused: true,
        }
    }

    /// Whether I-JEPA decays the variable `name` of rank `rank`: every one
    /// of rank ≥ 2 (including `mask_token`), no bias and no other 1-D one.
    pub fn decays(name: &str, rank: usize) -> bool {
        rank >= 2 || name.ends_with("mask_token")
    }

    /// I-JEPA's two groups: decay `weight_decay` on the variables
    /// [`AdamW::decays`] names, none on the others.
    pub fn ijepa_groups(named: Vec<(String, Var)>, weight_decay: f64) -> Vec<ParamGroup> {
        let (decay, plain): (Vec<_>, Vec<_>) = named
            .into_iter()
            .partition(|(name, v)| Self::decays(name, v.rank()));
        vec![
            ParamGroup {
                params: decay,
                weight_decay,
                scheduled: true,
            },
            ParamGroup {
                params: plain,
                weight_decay: 0.0,
                scheduled: false,
            },
        ]
    }

    /// Sets the weight decay of the scheduled groups (I-JEPA's schedule).
    pub fn set_weight_decay(&mut self, weight_decay: f64) {
        for g in self.groups.iter_mut().filter(|g| g.scheduled) {
            g.weight_decay = weight_decay;
        }
    }

    /// The moments as named tensors (`{param}.exp_avg`, `{param}.exp_avg_sq`)
    /// for a checkpoint; [`AdamW::step`] counts the steps.
    pub fn state_tensors(&self) -> ijepa_encoder::WeightMap {
        let mut out = ijepa_encoder::WeightMap::new();
        for (group, states) in self.groups.iter().zip(&self.state) {
            for ((name, _), m) in group.params.iter().zip(states) {
                if let Some(m) = m {
                    out.insert(format!("{name}.exp_avg"), m.exp_avg.clone());
                    out.insert(format!("{name}.exp_avg_sq"), m.exp_avg_sq.clone());
                }
            }
        }
        out
    }

    /// The variables that have no moments yet (none after a step in which
    /// every variable had a gradient).
    pub fn without_moments(&self) -> Vec<&str> {
        let mut out = vec![];
        for (group, states) in self.groups.iter().zip(&self.state) {
            for ((name, _), m) in group.params.iter().zip(states) {
                if m.is_none() {
                    out.push(name.as_str());
                }
            }
        }
        out
    }

    /// Restores moments saved by [`AdamW::state_tensors`] after `step` steps.
    ///
    /// # Errors
    /// A saved moment for a parameter this optimizer does not have, or of
    /// another shape than the parameter.
    pub fn load_state(&mut self, tensors: &ijepa_encoder::WeightMap, step: u64) -> Result<()> {
        let mut known = std::collections::HashSet::new();
        for (group, states) in self.groups.iter().zip(self.state.iter_mut()) {
            for ((name, var), slot) in group.params.iter().zip(states.iter_mut()) {
                let (a, b) = (format!("{name}.exp_avg"), format!("{name}.exp_avg_sq"));
                known.insert(a.clone());
                known.insert(b.clone());
                *slot = match (tensors.get(&a), tensors.get(&b)) {
                    (Some(m), Some(v)) => {
                        for (key, t) in [(&a, m), (&b, v)] {
                            if t.dims() != var.dims() {
                                return Err(TrainError::Optimizer(format!(
                                    "{key} has shape {:?}, the parameter {name} {:?}",
                                    t.dims(),
                                    var.dims()
                                )));
                            }
                        }
                        // Own copies: the update writes them in place.
                        Some(Moments {
                            exp_avg: m.copy()?,
                            exp_avg_sq: v.copy()?,
                        })
                    }
                    _ => None,
                };
            }
        }
        if let Some(unknown) = tensors.keys().find(|k| !known.contains(*k)) {
            return Err(TrainError::Optimizer(format!(
                "{unknown} belongs to no parameter of this model"
            )));
        }
        self.step = step;
        Ok(())
    }

    /// One update from `grads`; variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let update = self.propose(grads)?;
        self.apply(update)
    }

    /// The update `grads` would make — new values of the variables and
    /// their moments — without changing anything yet, so the caller can
    /// check it first ([`Update::non_finite`]) and [`AdamW::apply`] it or
    /// drop it.
    pub fn propose(&self, grads: &GradStore) -> Result<Update> {
        let step = self.step + 1;
        let (b1, b2) = self.betas;
        let bias1 = 1.0 - b1.powi(step as i32);
        let bias2 = 1.0 - b2.powi(step as i32);
        let mut changes = vec![];
        let mut fused_finite = true;
        let mut device_flag = None;
        for (gi, (group, states)) in self.groups.iter().zip(&self.state).enumerate() {
            for (pi, ((_, var), state)) in group.params.iter().zip(states).enumerate() {
                let Some(g) = grads.get(var.as_tensor()) else {
                    continue;
                };
                let moments_fusable = state
                    .as_ref()
                    .is_none_or(|m| kernels::fusable(&[&m.exp_avg, &m.exp_avg_sq]));
                if self.fused && moments_fusable && kernels::fusable(&[var.as_tensor(), g]) {
                    let coefficients =
                        Coefficients::new(self.lr, group.weight_decay, self.betas, self.eps, step);
                    let (moments, fresh) = match state {
                        Some(m) => (m.clone(), false),
                        None => {
                            let zeros = || g.zeros_like();
                            let m = Moments {
                                exp_avg: zeros()?,
                                exp_avg_sq: zeros()?,
                            };
                            (m, true)
                        }
                    };
                    let (p, m, v) = (var.as_tensor(), &moments.exp_avg, &moments.exp_avg_sq);
                    fused_finite &=
                        kernels::adamw::finite(&coefficients, p, g, m, v, &mut device_flag)?;
                    changes.push(Change::InPlace {
                        group: gi,
                        param: pi,
                        grad: g.clone(),
                        coefficients,
                        fresh: fresh.then_some(moments),
                    });
                    continue;
                }
                let (m, v) = match state {
                    Some(m) => (m.exp_avg.clone(), m.exp_avg_sq.clone()),
                    None => (g.zeros_like()?, g.zeros_like()?),
                };
                // PyTorch: param *= 1 − lr·wd; then the Adam step.
                let p = (var.as_tensor() * (1.0 - self.lr * group.weight_decay))?;
                let exp_avg = ((m * b1)? + (g * (1.0 - b1))?)?;
                let exp_avg_sq = ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                let denom = ((exp_avg_sq.sqrt()? / bias2.sqrt())? + self.eps)?;
                let value = (p - (exp_avg.div(&denom)? * (self.lr / bias1))?)?;
                changes.push(Change::New {
                    group: gi,
                    param: pi,
                    value,
                    moments: Moments {
                        exp_avg,
                        exp_avg_sq,
                    },
                });
            }
        }
        Ok(Update {
            step,
            changes,
            fused_finite,
            device_flag,
        })
    }

    /// Makes a proposed update: the variables take their new values and
    /// the step counter advances.
    ///
    /// # Errors
    /// An update proposed by another optimizer (stale or foreign).
    pub fn apply(&mut self, update: Update) -> Result<()> {
        if update.step != self.step + 1 {
            return Err(TrainError::Optimizer(format!(
                "an update for step {} cannot be applied after step {}",
                update.step, self.step
            )));
        }
        for c in update.changes {
            match c {
                Change::New {
                    group,
                    param,
                    value,
                    moments,
                } => {
                    self.groups[group].params[param].1.set(&value)?;
                    self.state[group][param] = Some(moments);
                }
                Change::InPlace {
                    group,
                    param,
                    grad,
                    coefficients,
                    fresh,
                } => {
                    let slot = &mut self.state[group][param];
                    if let Some(fresh) = fresh {
                        *slot = Some(fresh);
                    }
                    let Some(m) = slot.as_ref() else {
                        return Err(TrainError::Optimizer(format!(
                            "{}: an in-place update without moments",
                            self.groups[group].params[param].0
                        )));
                    };
                    let p = self.groups[group].params[param].1.as_tensor();
                    kernels::adamw::apply(&coefficients, p, &grad, &m.exp_avg, &m.exp_avg_sq)?;
                }
            }
        }
        self.step = update.step;
        Ok(())
    }
}

/// What one variable's update does.
#[derive(Debug)]
enum Change {
    /// New value and moments, computed (the composition).
    New {
        group: usize,
        param: usize,
        value: Tensor,
        moments: Moments,
    },
    /// Computed in place when applied (the fused CPU kernel); `fresh`
    /// holds zero moments at the first step.
    InPlace {
        group: usize,
        param: usize,
        grad: Tensor,
        coefficients: Coefficients,
        fresh: Option<Moments>,
    },
}

/// An AdamW update not applied yet ([`AdamW::propose`]).
#[derive(Debug)]
pub struct Update {
    step: u64,
    changes: Vec<Change>,
    /// Whether every in-place change on the CPU would leave finite values
    /// (checked when proposed, by a read-only pass).
    fused_finite: bool,
    /// The same for the in-place changes on a GPU, not read back: 0, or NaN
    /// if a value would not be finite.
    device_flag: Option<Tensor>,
}

impl Update {
    /// A scalar (on the parameters' device, not read back) that is 0 when
    /// every new value and second moment is finite and NaN otherwise: one
    /// reduction the caller reads when it reads the rest of the step.
    ///
    /// # Errors
    /// A tensor error.
    pub fn non_finite(&self) -> Result<Option<Tensor>> {
        if !self.fused_finite {
            // In-place changes live on the CPU, as everything of this step.
            return Ok(Some(Tensor::new(f32::NAN, &Device::Cpu)?));
        }
        let mut probes = Vec::with_capacity(2 * self.changes.len() + 1);
        if let Some(flag) = &self.device_flag {
            probes.push(flag.sum_all()?);
        }
        for c in &self.changes {
            let Change::New { value, moments, .. } = c else {
                continue;
            };
            for t in [value, &moments.exp_avg_sq] {
                // x·0 is 0 for every finite x and NaN for ±∞ and NaN.
                probes.push((t * 0.0)?.sum_all()?);
            }
        }
        if probes.is_empty() {
            return Ok(None);
        }
        Ok(Some(Tensor::stack(&probes, 0)?.sum_all()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn problem() -> (Vec<(String, Var)>, Tensor) {
        let w =
            Var::from_tensor(&Tensor::new(&[[0.5f32, -1.0], [2.0, 0.25]], &Device::Cpu).unwrap())
                .unwrap();
        let b = Var::from_tensor(&Tensor::new(&[0.1f32, -0.2], &Device::Cpu).unwrap()).unwrap();
        let x = Tensor::new(&[[1.0f32, 2.0], [-1.0, 0.5], [0.3, -0.7]], &Device::Cpu).unwrap();
        (vec![("w".into(), w), ("b".into(), b)], x)
    }

    fn loss(params: &[(String, Var)], x: &Tensor) -> Tensor {
        let y = x
            .matmul(params[0].1.as_tensor())
            .unwrap()
            .broadcast_add(params[1].1.as_tensor())
            .unwrap();
        y.sqr().unwrap().sum_all().unwrap()
    }

    #[test]
    fn first_step_matches_the_closed_form() {
        let (params, x) = problem();
        let before = params[0].1.as_tensor().to_vec2::<f32>().unwrap();
        let grads = loss(&params, &x).backward().unwrap();
        let g = grads
            .get(params[0].1.as_tensor())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let mut opt = AdamW::new(AdamW::ijepa_groups(params.clone(), 0.1), 0.01);
        opt.step(&grads).unwrap();
        let after = params[0].1.as_tensor().to_vec2::<f32>().unwrap();
        for i in 0..2 {
            for j in 0..2 {
                // Step 1: m̂ = g, v̂ = g², so p ← p(1 − lr·wd) − lr·g/(|g| + eps).
                let p = before[i][j] as f64;
                let gg = g[i][j] as f64;
                let expected = p * (1.0 - 0.01 * 0.1) - 0.01 * gg / (gg.abs() + 1e-8);
                assert!((after[i][j] as f64 - expected).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn saved_state_resumes_bit_exactly() {
        let run = |split: bool| {
            let (params, x) = problem();
            let mut opt = AdamW::new(AdamW::ijepa_groups(params.clone(), 0.1), 0.01);
            for i in 0..4 {
                if split && i == 2 {
                    let saved = opt.state_tensors();
                    let step = opt.step;
                    opt = AdamW::new(AdamW::ijepa_groups(params.clone(), 0.1), 0.01);
                    opt.load_state(&saved, step).unwrap();
                }
                let grads = loss(&params, &x).backward().unwrap();
                opt.step(&grads).unwrap();
            }
            params
                .iter()
                .map(|(_, v)| {
                    v.as_tensor()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(false), run(true));
    }

    /// The bits of every parameter and moment after `steps` steps from the
    /// start values `w0`, `b0`, fused (in place) or composed.
    fn trajectory(fused: bool, w0: &Tensor, b0: &Tensor, steps: usize) -> Vec<Vec<u32>> {
        let w = Var::from_tensor(&w0.copy().unwrap()).unwrap();
        let b = Var::from_tensor(&b0.copy().unwrap()).unwrap();
        let params = vec![("w".to_string(), w.clone()), ("b".to_string(), b.clone())];
        let mut opt = AdamW::new(AdamW::ijepa_groups(params, 0.05), 3e-3);
        opt.fused = fused;
        for i in 0..steps {
            let k = w0.dim(0).unwrap();
            let x = Tensor::arange(0f32, (8 * k) as f32, &Device::Cpu)
                .and_then(|t| t.reshape((8, k)))
                .and_then(|t| t.affine(0.01 * (i + 1) as f64, -1.0))
                .and_then(|t| t.sin())
                .unwrap();
            let y = x
                .matmul(w.as_tensor())
                .and_then(|y| y.broadcast_add(b.as_tensor()))
                .unwrap();
            let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            opt.lr = 3e-3 * (i + 1) as f64;
            let update = opt.propose(&grads).unwrap();
            let in_place = |c: &Change| matches!(c, Change::InPlace { .. });
            assert!(update.changes.iter().all(|c| in_place(c) == fused));
            opt.apply(update).unwrap();
        }
        let mut out = vec![w.as_tensor().clone(), b.as_tensor().clone()];
        for m in opt.state.iter().flatten().flatten() {
            out.extend([m.exp_avg.clone(), m.exp_avg_sq.clone()]);
        }
        out.iter()
            .map(|t| {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v.iter().map(|x| x.to_bits()).collect()
            })
            .collect()
    }

    #[test]
    fn the_in_place_update_is_bit_identical_to_the_composition() {
        // Large enough to be split over the cores.
        let w0 = Tensor::randn(0f32, 1.0, (330, 700), &Device::Cpu).unwrap();
        let b0 = Tensor::randn(0f32, 1.0, 700, &Device::Cpu).unwrap();
        let fused = trajectory(true, &w0, &b0, 6);
        assert_eq!(fused.len(), 6, "w, b and their two moments each");
        assert_eq!(fused, trajectory(false, &w0, &b0, 6));
    }

    #[test]
    fn a_non_finite_in_place_update_is_seen_before_anything_changes() {
        let (params, x) = problem();
        let before = params[0].1.as_tensor().copy().unwrap();
        let mut opt = AdamW::new(AdamW::ijepa_groups(params.clone(), 0.1), f64::INFINITY);
        let grads = loss(&params, &x).backward().unwrap();
        let update = opt.propose(&grads).unwrap();
        let probe = update.non_finite().unwrap().unwrap();
        assert!(probe.to_scalar::<f32>().unwrap().is_nan());
        // Proposing changed nothing, and the moments were not created.
        let now = params[0].1.as_tensor();
        assert_eq!(
            now.to_vec2::<f32>().unwrap(),
            before.to_vec2::<f32>().unwrap()
        );
        assert!(opt.state.iter().flatten().all(Option::is_none));
        drop(update);
        opt.lr = 0.01;
        assert!(opt.propose(&grads).unwrap().non_finite().unwrap().is_none());
    }

    #[test]
    fn foreign_state_is_refused() {
        let (params, _) = problem();
        let mut opt = AdamW::new(AdamW::ijepa_groups(params, 0.1), 0.01);
        let mut state = ijepa_encoder::WeightMap::new();
        state.insert(
            "nope.exp_avg".into(),
            Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
        let err = opt.load_state(&state, 3).unwrap_err().to_string();
        assert!(err.contains("nope.exp_avg"), "{err}");
    }
}
