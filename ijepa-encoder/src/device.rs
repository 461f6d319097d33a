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
        Device::new_cuda(gpu).map_err(|e| bad(e.to_string()))
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
