//! `ijepa-cli`: the ijepa-rs command line.
//!
//! - `pretrain`: I-JEPA pretraining (TOML or official YAML configs, resume);
//! - `probe`: k-NN and linear probes of a frozen encoder;
//! - `embed`: features of images from timm, Hugging Face, official or
//!   ijepa-rs weights;
//! - `export`, `download`, `inspect`: move weights between ijepa-rs, timm,
//!   Hugging Face and the Hub, and look inside them;
//! - `shards`: write an image folder as tar shards for `pretrain`;
//! - `plot`: redraw a run's training curves;
//! - `masks`: sample I-JEPA masks and print their statistics (and a picture);
//! - `bench`: throughput measurements for BENCHMARKS.md.

use clap::{Parser, Subcommand};

/// candle allocates a fresh buffer for every tensor; glibc returns large ones
/// to the kernel at once, so each op paid page faults to get them back
/// (≈15 % of a ViT forward). mimalloc keeps and reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` of mimalloc v3 (`mimalloc.h`; libmimalloc-sys
/// 0.1.49 does not name it): how long freed memory stays before it goes
/// back to the OS.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// A training step frees and allocates the same few hundred MiB of tensors
/// every step; returned to the OS a second after each free (mimalloc v3's
/// default, shorter than a CPU step), the pages came back zeroed by the
/// kernel on the next step (≈ 27 % of a step in the profile). Kept
/// instead, they are reused: the ViT-Ti/16 training step ran 1.24× faster,
/// for a peak 7 % higher (BENCHMARKS.md, `bash bench/purge.sh`). An
/// explicit `MIMALLOC_PURGE_DELAY` is the user's choice and is left alone.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option; mimalloc reads it when it purges.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
    }
}

mod bench;
mod download;
mod embed;
mod encoder_source;
mod export;
mod features;
mod inspect;
mod masks;
mod masks_png;
mod plot;
mod pretrain;
mod probe;
mod shards;

/// I-JEPA self-supervised pretraining of Vision Transformers, in Rust.
#[derive(Debug, Parser)]
#[command(name = "ijepa-cli", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pretrain an encoder with I-JEPA (no arguments: a small ViT on built-in synthetic garments, about 10 minutes).
    Pretrain(pretrain::PretrainArgs),
    /// Sample I-JEPA context/target masks and report their statistics.
    Masks(masks::MasksArgs),
    /// Embed images with a pretrained encoder and write the features to a .safetensors file.
    Embed(embed::EmbedArgs),
    /// k-NN and linear probes of a frozen encoder on labelled image folders.
    Probe(probe::ProbeArgs),
    /// Write an encoder (of a run, or any weights we read) as a timm or Hugging Face model folder.
    Export(export::ExportArgs),
    /// Download a model from the Hugging Face Hub into the standard cache.
    Download(download::DownloadArgs),
    /// Write an image folder as tar shards (WebDataset layout) for `pretrain --data 'shards/shard-{000000..N}.tar'`.
    Shards(shards::ShardsArgs),
    /// Redraw a run's curves (loss.png/svg, metrics.png/svg) from its metrics.csv.
    Plot(plot::PlotArgs),
    /// Describe a weight file, Hub model or ijepa-rs run: layout, architecture, parameters, tensors.
    Inspect(inspect::InspectArgs),
    /// Measure throughput (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pretrain(args) => pretrain::run(&args),
        Command::Masks(args) => masks::run(&args),
        Command::Embed(args) => embed::run(&args),
        Command::Probe(args) => probe::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Download(args) => download::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Plot(args) => plot::run(&args),
        Command::Shards(args) => shards::run(&args),
        Command::Bench(cmd) => bench::run(&cmd),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // mimalloc v3's default purge delay is 1000 ms (options.c), which no
        // neighbouring option has: the number names that option (the test
        // binary runs on mimalloc too, without keep_freed_memory).
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(
                unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) },
                1000
            );
        }
    }
}
