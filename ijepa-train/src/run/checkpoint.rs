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
//! and `checkpoints/latest`, a text file naming the newest.
//!
//! A checkpoint is complete and finite or it does not exist:
//! - every tensor is checked finite before anything is written (and again
//!   when a checkpoint is read back);
//! - it is written into a temporary folder `.step-…tmp-PID` (every file
//!   fsynced, see [`ijepa_encoder::io::output`]), which is renamed into place
//!   only when complete; on an error (a full disk) the temporary folder is
//!   removed at once;
//! - `latest` is replaced atomically after the rename, so it only ever
//!   names a complete checkpoint;
//! - old checkpoints are pruned by renaming them out of the `step-…`
//!   namespace first (`.trash-…`), then deleting: a kill during pruning
//!   never leaves a half-deleted folder named like a checkpoint;
//! - leftovers of a killed writer (`.step-…tmp-…`, `.trash-…`) are removed
//!   by the next save, and [`list`] reports complete checkpoints only;
//! - `state.json` records each tensor file's length and CRC-32C, read back
//!   from the disk after writing; [`load`] checks them, so a file changed
//!   afterwards (a flipped bit that leaves every value finite) is refused
//!   by name, and [`resume_point`] falls back to the newest checkpoint that
//!   verifies — also when `latest` is missing or broken — saying so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ijepa_encoder::WeightMap;
use serde::{Deserialize, Serialize};

use crate::data::Position;
use crate::error::{io, Result, TrainError};
use crate::run::config::TrainConfig;

/// Format tag written into every `state.json`.
pub const FORMAT: &str = "ijepa-rs checkpoint v2";

/// ijepa-rs 0.1's format: no `encoder`, a 0.1 model section (translated on
/// reading, see `legacy.rs`).
const FORMAT_V1: &str = "ijepa-rs checkpoint v1";

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
    /// The encoder the run trains, as resolved when it was written (absent
    /// in format v1: then resolved from `config`).
    #[serde(default)]
    pub encoder: Option<ijepa_encoder::VitConfig>,
    /// Processes of the job that wrote it (1 before data-parallel runs).
    #[serde(default = "one")]
    pub world_size: usize,
    /// Length and CRC-32C of each tensor file, as written (absent in
    /// checkpoints written before they were recorded: then not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<std::collections::BTreeMap<String, FileSum>>,
    /// AdamW's own step count where it is not `step`: a run continued from
    /// an official checkpoint whose epochs were longer or shorter than this
    /// run's ([`crate::run::official_checkpoint`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_step: Option<u64>,
}

/// A file's length and CRC-32C (Castagnoli).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    /// Bytes.
    pub bytes: u64,
    /// CRC-32C of the whole file.
    pub crc32c: u32,
}

impl FileSum {
    /// The sum of the file at `path`, read in pieces.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn of(path: &Path) -> Result<Self> {
        use std::io::Read;
        let mut file = std::fs::File::open(path).map_err(io(path))?;
        let mut buf = vec![0u8; 1 << 22];
        let (mut crc, mut bytes) = (0u32, 0u64);
        loop {
            let n = file.read(&mut buf).map_err(io(path))?;
            if n == 0 {
                break;
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            bytes += n as u64;
        }
        Ok(Self { bytes, crc32c: crc })
    }
}

/// The tensor files of a checkpoint.
const TENSOR_FILES: [&str; 2] = ["model.safetensors", "optimizer.safetensors"];

/// Checks the tensor files of checkpoint `path` against the sums its
/// `state` recorded (nothing to check in a checkpoint without them).
///
/// # Errors
/// A file whose length or CRC-32C differs, named with both values.
pub fn verify(path: &Path, state: &CheckpointState) -> Result<()> {
    let Some(files) = &state.files else {
        return Ok(());
    };
    for (name, recorded) in files {
        let actual = FileSum::of(&path.join(name))?;
        if actual != *recorded {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                reason: format!(
                    "{name} changed after it was written: {} bytes with CRC-32C {:08x} recorded, {} bytes with {:08x} read",
                    recorded.bytes, recorded.crc32c, actual.bytes, actual.crc32c
                ),
            });
        }
    }
    Ok(())
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

/// The folder [`save`] writes the checkpoint of `step` to.
pub fn path_of(run_dir: &Path, step: u64) -> PathBuf {
    checkpoints_dir(run_dir).join(name_of(step))
}

fn one() -> usize {
    1
}

/// Files every complete checkpoint folder holds.
const FILES: [&str; 3] = ["model.safetensors", "optimizer.safetensors", "state.json"];

fn is_complete(dir: &Path) -> bool {
    FILES.iter().all(|f| dir.join(f).is_file())
}

fn model_error(path: &Path) -> impl FnOnce(ijepa_encoder::EncoderError) -> TrainError + '_ {
    move |e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Refuses tensors that are not finite: such a checkpoint must not exist.
fn check_finite(path: &Path, what: &str, tensors: &WeightMap) -> Result<()> {
    let bad = ijepa_encoder::weights::non_finite(tensors).map_err(model_error(path))?;
    if bad.is_empty() {
        return Ok(());
    }
    Err(TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: format!(
            "{what}: {} tensors hold NaN or infinite values ({})",
            bad.len(),
            ijepa_encoder::weights::some_names(&bad)
        ),
    })
}

/// Removes what a killed writer or pruner left in `dir` (a run directory or
/// its checkpoints folder).
pub(crate) fn remove_debris(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let debris = name.starts_with(".trash-")
            || (name.starts_with(".step-") && name.contains(".tmp-"))
            // Left by earlier versions: temporary files, and folders that a
            // kill while pruning left half deleted.
            || name.starts_with("latest.tmp-")
            || name.starts_with("config.tmp-")
            || name.starts_with("metrics.tmp-")
            || (name.starts_with("step-") && !is_complete(&e.path()));
        if debris {
            let _ = std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
        }
    }
}

/// Deletes a folder by renaming it out of the way first.
fn discard(dir: &Path, folder: &Path) -> Result<()> {
    let name = folder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let trash = dir.join(format!(".trash-{name}-{}", std::process::id()));
    std::fs::rename(folder, &trash).map_err(io(folder))?;
    std::fs::remove_dir_all(&trash).map_err(io(&trash))
}

/// Writes the checkpoint's files into `tmp`.
fn write_files(
    tmp: &Path,
    model: &WeightMap,
    optimizer: &WeightMap,
    state: &CheckpointState,
) -> Result<()> {
    std::fs::create_dir_all(tmp).map_err(io(tmp))?;
    let tensors = |m: &'_ WeightMap| -> Vec<(String, Tensor)> {
        m.iter().map(|(k, t)| (k.clone(), t.clone())).collect()
    };
    for (file, part) in TENSOR_FILES.into_iter().zip([model, optimizer]) {
        let list = tensors(part);
        ijepa_encoder::io::output::write_safetensors(
            &tmp.join(file),
            list.iter().map(|(k, t)| (k.as_str(), t)),
            None,
        )
        .map_err(model_error(tmp))?;
    }
    let mut state = state.clone();
    let mut files = std::collections::BTreeMap::new();
    for file in TENSOR_FILES {
        // Read back from the disk: the sum is of what was written.
        files.insert(file.to_string(), FileSum::of(&tmp.join(file))?);
    }
    state.files = Some(files);
    let json = serde_json::to_vec_pretty(&state).map_err(|e| TrainError::Checkpoint {
        path: tmp.to_path_buf(),
        reason: e.to_string(),
    })?;
    ijepa_encoder::io::output::write_file(&tmp.join("state.json"), &json)
        .map_err(model_error(tmp))?;
    ijepa_encoder::io::output::sync_dir(tmp).map_err(model_error(tmp))
}

/// Writes checkpoint `state.step` into `run_dir/checkpoints`, points
/// `latest` at it and removes all but the newest `keep`. Returns its folder.
///
/// # Errors
/// A tensor that is not finite (nothing is written), or a file that cannot
/// be written (the previous checkpoints and `latest` stay as they were and
/// no partial folder is left).
pub fn save(
    run_dir: &Path,
    parts: [(&str, &WeightMap); 3],
    optimizer: &WeightMap,
    state: &CheckpointState,
    keep: usize,
) -> Result<PathBuf> {
    let dir = checkpoints_dir(run_dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    remove_debris(&dir);
    let name = name_of(state.step);
    let final_path = dir.join(&name);
    let mut model = WeightMap::new();
    for (prefix, weights) in parts {
        for (k, t) in weights {
            model.insert(format!("{prefix}.{k}"), t.clone());
        }
    }
    check_finite(&final_path, "model", &model)?;
    check_finite(&final_path, "optimizer state", optimizer)?;
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    if let Err(e) = write_files(&tmp, &model, optimizer, state) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if final_path.exists() {
        discard(&dir, &final_path)?;
    }
    std::fs::rename(&tmp, &final_path).map_err(io(&final_path))?;
    ijepa_encoder::io::output::sync_dir(&dir).map_err(model_error(&dir))?;
    ijepa_encoder::io::output::write_file(&dir.join("latest"), format!("{name}\n").as_bytes())
        .map_err(model_error(&dir))?;
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
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-"))
                && is_complete(p)
        })
        .collect();
    found.sort();
    Ok(found)
}

fn prune(dir: &Path, keep: usize) -> Result<()> {
    let all = list(dir.parent().unwrap_or(dir))?;
    for old in &all[..all.len().saturating_sub(keep.max(1))] {
        discard(dir, old)?;
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
    if !is_complete(&path) {
        let newest = list(run_dir)?
            .pop()
            .map_or("there is no other complete checkpoint".into(), |p| {
                format!("the newest complete one is {}", p.display())
            });
        return Err(TrainError::Checkpoint {
            path: file,
            reason: format!(
                "names {}, which is missing or incomplete ({newest})",
                path.display()
            ),
        });
    }
    Ok(Some(path))
}

/// The checkpoint a run continues from, and a note when it is not the one
/// `latest` names: `latest`'s when it names a complete checkpoint whose
/// files verify; otherwise — `latest` missing, unreadable, naming a missing
/// or incomplete folder, or files that changed — the newest complete
/// checkpoint that verifies. `None` when the run has no checkpoint at all.
///
/// # Errors
/// Checkpoints exist but none verifies (each one's reason given).
pub fn resume_point(run_dir: &Path) -> Result<Option<(PathBuf, Option<String>)>> {
    let named = latest(run_dir);
    let mut candidates = list(run_dir)?;
    let why_not_latest = match &named {
        Ok(Some(path)) => match read_state(path).and_then(|s| verify(path, &s)) {
            Ok(()) => return Ok(Some((path.clone(), None))),
            Err(e) => {
                candidates.retain(|c| c != path);
                e.to_string()
            }
        },
        Ok(None) if candidates.is_empty() => return Ok(None),
        Ok(None) => format!(
            "{} is missing",
            checkpoints_dir(run_dir).join("latest").display()
        ),
        Err(e) => e.to_string(),
    };
    let mut refused = vec![];
    while let Some(path) = candidates.pop() {
        match read_state(&path).and_then(|s| verify(&path, &s)) {
            Ok(()) => {
                let note = format!(
                    "{why_not_latest}: continuing from {}, the newest checkpoint that verifies",
                    path.display()
                );
                return Ok(Some((path, Some(note))));
            }
            Err(e) => refused.push(e.to_string()),
        }
    }
    Err(TrainError::Checkpoint {
        path: checkpoints_dir(run_dir),
        reason: format!(
            "no checkpoint verifies ({why_not_latest}{}{})",
            if refused.is_empty() { "" } else { "; " },
            refused.join("; ")
        ),
    })
}

/// Reads a checkpoint's `state.json` alone (its step, position and
/// configuration), without its tensors.
///
/// # Errors
/// A missing or malformed file, or another format.
pub fn read_state(path: &Path) -> Result<CheckpointState> {
    let bad = |reason: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let state_path = path.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(io(&state_path))?;
    let mut json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("state.json: {e}")))?;
    let format = json["format"].as_str().unwrap_or_default().to_string();
    if format != FORMAT && format != FORMAT_V1 {
        return Err(bad(format!(
            "state.json: format {format:?}, expected {FORMAT:?} (or {FORMAT_V1:?})"
        )));
    }
    // The configuration is read as a configuration file is (a 0.1 model
    // section translated), the rest as it is.
    let config = TrainConfig::from_json(json["config"].take())
        .map_err(|e| bad(format!("state.json: {e}")))?;
    json["config"] = serde_json::to_value(TrainConfig::default()).unwrap_or_default();
    let mut state: CheckpointState =
        serde_json::from_value(json).map_err(|e| bad(format!("state.json: {e}")))?;
    state.config = config;
    Ok(state)
}

/// Reads a checkpoint folder.
///
/// # Errors
/// A missing file, a tensor file changed since it was written, an unknown
/// format, or tensors outside the three parts.
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint> {
    verify(path, &read_state(path)?)?;
    load_verified(path, device)
}

/// [`load`] of a checkpoint whose files [`resume_point`] has just verified.
pub(crate) fn load_verified(path: &Path, device: &Device) -> Result<Checkpoint> {
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
    let state = read_state(path)?;
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
    let optimizer = read("optimizer.safetensors")?;
    for (what, part) in [
        ("encoder", &encoder),
        ("target_encoder", &target_encoder),
        ("predictor", &predictor),
        ("optimizer state", &optimizer),
    ] {
        check_finite(path, what, part)?;
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        encoder,
        target_encoder,
        predictor,
        optimizer,
        state,
    })
}

/// The checkpoint folder `path` names: a checkpoint folder itself (it has a
/// `state.json`) or a run directory (its [`resume_point`], with the note
/// when that is not `latest`'s). `None` when `path` is neither, i.e. not
/// ijepa-rs's.
///
/// # Errors
/// A run directory whose checkpoints all fail to verify.
pub fn find(path: &Path) -> Result<Option<(PathBuf, Option<String>)>> {
    if path.join("state.json").is_file() && path.join("model.safetensors").is_file() {
        return Ok(Some((path.to_path_buf(), None)));
    }
    if checkpoints_dir(path).is_dir() {
        return resume_point(path);
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
    let cfg = match &ck.state.encoder {
        Some(cfg) => cfg.clone(),
        None => ck.state.config.ijepa()?.checked()?.encoder,
    };
    let weights = if target {
        ck.target_encoder
    } else {
        ck.encoder
    };
    ijepa_encoder::VisionTransformer::check_weights(
        &cfg,
        &weights,
        &checkpoint.join("model.safetensors"),
    )?;
    Ok((cfg, weights, ck.state.config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_save_clears_what_killed_writers_and_pruners_left() {
        let run = std::env::temp_dir().join(format!("ijepa-ck-debris-{}", std::process::id()));
        let dir = checkpoints_dir(&run);
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(dir.join("step-00000042")).unwrap(); // half deleted
        std::fs::write(dir.join("step-00000042/state.json"), "{}").unwrap();
        std::fs::create_dir_all(dir.join(".step-00000043.tmp-77")).unwrap();
        std::fs::create_dir_all(dir.join(".trash-step-00000001-77")).unwrap();
        for f in ["latest.tmp-77", ".latest.tmp-77-0"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        std::fs::write(run.join("config.tmp-77"), "x").unwrap(); // an earlier version's
        remove_debris(&run);
        assert!(!run.join("config.tmp-77").exists());
        assert!(
            list(&run).unwrap().is_empty(),
            "an incomplete folder is no checkpoint"
        );
        let cfg = TrainConfig::default();
        let state = CheckpointState {
            format: FORMAT.into(),
            step: 1,
            position: Position::default(),
            steps_per_epoch: 1,
            total_steps: 1,
            loss: Some(0.5),
            lr: 0.0,
            weight_decay: 0.0,
            momentum: 0.0,
            images_seen: 0,
            skipped: vec![],
            elapsed_s: 0.0,
            rng: String::new(),
            config: cfg,
            encoder: None,
            world_size: 1,
            files: None,
            optimizer_step: None,
        };
        let mut w = WeightMap::new();
        w.insert("x".into(), Tensor::new(&[1f32], &Device::Cpu).unwrap());
        save(
            &run,
            [("encoder", &w), ("target_encoder", &w), ("predictor", &w)],
            &w,
            &state,
            2,
        )
        .unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["latest", "step-00000001"]);
        std::fs::remove_dir_all(&run).unwrap();
    }
}
