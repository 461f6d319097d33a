//! I-JEPA training: the model that ties masking, encoder and predictor
//! together, and everything needed to pretrain and evaluate it.
//!
//! Today it holds the image pipeline shared by evaluation and embedding
//! ([`data`]): decoding and the evaluation transform, equal to timm's
//! (PIL resampling reproduced to the bit). Still to come (issues #4–#6):
//!
//! - the I-JEPA model (student encoder, EMA teacher, predictor) with the
//!   smooth-L1 loss on layer-normalised teacher targets;
//! - an AdamW with saveable state, the paper's LR / weight-decay / EMA
//!   schedules;
//! - the training data pipeline, checkpoints with bit-exact resume, metrics
//!   and evaluation probes.
#![warn(missing_docs)]

pub mod data;
