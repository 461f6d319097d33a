//! The CLI's integration tests, one binary (one link of candle instead of one per file):
//! each module drives the built `ijepa-cli` as a user does. The data-parallel
//! tests (`mpi.rs`, the `mpi` feature) are their own target, run under
//! `mpirun` by `.ci/run`.

mod support;

mod compat;
mod embed;
mod faults;
mod interop;
mod masks;
mod messages;
mod pretrain;
