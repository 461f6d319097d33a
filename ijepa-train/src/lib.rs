//! I-JEPA training: the model that ties masking, encoder and predictor
//! together, and everything needed to pretrain it.
//!
//! **Not yet implemented** — this crate is a placeholder in the workspace so
//! that the crate map is fixed from the start. It will hold (issues #4–#6):
//!
//! - the I-JEPA model (student encoder, EMA teacher, predictor) with the
//!   smooth-L1 loss on layer-normalised teacher targets;
//! - an AdamW with saveable state, the paper's LR / weight-decay / EMA
//!   schedules;
//! - the image-folder and synthetic data pipelines, checkpoints with
//!   bit-exact resume, metrics and evaluation probes.
