//! `ijepa-cli pretrain`: an I-JEPA pretraining run.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use ijepa_encoder::init::init_weights;
use ijepa_encoder::VisionTransformer;
use ijepa_train::collective;
use ijepa_train::report::metrics::{StepMetrics, Throughput};
use ijepa_train::run::layers::ConfigLayers;
use ijepa_train::run::trainer::{Observer, RunInfo, Trainer};
use ijepa_train::{TrainConfig, TrainError};
use indicatif::{ProgressBar, ProgressStyle};

/// Options of `ijepa-cli pretrain`. With none, a small ViT learns the
/// built-in synthetic garments for about 10 minutes and is probed at the end.
#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Configuration file: TOML (see `--print-config`), or an official
    /// facebookresearch/ijepa YAML file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one field, e.g. `--set optim.lr=5e-4` (repeatable; applied last).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Images: a folder (any nesting; labels from sub-folder names), or tar
    /// shards — 'shards/train-{000000..000099}.tar', one .tar, or a list file
    /// (labels from .cls members; see `ijepa-cli shards`). Default: synthetic shapes.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Start from these weights instead of random ones (model.init): a timm
    /// or Hugging Face folder, a .safetensors file, hf-hub:org/name (@revision optional), an
    /// official .pth.tar, an ijepa-rs run; without --model the run takes the
    /// architecture they name.
    #[arg(long, value_name = "WEIGHTS")]
    init: Option<String>,
    /// Encoder: a timm architecture, e.g. vit_huge_patch14_gap_224 (sets model.name and clears model.args; set sizes with --set model.args.patch_size=8 …).
    #[arg(long)]
    model: Option<String>,
    /// Run directory [default: runs/ijepa].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Epochs.
    #[arg(long)]
    epochs: Option<u64>,
    /// Images per step (at most 65,536).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Seed of weights, data order, augmentation and masks (0 to
    /// 9223372036854775807: a TOML integer).
    #[arg(long, value_parser = clap::value_parser!(u64).range(..=i64::MAX as u64))]
    seed: Option<u64>,
    /// Stop after this many optimizer steps (schedules still span every
    /// epoch; at most 9223372036854775807).
    #[arg(long, value_parser = clap::value_parser!(u64).range(..=i64::MAX as u64))]
    max_steps: Option<u64>,
    /// Continue the run in --out from its latest checkpoint (its config.toml is the base).
    #[arg(long)]
    resume: bool,
    /// Continue an official facebookresearch/ijepa run (run.resume_from): a
    /// .pth.tar its train.py saved — encoders, predictor, AdamW state, from
    /// the next epoch. Name its architecture with --config (its YAML) or
    /// --model and --set model.args.
    #[arg(long, value_name = "CHECKPOINT")]
    resume_from: Option<PathBuf>,
    /// cpu, cuda (each process its local rank's GPU) or cuda:N (run.device).
    #[arg(long)]
    device: Option<String>,
    /// Skip the k-NN probe at the end (probe.at_end = false, kept on --resume).
    #[arg(long)]
    no_probe: bool,
    /// Print the resolved configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

impl PretrainArgs {
    /// The flags as configuration layers (file, options, overrides).
    fn layers(&self) -> ConfigLayers {
        ConfigLayers {
            file: self.config.clone(),
            resume: self.resume,
            out: self.out.clone(),
            data: self.data.clone(),
            init: self.init.clone(),
            model: self.model.clone(),
            resume_from: self.resume_from.clone(),
            epochs: self.epochs,
            batch_size: self.batch_size,
            seed: self.seed,
            max_steps: self.max_steps,
            device: self.device.clone(),
            no_probe: self.no_probe,
            sets: self.sets.clone(),
        }
    }
}

/// Progress on a terminal (bar) or as plain log lines.
struct Progress {
    bar: Option<ProgressBar>,
    log_every: u64,
    stop_step: u64,
    start_step: u64,
    /// When the last step was reported, and the recent pace.
    last: Instant,
    rate: Throughput,
    /// Test hook: abort the process (as a kill would) after this step.
    abort_after: Option<u64>,
}

impl Progress {
    fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => collective::say(line),
        }
    }
}

/// Steps the progress line's img/s and ETA are averaged over.
const RATE_WINDOW: usize = 50;

fn eta(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

impl Observer for Progress {
    fn start(&mut self, info: &RunInfo) {
        self.stop_step = info.stop_step;
        self.start_step = info.start_step;
        self.last = Instant::now();
        let from = match &info.resumed_from {
            Some(p) => format!(", resuming from {} (step {})", p.display(), info.start_step),
            None => String::new(),
        };
        self.say(&format!(
            "run {}: {} images, {} steps/epoch, {} steps in the schedule, stopping at {}; {:.2} M trainable parameters{from}",
            info.run_dir.display(),
            info.images,
            info.steps_per_epoch,
            info.total_steps,
            info.stop_step,
            info.parameters as f64 / 1e6
        ));
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(info.stop_step);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}]",
                )
                .expect("valid template"),
            );
            bar.set_position(info.start_step);
            self.bar = Some(bar);
        }
    }

    fn step(&mut self, m: &StepMetrics) {
        // Wall time between reports: data, checkpoints and probes included.
        self.rate.push(m.images, self.last.elapsed().as_secs_f64());
        self.last = Instant::now();
        let left = eta(self.rate.seconds_for(self.stop_step.saturating_sub(m.step)));
        let mut line = format!(
            "loss {:.4}  lr {:.2e}  wd {:.3}  ema {:.5}  {:.1} img/s",
            m.loss,
            m.lr,
            m.weight_decay,
            m.momentum,
            self.rate.images_per_s()
        );
        if let Some(acc) = m.knn_top1 {
            line.push_str(&format!("  k-NN {:.1} %", 100.0 * acc));
            if let Some(bar) = &self.bar {
                bar.println(format!(
                    "step {}: online k-NN top-1 {:.1} %",
                    m.step,
                    100.0 * acc
                ));
            }
        }
        match &self.bar {
            Some(bar) => {
                bar.set_position(m.step);
                bar.set_message(format!("{line}  eta {left}"));
            }
            None if m.step.is_multiple_of(self.log_every)
                || m.step == self.stop_step
                || m.knn_top1.is_some() =>
            {
                collective::say(&format!(
                    "epoch {} itr {} step {}/{}  {line}  ctx {} tgt {}  eta {left}",
                    m.epoch, m.itr, m.step, self.stop_step, m.context_tokens, m.target_tokens
                ))
            }
            None => {}
        }
        if self.abort_after == Some(m.step) {
            std::process::abort();
        }
    }

    fn checkpoint(&mut self, path: &Path) {
        if self.bar.is_none() {
            collective::say(&format!("checkpoint {}", path.display()));
        }
    }

    fn message(&mut self, text: &str) {
        self.say(&format!("note: {text}"));
    }
}

/// What ranks other than 0 print: their own notices (unreadable files of
/// their shares), marked with the rank; progress is rank 0's.
struct RankNotes(usize);

impl Observer for RankNotes {
    fn message(&mut self, text: &str) {
        collective::say(&format!("note: rank {}: {text}", self.0));
    }
}

/// Runs `ijepa-cli pretrain`.
pub fn run(args: &PretrainArgs) -> Result<()> {
    let (processes, bootstrap_notes) = collective::processes()?;
    let (rank, ranks) = (processes.rank(), processes.world_size());
    let writer = processes.is_writer();
    if writer {
        for n in &bootstrap_notes {
            collective::say(&format!("note: {n}"));
        }
    }
    let (cfg, notes) = args.layers().resolve(ranks)?;
    if args.print_config {
        cfg.validate()?;
        if writer {
            print!("{}", cfg.to_toml()?);
        }
        return Ok(());
    }
    if writer {
        for n in &notes {
            collective::say(&format!("note: {n}"));
        }
    }
    let stop = Stop::install(writer)?;
    let processes = collective::for_device(processes, &cfg.run.device)?;
    // Validates (after comparing a resumed run with its own configuration).
    let mut trainer = Trainer::with_collective(cfg.clone(), processes)?;
    if writer {
        let toml = cfg.to_toml()?;
        collective::say(&format!(
            "# resolved configuration (saved as {})",
            cfg.run.out.join("config.toml").display()
        ));
        for line in toml.lines() {
            collective::say(&format!("  {line}"));
        }
        if ranks > 1 {
            collective::say(&format!(
                "data-parallel: {ranks} processes, each preparing and training on {} of every batch of {}; rank 0 writes {}",
                cfg.data.batch_size / ranks,
                cfg.data.batch_size,
                cfg.run.out.display()
            ));
        }
    }
    if !writer {
        let result = trainer.run(&mut RankNotes(rank), &stop.flag);
        return match result {
            Ok(_) => {
                drop(trainer); // finalise MPI before a signal's exit
                stop.exit_if_signalled();
                Ok(())
            }
            // Every rank refused the same step; rank 0 says why.
            Err(TrainError::NonFinite { .. }) => std::process::exit(1),
            Err(e) => trainer.collective().abort(&format!("{e:#}"), 1),
        };
    }
    let mut progress = Progress {
        bar: None,
        log_every: cfg.run.log_every.max(1),
        stop_step: 0,
        start_step: 0,
        last: Instant::now(),
        rate: Throughput::new(RATE_WINDOW),
        abort_after: std::env::var("IJEPA_TEST_ABORT_AFTER_STEP")
            .ok()
            .and_then(|v| v.parse().ok()),
    };
    let summary = match trainer.run(&mut progress, &stop.flag) {
        Ok(s) => s,
        Err(e @ TrainError::NonFinite { .. }) => return Err(e.into()),
        Err(e) if ranks > 1 => trainer.collective().abort(&format!("{e:#}"), 1),
        Err(e) => return Err(e.into()),
    };
    if let Some(bar) = &progress.bar {
        bar.finish();
    }
    collective::say(&format!(
        "{} after {} steps ({} images, {:.0} s of training): final loss {}; checkpoint {}",
        if summary.interrupted {
            "stopped"
        } else {
            "done"
        },
        summary.steps,
        summary.images_seen,
        summary.elapsed_s,
        summary
            .final_loss
            .map_or_else(|| "- (no step run)".to_string(), |l| format!("{l:.4}")),
        summary.checkpoint.display()
    ));
    if !summary.skipped.is_empty() {
        collective::say(&format!(
            "{} unreadable images (their places in the batches went to readable ones):",
            summary.skipped.len()
        ));
        for (name, reason) in &summary.skipped {
            collective::say(&format!("  {name}: {reason}"));
        }
    }
    if stop.signalled() {
        drop(trainer); // finalise MPI before the exit
        stop.exit_if_signalled();
        return Ok(());
    }
    if !cfg.probe.at_end {
        return Ok(());
    }
    if cfg.data.path.is_some() {
        collective::say(&format!(
            "probe: run `ijepa-cli probe --weights {}` on a labelled folder",
            cfg.run.out.display()
        ));
        return Ok(());
    }
    probe(&trainer, &cfg, &stop)
}

/// SIGINT and SIGTERM (Ctrl-C, `kill`, a container stop, SLURM's
/// `--signal=TERM@N` before the time limit): the run finishes its step,
/// writes a checkpoint and exits with 128 + the signal; a second signal
/// exits at once, with the same status.
struct Stop {
    /// Read by the trainer between steps.
    flag: Arc<AtomicBool>,
    /// The signal that arrived first, 0 before.
    signal: Arc<AtomicUsize>,
}

impl Stop {
    /// `announce`: say so on the terminal when a signal arrives (rank 0).
    fn install(announce: bool) -> Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let flag = Arc::new(AtomicBool::new(false));
        let signal = Arc::new(AtomicUsize::new(0));
        for sig in [SIGINT, SIGTERM] {
            // The shutdown goes first: it fires only once the flag is set.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, flag.clone())
                .and_then(|_| signal_hook::flag::register(sig, flag.clone()))
                .context("installing the signal handlers")?;
        }
        // The first signal is the one to exit with.
        for sig in [SIGINT, SIGTERM] {
            let signal = signal.clone();
            // SAFETY: the action only does an atomic compare-exchange, which
            // is async-signal-safe.
            unsafe {
                signal_hook::low_level::register(sig, move || {
                    let _ = signal.compare_exchange(
                        0,
                        sig as usize,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                })
            }
            .context("installing the signal handlers")?;
        }
        if !announce {
            return Ok(Self { flag, signal });
        }
        // Say so as soon as a signal arrives, not only when the step ends.
        let (seen, watched) = (signal.clone(), flag.clone());
        std::thread::Builder::new()
            .name("ijepa-signals".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_millis(50));
                if watched.load(Ordering::SeqCst) {
                    let name = signal_name(seen.load(Ordering::SeqCst));
                    collective::say(&format!("\n{name}: finishing the step and writing a checkpoint (a second signal quits at once)"));
                    return;
                }
            })
            .context("starting the signal watcher")?;
        Ok(Self { flag, signal })
    }

    /// Whether a signal arrived.
    fn signalled(&self) -> bool {
        self.signal.load(Ordering::SeqCst) != 0
    }

    /// Exits with 128 + the signal if one arrived.
    fn exit_if_signalled(&self) {
        let sig = self.signal.load(Ordering::SeqCst);
        if sig != 0 {
            use std::io::Write;
            let _ = std::io::stdout().flush();
            collective::say(&format!(
                "exiting with status {} ({})",
                128 + sig,
                signal_name(sig)
            ));
            std::process::exit(128 + sig as i32);
        }
    }
}

fn signal_name(sig: usize) -> &'static str {
    match sig as i32 {
        signal_hook::consts::SIGINT => "SIGINT",
        signal_hook::consts::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// k-NN and linear probes on held-out synthetic shapes: the learned target and context encoders
/// beside the same architecture at its initial (random) weights and the raw pixels.
fn probe(trainer: &Trainer, cfg: &TrainConfig, stop: &Stop) -> Result<()> {
    let started = Instant::now();
    let device = trainer.device();
    let model_cfg = trainer.model().config();
    // The recipe's own initialisation, from the run's seed.
    let initial = init_weights(&model_cfg.encoder, &model_cfg.encoder_init(), device)?;
    let random = VisionTransformer::from_weights(&model_cfg.encoder, initial)?;
    let (train, test) = (2048, 1024);
    let size = model_cfg.encoder.image_size;
    let scores = |vit: Option<&VisionTransformer>| {
        let (mean, std) = (cfg.data.mean, cfg.data.std);
        ijepa_train::probe::synthetic_probe(vit, size, train, test, mean, std).context("probe")
    };
    let target = scores(Some(trainer.model().teacher()))?;
    stop.exit_if_signalled();
    let context = scores(Some(trainer.model().student()))?;
    stop.exit_if_signalled();
    let baseline = scores(Some(&random))?;
    stop.exit_if_signalled();
    let pixels = scores(None)?;
    stop.exit_if_signalled();
    collective::say(&format!(
        "probes on held-out synthetic shapes (mean-pooled features; {train} train / {test} test images, 8 classes, chance 12.5 %), {:.0} s:",
        started.elapsed().as_secs_f64()
    ));
    println!("                               k-NN top-1   linear top-1");
    for (name, s) in [
        ("I-JEPA target encoder", target),
        ("I-JEPA context encoder", context),
        ("random initialisation", baseline),
        ("raw pixels", pixels),
    ] {
        println!(
            "{name:<30} {:>8.1} %   {:>8.1} %",
            100.0 * s.knn.top1,
            100.0 * s.linear.top1
        );
    }
    Ok(())
}
