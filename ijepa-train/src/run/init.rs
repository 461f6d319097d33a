//! Where a run's first weights come from when it does not start at random
//! (`model.init`, `ijepa-cli pretrain --init`): anything `embed` and
//! `probe` read — a timm or Hugging Face folder, a `.safetensors` file,
//! `hf-hub:org/name[@revision]`, an official `.pth.tar`, an ijepa-rs run
//! directory or checkpoint folder — or, with `model.pretrained`, the
//! architecture's default pretrained weights on the hub (the seed's
//! `IJEPA(name, pretrained=True)`).
//!
//! The encoder becomes the student and the teacher. A training checkpoint
//! (official or ijepa-rs) also gives its own target encoder and predictor;
//! elsewhere the predictor starts fresh. The architecture must be the
//! run's: a source of another shape is refused with both named.
//!
//! ```no_run
//! use ijepa_train::run::init::InitWeights;
//!
//! let spec = "hf-hub:timm/vit_huge_patch14_gap_224.in1k_ijepa";
//! let init = InitWeights::load(spec, None, &candle_core::Device::Cpu)?;
//! println!("{}", init.describe());
//! # Ok::<(), ijepa_train::TrainError>(())
//! ```

use std::path::{Path, PathBuf};

use candle_core::Device;
use ijepa_encoder::io::hub::HubOptions;
use ijepa_encoder::registry::TimmArgs;
use ijepa_encoder::weights::{self, Branch, LoadOptions, WeightLayout};
use ijepa_encoder::{VitConfig, WeightMap};

use crate::error::{Result, TrainError};
use crate::run::checkpoint;

/// The weights a run starts from.
#[derive(Debug, Clone)]
pub struct InitWeights {
    /// Where they came from (a hub name resolved to its cached folder).
    pub source: PathBuf,
    /// `timm`, `hf`, `official` or `ijepa-rs`.
    pub layout: &'static str,
    /// Their architecture.
    pub config: VitConfig,
    /// The student's weights (timm names); the teacher's too, unless the
    /// source is a training checkpoint.
    pub student: WeightMap,
    /// A training checkpoint's own target encoder (timm names) and
    /// predictor (official names).
    pub training: Option<(WeightMap, WeightMap)>,
}

/// The model a source names — a timm `config.json`'s `architecture` and
/// `model_args`, or an ijepa-rs run's `model.name` and `model.args` — for a
/// run that takes its architecture from the weights it starts from. `None`
/// for a source that does not name one (an official checkpoint).
///
/// # Errors
/// A source that cannot be resolved or whose `config.json` is malformed.
pub fn named_model(spec: &str) -> Result<Option<(String, TimmArgs)>> {
    if let Some((path, _)) = checkpoint::find(Path::new(spec))? {
        let model = checkpoint::read_state(&path)?.config.model;
        return Ok(Some((model.name, model.args)));
    }
    let path = weights::resolve(spec, &HubOptions::from_env())?;
    let dir = if path.is_dir() {
        path
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let config = dir.join("config.json");
    let Ok(text) = std::fs::read_to_string(&config) else {
        return Ok(None);
    };
    let bad = |reason: String| TrainError::Config(format!("{}: {reason}", config.display()));
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let Some(arch) = json["architecture"].as_str() else {
        return Ok(None);
    };
    let args = match json.get("model_args") {
        Some(a) => TimmArgs::from_json(a).map_err(|e| bad(format!("model_args: {e}")))?,
        None => TimmArgs::default(),
    };
    Ok(Some((arch.to_string(), args)))
}

impl InitWeights {
    /// Reads `spec` (see the module's documentation) onto `device`; `run`
    /// (the run's encoder) says what the files do not (an official
    /// checkpoint's head count).
    ///
    /// # Errors
    /// A source that cannot be read or resolved, named.
    pub fn load(spec: &str, run: Option<&VitConfig>, device: &Device) -> Result<Self> {
        if let Some((path, _note)) = checkpoint::find(Path::new(spec))? {
            let ck = checkpoint::load(&path, device)?;
            let config = match &ck.state.encoder {
                Some(cfg) => cfg.clone(),
                None => ck.state.config.ijepa()?.checked()?.encoder,
            };
            return Ok(Self {
                source: path,
                layout: "ijepa-rs",
                config,
                student: ck.encoder,
                training: Some((ck.target_encoder, ck.predictor)),
            });
        }
        let hub = HubOptions {
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            ..HubOptions::from_env()
        };
        let path = weights::resolve(spec, &hub)?;
        let opts = |branch| LoadOptions {
            num_heads: run.map(|c| c.num_heads),
            branch,
            device: device.clone(),
            ..LoadOptions::default()
        };
        let student = weights::load(&path, &opts(Branch::Context))?;
        let layout = match student.layout {
            WeightLayout::Timm => "timm",
            WeightLayout::Hf => "hf",
            WeightLayout::Official => "official",
        };
        let training = match student.layout {
            WeightLayout::Official => {
                // A training checkpoint: its target encoder and predictor too.
                let teacher = weights::load(&path, &opts(Branch::Target))?;
                let file = std::fs::File::open(&path).map_err(crate::error::io(&path))?;
                let reader = std::io::BufReader::new(file);
                let predictor: WeightMap = weights::read_pytorch(reader, Some("predictor"), &path)?
                    .into_iter()
                    .map(|(k, t)| {
                        let k = weights::without_ddp_prefix(&k).to_string();
                        Ok((k, t.to_device(device)?))
                    })
                    .collect::<Result<_>>()?;
                if predictor.is_empty() {
                    return Err(TrainError::Config(format!(
                        "{}: an official checkpoint without a predictor",
                        path.display()
                    )));
                }
                Some((teacher.weights, predictor))
            }
            _ => None,
        };
        Ok(Self {
            source: student.source,
            layout,
            config: student.config,
            student: student.weights,
            training,
        })
    }

    /// The model these weights start: the source's own target encoder and
    /// predictor where it has them, else the student as teacher and a
    /// fresh predictor.
    ///
    /// # Errors
    /// Weights that do not fit `config`.
    pub fn into_model(self, config: crate::model::IJepaConfig) -> Result<crate::model::IJepa> {
        match self.training {
            Some((teacher, predictor)) => {
                crate::model::IJepa::from_parts(config, self.student, teacher, predictor)
            }
            None => crate::model::IJepa::from_encoder(config, self.student),
        }
    }

    /// What the run starts from, in one line.
    pub fn describe(&self) -> String {
        format!(
            "starting from {} ({} weights): {}",
            self.source.display(),
            self.layout,
            match self.training {
                Some(_) => "the student, its own target encoder and its predictor",
                None => "student and teacher; the predictor starts fresh",
            }
        )
    }

    /// Fits these weights to the run's encoder `run`: the same architecture
    /// as is, or one that differs only in its image size. Then the position
    /// table is resampled to the run's patch grid as timm does when it loads
    /// pretrained weights at another size (`resample_abs_pos_embed`:
    /// bicubic, antialiased, prefix rows kept), and the returned note says
    /// so.
    ///
    /// # Errors
    /// Another architecture (see [`Self::check`]), or another image size
    /// for a training checkpoint, whose predictor is laid out for its own.
    pub fn fit(&mut self, run: &VitConfig) -> Result<Option<String>> {
        let mut resized = self.config.clone();
        resized.image_size = run.image_size;
        resized.fixed_pos_embed = run.fixed_pos_embed;
        if self.config.image_size == run.image_size || &resized != run {
            return self.check(run).map(|()| None);
        }
        let (old, new) = (self.config.grid_size(), run.grid_size());
        let sizes = |c: &VitConfig| format!("{}×{} px", c.image_size.0, c.image_size.1);
        if self.training.is_some() {
            return Err(TrainError::Config(format!(
                "{} was trained at {}, the run is at {}: a training checkpoint continues at its own image size (its predictor is laid out for its patch grid); set model.args.img_size to {}",
                self.source.display(),
                sizes(&self.config),
                sizes(run),
                self.config.image_size.0
            )));
        }
        let mut note = format!(
            "{} holds weights for {}, the run is at {}",
            self.source.display(),
            sizes(&self.config),
            sizes(run)
        );
        if old != new {
            if let Some(table) = self.student.get("pos_embed") {
                let prefix = if self.config.no_embed_class {
                    0
                } else {
                    self.config.num_prefix_tokens()
                };
                let table = ijepa_encoder::pos_embed::resample(table, prefix, old, new)?;
                self.student.insert("pos_embed".into(), table);
                note.push_str(&format!(
                    ": position table resampled from {}×{} to {}×{} patches (bicubic, antialiased, as timm)",
                    old.0, old.1, new.0, new.1
                ));
            }
        }
        self.config.image_size = run.image_size;
        Ok(Some(note))
    }

    /// Checks that these weights fit the run's encoder `run` as they are.
    ///
    /// # Errors
    /// Another architecture: both are named, field by field.
    pub fn check(&self, run: &VitConfig) -> Result<()> {
        // Whether the position table trains is the recipe's choice, not the
        // architecture's (the official recipe keeps the loaded table fixed).
        let mut own = self.config.clone();
        own.fixed_pos_embed = run.fixed_pos_embed;
        if &own == run {
            return Ok(());
        }
        let fields = |c: &VitConfig| -> Vec<(String, String)> {
            let json = serde_json::to_value(c).unwrap_or_default();
            json.as_object()
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
                .unwrap_or_default()
        };
        let (a, b) = (fields(run), fields(&own));
        let differences: Vec<String> = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x != y)
            .map(|((k, x), (_, y))| format!("{k}: the run has {x}, the weights {y}"))
            .collect();
        Err(TrainError::Config(format!(
            "{} holds another encoder than the run's ({}); set the run's model to the \
             weights' architecture (model.name and model.args, e.g. --model and --set \
             model.args.depth=…); only the image size may differ",
            self.source.display(),
            if differences.is_empty() {
                format!("{run:?} vs {own:?}")
            } else {
                differences.join("; ")
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../ijepa-encoder/tests/fixtures")
            .join(name)
            .display()
            .to_string()
    }

    #[test]
    fn an_official_checkpoint_gives_both_encoders_and_its_predictor() {
        // Width 48 has no standard head count: the run's encoder gives it (3).
        let run = VitConfig::from_timm_name("vit_tiny_patch16_224").unwrap();
        let init = InitWeights::load(
            &fixture("official/official.pth.tar"),
            Some(&run),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(init.layout, "official");
        let (teacher, predictor) = init.training.as_ref().unwrap();
        assert_eq!(init.student.len(), teacher.len());
        let differs: Vec<&String> = init
            .student
            .iter()
            .filter(|(k, t)| {
                let d = (*t - &teacher[*k]).unwrap().abs().unwrap();
                d.max_all().unwrap().to_scalar::<f32>().unwrap() > 0.0
            })
            .map(|(k, _)| k)
            .collect();
        assert!(!differs.is_empty(), "the target encoder is the file's own");
        assert!(
            predictor.contains_key("predictor_embed.weight"),
            "{:?}",
            predictor.keys()
        );
        assert!(predictor.keys().all(|k| !k.starts_with("module.")));
        assert!(init.describe().contains("and its predictor"));
    }

    /// The fixture's architecture (trained at 56 px) at `img_size`.
    fn timm_gap_at(img_size: usize) -> VitConfig {
        use ijepa_encoder::registry::{self, Size};
        let args = TimmArgs {
            img_size: Some(Size::Square(img_size)),
            embed_dim: Some(48),
            depth: Some(2),
            num_heads: Some(3),
            num_classes: Some(0),
            ..TimmArgs::default()
        };
        registry::resolve("vit_huge_patch14_gap_224", &args)
            .unwrap()
            .config
    }

    #[test]
    fn another_image_size_resamples_the_position_table_as_timm_loads_it() {
        // tests/fixtures/make_init_resampled.py: timm.create_model(...,
        // pretrained=True, img_size=84) of the 56 px timm_gap weights.
        let fx = candle_core::safetensors::load(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/init_resampled.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let run = timm_gap_at(84);
        let mut init = InitWeights::load(&fixture("timm_gap"), Some(&run), &Device::Cpu).unwrap();
        assert!(
            init.check(&run).is_err(),
            "as they are, the weights are 56 px"
        );
        let note = init.fit(&run).unwrap().unwrap();
        assert!(
            note.contains("56×56 px, the run is at 84×84 px")
                && note.contains("resampled from 4×4 to 6×6 patches"),
            "{note}"
        );
        init.check(&run).unwrap();
        let max_abs = |a: &candle_core::Tensor, b: &candle_core::Tensor| -> f32 {
            assert_eq!(a.dims(), b.dims());
            let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
            d.max(0).unwrap().to_scalar().unwrap()
        };
        let table = max_abs(&init.student["pos_embed"], &fx["pos_embed"]);
        assert!(table <= 1e-6, "position table off by {table}");
        // The encoder the run starts from gives timm's features at 84 px.
        let vit =
            ijepa_encoder::VisionTransformer::from_weights(&run, init.student.clone()).unwrap();
        let features = ijepa_encoder::TokenEncoder::forward(&vit, &fx["images"]).unwrap();
        let err = max_abs(&features, &fx["features"]);
        assert!(err <= 1e-4, "features off by {err}");

        // A training checkpoint continues at its own size.
        let official = VitConfig::from_timm_name("vit_tiny_patch16_224").unwrap();
        let mut ck = InitWeights::load(
            &fixture("official/official.pth.tar"),
            Some(&official),
            &Device::Cpu,
        )
        .unwrap();
        let mut bigger = ck.config.clone();
        bigger.image_size = (ck.config.image_size.0 * 2, ck.config.image_size.1 * 2);
        let err = ck.fit(&bigger).unwrap_err().to_string();
        assert!(err.contains("continues at its own image size"), "{err}");
        // Another architecture is refused as before.
        let mut init = InitWeights::load(&fixture("timm_gap"), None, &Device::Cpu).unwrap();
        let mut deeper = timm_gap_at(84);
        deeper.depth = 3;
        let err = init.fit(&deeper).unwrap_err().to_string();
        assert!(err.contains("depth: the run has 3, the weights 2"), "{err}");
    }

    #[test]
    fn a_timm_folder_names_its_model_and_pretrained_names_the_hub_weights() {
        let (name, args) = named_model(&fixture("timm_gap")).unwrap().unwrap();
        assert_eq!(name, "vit_huge_patch14_gap_224");
        assert_eq!(args.embed_dim, Some(48));
        assert_eq!(
            named_model(&fixture("official/official.pth.tar")).unwrap(),
            None
        );
        let mut model = crate::run::config::ModelSection {
            name: "vit_huge_patch14_gap_224".into(),
            init: Some("x".into()),
            pretrained: true,
            ..Default::default()
        };
        let err = model.init_spec().unwrap_err().to_string();
        assert!(err.contains("two starting points"), "{err}");
        model.init = None;
        assert_eq!(
            model.init_spec().unwrap().unwrap(),
            "hf-hub:timm/vit_huge_patch14_gap_224.in1k_ijepa"
        );
    }
}
