//! What data-parallel training needs from the processes it runs on: the
//! gradient all-reduce, the broadcast of the initial state, rank and world
//! size, a barrier — and nothing more.
//!
//! [`TrainStep`](crate::step::TrainStep) exchanges gradients through this
//! trait at one place, after the backward pass and before clipping. The
//! default, [`SingleProcess`], is the identity.

use candle_core::Tensor;

use crate::error::Result;

/// Collective operations over the processes ("ranks") of one job.
///
/// Every rank calls every method in the same order with tensors of the
/// same shapes, dtypes and order; an implementation may block until all
/// ranks have called. Errors are returned on the rank that sees them: the
/// caller ends the job ([`Collective::abort`]) so no rank waits forever.
pub trait Collective: Send {
    /// This process's rank, `0..world_size`.
    fn rank(&self) -> usize;

    /// Processes in the job.
    fn world_size(&self) -> usize;

    /// The element-wise sum of `tensors` over all ranks (each rank passes
    /// its own values and receives the sums).
    fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<Vec<Tensor>>;

    /// Rank `root`'s values of `tensors`, on every rank.
    fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<Vec<Tensor>>;

    /// Returns when every rank has called it.
    fn barrier(&self) -> Result<()>;

    /// Ends the whole job now, with `code` as its exit status, after
    /// printing `message` (this rank's reason). A job never hangs in a
    /// collective waiting for a rank that failed.
    fn abort(&self, message: &str, code: i32) -> ! {
        eprintln!("error: {message}");
        std::process::exit(code)
    }

    /// Whether this rank writes the run's files (config, metrics, plots,
    /// checkpoints): rank 0.
    fn is_writer(&self) -> bool {
        self.rank() == 0
    }
}

/// One process: every collective is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
        Ok(tensors.to_vec())
    }

    fn broadcast(&self, tensors: &[Tensor], _root: usize) -> Result<Vec<Tensor>> {
        Ok(tensors.to_vec())
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}
