//! MPI through rsmpi on the system's MPI library (Open MPI, MPICH): the
//! collective of jobs started by `mpirun -np N ijepa-cli …` or `srun`.
//!
//! Values travel through host memory in buckets of at most 32 MiB, summed
//! by `MPI_Allreduce` in f32. Every collective runs under a watchdog: a
//! rank left waiting longer than the timeout (a peer died and the launcher
//! did not end the job, as `srun` without `--kill-on-bad-exit` may not)
//! says so and exits, so a job never hangs forever.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use candle_core::Tensor;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::{host, Collective};
use crate::error::{Result, TrainError};

/// What the watchdog is waiting on.
enum Wait {
    Idle,
    On { since: Instant, what: &'static str },
    Closed,
}

struct WatchState {
    wait: Mutex<Wait>,
    wake: Condvar,
}

/// Ends the process when one collective has waited longer than `timeout`.
struct Watchdog {
    state: Arc<WatchState>,
}

impl Watchdog {
    fn start(rank: usize, timeout: Duration) -> Result<Self> {
        let state = Arc::new(WatchState {
            wait: Mutex::new(Wait::Idle),
            wake: Condvar::new(),
        });
        let watched = state.clone();
        std::thread::Builder::new()
            .name("ijepa-mpi-watchdog".into())
            .spawn(move || watch(&watched, rank, timeout))
            .map_err(|e| TrainError::Collective(format!("watchdog thread: {e}")))?;
        Ok(Self { state })
    }

    /// Runs `f` (one collective) under the watchdog.
    fn guard<T>(&self, what: &'static str, f: impl FnOnce() -> T) -> T {
        self.set(Wait::On {
            since: Instant::now(),
            what,
        });
        let out = f();
        self.set(Wait::Idle);
        out
    }

    fn set(&self, wait: Wait) {
        let mut w = self.state.wait.lock().unwrap_or_else(|p| p.into_inner());
        *w = wait;
        self.state.wake.notify_one();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.set(Wait::Closed);
    }
}

fn watch(state: &WatchState, rank: usize, timeout: Duration) {
    let mut w = state.wait.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        match *w {
            Wait::Closed => return,
            Wait::Idle => w = state.wake.wait(w).unwrap_or_else(|p| p.into_inner()),
            Wait::On { since, what } => {
                let waited = since.elapsed();
                if waited >= timeout {
                    eprintln!(
                        "error: rank {rank}: the {what} has waited {} s for the other processes of the job \
                         (IJEPA_MPI_TIMEOUT_S); one of them has stopped — see its error. Ending this process",
                        waited.as_secs()
                    );
                    std::process::exit(1);
                }
                w = state
                    .wake
                    .wait_timeout(w, timeout - waited)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
    }
}

/// How long one collective may wait for the other ranks before this
/// process gives up (`IJEPA_MPI_TIMEOUT_S` changes it): long enough for
/// rank 0 to write a checkpoint or run the online probe while the others
/// wait at the next step.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// One rank of an MPI job.
pub struct Mpi {
    // Dropped last: finalises MPI.
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    local_size: usize,
    watchdog: Watchdog,
    _universe: Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.rank)
            .field("size", &self.size)
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
        let local_size = world.split_shared(world.rank()).size() as usize;
        Ok(Self {
            watchdog: Watchdog::start(rank, timeout)?,
            world,
            rank,
            size,
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
        eprintln!("error: rank {}: {message}", self.rank);
        self.world.abort(code)
    }
}
