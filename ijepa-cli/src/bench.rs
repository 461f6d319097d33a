//! `ijepa-cli bench`: throughput measurements, printed for BENCHMARKS.md.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use clap::{Args, Subcommand};
use ijepa_encoder::device::DeviceSpec;
use ijepa_encoder::init::{init_weights, InitOptions};
use ijepa_encoder::precision::{autocast, Precision};
use ijepa_encoder::{TokenEncoder, VisionTransformer, VitConfig};
use ijepa_train::step::StepBatch;

/// What to measure.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Frozen-encoder forward throughput (inference, as `embed` runs it).
    Forward(ForwardArgs),
    /// One I-JEPA forward + backward (no optimizer), official recipe.
    Step(StepArgs),
    /// One whole I-JEPA training step: forward, backward, AdamW, EMA update
    /// (under `mpirun` with the `mpi` feature: `--batch` is the global batch
    /// and rank 0 reports).
    Train(StepArgs),
    /// One all-reduce of a model's whole gradient set between the processes
    /// of an `mpirun` job (the `mpi` feature).
    AllReduce(AllReduceArgs),
    /// The pretraining data pipeline: decode, RandomResizedCrop, normalise, masks.
    Data(DataArgs),
    /// k-NN and linear probes of a synthetic feature file: time and peak memory
    /// as the set grows.
    Probe(ProbeArgs),
    /// One step's loss and every gradient on `--device` at `--precision`
    /// against the f32 CPU step, on the same weights and batch (exit status 1
    /// beyond the tolerance): the check a GPU build passes first.
    Parity(ParityArgs),
    /// One f32 matrix product `(m, k) · (k, n)` (candle's CPU GEMM, the gemm
    /// crate): GFLOP/s, for comparison with PyTorch's on the same shapes.
    Matmul(MatmulArgs),
}

/// Options of `ijepa-cli bench matmul`.
#[derive(Debug, Args)]
pub struct MatmulArgs {
    /// Rows of the left factor.
    #[arg(long)]
    m: usize,
    /// Inner dimension.
    #[arg(long)]
    k: usize,
    /// Columns of the right factor.
    #[arg(long)]
    n: usize,
    /// The right factor stored transposed, as a Linear's weight `(n, k)`.
    #[arg(long)]
    transposed: bool,
    /// Timed products.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Where a benchmark runs and at what precision.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, or bf16 (PyTorch-autocast-style mixed precision).
    #[arg(long, default_value = "f32")]
    precision: String,
}

impl DeviceArgs {
    fn open(&self) -> Result<(Device, Precision)> {
        let device = self.device.parse::<DeviceSpec>()?.open(0)?;
        Ok((device, self.precision.parse()?))
    }
}

/// Options of `ijepa-cli bench parity`.
#[derive(Debug, Args)]
pub struct ParityArgs {
    /// timm architecture of the encoder (I-JEPA's `_gap` arguments).
    #[arg(long, default_value = "vit_tiny_patch16_224")]
    model: String,
    /// Encoder depth (a few blocks keep the CPU reference quick).
    #[arg(long, default_value_t = 2)]
    depth: usize,
    /// Predictor width.
    #[arg(long, default_value_t = 96)]
    predictor_embed_dim: usize,
    /// Predictor depth.
    #[arg(long, default_value_t = 2)]
    predictor_depth: usize,
    /// Images in the batch.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Largest relative deviation allowed (default: 1e-4 at f32, 2e-2 at
    /// bf16 against the CPU; 1e-5 and 1e-2 against the composition).
    #[arg(long)]
    tolerance: Option<f64>,
    /// What the step is compared with: `cpu` (the f32 CPU step) or
    /// `composed` (the same device and precision with our CUDA kernels
    /// off: candle's compositions, which they replace).
    #[arg(long, default_value = "cpu")]
    reference: String,
    #[command(flatten)]
    on: DeviceArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Options of `ijepa-cli bench probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Training rows (synthetic: noisy class centres).
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Evaluation rows.
    #[arg(long, default_value_t = 1000)]
    test_rows: usize,
    /// Values per row.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Classes.
    #[arg(long, default_value_t = 100)]
    classes: usize,
    /// Rows per linear-probe step.
    #[arg(long, default_value_t = 4096)]
    linear_batch: usize,
    /// Linear-probe steps.
    #[arg(long, default_value_t = 100)]
    linear_steps: usize,
    /// Folder for the feature files (default: a temporary one, removed after).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Probe from the features loaded into memory whole (what `probe`
    /// without --features does), for comparison.
    #[arg(long)]
    in_memory: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Options of `ijepa-cli bench data`.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Image folder, or tar shards (`shards/s-{000..009}.tar`, a `.tar`, a list file).
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
    /// The official colour distortion (strength 1) after the crop.
    #[arg(long)]
    color_distortion: bool,
    /// The official random Gaussian blur after it.
    #[arg(long)]
    blur: bool,
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
    #[command(flatten)]
    shape: ShapeArgs,
    #[command(flatten)]
    on: DeviceArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Changes to the `--model` architecture (timm's keyword arguments), for the
/// small models users pretrain on a CPU.
#[derive(Debug, Args, Default)]
pub struct ShapeArgs {
    /// Input size (`img_size`).
    #[arg(long)]
    image_size: Option<usize>,
    /// Patch size.
    #[arg(long)]
    patch_size: Option<usize>,
    /// Encoder width.
    #[arg(long)]
    embed_dim: Option<usize>,
    /// Encoder depth.
    #[arg(long)]
    depth: Option<usize>,
    /// Attention heads (encoder and predictor).
    #[arg(long)]
    heads: Option<usize>,
}

/// Options of `ijepa-cli bench all-reduce`.
#[derive(Debug, Args)]
pub struct AllReduceArgs {
    /// timm architecture of the encoder whose gradients are exchanged.
    #[arg(long, default_value = "vit_base_patch16_224")]
    model: String,
    /// Predictor width.
    #[arg(long, default_value_t = 384)]
    predictor_embed_dim: usize,
    /// Predictor depth.
    #[arg(long, default_value_t = 6)]
    predictor_depth: usize,
    /// Timed all-reduces.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Where the gradients live: cpu, cuda or cuda:N (on a GPU with the
    /// `nccl` feature they are summed by NCCL: `IJEPA_NCCL=1` for one process).
    #[arg(long, default_value = "cpu")]
    device: String,
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
    #[command(flatten)]
    on: DeviceArgs,
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
        BenchCommand::AllReduce(args) => all_reduce(args),
        BenchCommand::Data(args) => data(args),
        BenchCommand::Probe(args) => probe(args),
        BenchCommand::Parity(args) => parity(args),
        BenchCommand::Matmul(args) => matmul(args),
    }
}

/// Peak resident memory of this process in MiB (Linux), if known.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The I-JEPA configuration of a benchmark: `model` built as I-JEPA's
/// encoders are (timm's `_gap` arguments), the given predictor.
fn bench_config(
    model: &str,
    shape: &ShapeArgs,
    predictor_embed_dim: usize,
    predictor_depth: usize,
) -> Result<ijepa_train::model::IJepaConfig> {
    use ijepa_encoder::registry::{Size, TimmArgs};
    let args = TimmArgs {
        img_size: shape.image_size.map(Size::Square),
        patch_size: shape.patch_size.map(Size::Square),
        embed_dim: shape.embed_dim,
        depth: shape.depth,
        num_heads: shape.heads,
        ..TimmArgs::gap()
    };
    let encoder = ijepa_encoder::registry::resolve(model, &args)?;
    // The benchmarks' masks are fixed (`fixed_batch`): the sampler the model
    // builds is never used, so the smallest grids need not fit its min_keep.
    let mut cfg = ijepa_train::model::IJepaConfig::new(encoder.config);
    cfg.mask.min_keep = 1;
    cfg.predictor_embed_dim = predictor_embed_dim;
    cfg.predictor_depth = predictor_depth;
    Ok(cfg)
}

/// `share` seeded random images (uniform in [-2, 2)) with the fixed masks
/// of bench/torch_step.py, in proportion to the `N` patches (at 14 × 14:
/// context = patches 0..60, four targets of 36 from 60, 90, 120, 150):
/// context `0..60N/196`, targets of `36N/196` patches from
/// `60N/196 + 30N/196·i`.
fn fixed_batch(
    cfg: &ijepa_train::model::IJepaConfig,
    share: usize,
    device: &Device,
) -> Result<StepBatch> {
    use ijepa_masking::{IndexBatch, MaskBatch};
    let (gh, gw) = cfg.encoder.grid_size();
    let n = (gh * gw) as u32;
    let (context, len, gap) = (60 * n / 196, 36 * n / 196, 30 * n / 196);
    anyhow::ensure!(
        len > 0,
        "the benchmark masks need at least 6 patches, this model has {gh}x{gw}"
    );
    let (h, w) = cfg.encoder.image_size;
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let pixels: Vec<f32> = (0..share * 3 * h * w)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    let images = Tensor::from_vec(pixels, (share, 3, h, w), device)?;
    let rows = |start: u32, len: u32| {
        let row: Vec<u32> = (start..start + len).collect();
        IndexBatch::from_flat(share, len as usize, row.repeat(share))
    };
    let masks = MaskBatch {
        contexts: vec![rows(0, context)],
        targets: (0..4).map(|i| rows(context + i * gap, len)).collect(),
        ..Default::default()
    };
    Ok(StepBatch::new(images, &masks)?)
}

fn parity(args: &ParityArgs) -> Result<()> {
    use ijepa_train::model::IJepa;
    use ijepa_train::parity::{compare, gradients, updated};
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    let shape = ShapeArgs::default();
    let mut cfg = bench_config(
        &args.model,
        &shape,
        args.predictor_embed_dim,
        args.predictor_depth,
    )?;
    anyhow::ensure!(
        (1..=cfg.encoder.depth).contains(&args.depth),
        "--depth {}: {} has 1 to {} blocks",
        args.depth,
        args.model,
        cfg.encoder.depth
    );
    cfg.encoder.depth = args.depth;
    let (device, precision) = args.on.open()?;
    let composed = match args.reference.as_str() {
        "cpu" => false,
        "composed" => true,
        other => anyhow::bail!("--reference {other:?}: expected \"cpu\" or \"composed\""),
    };
    let tolerance = args.tolerance.unwrap_or(match (precision, composed) {
        (Precision::F32, false) => 1e-4,
        (Precision::Bf16, false) => 2e-2,
        (Precision::F32, true) => 1e-5,
        (Precision::Bf16, true) => 1e-2,
    });
    let cpu_model = IJepa::new(cfg.clone(), &Device::Cpu)?;
    let batch = fixed_batch(&cfg, args.batch, &Device::Cpu)?;
    let mut candidate = cpu_model.to_device(&device)?;
    candidate.set_precision(precision);
    let started = Instant::now();
    let expected = if composed {
        anyhow::ensure!(
            device.is_cuda(),
            "--reference composed compares our CUDA kernels with candle's compositions: it needs --device cuda"
        );
        with_kernels(false, || gradients(&candidate, &batch))?
    } else {
        gradients(&cpu_model, &batch)?
    };
    let reference_s = started.elapsed().as_secs_f64();
    let got = with_kernels(true, || gradients(&candidate, &batch))?;
    let report = compare(&expected, &got)?;
    let worst = report.worst();
    // The optimizer and EMA from the same parameters and gradients: the
    // fused kernels give the CPU's values bit for bit.
    let reference_model = if composed { &candidate } else { &cpu_model };
    let update = compare(
        &with_kernels(!composed, || updated(reference_model, &got))?,
        &with_kernels(true, || updated(&candidate, &got))?,
    )?;
    let update_worst = update.worst();
    let update_tolerance = if composed { 1e-5 } else { 0.0 };
    let passed = report.within(tolerance) && update.within(update_tolerance);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": args.model, "depth": args.depth, "batch": args.batch,
                "device": args.on.device, "precision": precision.to_string(),
                "reference": args.reference,
                "tensors": report.rows.len(), "tolerance": tolerance, "passed": passed,
                "worst": { "name": worst.name, "relative": worst.relative, "max_abs": worst.max_abs },
                "loss": { "reference": expected.loss, "candidate": got.loss },
                "update": { "tensors": update.rows.len() - 1, "tolerance": update_tolerance,
                            "worst": { "name": update_worst.name, "relative": update_worst.relative,
                                       "max_abs": update_worst.max_abs } },
                "reference_seconds": reference_s,
            })
        );
    } else {
        println!(
            "parity of {} (depth {}) on {} at {precision} against {}: loss {:.6} vs {:.6}; {} tensors, worst {} at {:.2e} relative ({:.2e} absolute), tolerance {:.0e}; after two AdamW steps and an EMA update from the same gradients, worst {} at {:.2e} (tolerance {:.0e}): {}",
            args.model,
            args.depth,
            args.on.device,
            if composed {
                "the composition (kernels off)"
            } else {
                "the CPU at f32"
            },
            got.loss,
            expected.loss,
            report.rows.len(),
            worst.name,
            worst.relative,
            worst.max_abs,
            tolerance,
            update_worst.name,
            update_worst.relative,
            update_tolerance,
            if passed { "passed" } else { "FAILED" }
        );
    }
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

fn matmul(args: &MatmulArgs) -> Result<()> {
    anyhow::ensure!(
        args.m * args.k * args.n > 0 && args.iters > 0,
        "--m, --k, --n and --iters must be at least 1"
    );
    let a = Tensor::randn(0f32, 1.0, (args.m, args.k), &Device::Cpu)?;
    let b = match args.transposed {
        true => Tensor::randn(0f32, 1.0, (args.n, args.k), &Device::Cpu)?.t()?,
        false => Tensor::randn(0f32, 1.0, (args.k, args.n), &Device::Cpu)?,
    };
    a.matmul(&b)?;
    let mut times = vec![];
    for _ in 0..args.iters {
        let start = Instant::now();
        a.matmul(&b)?;
        times.push(start.elapsed().as_secs_f64());
    }
    let seconds = median(times);
    let gflops = 2.0 * (args.m * args.k * args.n) as f64 / seconds / 1e9;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "m": args.m, "k": args.k, "n": args.n, "transposed": args.transposed,
                "seconds": seconds, "gflops": gflops, "threads": rayon::current_num_threads(),
            })
        );
    } else {
        println!(
            "({} x {}) . ({} x {}){}: median {:.3} ms, {:.1} GFLOP/s",
            args.m,
            args.k,
            args.k,
            args.n,
            if args.transposed {
                " (right factor transposed)"
            } else {
                ""
            },
            seconds * 1e3,
            gflops
        );
    }
    Ok(())
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The job's processes for a benchmark on `device`, its notes printed by
/// rank 0.
fn job(device: &str) -> Result<Box<dyn ijepa_train::collective::Collective>> {
    let (host, notes) = ijepa_train::collective::processes()?;
    if host.is_writer() {
        for n in &notes {
            ijepa_train::collective::say(&format!("note: {n}"));
        }
    }
    Ok(ijepa_train::collective::for_device(host, device)?)
}

fn all_reduce(args: &AllReduceArgs) -> Result<()> {
    use ijepa_train::model::IJepa;
    anyhow::ensure!(args.iters > 0, "--iters must be at least 1");
    let processes = job(&args.device)?;
    let device = args
        .device
        .parse::<DeviceSpec>()?
        .open(processes.local_rank())?;
    let shape = ShapeArgs::default();
    let cfg = bench_config(
        &args.model,
        &shape,
        args.predictor_embed_dim,
        args.predictor_depth,
    )?;
    let model = IJepa::new(cfg, &Device::Cpu)?;
    // Tensors shaped as the gradient set a step exchanges, of the same seeded
    // values on every process: their sum is known.
    let grads: Vec<Tensor> = model
        .trainable_vars()
        .iter()
        .map(|(_, v)| v.as_tensor().to_device(&device))
        .collect::<candle_core::Result<_>>()?;
    let floats: usize = grads.iter().map(Tensor::elem_count).sum();
    drop(model);
    let ranks = processes.world_size();
    let mut times = vec![];
    let mut worst = 0f64;
    for i in 0..args.iters + 1 {
        processes.barrier()?;
        let start = Instant::now();
        let sums = processes.all_reduce_sum(&grads)?;
        device.synchronize()?;
        if i > 0 {
            times.push(start.elapsed().as_secs_f64());
        } else {
            // Each sum is `ranks` times the tensor (exactly, for 1 or 2
            // ranks; within rounding beyond).
            for (g, s) in grads.iter().zip(&sums) {
                let expected = (g * ranks as f64)?;
                let diff = (s - &expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
                let scale = expected.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-30);
                worst = worst.max(f64::from(diff / scale));
            }
        }
        drop(sums);
    }
    anyhow::ensure!(
        worst <= 1e-6,
        "all-reduce over {ranks} processes on {}: a sum is off by {worst:.2e} of its scale",
        args.device
    );
    let seconds = median(times);
    if !processes.is_writer() {
        return Ok(());
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": args.model, "floats": floats, "processes": ranks,
                "device": args.device, "sums_checked": true, "worst_relative": worst,
                "seconds": seconds, "gb_per_second": floats as f64 * 4.0 / seconds / 1e9,
            })
        );
    } else {
        println!(
            "all-reduce of {} gradients ({:.1} M floats) over {ranks} processes on {}: median {:.3} s ({:.2} GB/s of f32), sums checked",
            args.model,
            args.device,
            floats as f64 / 1e6,
            seconds,
            floats as f64 * 4.0 / seconds / 1e9
        );
    }
    Ok(())
}

/// `f` with our CUDA kernels on or off (a build without CUDA has none:
/// `f` runs as it is).
fn with_kernels<T>(on: bool, f: impl FnOnce() -> T) -> T {
    #[cfg(feature = "cuda")]
    {
        ijepa_encoder::cuda::set_enabled(on);
        let out = f();
        ijepa_encoder::cuda::set_enabled(true);
        out
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = on;
        f()
    }
}

fn step(args: &StepArgs, train: bool) -> Result<()> {
    use ijepa_train::model::IJepa;
    use ijepa_train::step::{StepHyper, StepOutcome, TrainStep};
    anyhow::ensure!(
        args.batch > 0 && args.iters > 0,
        "--batch and --iters must be at least 1"
    );
    let processes = job(&args.on.device)?;
    let ranks = processes.world_size();
    anyhow::ensure!(
        args.batch.is_multiple_of(ranks),
        "--batch {} is the global batch of {ranks} processes: make it a multiple of {ranks}",
        args.batch
    );
    let share = args.batch / ranks;
    let cfg = bench_config(
        &args.model,
        &args.shape,
        args.predictor_embed_dim,
        args.predictor_depth,
    )?;
    let (device, precision) = args.on.open()?;
    let mut model = IJepa::new(cfg.clone(), &device)?;
    model.set_precision(precision);
    let batch = fixed_batch(&cfg, share, &device)?;
    // The whole training step, as `pretrain` runs it, at fixed schedule values.
    let hyper = StepHyper {
        lr: 1e-4,
        weight_decay: 0.04,
        momentum: ijepa_train::schedule::MOMENTUM.0,
    };
    let mut train_step = TrainStep::new(model, 0.04, None, processes);
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
        // A GPU runs ahead of the host: time the work, not its launch.
        device.synchronize()?;
        if i >= args.warmup {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let median = median(times);
    let rss = peak_rss_mb().unwrap_or(f64::NAN);
    if !train_step.collective().is_writer() {
        return Ok(());
    }
    let mib = |bytes: u64| bytes as f64 / f64::from(1u32 << 20);
    let gpu = ijepa_encoder::device::gpu_memory_peak(&device);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "implementation": "ijepa-rs (candle 0.11.1)", "model": args.model, "batch": args.batch,
                "what": if train { "fwd+bwd+AdamW+EMA" } else { "fwd+bwd" },
                "seconds_per_step": median, "images_per_second": args.batch as f64 / median,
                "peak_rss_mb": rss, "threads": rayon::current_num_threads(), "processes": ranks,
                "device": args.on.device, "precision": precision.to_string(),
                "cuda_max_allocated_mb": gpu.map(|(used, _)| mib(used)),
                "cuda_max_reserved_mb": gpu.map(|(_, reserved)| mib(reserved)),
            })
        );
    } else {
        println!(
            "{} I-JEPA step ({}) on {} at {precision}, batch {}: median {:.3} s, {:.2} img/s, peak RSS {:.0} MiB",
            args.model,
            if train {
                "fwd+bwd+AdamW+EMA"
            } else {
                "fwd+bwd"
            },
            args.on.device,
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
    let (device, precision) = args.on.open()?;
    let weights = init_weights(&cfg, &InitOptions::default(), &device)?;
    let vit = VisionTransformer::from_weights(&cfg, weights)?;
    let (h, w) = cfg.image_size;
    let images = Tensor::randn(0f32, 1.0, (args.batch, 3, h, w), &device)?;
    let _scope = autocast(precision);
    for _ in 0..args.warmup {
        vit.forward(&images)?;
    }
    device.synchronize()?;
    let mut times = Vec::with_capacity(args.iters);
    for _ in 0..args.iters {
        let start = Instant::now();
        vit.forward(&images)?;
        // A GPU runs ahead of the host: time the work, not its launch.
        device.synchronize()?;
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
                "threads": rayon::current_num_threads(), "peak_rss_mb": peak_rss_mb(),
                "device": args.on.device, "precision": precision.to_string(),
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
    use ijepa_train::data::{ImageSource, Loader, LoaderConfig, Position};
    use ijepa_train::run::config::DataSection;
    use std::sync::Arc;
    let source = Arc::new(ImageSource::open(&args.data)?);
    let grid = Grid::new_2d(args.size / 16, args.size / 16)?;
    let sampler = Arc::new(MultiBlock::new(grid, MultiBlockConfig::default())?);
    let transform = DataSection {
        color_distortion: args.color_distortion,
        gaussian_blur: args.blur,
        ..DataSection::default()
    }
    .transform((args.size, args.size))?;
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

/// Writes `rows` synthetic features (class centres in `[-1, 1]^dim` plus
/// uniform noise in `[-4, 4]`, so the probes make mistakes; label
/// `i % classes`, seeded) as the feature set `name` in `dir`, a chunk at a
/// time.
fn synthetic_features(
    dir: &std::path::Path,
    name: &str,
    rows: usize,
    args: &ProbeArgs,
    seed: u64,
) -> Result<ijepa_train::probe::FeatureFile> {
    use rand::{Rng, SeedableRng};
    let mut centres = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let centres: Vec<f32> = (0..args.classes * args.dim)
        .map(|_| centres.random_range(-1.0f32..1.0))
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut writer = ijepa_train::probe::FeatureWriter::create(dir, name)?;
    let chunk = ijepa_train::probe::CHUNK;
    for s0 in (0..rows).step_by(chunk) {
        let len = chunk.min(rows - s0);
        let mut v = Vec::with_capacity(len * args.dim);
        for i in s0..s0 + len {
            let c = &centres[(i % args.classes) * args.dim..][..args.dim];
            v.extend(c.iter().map(|x| x + rng.random_range(-4.0f32..4.0)));
        }
        writer.append(&Tensor::from_vec(v, (len, args.dim), &Device::Cpu)?)?;
    }
    let labels = (0..rows).map(|i| i % args.classes).collect();
    Ok(writer.finish(labels, 0, "bench probe: synthetic".into())?)
}

fn probe(args: &ProbeArgs) -> Result<()> {
    use ijepa_train::probe::{knn, linear, LinearSchedule, Rows};
    anyhow::ensure!(
        args.rows > 0 && args.test_rows > 0 && args.dim > 0 && args.classes > 1,
        "--rows, --test-rows and --dim must be at least 1, --classes at least 2"
    );
    let tmp = std::env::temp_dir().join(format!("ijepa-bench-probe-{}", std::process::id()));
    let dir = args.dir.clone().unwrap_or_else(|| tmp.clone());
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let train = synthetic_features(&dir, "train", args.rows, args, 1)?;
    let test = synthetic_features(&dir, "val", args.test_rows, args, 2)?;
    let write_s = started.elapsed().as_secs_f64();
    let (ytr, yte) = (train.meta().labels.clone(), test.meta().labels.clone());
    let loaded;
    let rows: (&dyn Rows, &dyn Rows) = if args.in_memory {
        loaded = (train.read(0, train.rows())?, test.read(0, test.rows())?);
        (&loaded.0, &loaded.1)
    } else {
        (&train, &test)
    };
    let t = Instant::now();
    let k = knn(rows.0, &ytr, rows.1, &yte, 20, 0.07)?;
    let knn_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let schedule = LinearSchedule {
        steps: args.linear_steps,
        batch: Some(args.linear_batch),
        seed: 0,
    };
    let l = linear(rows.0, &ytr, rows.1, &yte, schedule)?;
    let linear_s = t.elapsed().as_secs_f64();
    let rss = peak_rss_mb().unwrap_or(f64::NAN);
    let features_mb = (train.rows() * train.dim() * 4) as f64 / (1 << 20) as f64;
    if args.dir.is_none() {
        // Open files stay readable; nothing reads them any more.
        std::fs::remove_dir_all(&tmp)?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "rows": args.rows, "test_rows": args.test_rows, "dim": args.dim, "classes": args.classes,
                "features_mb": features_mb, "peak_rss_mb": rss, "write_s": write_s,
                "knn_s": knn_s, "knn_top1": k.top1, "linear_s": linear_s, "linear_top1": l.top1,
                "linear_batch": args.linear_batch, "linear_steps": args.linear_steps,
                "in_memory": args.in_memory,
            })
        );
    } else {
        println!(
            "{} x {} features ({features_mb:.0} MiB on disk), {} test rows: k-NN {:.1} s (top-1 {:.1} %), \
             linear {} steps of {} rows {:.1} s (top-1 {:.1} %); peak RSS {rss:.0} MiB",
            args.rows,
            args.dim,
            args.test_rows,
            knn_s,
            100.0 * k.top1,
            args.linear_steps,
            args.linear_batch,
            linear_s,
            100.0 * l.top1
        );
    }
    Ok(())
}
