//! MPI through rsmpi on the system's MPI library (Open MPI, MPICH): the
//! collective of jobs started by `mpirun -np N ijepa-cli …` or `srun`.
//!
//! Values travel through host memory in buckets of at most 32 MiB, summed
//! by `MPI_Allreduce` in f32. Every collective runs under a watchdog: a
//! rank left waiting longer than the timeout (a peer died and the launcher
//! did not end the job, as `srun` without `--kill-on-bad-exit` may not)
//! says so and exits, so a job never hangs forever.

use std::time::Duration;

use candle_core::Tensor;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::watchdog::Watchdog;
use super::{host, Collective};
use crate::error::{Result, TrainError};

pub use super::DEFAULT_TIMEOUT;

/// One rank of an MPI job.
pub struct Mpi {
    // Dropped last: finalises MPI.
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    local_rank: usize,
    local_size: usize,
    watchdog: Watchdog,
    _universe: Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("local_rank", &self.local_rank)
            .field("local_size", &self.local_size)
            .finish()
    }
}

impl Mpi {
    /// Initialises MPI (a process started without a launcher is a job of
    /// one) with a watchdog that ends the process when one collective
    /// waits longer than `timeout`.
    ///
    /// # Errors
    /// MPI already initialised, or the watchdog thread could not start.
    pub fn init(timeout: Duration) -> Result<Self> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| TrainError::Collective("MPI is already initialised".into()))?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let local = world.split_shared(world.rank());
        let (local_rank, local_size) = (local.rank() as usize, local.size() as usize);
        Ok(Self {
            watchdog: Watchdog::start(rank, timeout)?,
            world,
            rank,
            size,
            local_rank,
            local_size,
            _universe: universe,
        })
    }

    /// Processes of the job on this machine.
    pub fn local_size(&self) -> usize {
        self.local_size
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(tensors.len());
        for run in host::buckets(tensors) {
            let part = &tensors[run];
            let send = host::flatten(part)?;
            let mut sum = vec![0f32; send.len()];
            self.watchdog.guard("gradient all-reduce", || {
                self.world
                    .all_reduce_into(&send[..], &mut sum[..], SystemOperation::sum())
            });
            out.extend(host::unflatten(&sum, part)?);
        }
        Ok(out)
    }

    fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(tensors.len());
        let root = self.world.process_at_rank(root as i32);
        for run in host::buckets(tensors) {
            let part = &tensors[run];
            let mut values = host::flatten(part)?;
            self.watchdog.guard("broadcast of the initial state", || {
                root.broadcast_into(&mut values[..])
            });
            out.extend(host::unflatten(&values, part)?);
        }
        Ok(out)
    }

    fn barrier(&self) -> Result<()> {
        self.watchdog.guard("barrier", || self.world.barrier());
        Ok(())
    }

    fn abort(&self, message: &str, code: i32) -> ! {
        super::say(&format!("error: rank {}: {message}", self.rank));
        self.world.abort(code)
    }
}
