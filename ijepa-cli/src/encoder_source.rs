//! `--weights`: any encoder we can load — timm, Hugging Face, official, or an
//! ijepa-rs run directory / checkpoint.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::ValueEnum;
use ijepa_encoder::io::hub::HubOptions;
use ijepa_encoder::weights::{self, Branch, DataConfig, LoadOptions};
use ijepa_encoder::{VisionTransformer, VitConfig, WeightMap};

/// Which encoder of a training checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// The EMA target encoder (what I-JEPA evaluates).
    Target,
    /// The context encoder.
    Context,
}

/// An encoder read from `--weights`.
pub struct LoadedEncoder {
    /// Where it came from, resolved (a hub id becomes its cache folder).
    pub path: PathBuf,
    /// `timm`, `hf`, `official` or `ijepa-rs`.
    pub layout: &'static str,
    /// The architecture.
    pub config: VitConfig,
    /// The weights (timm names).
    pub weights: WeightMap,
    /// How images must be prepared.
    pub data: DataConfig,
}

impl LoadedEncoder {
    /// A frozen encoder on `device` ([`open_device`]).
    pub fn build(&self, device: &Device) -> Result<VisionTransformer> {
        let weights = self
            .weights
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.to_device(device)?)))
            .collect::<Result<_>>()?;
        Ok(VisionTransformer::from_weights(&self.config, weights)?)
    }
}

/// The device of `--device` (cpu, cuda or cuda:N), opened before any
/// weights are read.
pub fn open_device(spec: &str) -> Result<Device> {
    Ok(spec.parse::<ijepa_encoder::device::DeviceSpec>()?.open(0)?)
}

/// Reads `spec`: a timm or Hugging Face folder, a `.safetensors` file, an
/// official `.pth.tar`, `hf-hub:org/name[@revision]`, or an ijepa-rs run
/// directory or checkpoint folder. `model` names the architecture where
/// the files do not; `which` picks a training checkpoint's encoder.
pub fn load_encoder(spec: &str, model: Option<&str>, which: Which) -> Result<LoadedEncoder> {
    let device = Device::Cpu;
    let local = PathBuf::from(spec);
    if let Some((ck, note)) = ijepa_train::run::checkpoint::find(&local)? {
        if let Some(note) = note {
            eprintln!("note: {note}");
        }
        let (config, weights, train) =
            ijepa_train::run::checkpoint::load_encoder(&ck, which == Which::Target, &device)
                .with_context(|| format!("loading ijepa-rs checkpoint {}", ck.display()))?;
        let mut data = DataConfig::imagenet(config.image_size);
        (data.mean, data.std) = (train.data.mean, train.data.std);
        return Ok(LoadedEncoder {
            path: ck,
            layout: "ijepa-rs",
            config,
            weights,
            data,
        });
    }
    let hub = HubOptions {
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..HubOptions::from_env()
    };
    let path = weights::resolve(spec, &hub)?;
    let opts = LoadOptions {
        model: model.map(str::to_string),
        branch: match which {
            Which::Target => Branch::Target,
            Which::Context => Branch::Context,
        },
        ..LoadOptions::default()
    };
    // The error names the file; a hub name is worth adding.
    let loaded = weights::load(&path, &opts).with_context(|| match path.to_str() {
        Some(p) if p == spec => "loading weights".to_string(),
        _ => format!("loading weights {spec}"),
    })?;
    Ok(LoadedEncoder {
        path: loaded.source.clone(),
        layout: match loaded.layout {
            weights::WeightLayout::Timm => "timm",
            weights::WeightLayout::Hf => "hf",
            weights::WeightLayout::Official => "official",
        },
        config: loaded.config,
        weights: loaded.weights,
        data: loaded.data,
    })
}
