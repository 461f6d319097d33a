//! ijepa-masking's integration tests, one binary: the official collator's
//! distribution and the sampler's properties.

mod official_distribution;
mod properties;
