//! An official facebookresearch/ijepa training checkpoint (`*.pth.tar`,
//! written by its `train.py`), read to continue its run (`run.resume_from`,
//! `ijepa-cli pretrain --resume-from`).
//!
//! The file holds `encoder`, `predictor`, `target_encoder` (state dicts
//! with DDP's `module.` prefixes), `opt` (`torch.optim.AdamW`'s state
//! dict), `scaler`, `epoch` (the epochs completed), `loss`, `batch_size`,
//! `world_size` and `lr`. The official `init_opt` builds four parameter
//! groups — the encoder's then the predictor's parameters that are neither
//! biases nor 1-D, then the encoder's and the predictor's biases and 1-D
//! parameters (no weight decay) — so the optimizer state's parameter `i` is
//! the `i`-th of those, in `named_parameters()` order, which is the order
//! of the state dicts. The fixed position tables are parameters there too
//! but never have a gradient, hence no moments.
//!
//! The official `train.py` resumes at the start of epoch `epoch`: its
//! schedules are stepped `epoch × iterations per epoch` times, AdamW keeps
//! its own step count. A run continued here does the same: its schedules
//! start at step `epoch × steps_per_epoch` of its own data and batch, AdamW
//! at the checkpoint's step.
//!
//! ```no_run
//! use ijepa_train::run::official_checkpoint::OfficialCheckpoint;
//!
//! let path = std::path::Path::new("jepa-latest.pth.tar");
//! let run = ijepa_encoder::VitConfig::from_timm_name("vit_huge_patch14_gap_224")?;
//! let ck = OfficialCheckpoint::load(path, Some(&run), &candle_core::Device::Cpu)?;
//! println!("epoch {}, {} AdamW steps", ck.epoch, ck.optimizer_step);
//! # Ok::<(), ijepa_train::TrainError>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use ijepa_encoder::io::torch::{PyValue, TorchFile};
use ijepa_encoder::WeightMap;

use crate::error::{Result, TrainError};
use crate::optim::AdamW;
use crate::run::init::InitWeights;

/// What an official checkpoint gives a run that continues it.
#[derive(Debug)]
pub struct OfficialCheckpoint {
    /// Its file.
    pub path: PathBuf,
    /// Its encoder (the student), target encoder and predictor.
    pub weights: InitWeights,
    /// Epochs completed: the run continues with this one (from 0).
    pub epoch: u64,
    /// AdamW steps taken.
    pub optimizer_step: u64,
    /// AdamW moments under ijepa-rs's names
    /// (`encoder.{param}.exp_avg`, `predictor.{param}.exp_avg_sq` …).
    pub moments: WeightMap,
    /// Images the official run trained on (steps × `batch_size` ×
    /// `world_size`), when the file says its batch.
    pub images_seen: Option<u64>,
    /// What the continuation does not take over, one line each.
    pub notes: Vec<String>,
}

impl OfficialCheckpoint {
    /// Reads `path` onto `device`; `run` (the run's encoder) says what the
    /// file does not: its head count (see [`InitWeights::load`]).
    ///
    /// # Errors
    /// A file that is not an official training checkpoint, or whose
    /// optimizer state does not match the official `init_opt` (another
    /// grouping, other AdamW settings, parameters at different steps), each
    /// named; a parameter the run trains without moments is refused by
    /// [`OfficialCheckpoint::restore`], which knows what the run trains.
    pub fn load(
        path: &Path,
        run: Option<&ijepa_encoder::VitConfig>,
        device: &Device,
    ) -> Result<Self> {
        let bad = |reason: String| TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let weights = InitWeights::load(&path.display().to_string(), run, device)?;
        if weights.layout != "official" {
            return Err(bad(format!(
                "run.resume_from takes an official facebookresearch/ijepa training checkpoint \
                 (.pth.tar); these are {} weights: start a run from them with model.init (--init), \
                 or continue an ijepa-rs run with --resume --out RUN",
                weights.layout
            )));
        }
        let mut file = TorchFile::open(path)?;
        let root = file.root().clone();
        let epoch = count(&root, "epoch").map_err(bad)?;
        let opt = root
            .get("opt")
            .ok_or_else(|| bad("no 'opt' (the AdamW state) in it".into()))?;
        let params = official_params(&root).map_err(bad)?;
        let groups = check_groups(opt, &params).map_err(bad)?;

        let mut moments = WeightMap::new();
        let mut steps: BTreeMap<u64, String> = BTreeMap::new();
        for (id, state) in opt.get("state").map(PyValue::pairs).unwrap_or_default() {
            let Some((name, shape)) = id
                .as_int()
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| groups.get(i))
            else {
                return Err(bad(format!(
                    "opt.state has an entry for parameter {id:?}, which no parameter group holds"
                )));
            };
            let step = match state.get("step") {
                Some(PyValue::Tensor(t)) => {
                    let t = file.tensor(&format!("opt.state.{name}.step"), t)?;
                    f64::from(
                        t.to_dtype(DType::F32)?
                            .flatten_all()?
                            .get(0)?
                            .to_scalar::<f32>()?,
                    )
                }
                Some(v) => v.as_f64().unwrap_or(f64::NAN),
                None => f64::NAN,
            };
            if !(step >= 0.0 && step.fract() == 0.0) {
                return Err(bad(format!(
                    "opt.state of {name}: its step is not a count of steps"
                )));
            }
            steps.entry(step as u64).or_insert_with(|| name.clone());
            for key in ["exp_avg", "exp_avg_sq"] {
                let Some(PyValue::Tensor(t)) = state.get(key) else {
                    return Err(bad(format!(
                        "opt.state of {name}: no {key} tensor (not AdamW's state)"
                    )));
                };
                let t = file.tensor(&format!("opt.state.{name}.{key}"), t)?;
                if t.dims() != shape.as_slice() {
                    return Err(bad(format!(
                        "opt.state of {name}: {key} has shape {:?}, the parameter {shape:?}",
                        t.dims()
                    )));
                }
                moments.insert(
                    format!("{name}.{key}"),
                    t.to_dtype(DType::F32)?.to_device(device)?,
                );
            }
        }
        let mut ends = steps.iter();
        let optimizer_step = match (ends.next(), ends.next_back()) {
            (None, _) => 0,
            (Some((&step, _)), None) => step,
            (Some((first, a)), Some((last, b))) => {
                return Err(bad(format!(
                    "its parameters are at different AdamW steps ({a} at {first}, {b} at {last}); \
                     a run continues with one step count"
                )));
            }
        };
        let batch = count(&root, "batch_size").ok();
        let world = count(&root, "world_size").ok();
        let images_seen = batch.zip(world).map(|(b, w)| optimizer_step * b * w);

        let mut notes = vec![format!(
            "continuing the official run {} after epoch {epoch} ({optimizer_step} AdamW steps{}): its \
             encoder, target encoder, predictor and AdamW moments; this run's data order, crops and \
             masks are its own draws from run.seed (the official loader's and mask collator's \
             streams are not reproduced)",
            path.display(),
            match (batch, world) {
                (Some(b), Some(w)) => format!(" of {b} images × {w} processes"),
                _ => String::new(),
            }
        )];
        if !matches!(root.get("scaler"), None | Some(PyValue::None)) {
            notes.push(
                "its GradScaler state is not used: ijepa-rs's bf16 needs and takes no loss scaling"
                    .into(),
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            weights,
            epoch,
            optimizer_step,
            moments,
            images_seen,
            notes,
        })
    }

    /// Gives `optimizer` (over the model these weights built) the moments
    /// and step count.
    ///
    /// # Errors
    /// A moment for a parameter the optimizer does not train, or a
    /// parameter it trains that has no moments after a step.
    pub fn restore(&self, optimizer: &mut AdamW) -> Result<()> {
        optimizer.load_state(&self.moments, self.optimizer_step)?;
        if self.optimizer_step > 0 {
            if let Some(name) = optimizer.without_moments().first() {
                return Err(TrainError::Checkpoint {
                    path: self.path.clone(),
                    reason: format!(
                        "{name} has no AdamW state in it, and this run trains it (the official recipe keeps it fixed)"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A non-negative integer entry `key` of the checkpoint.
fn count(root: &PyValue, key: &str) -> std::result::Result<u64, String> {
    root.get(key)
        .and_then(PyValue::as_int)
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| format!("no non-negative integer {key:?} in it"))
}

/// The parameters of the encoder then the predictor, in their state
/// dicts' order: ijepa-rs name (`encoder.…`, `predictor.…`) and shape.
fn official_params(root: &PyValue) -> std::result::Result<Vec<(String, Vec<usize>)>, String> {
    let mut out = vec![];
    for (key, prefix) in [("encoder", "encoder"), ("predictor", "predictor")] {
        let dict = root
            .get(key)
            .ok_or_else(|| format!("no {key:?} state dict in it"))?;
        for (k, v) in dict.pairs() {
            if let (Some(k), PyValue::Tensor(t)) = (k.as_str(), v) {
                let k = ijepa_encoder::weights::without_ddp_prefix(k);
                out.push((format!("{prefix}.{k}"), t.shape.clone()));
            }
        }
    }
    Ok(out)
}

/// Checks `opt`'s parameter groups against the official `init_opt` over
/// `params` and AdamW's settings against ijepa-rs's; returns the
/// parameters in the optimizer's numbering.
fn check_groups(
    opt: &PyValue,
    params: &[(String, Vec<usize>)],
) -> std::result::Result<Vec<(String, Vec<usize>)>, String> {
    // The official init_opt: ('bias' not in n) and (len(p.shape) != 1) decays.
    let official_decays = |name: &str, shape: &[usize]| !name.contains("bias") && shape.len() != 1;
    let part = |module: &str, decays: bool| -> Vec<(String, Vec<usize>)> {
        params
            .iter()
            .filter(|(n, s)| n.starts_with(module) && official_decays(n, s) == decays)
            .cloned()
            .collect()
    };
    let expected = [
        part("encoder.", true),
        part("predictor.", true),
        part("encoder.", false),
        part("predictor.", false),
    ];
    let groups = opt
        .get("param_groups")
        .and_then(PyValue::items)
        .ok_or("no opt.param_groups in it")?;
    let sizes = |g: &[PyValue]| -> Vec<usize> {
        g.iter()
            .map(|g| {
                g.get("params")
                    .and_then(PyValue::items)
                    .map_or(0, <[_]>::len)
            })
            .collect()
    };
    let want: Vec<usize> = expected.iter().map(Vec::len).collect();
    if sizes(groups) != want {
        return Err(format!(
            "its AdamW has parameter groups of {:?} parameters, where the official init_opt makes {want:?} \
             (encoder and predictor weights, then their biases and 1-D parameters): not a checkpoint of the official train.py",
            sizes(groups)
        ));
    }
    let mut numbered: BTreeMap<i64, (String, Vec<usize>)> = BTreeMap::new();
    for (g, (group, members)) in groups.iter().zip(expected).enumerate() {
        let setting = |key: &str| group.get(key);
        let number = |key: &str| setting(key).and_then(PyValue::as_f64);
        let betas = setting("betas")
            .and_then(PyValue::items)
            .map(|b| b.iter().map(PyValue::as_f64).collect::<Vec<_>>());
        if betas != Some(vec![Some(AdamW::BETAS.0), Some(AdamW::BETAS.1)]) {
            return Err(format!(
                "opt.param_groups[{g}].betas is {:?}; ijepa-rs's AdamW has {:?}",
                setting("betas"),
                AdamW::BETAS
            ));
        }
        if number("eps") != Some(AdamW::EPS) {
            return Err(format!(
                "opt.param_groups[{g}].eps is {:?}; ijepa-rs's AdamW has {:e}",
                setting("eps"),
                AdamW::EPS
            ));
        }
        for (key, want) in [
            ("amsgrad", false),
            ("maximize", false),
            ("decoupled_weight_decay", true),
        ] {
            match setting(key).map(|v| v.as_int()) {
                None => {}
                Some(Some(v)) if (v != 0) == want => {}
                Some(v) => {
                    return Err(format!(
                        "opt.param_groups[{g}].{key} is {v:?}; ijepa-rs's AdamW has {key} = {want}"
                    ))
                }
            }
        }
        if g >= 2 && number("weight_decay") != Some(0.0) {
            return Err(format!(
                "opt.param_groups[{g}] (biases and 1-D parameters) has weight_decay {:?}; the official \
                 init_opt and ijepa-rs decay none of them",
                setting("weight_decay")
            ));
        }
        let ids = setting("params").and_then(PyValue::items).unwrap_or(&[]);
        for (id, (name, shape)) in ids.iter().zip(members) {
            // The rule ijepa-rs's groups follow must agree with the file's.
            if AdamW::decays(&name, shape.len()) != (g < 2) {
                return Err(format!(
                    "{name} (shape {shape:?}) is {} in the official groups and {} in ijepa-rs's",
                    if g < 2 { "decayed" } else { "not decayed" },
                    if g < 2 { "not" } else { "is" }
                ));
            }
            let Some(id) = id.as_int() else {
                return Err(format!(
                    "opt.param_groups[{g}].params holds a {}, not a parameter number",
                    id.kind()
                ));
            };
            if numbered.insert(id, (name.clone(), shape.clone())).is_some() {
                return Err(format!("parameter {id} is in two of opt.param_groups"));
            }
        }
    }
    // torch numbers the parameters 0, 1, … across the groups.
    if !numbered.keys().copied().eq(0..params.len() as i64) {
        return Err(format!(
            "opt.param_groups do not number the parameters 0 to {} (torch's state_dict does)",
            params.len().saturating_sub(1)
        ));
    }
    Ok(numbered.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> PyValue {
        PyValue::Str(x.into())
    }

    /// An `opt` of the official grouping over `params`, with `edit` applied
    /// to each group's settings.
    fn opt(
        params: &[(String, Vec<usize>)],
        edit: impl Fn(usize, &mut Vec<(PyValue, PyValue)>),
    ) -> PyValue {
        let official_decays = |n: &str, shape: &[usize]| !n.contains("bias") && shape.len() != 1;
        let mut next = 0i64;
        let mut groups = vec![];
        for (g, (module, decays)) in [
            ("encoder.", true),
            ("predictor.", true),
            ("encoder.", false),
            ("predictor.", false),
        ]
        .into_iter()
        .enumerate()
        {
            let ids: Vec<PyValue> = params
                .iter()
                .filter(|(n, sh)| n.starts_with(module) && official_decays(n, sh) == decays)
                .map(|_| {
                    next += 1;
                    PyValue::Int(next - 1)
                })
                .collect();
            let mut settings = vec![
                (
                    s("betas"),
                    PyValue::List(vec![PyValue::Float(0.9), PyValue::Float(0.999)]),
                ),
                (s("eps"), PyValue::Float(1e-8)),
                (
                    s("weight_decay"),
                    PyValue::Float(if decays { 0.04 } else { 0.0 }),
                ),
                (s("amsgrad"), PyValue::Bool(false)),
                (s("params"), PyValue::List(ids)),
            ];
            edit(g, &mut settings);
            groups.push(PyValue::Dict(settings));
        }
        PyValue::Dict(vec![(s("param_groups"), PyValue::List(groups))])
    }

    fn params() -> Vec<(String, Vec<usize>)> {
        [
            ("encoder.pos_embed", vec![1, 4, 8]),
            ("encoder.patch_embed.proj.weight", vec![8, 3, 2, 2]),
            ("encoder.patch_embed.proj.bias", vec![8]),
            ("encoder.norm.weight", vec![8]),
            ("predictor.mask_token", vec![1, 1, 4]),
            ("predictor.predictor_embed.weight", vec![4, 8]),
            ("predictor.predictor_embed.bias", vec![4]),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect()
    }

    #[test]
    fn the_official_grouping_numbers_the_parameters_group_by_group() {
        let p = params();
        let numbered = check_groups(&opt(&p, |_, _| {}), &p).unwrap();
        let names: Vec<&str> = numbered.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "encoder.pos_embed",
                "encoder.patch_embed.proj.weight",
                "predictor.mask_token",
                "predictor.predictor_embed.weight",
                "encoder.patch_embed.proj.bias",
                "encoder.norm.weight",
                "predictor.predictor_embed.bias",
            ]
        );
    }

    #[test]
    fn other_adamw_settings_and_groupings_are_refused_by_name() {
        let p = params();
        type Edit = Box<dyn Fn(usize, &mut Vec<(PyValue, PyValue)>)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|_, g| {
                    g[0].1 = PyValue::List(vec![PyValue::Float(0.9), PyValue::Float(0.95)])
                }),
                "opt.param_groups[0].betas",
            ),
            (
                Box::new(|_, g| g[1].1 = PyValue::Float(1e-6)),
                "opt.param_groups[0].eps",
            ),
            (Box::new(|_, g| g[3].1 = PyValue::Bool(true)), "amsgrad"),
            (
                Box::new(|i, g| {
                    if i == 2 {
                        g[2].1 = PyValue::Float(0.04)
                    }
                }),
                "opt.param_groups[2] (biases and 1-D parameters) has weight_decay",
            ),
            (
                Box::new(|i, g| {
                    if i == 3 {
                        g[4].1 = PyValue::List(vec![])
                    }
                }),
                "parameter groups of [2, 2, 2, 0] parameters",
            ),
            (
                Box::new(|i, g| {
                    if i == 0 {
                        g[4].1 = PyValue::List(vec![PyValue::Int(0), PyValue::Int(9)])
                    }
                }),
                "do not number the parameters 0 to 6",
            ),
        ];
        for (edit, expected) in cases {
            let err = check_groups(&opt(&p, edit), &p).unwrap_err();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }
}
