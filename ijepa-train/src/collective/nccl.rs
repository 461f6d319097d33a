//! NCCL through candle's `nccl` feature (cudarc's bindings): CUDA tensors
//! are summed GPU to GPU, on the stream candle computes on, so gradients
//! never leave the devices. Everything else — CPU tensors (the agreement
//! on stopping), the one-time broadcast of the initial state, barriers,
//! aborts — goes through the host collective the backend is built on
//! (MPI), which also carries NCCL's unique id from rank 0 to the others:
//! one launcher (`mpirun`, `srun`) serves CPU and GPU jobs.
//!
//! Not yet run on a GPU (none was available where it was written): see the
//! README's status table.

use std::time::Duration;

use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::nccl::{group_end, group_start, Comm, Id, ReduceOp};
use candle_core::op::BackpropOp;
use candle_core::{CudaStorage, DType, Device, Storage, Tensor};

use super::watchdog::Watchdog;
use super::Collective;
use crate::error::{Result, TrainError};

/// Bytes of an NCCL unique id.
const ID_BYTES: usize = 128;

/// One rank of a job whose ranks each drive one GPU (their machine's GPU
/// number [`Collective::local_rank`]).
pub struct Nccl {
    comm: Comm,
    host: Box<dyn Collective>,
    watchdog: Watchdog,
}

impl std::fmt::Debug for Nccl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nccl")
            .field("rank", &self.host.rank())
            .field("world_size", &self.host.world_size())
            .field("gpu", &self.host.local_rank())
            .finish()
    }
}

fn nccl_error(what: &str, e: impl std::fmt::Debug) -> TrainError {
    TrainError::Collective(format!("NCCL {what}: {e:?}"))
}

impl Nccl {
    /// Joins the NCCL communicator of the job `host` belongs to: rank 0
    /// creates the unique id and `host` broadcasts it; each rank uses its
    /// machine's GPU `host.local_rank()`. A GPU collective that waits
    /// longer than `timeout` ends the process.
    ///
    /// # Errors
    /// No such GPU, or NCCL or the broadcast failed.
    pub fn init(host: Box<dyn Collective>, timeout: Duration) -> Result<Self> {
        let gpu = host.local_rank();
        let device = Device::new_cuda(gpu)
            .map_err(|e| TrainError::Collective(format!("GPU {gpu} of this machine: {e}")))?;
        let Device::Cuda(cuda) = &device else {
            unreachable!("new_cuda gives a CUDA device")
        };
        let mine = match host.rank() {
            0 => Id::new()
                .map_err(|e| nccl_error("unique id", e))?
                .internal()
                .map(|c| c as u8),
            _ => [0u8; ID_BYTES],
        };
        let sent = Tensor::from_slice(&mine, ID_BYTES, &Device::Cpu)?;
        let got = host.broadcast(&[sent], 0)?[0].to_vec1::<u8>()?;
        let mut internal = [0; ID_BYTES];
        for (to, from) in internal.iter_mut().zip(got) {
            *to = from as std::ffi::c_char;
        }
        let watchdog = Watchdog::start(host.rank(), timeout)?;
        let comm = watchdog.guard("NCCL start-up", || {
            Comm::from_rank(
                cuda.cuda_stream(),
                host.rank(),
                host.world_size(),
                Id::uninit(internal),
            )
        });
        let comm = comm.map_err(|e| nccl_error("communicator", e))?;
        Ok(Self {
            comm,
            host,
            watchdog,
        })
    }

    /// Starts the sum of one contiguous f32 CUDA tensor (inside an NCCL
    /// group; the values are ready once the stream has run it).
    fn start_sum(&self, t: &Tensor) -> Result<Tensor> {
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cuda(cuda) = &*storage else {
            unreachable!("only CUDA tensors are summed on the GPU")
        };
        if cuda.dtype() != DType::F32 {
            return Err(TrainError::Collective(format!(
                "NCCL sums f32 gradients; got a {:?} tensor of shape {:?}",
                cuda.dtype(),
                t.dims()
            )));
        }
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| TrainError::Collective("a non-contiguous tensor".into()))?;
        let src = cuda.as_cuda_slice::<f32>()?.slice(start..end);
        let mut dst = cuda.device.alloc_zeros::<f32>(end - start)?;
        self.comm
            .all_reduce(&src, &mut dst, &ReduceOp::Sum)
            .map_err(|e| nccl_error("all-reduce", e))?;
        let out = CudaStorage::wrap_cuda_slice(dst, cuda.device.clone());
        Ok(Tensor::from_storage(
            Storage::Cuda(out),
            t.shape().clone(),
            BackpropOp::none(),
            false,
        ))
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.host.rank()
    }

    fn world_size(&self) -> usize {
        self.host.world_size()
    }

    fn local_rank(&self) -> usize {
        self.host.local_rank()
    }

    fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
        if !tensors.iter().any(|t| t.device().is_cuda()) {
            return self.host.all_reduce_sum(tensors);
        }
        if !tensors.iter().all(|t| t.device().is_cuda()) {
            return Err(TrainError::Collective(
                "NCCL sums CUDA tensors: this set mixes CUDA and CPU tensors".into(),
            ));
        }
        let contiguous: Vec<Tensor> = tensors
            .iter()
            .map(Tensor::contiguous)
            .collect::<candle_core::Result<_>>()?;
        // One group: NCCL fuses the tensors' sums into few launches.
        group_start().map_err(|e| nccl_error("group", e))?;
        let started: Vec<Result<Tensor>> = contiguous.iter().map(|t| self.start_sum(t)).collect();
        group_end().map_err(|e| nccl_error("group", e))?;
        let sums = started.into_iter().collect::<Result<Vec<_>>>()?;
        // Bounded wait: a peer that died leaves NCCL waiting forever.
        let stream = self.comm.stream();
        self.watchdog
            .guard("gradient all-reduce (NCCL)", || stream.synchronize())
            .map_err(|e| nccl_error("all-reduce", e))?;
        Ok(sums)
    }

    fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<Vec<Tensor>> {
        // Once per run: the host path is simple and fast enough.
        self.host.broadcast(tensors, root)
    }

    fn barrier(&self) -> Result<()> {
        self.host.barrier()
    }

    fn abort(&self, message: &str, code: i32) -> ! {
        self.host.abort(message, code)
    }
}
