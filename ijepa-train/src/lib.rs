//! I-JEPA training: the objective that ties masking, encoder and predictor
//! together, and everything needed to pretrain and evaluate it. The crate's
//! root is the I-JEPA step; the run, the data, the evaluation and the
//! reports are modules of their own.
//!
//! **The step**
//! - [`jepa`]: [`jepa::Jepa`] — student, EMA teacher, predictor and masks
//!   over any [`TokenEncoder`](ijepa_encoder::TokenEncoder) and
//!   [`TargetPredictor`](ijepa_predictor::TargetPredictor): what the step
//!   trains (`examples/custom_encoder.rs` trains an encoder of its own);
//! - [`model`]: [`model::IJepa`] — our ViT and predictor in those parts, as
//!   a recipe configures them, with stable-pretraining's API (forward
//!   returning loss, embedding, predictions, targets; eval mode; teacher or
//!   student embeddings);
//! - [`loss`]: the objective — student on the context, predictor on every
//!   target mask, teacher targets (LayerNorm without affine), smooth-L1 —
//!   generic over the encoder and predictor traits;
//! - [`step`]: one training step as one unit ([`step::TrainStep`], over any
//!   [`jepa::Trainable`] model);
//! - [`optim`]: AdamW with parameter groups and inspectable state;
//! - [`ema`]: the teacher's in-place EMA update;
//! - [`schedule`]: the official warm-up + cosine learning rate, the
//!   half-cosine weight decay and the EMA momentum of either recipe;
//! - [`collective`]: the gradient exchange a step goes through (one process
//!   by default, MPI and NCCL with their features);
//! - [`parity`]: one step's loss and gradients on two devices or
//!   precisions, compared (GPU and bf16 checks).
//!
//! **Around it**
//! - [`run`]: the training loop ([`run::trainer::Trainer`]), its
//!   configuration ([`TrainConfig`], TOML or an official YAML file), its
//!   starting weights, checkpoints and bit-exact resume;
//! - [`data`]: image folders and tar shards, decoding, the pretraining transform
//!   (RandomResizedCrop, flip, colour distortion, blur: equal to
//!   torchvision's to the bit), timm's evaluation transform (equal to timm's
//!   to the bit), the keyed prefetching loader, and the built-in synthetic
//!   labelled image set;
//! - [`probe`]: evaluation of frozen features — the weighted k-NN and the
//!   linear probe, feature files at ImageNet scale (no trainer needed);
//! - [`report`]: metrics, TensorBoard scalars and (feature `plots`) the
//!   training curves.
//!
//! ```no_run
//! use ijepa_train::{run::trainer::Trainer, TrainConfig};
//!
//! let (mut cfg, _notes) = TrainConfig::from_file("in1k_vith14_ep300.yaml".as_ref(), 1)?;
//! cfg.set("data.path=\"/datasets/imagenet/train\"")?;
//! let summary = Trainer::new(cfg)?.run(&mut (), &Default::default())?;
//! println!("final loss {:?}", summary.final_loss);
//! # Ok::<(), ijepa_train::TrainError>(())
//! ```
#![warn(missing_docs)]

pub mod collective;
pub mod data;
pub mod ema;
mod error;
pub mod jepa;
mod kernels;
pub mod loss;
pub mod model;
pub mod optim;
pub mod parity;
pub mod probe;
pub mod report;
pub mod run;
pub mod schedule;
pub mod step;

pub use error::{Result, TrainError};
pub use run::config::TrainConfig;
