//! A training run around the step: the loop ([`trainer`]), its
//! configuration ([`config`], and [`official`]: the official YAML files
//! mapped onto it), where it starts ([`init`]: weights; [`official_checkpoint`]:
//! an official run continued), what it writes to continue bit-exactly
//! ([`checkpoint`]) and the one-writer lock on its directory ([`run_lock`]).

pub mod checkpoint;
pub mod config;
pub mod init;
mod legacy;
pub mod official;
pub mod official_checkpoint;
pub mod run_lock;
pub mod trainer;
