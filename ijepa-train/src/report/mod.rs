//! What a run reports besides its checkpoints: per-step [`metrics`]
//! (`metrics.csv`, the throughput of the progress line), the same scalars
//! for TensorBoard ([`tensorboard`]), and the training curves as pictures
//! (`plot`, with the `plots` feature: plotters and an embedded font that a
//! library user does not have to compile).

pub mod metrics;
#[cfg(feature = "plots")]
pub mod plot;
pub mod tensorboard;
