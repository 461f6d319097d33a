//! Devices by name: `cpu`, `cuda` or `cuda:N` — one parser for every
//! command and configuration that takes a device.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::error::{EncoderError, Result};

/// A device as a user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU (all cores).
    #[default]
    Cpu,
    /// A CUDA GPU: `cuda:N` names GPU `N`; plain `cuda` is the process's
    /// own GPU (its local rank in a data-parallel job, else GPU 0).
    Cuda(Option<usize>),
}

impl FromStr for DeviceSpec {
    type Err = EncoderError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| EncoderError::Device {
            spec: format!("{s:?}"),
            reason: reason.into(),
        };
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(None)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(|n| DeviceSpec::Cuda(Some(n)))
                    .map_err(|_| bad("expected a GPU number after \"cuda:\"")),
                None => Err(bad("expected \"cpu\", \"cuda\" or \"cuda:N\"")),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(None) => f.write_str("cuda"),
            DeviceSpec::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Whether this names a GPU.
    pub fn is_cuda(self) -> bool {
        matches!(self, DeviceSpec::Cuda(_))
    }

    /// Opens the device; plain `cuda` opens GPU `local_rank`.
    ///
    /// # Errors
    /// A binary built without the `cuda` feature, or a GPU that cannot be
    /// opened (the driver's reason).
    pub fn open(self, local_rank: usize) -> Result<Device> {
        let gpu = match self {
            DeviceSpec::Cpu => return Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => n.unwrap_or(local_rank),
        };
        let bad = |reason: String| EncoderError::Device {
            spec: format!("cuda:{gpu}"),
            reason,
        };
        if !candle_core::utils::cuda_is_available() {
            return Err(bad(
                "this build has no CUDA support (build with `--features cuda`: README, \"GPU\")"
                    .into(),
            ));
        }
        let device = Device::new_cuda(gpu).map_err(|e| bad(e.to_string()))?;
        #[cfg(feature = "cuda")]
        keep_freed_memory(&device).map_err(bad)?;
        Ok(device)
    }
}

/// The default memory pool of `device`'s GPU (the one candle's
/// stream-ordered allocations come from).
#[cfg(feature = "cuda")]
fn memory_pool(
    device: &Device,
) -> std::result::Result<candle_core::cuda::cudarc::driver::sys::CUmemoryPool, String> {
    use candle_core::cuda::cudarc::driver::sys;
    let Device::Cuda(cuda) = device else {
        return Err("not a CUDA device".into());
    };
    let stream = cuda.cuda_stream();
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: `pool` is a valid out-pointer; the device handle belongs to a
    // live context (held by `stream`).
    let status = unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, stream.context().cu_device()) };
    if status != sys::CUresult::CUDA_SUCCESS {
        return Err(format!("cuDeviceGetDefaultMemPool: {status:?}"));
    }
    Ok(pool)
}

/// Keeps memory freed by the step in the GPU's pool for the next step.
/// The pool's release threshold is 0 by default: every synchronisation hands
/// the freed memory back to the driver and the next step maps it again (the
/// caching PyTorch's allocator does by design).
#[cfg(feature = "cuda")]
fn keep_freed_memory(device: &Device) -> std::result::Result<(), String> {
    use candle_core::cuda::cudarc::driver::sys;
    let pool = memory_pool(device)?;
    let mut threshold = u64::MAX;
    // SAFETY: the attribute takes a pointer to a u64, alive for the call.
    let status = unsafe {
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    };
    if status != sys::CUresult::CUDA_SUCCESS {
        return Err(format!(
            "setting the memory pool's release threshold: {status:?}"
        ));
    }
    Ok(())
}

/// The most GPU memory the process's tensors have held at once on `device`
/// (bytes, the pool's high-water mark of used memory) and the most the pool
/// has reserved from the driver; `None` on the CPU or without the `cuda`
/// feature.
pub fn gpu_memory_peak(device: &Device) -> Option<(u64, u64)> {
    #[cfg(feature = "cuda")]
    {
        use candle_core::cuda::cudarc::driver::sys;
        let pool = memory_pool(device).ok()?;
        let read = |attr| {
            let mut v = 0u64;
            // SAFETY: the attribute writes a u64 through the pointer.
            let status =
                unsafe { sys::cuMemPoolGetAttribute(pool, attr, (&mut v as *mut u64).cast()) };
            (status == sys::CUresult::CUDA_SUCCESS).then_some(v)
        };
        Some((
            read(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?,
            read(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)?,
        ))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = device;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (name, spec) in [
            ("cpu", DeviceSpec::Cpu),
            ("cuda", DeviceSpec::Cuda(None)),
            ("cuda:3", DeviceSpec::Cuda(Some(3))),
        ] {
            assert_eq!(name.parse::<DeviceSpec>().unwrap(), spec);
            assert_eq!(spec.to_string(), name);
        }
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", "cuda:-1"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn the_cpu_opens_and_a_gpu_is_refused_by_name_without_cuda() {
        assert!(DeviceSpec::Cpu.open(0).unwrap().is_cpu());
        if !candle_core::utils::cuda_is_available() {
            let err = DeviceSpec::Cuda(None).open(2).unwrap_err().to_string();
            assert!(
                err.starts_with("device cuda:2:") && err.contains("--features cuda"),
                "{err}"
            );
        }
    }
}
