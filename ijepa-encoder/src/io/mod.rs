//! Files in and out, for every crate of ijepa-rs: what it writes
//! ([`output`]: complete or absent, never in place of anything but a regular
//! file), what it downloads ([`hub`]: the Hugging Face hub and its cache) and
//! PyTorch's pickled checkpoints read as data ([`torch`]: no code runs).
//! The weight formats built on them are in [`crate::weights`].

pub mod hub;
pub mod output;
pub mod torch;
