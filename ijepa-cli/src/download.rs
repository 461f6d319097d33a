//! `ijepa-cli download`: fill the Hugging Face cache with a model's files.

use anyhow::{Context, Result};
use clap::Args;
use ijepa_encoder::io::hub::{fetch, HubModel, HubOptions};

/// Options of `ijepa-cli download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Hub model, `org/name` (an `hf-hub:` prefix is accepted).
    model: String,
    /// Branch, tag or commit (default: main, or the `@revision` in the id).
    #[arg(long)]
    revision: Option<String>,
}

/// Runs `ijepa-cli download`: fetches `config.json`, `model.safetensors`
/// (and `preprocessor_config.json` when the repository has one) into the
/// standard cache (`HF_HOME` / `HF_HUB_CACHE`, shared with Python's
/// `huggingface_hub`) and prints the snapshot folder.
pub fn run(args: &DownloadArgs) -> Result<()> {
    let mut model = HubModel::parse(&args.model)?;
    if let Some(r) = &args.revision {
        model.revision = r.clone();
    }
    let opts = HubOptions {
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..HubOptions::from_env()
    };
    let snapshot = fetch(&model, &opts).with_context(|| format!("downloading {model}"))?;
    eprintln!("{model} is in the cache {}", opts.cache_dir.display());
    println!("{}", snapshot.display());
    Ok(())
}
