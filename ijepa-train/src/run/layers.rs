//! Where a run's configuration comes from, in the order each layer wins:
//! a base (a file — TOML or an official YAML file —, the run's own
//! `config.toml` when it resumes, or the defaults), then the named options
//! ([`ConfigLayers`]' fields: what `ijepa-cli pretrain`'s flags set), then
//! every `section.key=value` override.

use std::path::{Path, PathBuf};

use crate::error::{io, Result, TrainError};
use crate::run::config::TrainConfig;

impl TrainConfig {
    /// Reads a configuration file: TOML, or an official facebookresearch/ijepa
    /// YAML file (`.yaml`/`.yml`, see [`crate::run::official`]) for a job of
    /// `processes` processes (its batch size is per process). Returns the
    /// configuration and notes on official fields that have no effect here.
    ///
    /// # Errors
    /// An unreadable file, or one that does not parse (named with the path).
    pub fn from_file(path: &Path, processes: usize) -> Result<(Self, Vec<String>)> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let named = |e: TrainError| match e {
            TrainError::Config(m) => TrainError::Config(format!("{}: {m}", path.display())),
            other => other,
        };
        let is_yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
        if is_yaml {
            crate::run::official::from_yaml_str(&text, processes).map_err(named)
        } else {
            let (cfg, note) = Self::from_toml_noting(&text).map_err(named)?;
            Ok((cfg, note.into_iter().collect()))
        }
    }
}

/// The layers of a run's configuration; `None` (or `false`) leaves a field
/// to the layer below. Each named option sets the field in its doc.
///
/// ```
/// use ijepa_train::run::layers::ConfigLayers;
///
/// let layers = ConfigLayers {
///     epochs: Some(2),
///     sets: vec!["optim.epochs=3".into(), "optim.lr=5e-4".into()],
///     ..Default::default()
/// };
/// let (cfg, _notes) = layers.resolve(1)?;
/// assert_eq!((cfg.optim.epochs, cfg.optim.lr), (3, 5e-4)); // the overrides win
/// # Ok::<(), ijepa_train::TrainError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConfigLayers {
    /// The base: a TOML or official YAML file ([`TrainConfig::from_file`]).
    pub file: Option<PathBuf>,
    /// Continue the run in `out` (`run.resume`); without `file`, its
    /// `config.toml` is the base.
    pub resume: bool,
    /// `run.out`.
    pub out: Option<PathBuf>,
    /// `data.path`.
    pub data: Option<PathBuf>,
    /// `model.init`. Unless the architecture is chosen otherwise (`model`,
    /// `file`, `resume` or a `model.name` override), the run takes the one
    /// these weights name, with its arguments
    /// ([`crate::run::init::named_model`]).
    pub init: Option<String>,
    /// `model.name`, clearing `model.args`.
    pub model: Option<String>,
    /// `run.resume_from`.
    pub resume_from: Option<PathBuf>,
    /// `optim.epochs`.
    pub epochs: Option<u64>,
    /// `data.batch_size`.
    pub batch_size: Option<usize>,
    /// `run.seed`.
    pub seed: Option<u64>,
    /// `run.max_steps`.
    pub max_steps: Option<u64>,
    /// `run.device`.
    pub device: Option<String>,
    /// `probe.at_end = false`.
    pub no_probe: bool,
    /// `section.key=value` overrides ([`TrainConfig::set`]), applied last.
    pub sets: Vec<String>,
}

impl ConfigLayers {
    /// The configuration for a job of `processes` processes, and notes on
    /// what the layers left out or chose (official fields without effect,
    /// an architecture taken from the `init` weights). Not yet validated:
    /// [`crate::run::trainer::Trainer::new`] does that.
    ///
    /// # Errors
    /// A base file that is missing or does not parse, weights for `init`
    /// that cannot be read, or an override that does not apply.
    pub fn resolve(&self, processes: usize) -> Result<(TrainConfig, Vec<String>)> {
        let (mut cfg, mut notes) = match (&self.file, self.resume) {
            (Some(path), _) => TrainConfig::from_file(path, processes)?,
            (None, true) => {
                let dir = self
                    .out
                    .clone()
                    .unwrap_or_else(|| TrainConfig::default().run.out);
                let path = dir.join("config.toml");
                if !path.is_file() {
                    return Err(TrainError::Config(format!(
                        "resuming: {} not found; is {} a run directory?",
                        path.display(),
                        dir.display()
                    )));
                }
                TrainConfig::from_file(&path, processes)?
            }
            (None, false) => (TrainConfig::default(), vec![]),
        };
        if let Some(d) = &self.data {
            cfg.data.path = Some(d.clone());
        }
        if let Some(m) = &self.model {
            cfg.model.name = m.clone();
            cfg.model.args = Default::default();
        }
        if let Some(init) = &self.init {
            cfg.model.init = Some(init.clone());
            // A `model.args.…` override changes the source's arguments (e.g.
            // its image size), applied below.
            let model_set = self
                .sets
                .iter()
                .any(|s| s.trim_start().starts_with("model.name"));
            let chosen = self.model.is_some() || self.file.is_some() || self.resume || model_set;
            if !chosen {
                if let Some((name, args)) = crate::run::init::named_model(init)? {
                    notes.push(format!(
                        "model {name} (and its arguments) from the init weights"
                    ));
                    cfg.model.name = name;
                    cfg.model.args = args;
                }
            }
        }
        if let Some(o) = &self.out {
            cfg.run.out = o.clone();
        }
        if let Some(p) = &self.resume_from {
            cfg.run.resume_from = Some(p.clone());
        }
        if let Some(e) = self.epochs {
            cfg.optim.epochs = e;
        }
        if let Some(b) = self.batch_size {
            cfg.data.batch_size = b;
        }
        if let Some(s) = self.seed {
            cfg.run.seed = s;
        }
        if let Some(m) = self.max_steps {
            cfg.run.max_steps = Some(m);
        }
        if let Some(d) = &self.device {
            cfg.run.device = d.clone();
        }
        if self.no_probe {
            cfg.probe.at_end = false;
        }
        for s in &self.sets {
            cfg.set(s)?;
        }
        cfg.run.resume |= self.resume;
        Ok((cfg, notes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ijepa-layers-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_file_error_names_the_file_once() {
        let dir = scratch("bad");
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[optim]\nlr = \"fast\"\n").unwrap();
        let err = TrainConfig::from_file(&path, 1).unwrap_err().to_string();
        assert_eq!(err.matches("configuration:").count(), 1, "{err}");
        assert!(err.contains("bad.toml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn each_layer_wins_over_the_one_below() {
        let dir = scratch("order");
        let file = dir.join("run.toml");
        std::fs::write(
            &file,
            "[optim]\nepochs = 5\nlr = 0.01\n[run]\nseed = 7\nmax_steps = 9\n",
        )
        .unwrap();
        let layers = ConfigLayers {
            file: Some(file),
            epochs: Some(6),
            seed: Some(8),
            no_probe: true,
            sets: vec!["optim.epochs=4".into()],
            ..Default::default()
        };
        let (cfg, notes) = layers.resolve(1).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        // file < option < override; a field no layer above names keeps the file's.
        assert_eq!(cfg.optim.epochs, 4);
        assert_eq!(cfg.run.seed, 8);
        assert_eq!(cfg.optim.lr, 0.01);
        assert_eq!(cfg.run.max_steps, Some(9));
        assert!(!cfg.probe.at_end);
        // Below everything, the defaults.
        let (plain, _) = ConfigLayers::default().resolve(1).unwrap();
        assert_eq!(plain, TrainConfig::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resuming_takes_the_run_s_own_configuration() {
        let dir = scratch("resume");
        let mut saved = TrainConfig::default();
        saved.optim.epochs = 11;
        saved.run.out = dir.clone();
        std::fs::write(dir.join("config.toml"), saved.to_toml().unwrap()).unwrap();
        let layers = ConfigLayers {
            resume: true,
            out: Some(dir.clone()),
            max_steps: Some(3),
            ..Default::default()
        };
        let (cfg, _) = layers.resolve(1).unwrap();
        assert_eq!(cfg.optim.epochs, 11);
        assert_eq!(cfg.run.max_steps, Some(3));
        assert!(cfg.run.resume);

        let missing = dir.join("nothing-here");
        let err = ConfigLayers {
            resume: true,
            out: Some(missing),
            ..Default::default()
        }
        .resolve(1)
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("config.toml not found") && err.contains("nothing-here"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_model_option_clears_the_file_s_arguments() {
        let layers = ConfigLayers {
            model: Some("vit_small_patch16_224".into()),
            sets: vec!["model.args.depth=2".into()],
            ..Default::default()
        };
        let (cfg, _) = layers.resolve(1).unwrap();
        assert_eq!(cfg.model.name, "vit_small_patch16_224");
        assert_eq!(cfg.model.args.depth, Some(2));
    }
}
