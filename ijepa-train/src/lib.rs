//! I-JEPA training: the objective that ties masking, encoder and predictor
//! together, and everything needed to pretrain and evaluate it.
//!
//! - [`model`]: [`model::IJepa`] — student, EMA teacher and predictor with
//!   stable-pretraining's API (forward returning loss, embedding,
//!   predictions, targets; eval mode; teacher or student embeddings);
//! - [`loss`]: the objective — student on the context, predictor on every
//!   target mask, teacher targets (LayerNorm without affine), smooth-L1 —
//!   generic over the encoder and predictor traits;
//! - [`ema`]: the teacher's EMA update and its two momentum schedules;
//! - [`optim`]: AdamW with parameter groups and inspectable state;
//! - [`parity`]: one step's loss and gradients on two devices or
//!   precisions, compared (GPU and bf16 checks);
//! - [`probe`]: the weighted k-NN probe on frozen features;
//! - [`schedule`]: the official warm-up + cosine learning rate and the
//!   half-cosine weight decay;
//! - [`data`]: image folders and tar shards, decoding, the pretraining transform
//!   (RandomResizedCrop, flip, colour distortion, blur: equal to
//!   torchvision's to the bit), timm's evaluation transform (equal to timm's
//!   to the bit), the keyed prefetching loader, and the built-in synthetic
//!   labelled image set;
//! - [`config`]: the run configuration (TOML, `--set` overrides) and
//!   [`official`]: the official YAML files mapped onto it; [`init`]: the
//!   weights a run starts from, and [`official_checkpoint`]: an official
//!   training checkpoint whose run a run continues;
//! - [`step`]: one training step as one unit ([`step::TrainStep`]), and
//!   [`collective`]: the gradient exchange it goes through (one process by
//!   default);
//! - [`trainer`]: the training loop with metrics, the online probe and
//!   checkpoints ([`checkpoint`], [`metrics`]), resumable bit-exactly.
//!
//! ```no_run
//! use ijepa_train::{trainer::Trainer, TrainConfig};
//!
//! let (mut cfg, _notes) = TrainConfig::from_file("in1k_vith14_ep300.yaml".as_ref(), 1)?;
//! cfg.set("data.path=\"/datasets/imagenet/train\"")?;
//! let summary = Trainer::new(cfg)?.run(&mut (), &Default::default())?;
//! println!("final loss {:?}", summary.final_loss);
//! # Ok::<(), ijepa_train::TrainError>(())
//! ```
#![warn(missing_docs)]

pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod data;
pub mod ema;
mod error;
pub mod init;
mod kernels;
mod legacy;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod official;
pub mod official_checkpoint;
pub mod optim;
pub mod parity;
pub mod plot;
pub mod probe;
pub mod run_lock;
pub mod schedule;
pub mod step;
pub mod tensorboard;
pub mod trainer;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
