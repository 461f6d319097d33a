//! The training loop: data → masks → model → loss → AdamW → EMA, with
//! metrics, checkpoints and bit-exact resume.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use ijepa_encoder::device::DeviceSpec;
use ijepa_encoder::precision::Precision;
use ijepa_masking::MaskSampler;

use crate::collective::{broadcast_map, Collective, SingleProcess};
use crate::data::loader::batches_per_epoch;
use crate::data::{
    BadImages, Batch, ImageFolder, ImageSource, Loader, LoaderConfig, Position, Shard,
    SyntheticShapes, TrainTransform,
};
use crate::error::{io, Result, TrainError};
use crate::model::IJepa;
use crate::report::metrics::{MetricsLog, StepMetrics};
use crate::run::checkpoint::{self, CheckpointState, FORMAT};
use crate::run::config::TrainConfig;
use crate::run::init::InitWeights;
use crate::run::official_checkpoint::OfficialCheckpoint;
use crate::run::run_lock::RunLock;
use crate::schedule::{CosineWeightDecay, Momentum, WarmupCosine};
use crate::step::{StepBatch, StepHyper, StepOutcome, TrainStep};

/// What a run is about to do, told to the [`Observer`] once.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Images in the data set.
    pub images: usize,
    /// Optimizer steps per epoch.
    pub steps_per_epoch: u64,
    /// Steps the schedules span.
    pub total_steps: u64,
    /// The step this run stops after (`run.max_steps` or the total).
    pub stop_step: u64,
    /// Steps already done (0, or the resumed checkpoint's).
    pub start_step: u64,
    /// The checkpoint resumed from.
    pub resumed_from: Option<PathBuf>,
    /// Trainable parameters (student and predictor).
    pub parameters: usize,
}

/// Receives progress; every method has an empty default.
pub trait Observer {
    /// Once, before the first step.
    fn start(&mut self, _info: &RunInfo) {}
    /// After every optimizer step.
    fn step(&mut self, _metrics: &StepMetrics) {}
    /// After a checkpoint is written.
    fn checkpoint(&mut self, _path: &Path) {}
    /// A notice for the log (skipped files, settings without effect).
    fn message(&mut self, _text: &str) {}
}

/// An observer that ignores everything.
impl Observer for () {}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Optimizer steps done in all (including before a resume).
    pub steps: u64,
    /// Loss of the last step this process ran; `None` when it ran none
    /// (a run resumed at its end, or `max_steps = 0`).
    pub final_loss: Option<f32>,
    /// Images trained on in all.
    pub images_seen: u64,
    /// Images that could not be read (each once): name and reason. Their
    /// places in the batches were taken by readable images. In a
    /// data-parallel job, those of this process's shares.
    pub skipped: Vec<(String, String)>,
    /// The last checkpoint written (by rank 0, in a data-parallel job).
    pub checkpoint: PathBuf,
    /// Seconds of training in all.
    pub elapsed_s: f64,
    /// Whether the run stopped on request before its end.
    pub interrupted: bool,
}

/// A training run.
///
/// ```no_run
/// use ijepa_train::{run::trainer::Trainer, TrainConfig};
///
/// let mut cfg = TrainConfig::default(); // small ViT, synthetic shapes
/// cfg.run.out = "runs/demo".into();
/// let mut trainer = Trainer::new(cfg)?;
/// let summary = trainer.run(&mut (), &Default::default())?;
/// println!("{} steps, loss {:?}", summary.steps, summary.final_loss);
/// # Ok::<(), ijepa_train::TrainError>(())
/// ```
pub struct Trainer {
    config: TrainConfig,
    run_dir: PathBuf,
    device: Device,
    step: TrainStep,
    lr: WarmupCosine,
    wd: CosineWeightDecay,
    momentum: Momentum,
    source: Arc<ImageSource>,
    bad_images: Arc<BadImages>,
    sampler: Arc<dyn MaskSampler>,
    transform: TrainTransform,
    steps_per_epoch: u64,
    total_steps: u64,
    steps: u64,
    position: Position,
    images_seen: u64,
    skipped: Vec<(String, String)>,
    elapsed_s: f64,
    last: Option<StepMetrics>,
    last_checkpoint: Option<PathBuf>,
    resumed_from: Option<PathBuf>,
    notes: Vec<String>,
    probe_sets: Option<(ImageFolder, ImageFolder)>,
    /// The run directory's lock (the writer's), held while the trainer lives.
    _lock: Option<RunLock>,
}

/// The device `run.device` names: a CUDA job's ranks drive the GPUs of
/// their machine in order (`local_rank`), so one named GPU (`cuda:N`) is
/// for a single process only.
fn device_of(name: &str, c: &dyn Collective) -> Result<Device> {
    let spec: DeviceSpec = name.parse()?;
    if let (DeviceSpec::Cuda(Some(_)), ranks @ 2..) = (spec, c.world_size()) {
        return Err(TrainError::Config(format!(
            "run.device = {name:?} names one GPU for all {ranks} processes of this job: use \"cuda\" (each process drives the GPU of its local rank)"
        )));
    }
    Ok(spec.open(c.local_rank())?)
}

/// The precision a run computes at (on the CPU or not), and the note that
/// says when it is not the configured one: bf16 autocast on a GPU, f32 on
/// the CPU (as the official code's CUDA autocast is there).
fn precision_on(configured: Precision, cpu: bool) -> (Precision, Option<String>) {
    match configured {
        Precision::Bf16 if cpu => (
            Precision::F32,
            Some(
                "run.precision = \"bf16\": autocast applies on CUDA only; this CPU run is f32"
                    .into(),
            ),
        ),
        p => (p, None),
    }
}

/// Rank 0's model on every rank, as DDP broadcasts at construction:
/// weights drawn from one seed are equal anyway, but a rank that read other
/// files must not silently train another model.
fn synchronized(model: IJepa, c: &dyn Collective) -> Result<IJepa> {
    if c.world_size() == 1 {
        return Ok(model);
    }
    let student = broadcast_map(c, &model.student_weights()?, 0)?;
    let teacher = broadcast_map(c, model.teacher_weights(), 0)?;
    let predictor = broadcast_map(c, &model.predictor_weights()?, 0)?;
    IJepa::from_parts(model.config().clone(), student, teacher, predictor)
}

/// The settings of a run's configuration that a resumed run must keep
/// (the model, the masks, the data, the seed, the accumulation), each
/// `section.key: the run has X, this command has Y` where they differ.
fn incompatible(run: &TrainConfig, now: &TrainConfig) -> Vec<String> {
    let table = |c: &TrainConfig| toml::Table::try_from(c).unwrap_or_default();
    let (a, b) = (table(run), table(now));
    let mut out = vec![];
    for section in ["model", "mask", "data", "run", "optim"] {
        let empty = toml::Table::new();
        let get = |t: &toml::Table| t.get(section).and_then(toml::Value::as_table).cloned();
        let (x, y) = (
            get(&a).unwrap_or_default(),
            get(&b).unwrap_or_else(|| empty.clone()),
        );
        let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let kept = match section {
                "model" | "mask" => true,
                // Decoding threads and prefetch change nothing a step sees.
                "data" => !matches!(key.as_str(), "workers" | "prefetch"),
                "run" => key == "seed",
                "optim" => key == "accumulate",
                _ => false,
            };
            let show = |v: Option<&toml::Value>| match v {
                None => "unset".to_string(),
                Some(toml::Value::String(s)) if s.is_empty() => "unset".to_string(),
                Some(v) => v.to_string(),
            };
            if kept && x.get(key) != y.get(key) {
                out.push(format!(
                    "{section}.{key}: the run has {}, this command has {}",
                    show(x.get(key)),
                    show(y.get(key))
                ));
            }
        }
    }
    out
}

impl Trainer {
    /// Prepares a run: checks the configuration, finds the data, builds the
    /// model (or reads the latest checkpoint when `run.resume` is set) and
    /// writes `config.toml` into the run directory.
    ///
    /// # Errors
    /// An invalid configuration; a run directory that already holds a run
    /// when not resuming (nothing is overwritten); no checkpoint to resume
    /// from; unreadable data.
    pub fn new(config: TrainConfig) -> Result<Self> {
        Self::with_collective(config, Box::new(SingleProcess))
    }

    /// [`Trainer::new`] for one rank of a data-parallel job: gradients are
    /// exchanged through `collective`. `data.batch_size` is the global
    /// batch; this rank prepares its share of each batch
    /// ([`Shard`]), and the job trains the model one process would train
    /// at that batch. Rank 0's initial state is broadcast to every rank;
    /// only rank 0 writes the run directory.
    ///
    /// # Errors
    /// As [`Trainer::new`]; a global batch the processes cannot share
    /// equally.
    pub fn with_collective(config: TrainConfig, collective: Box<dyn Collective>) -> Result<Self> {
        let run_dir = config.run.out.clone();
        // A new run's settings are checked before its directory is made (a
        // resumed run's after its checkpoint's, so that a changed model is
        // named as such).
        if !config.run.resume {
            config.validate()?;
        }
        // Before anything is read or written: one writer per directory.
        let lock = match collective.is_writer() {
            true => Some(RunLock::acquire(&run_dir)?),
            false => None,
        };
        let mut notes = vec![];
        let existing = match checkpoint::resume_point(&run_dir)? {
            Some((path, note)) => {
                notes.extend(note);
                Some(path)
            }
            None => None,
        };
        // A resumed run is compared with its own configuration first: a
        // changed model is named as such, not as whatever it breaks.
        if let (true, Some(path)) = (config.run.resume, &existing) {
            let differences = incompatible(&checkpoint::read_state(path)?.config, &config);
            if !differences.is_empty() {
                return Err(TrainError::Checkpoint {
                    path: path.clone(),
                    reason: format!(
                        "a run resumes with the model, masks, data and seed it was started with; this command changes {}. \
                         Resume without those settings (its own are in {}), or start a new run with another --out",
                        differences.join("; "),
                        run_dir.join("config.toml").display()
                    ),
                });
            }
        }
        if config.run.resume {
            config.validate()?;
        }
        let ranks = collective.world_size();
        if !config.data.batch_size.is_multiple_of(ranks) {
            return Err(TrainError::Config(format!(
                "data.batch_size = {} is the global batch, shared equally by the job's {ranks} processes: make it a multiple of {ranks}",
                config.data.batch_size
            )));
        }
        let device = device_of(&config.run.device, collective.as_ref())?;
        let (precision, note) = precision_on(config.run.precision.parse()?, device.is_cpu());
        notes.extend(note);
        let resume = match (config.run.resume, existing) {
            (true, Some(path)) => {
                // resume_point verified its files: read once more, not twice.
                let ck = checkpoint::load_verified(&path, &device)?;
                if ck.state.world_size != ranks {
                    notes.push(format!(
                        "{} was written by a job of {} processes, this one has {ranks}: the global batch stays {}",
                        path.display(),
                        ck.state.world_size,
                        config.data.batch_size
                    ));
                }
                Some(ck)
            }
            (true, None) => {
                // Killed before its first checkpoint, or the first launch of
                // a job that is always started with --resume (a requeued
                // SLURM job): the run starts from step 0.
                notes.push(format!(
                    "--resume: {} has no checkpoint yet; the run starts {}",
                    run_dir.display(),
                    match &config.run.resume_from {
                        Some(p) => format!("from run.resume_from {}", p.display()),
                        None => "from step 0".into(),
                    }
                ));
                None
            }
            (false, Some(path)) => {
                return Err(TrainError::Config(format!(
                    "{} already holds a run (latest checkpoint {}); pass --resume to continue it or choose another --out",
                    run_dir.display(),
                    path.display()
                )))
            }
            (false, None) => None,
        };
        let encoder = config.encoder()?;
        let (h, w) = encoder.image_size;
        let source = match &config.data.path {
            Some(path) => {
                let source = ImageSource::open(path)?;
                notes.extend(source.notes().iter().cloned());
                source
            }
            None => ImageSource::Synthetic(SyntheticShapes::new(
                h.max(w) as u32,
                config.data.synthetic_images,
                config.run.seed,
            )),
        };
        let batches = batches_per_epoch(source.len(), config.data.batch_size);
        let steps_per_epoch = batches / config.optim.accumulate as u64;
        if steps_per_epoch == 0 {
            return Err(TrainError::Config(format!(
                "{} images make no full optimizer step of {} × {} images",
                source.len(),
                config.data.batch_size,
                config.optim.accumulate
            )));
        }
        let o = &config.optim;
        let total_steps = (o.ipe_scale * (o.epochs * steps_per_epoch) as f64) as u64;
        let lr = WarmupCosine {
            start_lr: o.start_lr,
            ref_lr: o.lr,
            final_lr: o.final_lr,
            warmup_steps: (o.warmup_epochs * steps_per_epoch as f64) as u64,
            total_steps,
        };
        let wd = CosineWeightDecay {
            ref_wd: o.weight_decay,
            final_wd: o.final_weight_decay,
            total_steps,
        };
        let transform = config.data.transform((h, w))?;
        let model_cfg = config.ijepa()?;
        let momentum =
            model_cfg.momentum(o.ipe_scale * (o.epochs * steps_per_epoch) as f64, o.epochs);
        // An official run continued: only while this directory has no
        // checkpoint of its own (after its first, --resume continues that).
        let official = match (&resume, &config.run.resume_from) {
            (None, Some(path)) => {
                let ck = OfficialCheckpoint::load(path, Some(&model_cfg.encoder), &device)?;
                notes.extend(ck.notes.iter().cloned());
                Some(ck)
            }
            (Some(ck), Some(path)) => {
                notes.push(format!(
                    "run.resume_from {}: not read again, the run continues from its own checkpoint {}",
                    path.display(),
                    ck.path.display()
                ));
                None
            }
            (_, None) => None,
        };
        let model = match &resume {
            Some(ck) => IJepa::from_parts(
                model_cfg,
                ck.encoder.clone(),
                ck.target_encoder.clone(),
                ck.predictor.clone(),
            )?,
            // Read and checked by every rank (rank 0's state is then
            // broadcast as for a random start).
            None => match (&official, config.model.init_spec()?) {
                (Some(ck), _) => {
                    ck.weights.check(&model_cfg.encoder)?;
                    ck.weights.clone().into_model(model_cfg).map_err(|e| {
                        TrainError::Config(format!("run.resume_from {}: {e}", ck.path.display()))
                    })?
                }
                (None, Some(spec)) => {
                    let mut init = InitWeights::load(&spec, Some(&model_cfg.encoder), &device)?;
                    notes.extend(init.fit(&model_cfg.encoder)?);
                    notes.push(init.describe());
                    if model_cfg.recipe == crate::model::Recipe::Seed {
                        notes.push(
                            "seed recipe from weights: stable-pretraining's IJEPA would also divide every block's \
                             attn.proj and mlp.fc2 weights of the pretrained encoder by sqrt(2 (layer + 1)) \
                             (its _fix_init_weight, an initialisation's rescale); ijepa-rs starts from the \
                             weights as they are"
                                .into(),
                        );
                    }
                    init.into_model(model_cfg)
                        .map_err(|e| TrainError::Config(format!("model.init {spec}: {e}")))?
                }
                (None, None) => IJepa::new(model_cfg, &device)?,
            },
        };
        let mut model = synchronized(model, collective.as_ref())?;
        model.set_precision(precision);
        let optimizer_state = match &resume {
            Some(ck) => Some(broadcast_map(collective.as_ref(), &ck.optimizer, 0)?),
            None => None,
        };
        // The loader draws the masks from the model's own sampler.
        let sampler = model.sampler();
        let mut step = TrainStep::new(model, o.weight_decay, o.grad_clip, collective);
        if let (Some(ck), Some(state)) = (&resume, &optimizer_state) {
            let adam_step = ck.state.optimizer_step.unwrap_or(ck.state.step);
            step.optimizer_mut().load_state(state, adam_step)?;
        }
        if let Some(ck) = &official {
            ck.restore(step.optimizer_mut())?;
        }
        let mut trainer = Self {
            run_dir: run_dir.clone(),
            device,
            step,
            lr,
            wd,
            momentum,
            source: Arc::new(source),
            bad_images: Arc::new(BadImages::default()),
            sampler,
            transform,
            steps_per_epoch,
            total_steps,
            steps: 0,
            position: Position::default(),
            images_seen: 0,
            skipped: vec![],
            elapsed_s: 0.0,
            last: None,
            last_checkpoint: None,
            resumed_from: None,
            notes,
            probe_sets: None,
            _lock: lock,
            config,
        };
        if let Some(ck) = resume {
            let s = ck.state;
            trainer.steps = s.step;
            trainer.position = s.position;
            trainer.images_seen = s.images_seen;
            trainer.bad_images.preload(&trainer.source, &s.skipped);
            trainer.skipped = s.skipped;
            trainer.elapsed_s = s.elapsed_s;
            trainer.resumed_from = Some(ck.path.clone());
            trainer.last_checkpoint = Some(ck.path);
        }
        if let Some(ck) = official {
            // As the official train.py resumes: its schedules stepped
            // `epoch × iterations per epoch` times, here of this run's data.
            trainer.steps = ck.epoch * trainer.steps_per_epoch;
            trainer.position = Position {
                epoch: ck.epoch,
                batch: 0,
            };
            trainer.images_seen = ck.images_seen.unwrap_or(0);
            if trainer.steps >= trainer.stop_step() {
                return Err(TrainError::Config(format!(
                    "run.resume_from {} ends epoch {}, step {} of this run ({} steps an epoch), which stops at step {}: \
                     nothing is left to train (raise optim.epochs or run.max_steps)",
                    ck.path.display(),
                    ck.epoch,
                    trainer.steps,
                    trainer.steps_per_epoch,
                    trainer.stop_step()
                )));
            }
            trainer.resumed_from = Some(ck.path);
        }
        if let (Some(t), Some(v)) = (&trainer.config.probe.train, &trainer.config.probe.val) {
            trainer.probe_sets = Some((ImageFolder::open(t)?, ImageFolder::open(v)?));
        }
        // A resumed run that has nothing left to do leaves its config.toml
        // as it was: its settings stay the ones it trained with.
        let idle = trainer.resumed_from.is_some() && trainer.steps >= trainer.stop_step();
        if idle {
            trainer.notes.push(format!(
                "nothing to train: the run is at step {} and stops at {}; {} is left as it was",
                trainer.steps,
                trainer.stop_step(),
                run_dir.join("config.toml").display()
            ));
        }
        if trainer.step.collective().is_writer() && !idle {
            std::fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
            checkpoint::remove_debris(&run_dir);
            ijepa_encoder::io::output::write_file(
                &run_dir.join("config.toml"),
                trainer.config.to_toml()?.as_bytes(),
            )?;
        }
        Ok(trainer)
    }

    /// The steps the official momentum schedule spans: `iterations per epoch
    /// × epochs × ipe_scale`, not rounded (the official generator divides by
    /// it as a float, where the learning-rate schedule's `T_max` is `int()`
    /// of it).
    /// The step the run stops after: `run.max_steps`, at most the schedules'
    /// total.
    fn stop_step(&self) -> u64 {
        self.config
            .run
            .max_steps
            .map_or(self.total_steps, |m| m.min(self.total_steps))
    }

    /// The resolved configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The device the model trains on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The model in its current state.
    pub fn model(&self) -> &IJepa {
        self.step.model()
    }

    /// The images of the run.
    pub fn source(&self) -> &ImageSource {
        &self.source
    }

    /// The processes this run trains on (to end the job on an error only
    /// this rank saw: [`Collective::abort`]).
    pub fn collective(&self) -> &dyn Collective {
        self.step.collective()
    }

    /// Trains until the last epoch, `run.max_steps`, or `stop` turning true
    /// (checked between steps: the run then writes a checkpoint and
    /// returns; in a data-parallel job, all ranks stop at the step where
    /// any rank saw it). A checkpoint is always written at the end, and no
    /// rank returns before it is.
    ///
    /// # Errors
    /// A NaN/Inf loss ([`TrainError::NonFinite`]: the run stops before
    /// updating anything, the last checkpoint stays the newest), a failed
    /// checkpoint or metrics write, a model error.
    pub fn run(&mut self, observer: &mut dyn Observer, stop: &AtomicBool) -> Result<Summary> {
        let stop_step = self.stop_step();
        let epochs = self.config.optim.epochs;
        let acc = self.config.optim.accumulate;
        observer.start(&RunInfo {
            run_dir: self.run_dir.clone(),
            images: self.source.len(),
            steps_per_epoch: self.steps_per_epoch,
            total_steps: self.total_steps,
            stop_step,
            start_step: self.steps,
            resumed_from: self.resumed_from.clone(),
            parameters: self
                .model()
                .trainable_vars()
                .iter()
                .map(|(_, v)| v.elem_count())
                .sum(),
        });
        for note in &self.notes {
            observer.message(note);
        }
        let writer = self.step.collective().is_writer();
        let mut metrics = match writer {
            true => Some(MetricsLog::open(&self.run_dir, self.steps)?),
            false => None,
        };
        let workers = match self.config.data.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let loader = Loader::start(
            self.source.clone(),
            self.sampler.clone(),
            LoaderConfig {
                batch_size: self.config.data.batch_size,
                shard: Shard {
                    rank: self.step.collective().rank(),
                    ranks: self.step.collective().world_size(),
                },
                seed: self.config.run.seed,
                workers,
                prefetch: self.config.data.prefetch,
                transform: self.transform.clone(),
            },
            self.position,
            epochs,
            self.bad_images.clone(),
        )?;
        let used_batches = self.steps_per_epoch * acc as u64;
        let mut pending: Vec<Batch> = Vec::with_capacity(acc);
        let mut interrupted = false;
        for batch in loader {
            let batch = batch?;
            if self.steps >= stop_step {
                break;
            }
            if self.step.collective().any(stop.load(Ordering::SeqCst))? {
                interrupted = true;
                break;
            }
            if batch.position.batch >= used_batches {
                continue; // a remainder that makes no full accumulation
            }
            for (name, reason) in &batch.skipped {
                observer.message(&format!("skipped unreadable image {name}: {reason}"));
            }
            self.skipped.extend(batch.skipped.iter().cloned());
            pending.push(batch);
            if pending.len() < acc {
                continue;
            }
            let last_pos = pending[pending.len() - 1].position;
            let mut m = match self.train_step(&pending)? {
                Ok(m) => m,
                Err(refused) => return Err(self.refuse(refused, metrics.as_ref(), observer)),
            };
            pending.clear();
            self.position = if last_pos.batch + 1 >= used_batches {
                Position {
                    epoch: last_pos.epoch + 1,
                    batch: 0,
                }
            } else {
                Position {
                    epoch: last_pos.epoch,
                    batch: last_pos.batch + 1,
                }
            };
            let every = self.config.probe.every;
            if writer && every > 0 && m.step.is_multiple_of(every) {
                m.knn_top1 = Some(self.online_probe()?);
            }
            if let Some(log) = &mut metrics {
                log.push(&m)?;
            }
            observer.step(&m);
            self.last = Some(m);
            let every = self.config.run.checkpoint_every;
            let due = if every == 0 {
                self.position.batch == 0
            } else {
                self.steps.is_multiple_of(every)
            };
            if due && self.steps < stop_step {
                self.save_checkpoint(metrics.as_ref(), observer)?;
            }
        }
        if !self.is_checkpointed() {
            self.save_checkpoint(metrics.as_ref(), observer)?;
        }
        // Again for the summary: an interrupted accumulation group may have
        // met unreadable images after the last checkpoint.
        self.gather_skipped()?;
        self.step.collective().barrier()?;
        let checkpoint = self.last_checkpoint.clone().unwrap_or_default();
        Ok(Summary {
            steps: self.steps,
            final_loss: self.last.as_ref().map(|m| m.loss),
            images_seen: self.images_seen,
            skipped: self.skipped.clone(),
            checkpoint,
            elapsed_s: self.elapsed_s,
            interrupted,
        })
    }

    /// k-NN top-1 (k = 20, T = 0.07) of the target encoder's mean-pooled
    /// features on the probe folders, or on held-out synthetic shapes.
    fn online_probe(&self) -> Result<f64> {
        let teacher = self.model().teacher();
        let d = &self.config.data;
        let max = self.config.probe.max_images;
        let Some((train, val)) = &self.probe_sets else {
            let scores = crate::probe::synthetic_probe(
                Some(teacher),
                teacher.config().image_size,
                max,
                max / 2,
                d.mean,
                d.std,
            )?;
            return Ok(scores.knn.top1);
        };
        let mut data = ijepa_encoder::weights::DataConfig::imagenet(self.transform.size());
        (data.mean, data.std) = (d.mean, d.std);
        let transform = crate::data::EvalTransform::new(
            data.input_size,
            data.crop_pct,
            false,
            crate::data::Filter::Bicubic,
            data.mean,
            data.std,
        )?;
        let (xt, yt) = crate::probe::folder_features(teacher, &transform, train, max)?;
        let (xv, yv) = crate::probe::folder_features(teacher, &transform, val, max)?;
        Ok(crate::probe::knn(&xt, &yt, &xv, &yv, 20, 0.07)?.top1)
    }

    /// Every rank's unreadable images, merged in rank order (each name
    /// once), on every rank: the checkpoint and the summary name them all,
    /// not rank 0's share only.
    fn gather_skipped(&mut self) -> Result<()> {
        let c = self.step.collective();
        if c.world_size() == 1 {
            return Ok(());
        }
        let all = crate::collective::all_gather_json(c, &self.skipped)?;
        let mut seen = std::collections::HashSet::new();
        self.skipped = all
            .into_iter()
            .flatten()
            .filter(|(name, _)| seen.insert(name.clone()))
            .collect();
        Ok(())
    }

    /// Whether the current state is the newest checkpoint.
    fn is_checkpointed(&self) -> bool {
        self.last_checkpoint.as_ref() == Some(&checkpoint::path_of(&self.run_dir, self.steps))
    }

    /// Writes the checkpoint of the current state (rank 0; other ranks
    /// only note where it is).
    fn save_checkpoint(
        &mut self,
        metrics: Option<&MetricsLog>,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        // Every rank checkpoints at the same steps: the list is gathered here.
        self.gather_skipped()?;
        // Only the writer (rank 0) keeps the metrics log.
        let Some(metrics) = metrics else {
            self.last_checkpoint = Some(checkpoint::path_of(&self.run_dir, self.steps));
            return Ok(());
        };
        #[cfg(not(feature = "plots"))]
        let _ = metrics;
        let last = self.last.clone();
        let state = CheckpointState {
            format: FORMAT.into(),
            step: self.steps,
            position: self.position,
            steps_per_epoch: self.steps_per_epoch,
            total_steps: self.total_steps,
            loss: last.as_ref().map(|m| m.loss),
            lr: last.as_ref().map_or(self.lr.at(self.steps), |m| m.lr),
            weight_decay: last
                .as_ref()
                .map_or(self.wd.at(self.steps), |m| m.weight_decay),
            momentum: last
                .as_ref()
                .map_or(self.config.optim.ema.0, |m| m.momentum),
            images_seen: self.images_seen,
            skipped: self.skipped.clone(),
            elapsed_s: self.elapsed_s,
            rng: format!(
                "keyed by run.seed = {} and the position; nothing else is random",
                self.config.run.seed
            ),
            config: self.config.clone(),
            encoder: Some(self.step.model().config().encoder.clone()),
            world_size: self.step.collective().world_size(),
            files: None,
            optimizer_step: Some(self.step.optimizer().step).filter(|&s| s != self.steps),
        };
        let model = self.step.model();
        let student = model.student_weights()?;
        let predictor = model.predictor_weights()?;
        let path = checkpoint::save(
            &self.run_dir,
            [
                ("encoder", &student),
                ("target_encoder", model.teacher_weights()),
                ("predictor", &predictor),
            ],
            &self.step.optimizer().state_tensors(),
            &state,
            self.config.run.keep_checkpoints,
        )?;
        #[cfg(feature = "plots")]
        crate::report::plot::draw(
            metrics.rows(),
            &self.run_dir,
            crate::report::plot::Scale::Linear,
        )?;
        observer.checkpoint(&path);
        self.last_checkpoint = Some(path);
        Ok(())
    }

    /// A refused step: the state (that of the last applied step) is
    /// checkpointed when it is newer than the last checkpoint, then the
    /// run stops with [`TrainError::NonFinite`].
    fn refuse(
        &mut self,
        what: String,
        metrics: Option<&MetricsLog>,
        observer: &mut dyn Observer,
    ) -> TrainError {
        let step = self.steps + 1;
        if !self.is_checkpointed() {
            if let Err(e) = self.save_checkpoint(metrics, observer) {
                observer.message(&format!(
                    "the state after step {} could not be checkpointed: {e}",
                    self.steps
                ));
            }
        }
        // Every rank refused the same step (the values were all-reduced):
        // none leaves before rank 0 has written the last good state.
        if let Err(e) = self.step.collective().barrier() {
            observer.message(&format!("waiting for the other processes: {e}"));
        }
        TrainError::NonFinite {
            step,
            what,
            last_checkpoint: self
                .last_checkpoint
                .as_ref()
                .map_or("none".into(), |p| p.display().to_string()),
        }
    }

    /// One optimizer step over `batches` (gradients summed, then averaged);
    /// the inner `Err` says why a non-finite step was refused.
    fn train_step(
        &mut self,
        batches: &[Batch],
    ) -> Result<std::result::Result<StepMetrics, String>> {
        let start = Instant::now();
        let (h, w) = self.transform.size();
        let step = self.steps + 1;
        let inputs = batches
            .iter()
            .map(|b| {
                let x = Tensor::from_slice(&b.images, (b.len, 3, h, w), &self.device)?;
                StepBatch::new(x, &b.masks)
            })
            .collect::<Result<Vec<_>>>()?;
        let Some(last) = inputs.last() else {
            return Err(TrainError::Config("a step needs at least one batch".into()));
        };
        let (context_tokens, target_tokens) = (last.context_tokens(), last.target_tokens());
        // Over the whole job: each rank holds an equal share.
        let images =
            inputs.iter().map(StepBatch::len).sum::<usize>() * self.step.collective().world_size();
        let epoch = batches[0].position.epoch;
        let hyper = StepHyper {
            lr: self.lr.at(step),
            weight_decay: self.wd.at(step),
            momentum: self.momentum.at(step - 1, epoch),
        };
        let report = match self.step.run(&inputs, hyper)? {
            StepOutcome::Applied(report) => report,
            StepOutcome::Refused(what) => return Ok(Err(what)),
        };
        self.steps = step;
        self.images_seen += images as u64;
        let secs = start.elapsed().as_secs_f64();
        self.elapsed_s += secs;
        Ok(Ok(StepMetrics {
            epoch,
            itr: batches[0].position.batch / self.config.optim.accumulate as u64,
            step,
            loss: report.loss,
            context_tokens,
            target_tokens,
            time_ms: secs * 1e3,
            lr: hyper.lr,
            weight_decay: hyper.weight_decay,
            momentum: hyper.momentum,
            images,
            images_per_s: images as f64 / secs,
            grad_norm: report.grad_norm,
            knn_top1: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_is_autocast_on_a_gpu_and_f32_with_a_note_on_the_cpu() {
        assert_eq!(
            precision_on(Precision::Bf16, false),
            (Precision::Bf16, None)
        );
        assert_eq!(precision_on(Precision::F32, false), (Precision::F32, None));
        assert_eq!(precision_on(Precision::F32, true), (Precision::F32, None));
        let (p, note) = precision_on(Precision::Bf16, true);
        assert_eq!(p, Precision::F32);
        assert!(note.is_some_and(|n| n.contains("this CPU run is f32")));
    }
}
