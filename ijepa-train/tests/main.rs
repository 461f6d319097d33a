//! ijepa-train's integration tests, one binary (one link of candle instead of one
//! per file): step parity with PyTorch and stable-pretraining, the model,
//! faults, image transforms and the parsers' fuzzing (its counting allocator
//! counts per thread, so it sees only the fuzzing test's own allocations).

mod support;

mod faults;
mod fuzz;
mod model;
mod seed_init;
mod seed_parity;
mod step_parity;
mod transforms;
