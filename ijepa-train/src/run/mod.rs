//! A training run around the step: the loop ([`trainer`]), its
//! configuration ([`config`]; [`official`]: the official YAML files mapped
//! onto it; [`layers`]: a file, named options and overrides, in order), where
//! it starts ([`init`]: weights; [`official_checkpoint`]: an official run
//! continued), what it writes to continue bit-exactly ([`checkpoint`]) and
//! the one-writer lock on its directory ([`run_lock`]).

pub mod checkpoint;
pub mod config;
pub mod init;
pub mod layers;
mod legacy;
pub mod official;
pub mod official_checkpoint;
pub mod run_lock;
pub mod trainer;
