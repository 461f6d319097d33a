//! ijepa-encoder's integration tests, one binary (one link of candle instead of one
//! per file): parity with timm and transformers, weight I/O, the registry, the
//! hub client, outputs and gradients.

mod gradients;
mod hub;
mod output;
mod parity;
mod registry;
mod weight_io;
