//! `ijepa-cli export`: an encoder as a timm or Hugging Face model folder.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use ijepa_encoder::weights::{save_hf, save_timm};

use crate::encoder_source::{load_encoder, Which};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// timm: `config.json` (architecture, model_args, pretrained_cfg) + `model.safetensors`.
    Timm,
    /// Hugging Face transformers `IJepaModel`: `config.json`, `model.safetensors`, `preprocessor_config.json`.
    Hf,
}

/// Options of `ijepa-cli export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// An ijepa-rs run directory or checkpoint folder — or any other weights
    /// `embed` reads (timm, Hugging Face, official .pth.tar, hf-hub:…).
    #[arg(long, visible_alias = "weights")]
    checkpoint: String,
    /// Output format.
    #[arg(long, value_enum)]
    format: Format,
    /// Output folder (must not exist yet).
    #[arg(long)]
    out: PathBuf,
    /// Encoder of a training checkpoint.
    #[arg(long, value_enum, default_value_t = Which::Target)]
    encoder: Which,
    /// timm model name for what the files do not say.
    #[arg(long)]
    model: Option<String>,
}

/// Runs `ijepa-cli export`. The folder is written under a temporary name
/// and renamed when complete.
pub fn run(args: &ExportArgs) -> Result<()> {
    anyhow::ensure!(
        !args.out.exists(),
        "{} already exists; export into a new folder",
        args.out.display()
    );
    let enc = load_encoder(&args.checkpoint, args.model.as_deref(), args.encoder)?;
    let name = args
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let tmp = args
        .out
        .with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let written = match args.format {
        Format::Timm => save_timm(&tmp, &enc.config, &enc.data, &enc.weights),
        Format::Hf => save_hf(&tmp, &enc.config, &enc.data, &enc.weights),
    };
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e).with_context(|| format!("exporting {}", args.checkpoint));
    }
    std::fs::rename(&tmp, &args.out)
        .with_context(|| format!("moving the export into {}", args.out.display()))?;
    eprintln!(
        "exported the {} encoder of {} ({} layout) as {:?} into {}",
        match args.encoder {
            Which::Target => "target",
            Which::Context => "context",
        },
        enc.path.display(),
        enc.layout,
        args.format,
        args.out.display()
    );
    Ok(())
}
