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
//! - [`probe`]: the weighted k-NN probe on frozen features;
//! - [`schedule`]: the official warm-up + cosine learning rate and the
//!   half-cosine weight decay;
//! - [`data`]: image decoding and timm's evaluation transform (equal to
//!   timm's to the bit), and the built-in synthetic labelled image set.
//!
//! Still to come (issues #5–#6): the training loop, data pipeline,
//! checkpoints and probes.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod ema;
mod error;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod official;
pub mod optim;
pub mod probe;
pub mod schedule;
pub mod trainer;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
