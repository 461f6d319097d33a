//! `ijepa-cli shards`: writes an image folder as tar shards for
//! `pretrain --data 'out/shard-{000000..000099}.tar'`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ijepa_train::data::{write_shards, ImageFolder};

/// Options of `ijepa-cli shards`.
#[derive(Debug, Args)]
pub struct ShardsArgs {
    /// Image folder (labels from its first-level sub-folders).
    #[arg(long)]
    data: PathBuf,
    /// Folder the shards go to (created; shard files already there are replaced).
    #[arg(long)]
    out: PathBuf,
    /// Images per shard (ImageNet's usual shards: about 1,000).
    #[arg(long, default_value_t = 1000)]
    per_shard: usize,
    /// Seed of the order the images are spread over the shards in.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Runs `ijepa-cli shards`.
pub fn run(args: &ShardsArgs) -> Result<()> {
    anyhow::ensure!(args.per_shard > 0, "--per-shard must be at least 1");
    let folder = ImageFolder::open(&args.data)?;
    for note in folder.notes() {
        eprintln!("note: {note}");
    }
    let total = folder.files().len();
    let mut report = |done: usize| eprint!("\r{done} / {total} images");
    let written = write_shards(&folder, &args.out, args.per_shard, args.seed, &mut report)
        .with_context(|| format!("writing shards of {}", args.data.display()))?;
    eprintln!();
    println!(
        "{} images in {} shard(s), {} classes ({}): pretrain with --data '{}'",
        written.images,
        written.shards.len(),
        folder.classes().len(),
        written.classes.display(),
        written.pattern
    );
    Ok(())
}
