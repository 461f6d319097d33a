//! `ijepa-cli`: the ijepa-rs command line.
//!
//! - `pretrain`: I-JEPA pretraining (TOML or official YAML configs, resume);
//! - `probe`: k-NN and linear probes of a frozen encoder;
//! - `embed`: features of images from timm, Hugging Face, official or
//!   ijepa-rs weights;
//! - `export`, `download`, `inspect`: move weights between ijepa-rs, timm,
//!   Hugging Face and the Hub, and look inside them;
//! - `plot`: redraw a run's training curves;
//! - `masks`: sample I-JEPA masks and print their statistics (and a picture);
//! - `bench`: throughput measurements for BENCHMARKS.md.

use clap::{Parser, Subcommand};

/// candle allocates a fresh buffer for every tensor; glibc returns large ones
/// to the kernel at once, so each op paid page faults to get them back
/// (≈15 % of a ViT forward). mimalloc keeps and reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Redraw a run's curves (loss.png/svg, metrics.png/svg) from its metrics.csv.
    Plot(plot::PlotArgs),
    /// Describe a weight file, Hub model or ijepa-rs run: layout, architecture, parameters, tensors.
    Inspect(inspect::InspectArgs),
    /// Measure throughput (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() {
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
        Command::Bench(cmd) => bench::run(&cmd),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
