//! What data-parallel training needs from the processes it runs on: the
//! gradient all-reduce, the broadcast of the initial state, rank and world
//! size, a barrier — and nothing more.
//!
//! [`TrainStep`](crate::step::TrainStep) exchanges gradients through this
//! trait at one place, after the backward pass and before clipping; the
//! trainer broadcasts the initial state once and agrees on stopping
//! through [`Collective::any`]. Backends: [`SingleProcess`] (the default,
//! the identity), with the cargo feature `mpi` `mpi::Mpi` for jobs
//! started by `mpirun` or `srun`, and with the feature `nccl`
//! `nccl::Nccl`, which sums CUDA tensors on the GPUs and leaves the rest to
//! the host collective (MPI) it is built on.

use candle_core::{DType, Device, Tensor};
use ijepa_encoder::WeightMap;

use crate::error::{Result, TrainError};

#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
#[cfg(any(feature = "mpi", feature = "nccl"))]
mod watchdog;

/// How long one collective may wait for the other ranks before this
/// process gives up (`IJEPA_MPI_TIMEOUT_S` changes it in `ijepa-cli`): long
/// enough for rank 0 to write a checkpoint or run the online probe while the
/// others wait at the next step.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);

/// Collective operations over the processes ("ranks") of one job.
///
/// Every rank calls every method in the same order with tensors of the
/// same shapes, dtypes and order; an implementation may block until all
/// ranks have called. Errors are returned on the rank that sees them: the
/// caller ends the job ([`Collective::abort`]) so no rank waits forever.
/// Not `Send`: MPI is called from the thread that initialised it.
pub trait Collective {
    /// This process's rank, `0..world_size`.
    fn rank(&self) -> usize;

    /// Processes in the job.
    fn world_size(&self) -> usize;

    /// This process's index among the job's processes on its machine (the
    /// GPU it drives): 0 for one process.
    fn local_rank(&self) -> usize {
        0
    }

    /// The element-wise sum of `tensors` over all ranks (each rank passes
    /// its own values and receives the sums).
    fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<Vec<Tensor>>;

    /// Rank `root`'s values of `tensors`, on every rank.
    fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<Vec<Tensor>>;

    /// Returns when every rank has called it.
    fn barrier(&self) -> Result<()>;

    /// Whether `flag` is set on any rank; every rank gets the same answer,
    /// so all ranks stop at the same step when one of them is asked to.
    fn any(&self, flag: bool) -> Result<bool> {
        if self.world_size() == 1 {
            return Ok(flag);
        }
        let t = Tensor::new(&[f32::from(u8::from(flag))], &Device::Cpu)?;
        let sum = self.all_reduce_sum(&[t])?;
        Ok(sum[0].to_vec1::<f32>()?[0] > 0.0)
    }

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

/// Every rank's `value`, in rank order, on every rank: each rank's JSON
/// travels as bytes in its own span of one buffer that the ranks sum (the
/// only collective the trait needs). For small values (lists of names).
///
/// # Errors
/// A collective error, or more than 16 MiB of JSON in all (bytes travel
/// as `f32`, exact up to 2^24 positions).
pub fn all_gather_json<T>(c: &dyn Collective, value: &T) -> Result<Vec<T>>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let bad = |e: serde_json::Error| TrainError::Collective(format!("gathering values: {e}"));
    let mine = serde_json::to_vec(value).map_err(bad)?;
    let (rank, ranks) = (c.rank(), c.world_size());
    const LIMIT: usize = 1 << 24;
    let mut lengths = vec![0f32; ranks];
    lengths[rank] = mine.len().min(LIMIT) as f32;
    let lengths = Tensor::from_vec(lengths, ranks, &Device::Cpu)?;
    let lengths = c.all_reduce_sum(&[lengths])?[0].to_vec1::<f32>()?;
    let lengths: Vec<usize> = lengths.iter().map(|&l| l as usize).collect();
    let total: usize = lengths.iter().sum();
    if total >= LIMIT {
        return Err(TrainError::Collective(format!(
            "gathering {total} bytes of JSON from {ranks} ranks: at most {LIMIT} are sent this way"
        )));
    }
    let start: usize = lengths[..rank].iter().sum();
    let mut bytes = vec![0f32; total];
    for (slot, b) in bytes[start..start + mine.len()].iter_mut().zip(&mine) {
        *slot = f32::from(*b);
    }
    // Every rank knows the total: all skip an empty exchange together.
    let bytes = if total == 0 {
        bytes
    } else {
        let bytes = Tensor::from_vec(bytes, total, &Device::Cpu)?;
        c.all_reduce_sum(&[bytes])?[0].to_vec1::<f32>()?
    };
    let bytes: Vec<u8> = bytes.iter().map(|&b| b as u8).collect();
    let mut at = 0;
    lengths
        .iter()
        .map(|&n| {
            let part = &bytes[at..at + n];
            at += n;
            serde_json::from_slice(part).map_err(bad)
        })
        .collect()
}

/// `map` as rank `root` holds it, on every rank (names in sorted order;
/// every rank holds the same names and shapes). The identity for one
/// process.
///
/// # Errors
/// A collective error.
pub fn broadcast_map(c: &dyn Collective, map: &WeightMap, root: usize) -> Result<WeightMap> {
    if c.world_size() == 1 {
        return Ok(map.clone());
    }
    let mut names: Vec<&String> = map.keys().collect();
    names.sort();
    let tensors: Vec<Tensor> = names.iter().map(|n| map[*n].clone()).collect();
    let values = c.broadcast(&tensors, root)?;
    Ok(names.into_iter().cloned().zip(values).collect())
}

/// Environment variables by which launchers tell a process how many were
/// started with it: Open MPI, MPICH / Intel MPI (PMI), SLURM's `srun`.
const LAUNCHER_SIZES: &[&str] = &[
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "PMIX_SIZE",
    "SLURM_NTASKS",
];

/// How many processes a launcher (`mpirun`, `srun`) started this one
/// among, and the variable that says so, when more than one.
pub fn launched_among() -> Option<(usize, &'static str)> {
    LAUNCHER_SIZES.iter().find_map(|&var| {
        let n: usize = std::env::var(var).ok()?.parse().ok()?;
        (n > 1).then_some((n, var))
    })
}

/// Refuses to run one process of a multi-process launch without a
/// data-parallel backend: each would train alone, all on the same run
/// directory.
///
/// # Errors
/// A launcher started several processes.
pub fn refuse_unserved_launch() -> Result<()> {
    match launched_among() {
        Some((n, var)) => Err(TrainError::Collective(format!(
            "this process is one of {n} ({var}={n}), but ijepa-cli was built without the `mpi` feature: \
             each process would train alone on the same run directory. Build with `--features mpi`, \
             or start one process"
        ))),
        None => Ok(()),
    }
}

/// The processes a job runs on, and notes for rank 0 to print: with the
/// `mpi` feature, an MPI job (a process started without a launcher is a job
/// of one) whose processes share this machine's cores — `RAYON_NUM_THREADS`
/// is set for this process before any thread pool starts, unless the user
/// chose it; without the feature, one process, refusing a multi-process
/// launch it cannot serve. `IJEPA_MPI_TIMEOUT_S` (whole seconds) bounds each
/// collective's wait ([`DEFAULT_TIMEOUT`] otherwise).
///
/// # Errors
/// MPI that cannot start, a malformed `IJEPA_MPI_TIMEOUT_S`, or a launch of
/// several processes in a build without `mpi`.
pub fn processes() -> Result<(Box<dyn Collective>, Vec<String>)> {
    #[cfg(feature = "mpi")]
    {
        let mpi = mpi::Mpi::init(timeout()?)?;
        let mut notes = vec![];
        if let Some(n) = threads_per_process(mpi.local_size()) {
            // Before any thread pool starts: candle and rayon read it once.
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            notes.push(format!(
                "{} processes on this machine: {n} thread{} each (set RAYON_NUM_THREADS to choose)",
                mpi.local_size(),
                if n == 1 { "" } else { "s" }
            ));
        }
        Ok((Box::new(mpi), notes))
    }
    #[cfg(not(feature = "mpi"))]
    {
        refuse_unserved_launch()?;
        Ok((Box::new(SingleProcess), vec![]))
    }
}

/// How long one collective may wait for the other ranks:
/// `IJEPA_MPI_TIMEOUT_S` (whole seconds), else [`DEFAULT_TIMEOUT`].
#[cfg(any(feature = "mpi", feature = "nccl"))]
fn timeout() -> Result<std::time::Duration> {
    match std::env::var("IJEPA_MPI_TIMEOUT_S") {
        Ok(v) => v.parse().map(std::time::Duration::from_secs).map_err(|_| {
            TrainError::Collective(format!("IJEPA_MPI_TIMEOUT_S={v}: expected whole seconds"))
        }),
        Err(_) => Ok(DEFAULT_TIMEOUT),
    }
}

/// The collective a run on `device` exchanges gradients through: with the
/// `nccl` feature, a CUDA job of several processes sums on the GPUs (NCCL,
/// its id sent over `host`), and so does a single process when
/// `IJEPA_NCCL=1` (a 1-rank communicator: the check that NCCL works on a
/// machine with one GPU); otherwise `host`.
///
/// # Errors
/// NCCL that cannot start.
pub fn for_device(host: Box<dyn Collective>, device: &str) -> Result<Box<dyn Collective>> {
    #[cfg(feature = "nccl")]
    if device.starts_with("cuda")
        && (host.world_size() > 1 || std::env::var_os("IJEPA_NCCL").is_some_and(|v| v == "1"))
    {
        return Ok(Box::new(nccl::Nccl::init(host, timeout()?)?));
    }
    let _ = device;
    Ok(host)
}

/// Threads each of `local` processes on this machine should use when the
/// user has not chosen (`RAYON_NUM_THREADS` unset): the machine's cores
/// shared equally, at least one. `None` for one process, or when chosen.
pub fn threads_per_process(local: usize) -> Option<usize> {
    if local <= 1 || std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some((cores / local).max(1))
}

/// Writes `line` and its newline to stderr in one `write`.
///
/// `eprintln!` writes a formatted line piece by piece, and the processes of a
/// job share one stderr through `mpirun`: their pieces interleave mid-line. One
/// write of a line under the pipe's atomic size (`PIPE_BUF`, 4 KiB on Linux)
/// arrives whole.
pub fn say(line: &str) {
    use std::io::Write;
    let mut whole = String::with_capacity(line.len() + 1);
    whole.push_str(line);
    whole.push('\n');
    // Nothing useful is left to do when stderr is gone.
    let _ = std::io::stderr().lock().write_all(whole.as_bytes());
}

/// Host buffers for backends that move values through host memory.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) mod host {
    use super::*;

    /// Elements one exchange moves at most (32 MiB of f32): large
    /// gradient sets go in buckets, so the copies stay small.
    pub const BUCKET: usize = 1 << 23;

    /// `tensors` split into consecutive runs of at most [`BUCKET`]
    /// elements (a larger tensor is a run of its own).
    pub fn buckets(tensors: &[Tensor]) -> Vec<std::ops::Range<usize>> {
        let mut out = vec![];
        let (mut start, mut n) = (0, 0);
        for (i, t) in tensors.iter().enumerate() {
            let len = t.elem_count();
            if i > start && n + len > BUCKET {
                out.push(start..i);
                (start, n) = (i, 0);
            }
            n += len;
        }
        if start < tensors.len() {
            out.push(start..tensors.len());
        }
        out
    }

    /// The values of `tensors`, in order, as one f32 buffer.
    pub fn flatten(tensors: &[Tensor]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(tensors.iter().map(Tensor::elem_count).sum());
        for t in tensors {
            out.extend(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Tensors shaped, typed and placed as `like`, from `flat`.
    pub fn unflatten(flat: &[f32], like: &[Tensor]) -> Result<Vec<Tensor>> {
        let mut at = 0;
        like.iter()
            .map(|t| {
                let n = t.elem_count();
                let v = Tensor::from_slice(&flat[at..at + n], t.shape(), t.device())?;
                at += n;
                Ok(v.to_dtype(t.dtype())?)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_tensor_once_and_stay_small() {
        let t = |n: usize| Tensor::zeros(n, DType::F32, &Device::Cpu).unwrap();
        let big = host::BUCKET;
        let tensors = [t(10), t(big - 10), t(1), t(big + 5), t(3)];
        let b = host::buckets(&tensors);
        assert_eq!(b, vec![0..2, 2..3, 3..4, 4..5]);
        assert!(host::buckets(&[]).is_empty());
    }

    #[test]
    fn flatten_and_unflatten_keep_shapes_and_dtypes() {
        let a = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[5f64], &Device::Cpu).unwrap();
        let flat = host::flatten(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(flat, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let back = host::unflatten(&flat, &[a, b]).unwrap();
        assert_eq!(back[0].dims(), &[2, 2]);
        assert_eq!(back[1].dtype(), DType::F64);
        assert_eq!(back[1].to_vec1::<f64>().unwrap(), vec![5.0]);
    }

    /// Rank `rank` of `ranks` whose sums add what the other ranks would
    /// send (their values given up front, one call at a time).
    struct Fake {
        rank: usize,
        ranks: usize,
        others: std::cell::RefCell<Vec<Vec<f32>>>,
    }

    impl Collective for Fake {
        fn rank(&self) -> usize {
            self.rank
        }
        fn world_size(&self) -> usize {
            self.ranks
        }
        fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
            let mine = tensors[0].to_vec1::<f32>()?;
            let theirs = self.others.borrow_mut().remove(0);
            let sum: Vec<f32> = mine.iter().zip(&theirs).map(|(a, b)| a + b).collect();
            Ok(vec![Tensor::from_vec(sum, mine.len(), &Device::Cpu)?])
        }
        fn broadcast(&self, tensors: &[Tensor], _root: usize) -> Result<Vec<Tensor>> {
            Ok(tensors.to_vec())
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_ranks_value_arrives_in_rank_order() {
        let values = [
            vec!["a.jpg".to_string()],
            vec![],
            vec!["b\n\"c\".png".into(), "é".into()],
        ];
        let json: Vec<Vec<u8>> = values
            .iter()
            .map(|v| serde_json::to_vec(v).unwrap())
            .collect();
        let lengths: Vec<usize> = json.iter().map(Vec::len).collect();
        let total: usize = lengths.iter().sum();
        // What ranks 0 and 2 contribute to rank 1's two sums.
        let mut lens = vec![0f32; 3];
        let mut bytes = vec![0f32; total];
        for r in [0, 2] {
            lens[r] = lengths[r] as f32;
            let start: usize = lengths[..r].iter().sum();
            for (i, b) in json[r].iter().enumerate() {
                bytes[start + i] = f32::from(*b);
            }
        }
        let fake = Fake {
            rank: 1,
            ranks: 3,
            others: std::cell::RefCell::new(vec![lens, bytes]),
        };
        let all = all_gather_json(&fake, &values[1]).unwrap();
        assert_eq!(all, values);
        let one = all_gather_json(&SingleProcess, &values[2]).unwrap();
        assert_eq!(one, vec![values[2].clone()]);
    }

    #[test]
    fn one_process_is_the_identity() {
        let c = SingleProcess;
        assert!(c.any(true).unwrap() && !c.any(false).unwrap());
        let mut m = WeightMap::new();
        m.insert("x".into(), Tensor::new(&[1f32], &Device::Cpu).unwrap());
        assert_eq!(broadcast_map(&c, &m, 0).unwrap().len(), 1);
    }
}
