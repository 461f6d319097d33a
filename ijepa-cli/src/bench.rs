//! `ijepa-cli bench`: throughput measurements, printed for BENCHMARKS.md.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use clap::{Args, Subcommand};
use ijepa_encoder::init::{init_weights, InitOptions};
use ijepa_encoder::{TokenEncoder, VisionTransformer, VitConfig};

/// What to measure.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Frozen-encoder forward throughput (inference, as `embed` runs it).
    Forward(ForwardArgs),
}

/// Options of `ijepa-cli bench forward`.
#[derive(Debug, Args)]
pub struct ForwardArgs {
    /// timm model name.
    #[arg(long, default_value = "vit_small_patch16_224")]
    model: String,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Timed passes.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Untimed passes first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `ijepa-cli bench`.
pub fn run(cmd: &BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Forward(args) => forward(args),
    }
}

fn forward(args: &ForwardArgs) -> Result<()> {
    anyhow::ensure!(
        args.batch > 0 && args.iters > 0,
        "--batch and --iters must be at least 1"
    );
    let cfg = VitConfig::from_timm_name(&args.model)?;
    let weights = init_weights(&cfg, &InitOptions::default(), &Device::Cpu)?;
    let vit = VisionTransformer::from_weights(&cfg, weights)?;
    let (h, w) = cfg.image_size;
    let images = Tensor::randn(0f32, 1.0, (args.batch, 3, h, w), &Device::Cpu)?;
    for _ in 0..args.warmup {
        vit.forward(&images)?;
    }
    let mut times = Vec::with_capacity(args.iters);
    for _ in 0..args.iters {
        let start = Instant::now();
        let out = vit.forward(&images)?;
        // Force the result (candle is eager, but be explicit).
        out.dims();
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let img_s = args.batch as f64 / median;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "implementation": "ijepa-rs (candle 0.11.1)",
                "model": args.model, "batch": args.batch, "iters": args.iters,
                "median_ms": median * 1e3, "images_per_second": img_s,
                "threads": rayon::current_num_threads(),
            })
        );
    } else {
        println!(
            "{} forward, batch {}: median {:.1} ms, {:.2} img/s ({} threads)",
            args.model,
            args.batch,
            median * 1e3,
            img_s,
            rayon::current_num_threads()
        );
    }
    Ok(())
}
