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
    /// One I-JEPA forward + backward (no optimizer), official recipe.
    Step(StepArgs),
    /// One whole I-JEPA training step: forward, backward, AdamW, EMA update.
    Train(StepArgs),
    /// The pretraining data pipeline: decode, RandomResizedCrop, normalise, masks.
    Data(DataArgs),
}

/// Options of `ijepa-cli bench data`.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Image folder.
    #[arg(long)]
    data: std::path::PathBuf,
    /// Output size (square).
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Decoding threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Options of `ijepa-cli bench step`.
#[derive(Debug, Args)]
pub struct StepArgs {
    /// timm architecture of the encoder, built as I-JEPA's encoders are
    /// (no class token, average pooling: timm's `_gap` arguments).
    #[arg(long, default_value = "vit_tiny_patch16_224")]
    model: String,
    /// Predictor width.
    #[arg(long, default_value_t = 384)]
    predictor_embed_dim: usize,
    /// Predictor depth.
    #[arg(long, default_value_t = 6)]
    predictor_depth: usize,
    /// Images per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
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
        BenchCommand::Step(args) => step(args, false),
        BenchCommand::Train(args) => step(args, true),
        BenchCommand::Data(args) => data(args),
    }
}

/// Peak resident memory of this process in MiB (Linux), if known.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn step(args: &StepArgs, train: bool) -> Result<()> {
    use ijepa_masking::{IndexBatch, MaskBatch};
    use ijepa_train::collective::SingleProcess;
    use ijepa_train::model::{IJepa, IJepaConfig};
    use ijepa_train::step::{StepBatch, StepHyper, StepOutcome, TrainStep};
    anyhow::ensure!(
        args.batch > 0 && args.iters > 0,
        "--batch and --iters must be at least 1"
    );
    let encoder =
        ijepa_encoder::registry::resolve(&args.model, &ijepa_encoder::registry::TimmArgs::gap())?;
    let mut cfg = IJepaConfig::new(encoder.config);
    cfg.predictor_embed_dim = args.predictor_embed_dim;
    cfg.predictor_depth = args.predictor_depth;
    let (gh, gw) = cfg.encoder.grid_size();
    anyhow::ensure!(
        gh * gw >= 186,
        "the fixed benchmark masks need at least 186 patches"
    );
    let model = IJepa::new(cfg.clone(), &Device::Cpu)?;
    let (h, w) = cfg.encoder.image_size;
    let images = Tensor::randn(0f32, 1.0, (args.batch, 3, h, w), &Device::Cpu)?;
    // Fixed masks, the same as bench/torch_step.py.
    let rows = |start: u32, len: u32| {
        let row: Vec<u32> = (start..start + len).collect();
        IndexBatch::from_flat(args.batch, len as usize, row.repeat(args.batch))
    };
    let masks = MaskBatch {
        contexts: vec![rows(0, 60)],
        targets: [60, 90, 120, 150].iter().map(|&s| rows(s, 36)).collect(),
        ..Default::default()
    };
    let batch = StepBatch::new(images, &masks)?;
    // The whole training step, as `pretrain` runs it, at fixed schedule values.
    let hyper = StepHyper {
        lr: 1e-4,
        weight_decay: 0.04,
        momentum: 0.996,
    };
    let mut train_step = TrainStep::new(model, 0.04, None, Box::new(SingleProcess));
    let mut times = vec![];
    for i in 0..args.warmup + args.iters {
        let start = Instant::now();
        if train {
            if let StepOutcome::Refused(why) =
                train_step.run(std::slice::from_ref(&batch), hyper)?
            {
                anyhow::bail!("benchmark step refused: {why}");
            }
        } else {
            train_step.backward(&batch)?;
        }
        if i >= args.warmup {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let rss = peak_rss_mb().unwrap_or(f64::NAN);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "implementation": "ijepa-rs (candle 0.11.1)", "model": args.model, "batch": args.batch,
                "what": if train { "fwd+bwd+AdamW+EMA" } else { "fwd+bwd" },
                "seconds_per_step": median, "images_per_second": args.batch as f64 / median,
                "peak_rss_mb": rss, "threads": rayon::current_num_threads(),
            })
        );
    } else {
        println!(
            "{} I-JEPA step ({}), batch {}: median {:.3} s, {:.2} img/s, peak RSS {:.0} MiB",
            args.model,
            if train {
                "fwd+bwd+AdamW+EMA"
            } else {
                "fwd+bwd"
            },
            args.batch,
            median,
            args.batch as f64 / median,
            rss
        );
    }
    Ok(())
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

/// One pass over the folder through the training loader (one epoch).
fn data(args: &DataArgs) -> Result<()> {
    use ijepa_masking::{Grid, MultiBlock, MultiBlockConfig};
    use ijepa_train::data::{
        ImageFolder, ImageSource, Loader, LoaderConfig, Position, TrainTransform,
    };
    use std::sync::Arc;
    let source = Arc::new(ImageSource::Folder(ImageFolder::open(&args.data)?));
    let grid = Grid::new_2d(args.size / 16, args.size / 16)?;
    let sampler = Arc::new(MultiBlock::new(grid, MultiBlockConfig::default())?);
    let transform = TrainTransform::new(
        (args.size, args.size),
        (0.3, 1.0),
        (3.0 / 4.0, 4.0 / 3.0),
        false,
        [0.485, 0.456, 0.406],
        [0.229, 0.224, 0.225],
    )?;
    let config = LoaderConfig {
        batch_size: args.batch,
        shard: Default::default(),
        seed: 0,
        workers: args.workers,
        prefetch: 2,
        transform,
    };
    let start = Instant::now();
    let mut images = 0;
    for batch in Loader::start(
        source,
        sampler,
        config,
        Position::default(),
        1,
        Arc::default(),
    )? {
        images += batch?.len;
    }
    let secs = start.elapsed().as_secs_f64();
    let per_s = images as f64 / secs;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "implementation": "ijepa-rs loader (image 0.25 decode, Pillow-exact bilinear)",
                "images": images, "seconds": secs, "images_per_second": per_s,
                "workers": args.workers, "images_per_second_per_worker": per_s / args.workers as f64,
            })
        );
    } else {
        println!(
            "data pipeline, {} workers: {images} images in {secs:.2} s, {per_s:.1} img/s ({:.1} per worker)",
            args.workers,
            per_s / args.workers as f64
        );
    }
    Ok(())
}
