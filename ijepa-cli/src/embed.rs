//! `ijepa-cli embed`: features of a folder of images from any encoder we load.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Tensor;
use clap::Args;
use ijepa_encoder::TokenEncoder;
use ijepa_train::data::image_files;

use crate::encoder_source::{load_encoder, Which};
use crate::features::{eval_transform, extract};

/// Options of `ijepa-cli embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Encoder weights: a timm or Hugging Face folder, a .safetensors file, an
    /// official .pth.tar checkpoint, `hf-hub:org/name[@revision]`, or an
    /// ijepa-rs run directory or checkpoint folder.
    #[arg(long)]
    weights: String,
    /// An image file, or a folder searched at any depth for .jpg/.jpeg/.png.
    #[arg(long)]
    images: PathBuf,
    /// Output .safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// Also write every token, `tokens` [N, T, D].
    #[arg(long)]
    tokens: bool,
    #[command(flatten)]
    transform: crate::features::TransformArgs,
    /// Images per forward pass (1 to 4,096).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// timm model name for what the weights do not say (official checkpoints
    /// of non-standard width).
    #[arg(long)]
    model: Option<String>,
    /// Encoder of a training checkpoint.
    #[arg(long, value_enum, default_value_t = Which::Target)]
    encoder: Which,
    /// Where the encoder runs: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Runs `ijepa-cli embed`.
pub fn run(args: &EmbedArgs) -> Result<()> {
    crate::features::check_batch(args.batch_size)?;
    ijepa_encoder::io::output::check(&args.out)?;
    let device = crate::encoder_source::open_device(&args.device)?;
    let loaded = load_encoder(&args.weights, args.model.as_deref(), args.encoder)?;
    let vit = loaded.build(&device)?;
    let transform = eval_transform(&loaded.data, &args.transform, &loaded.config)?;
    let size = transform.size();
    let (files, notes) = image_files(&args.images)?;
    for note in notes {
        eprintln!("note: {note}");
    }
    let root = if args.images.is_dir() {
        args.images.as_path()
    } else {
        args.images.parent().unwrap_or(Path::new(""))
    };
    let feats = extract(
        Some(&vit),
        &transform,
        &files,
        args.batch_size,
        1,
        args.tokens,
    )?;
    let order: Vec<String> = feats
        .read
        .iter()
        .map(|&i| relative(&files[i], root))
        .collect();
    let skipped: Vec<String> = feats
        .skipped
        .iter()
        .map(|(i, _)| relative(&files[*i], root))
        .collect();

    let mut out: Vec<(&str, Tensor)> = vec![("pooled", feats.pooled)];
    if let Some(tokens) = feats.tokens {
        out.push(("tokens", tokens));
    }
    let metadata = HashMap::from([
        ("images".to_string(), serde_json::to_string(&order)?),
        ("skipped".to_string(), serde_json::to_string(&skipped)?),
        ("weights".to_string(), args.weights.clone()),
        ("layout".to_string(), serde_json::to_string(&loaded.layout)?),
        ("input_size".to_string(), format!("{}x{}", size.0, size.1)),
        ("embed_dim".to_string(), vit.embed_dim().to_string()),
    ]);
    ijepa_encoder::io::output::write_safetensors(
        &args.out,
        out.iter().map(|(k, t)| (*k, t)),
        Some(&metadata),
    )?;
    eprintln!(
        "wrote {} embeddings of dimension {} to {}{}",
        order.len(),
        vit.embed_dim(),
        args.out.display(),
        if skipped.is_empty() {
            String::new()
        } else {
            format!(" ({} unreadable image(s) skipped)", skipped.len())
        }
    );
    Ok(())
}

fn relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}
