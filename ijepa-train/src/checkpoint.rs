//! Checkpoints: everything a run needs to continue bit-exactly, written
//! atomically.
//!
//! A run directory holds `checkpoints/step-00000042/` folders, each with
//! - `model.safetensors`: `encoder.*` (student), `target_encoder.*` (EMA
//!   teacher) and `predictor.*` — the official checkpoint's three parts,
//!   timm names below the prefix;
//! - `optimizer.safetensors`: the AdamW moments (`{param}.exp_avg`,
//!   `{param}.exp_avg_sq`);
//! - `state.json`: [`CheckpointState`] — step, data position, schedule
//!   values, loss, the resolved configuration.
//!
//! and `checkpoints/latest`, a text file naming the newest. A checkpoint is
//! written into a temporary folder, every file is fsynced, and the folder is
//! renamed into place; `latest` is replaced the same way. A crash at any
//! moment leaves the previous checkpoint intact and `latest` pointing at a
//! complete one. Only the newest `keep` checkpoints are kept.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ijepa_encoder::WeightMap;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::data::Position;
use crate::error::{io, Result, TrainError};

/// Format tag written into every `state.json`.
pub const FORMAT: &str = "ijepa-rs checkpoint v1";

/// The non-tensor state of a checkpoint (`state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// [`FORMAT`].
    pub format: String,
    /// Optimizer steps taken.
    pub step: u64,
    /// The next batch the loader yields.
    pub position: Position,
    /// Optimizer steps per epoch.
    pub steps_per_epoch: u64,
    /// Steps the schedules span.
    pub total_steps: u64,
    /// Loss of the last step (none before the first; JSON has no NaN).
    pub loss: Option<f32>,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Weight decay of the last step.
    pub weight_decay: f64,
    /// EMA momentum of the last step.
    pub momentum: f64,
    /// Images trained on so far.
    pub images_seen: u64,
    /// Images that could not be read so far: name and reason.
    pub skipped: Vec<(String, String)>,
    /// Seconds of training so far.
    pub elapsed_s: f64,
    /// Every random draw is keyed by `(run.seed, epoch, batch or image)`:
    /// the seed and `position` are the whole random state.
    pub rng: String,
    /// The run's configuration.
    pub config: TrainConfig,
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Checkpoint {
    /// Its folder.
    pub path: PathBuf,
    /// Student encoder weights (timm names).
    pub encoder: WeightMap,
    /// EMA teacher weights (timm names).
    pub target_encoder: WeightMap,
    /// Predictor weights (official names).
    pub predictor: WeightMap,
    /// AdamW moments.
    pub optimizer: WeightMap,
    /// Everything else.
    pub state: CheckpointState,
}

/// The checkpoints folder of a run directory.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

fn name_of(step: u64) -> String {
    format!("step-{step:08}")
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

fn sync_dir(path: &Path) -> Result<()> {
    // Directories can be opened and fsynced on Unix; elsewhere this is a no-op.
    if cfg!(unix) {
        sync_file(path)?;
    }
    Ok(())
}

fn write_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    candle_core::safetensors::save(tensors, path).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    sync_file(path)
}

/// Writes a text file atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, contents).map_err(io(&tmp))?;
    sync_file(&tmp)?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Writes checkpoint `state.step` into `run_dir/checkpoints`, points
/// `latest` at it and removes all but the newest `keep`. Returns its folder.
///
/// # Errors
/// Any file that cannot be written (the previous checkpoints stay intact).
pub fn save(
    run_dir: &Path,
    parts: [(&str, &WeightMap); 3],
    optimizer: &WeightMap,
    state: &CheckpointState,
    keep: usize,
) -> Result<PathBuf> {
    let dir = checkpoints_dir(run_dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let name = name_of(state.step);
    let final_path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let mut model = HashMap::new();
    for (prefix, weights) in parts {
        for (k, t) in weights {
            model.insert(format!("{prefix}.{k}"), t.clone());
        }
    }
    write_tensors(&tmp.join("model.safetensors"), &model)?;
    write_tensors(&tmp.join("optimizer.safetensors"), optimizer)?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| TrainError::Checkpoint {
        path: tmp.clone(),
        reason: e.to_string(),
    })?;
    std::fs::write(tmp.join("state.json"), json).map_err(io(tmp.join("state.json")))?;
    sync_file(&tmp.join("state.json"))?;
    sync_dir(&tmp)?;
    if final_path.exists() {
        std::fs::remove_dir_all(&final_path).map_err(io(&final_path))?;
    }
    std::fs::rename(&tmp, &final_path).map_err(io(&final_path))?;
    sync_dir(&dir)?;
    write_atomic(&dir.join("latest"), format!("{name}\n").as_bytes())?;
    prune(&dir, keep)?;
    Ok(final_path)
}

/// Every complete checkpoint folder, oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = checkpoints_dir(run_dir);
    if !dir.exists() {
        return Ok(vec![]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(io(&dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-"))
        })
        .collect();
    found.sort();
    Ok(found)
}

fn prune(dir: &Path, keep: usize) -> Result<()> {
    let all = list(dir.parent().unwrap_or(dir))?;
    for old in &all[..all.len().saturating_sub(keep.max(1))] {
        std::fs::remove_dir_all(old).map_err(io(old))?;
    }
    // Leftovers of a crash while writing.
    for e in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let n = e.file_name();
        if n.to_string_lossy().starts_with('.') && n.to_string_lossy().contains(".tmp-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    Ok(())
}

/// The folder `latest` names, if the run has a checkpoint.
///
/// # Errors
/// A `latest` that cannot be read or names a missing folder.
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    let file = checkpoints_dir(run_dir).join("latest");
    if !file.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&file).map_err(io(&file))?;
    let path = checkpoints_dir(run_dir).join(name.trim());
    if !path.is_dir() {
        return Err(TrainError::Checkpoint {
            path: file,
            reason: format!("names {}, which does not exist", path.display()),
        });
    }
    Ok(Some(path))
}

/// Reads a checkpoint folder.
///
/// # Errors
/// A missing file, an unknown format, or tensors outside the three parts.
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint> {
    let bad = |reason: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let read = |file: &str| -> Result<HashMap<String, Tensor>> {
        let p = path.join(file);
        if !p.is_file() {
            return Err(bad(format!("{file} is missing")));
        }
        candle_core::safetensors::load(&p, device).map_err(|e| bad(format!("{file}: {e}")))
    };
    let state_path = path.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(io(&state_path))?;
    let state: CheckpointState =
        serde_json::from_str(&text).map_err(|e| bad(format!("state.json: {e}")))?;
    if state.format != FORMAT {
        return Err(bad(format!(
            "format {:?}, expected {FORMAT:?}",
            state.format
        )));
    }
    let (mut encoder, mut target_encoder, mut predictor) =
        (WeightMap::new(), WeightMap::new(), WeightMap::new());
    for (k, t) in read("model.safetensors")? {
        let (prefix, rest) = k.split_once('.').unwrap_or((&k, ""));
        let part = match prefix {
            "encoder" => &mut encoder,
            "target_encoder" => &mut target_encoder,
            "predictor" => &mut predictor,
            _ => {
                return Err(bad(format!(
                    "model.safetensors: tensor {k} is not under encoder., target_encoder. or predictor."
                )))
            }
        };
        part.insert(rest.to_string(), t);
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        encoder,
        target_encoder,
        predictor,
        optimizer: read("optimizer.safetensors")?,
        state,
    })
}

/// The checkpoint folder `path` names: a checkpoint folder itself (it has a
/// `state.json`) or a run directory (its `latest`). `None` when `path` is
/// neither, i.e. not ijepa-rs's.
///
/// # Errors
/// A run directory whose `latest` is broken.
pub fn find(path: &Path) -> Result<Option<PathBuf>> {
    if path.join("state.json").is_file() && path.join("model.safetensors").is_file() {
        return Ok(Some(path.to_path_buf()));
    }
    if checkpoints_dir(path).join("latest").is_file() {
        return latest(path);
    }
    Ok(None)
}

/// One encoder of an ijepa-rs checkpoint, ready to build: its architecture
/// (from the run's configuration) and weights.
///
/// # Errors
/// An unreadable checkpoint or configuration.
pub fn load_encoder(
    checkpoint: &Path,
    target: bool,
    device: &Device,
) -> Result<(ijepa_encoder::VitConfig, WeightMap, TrainConfig)> {
    let ck = load(checkpoint, device)?;
    let cfg = ck.state.config.ijepa()?.encoder;
    let weights = if target {
        ck.target_encoder
    } else {
        ck.encoder
    };
    ijepa_encoder::weights::check(&cfg, &weights, &checkpoint.join("model.safetensors"))?;
    Ok((cfg, weights, ck.state.config))
}
