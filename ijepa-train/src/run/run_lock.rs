//! One writer per run directory: `R/.lock`, held with an exclusive
//! `flock(2)` for as long as the run is open.
//!
//! Two runs on one directory — a requeued SLURM job and a manual restart,
//! two `--resume` typed in two terminals — would otherwise interleave their
//! checkpoints, `latest`, `metrics.csv` and `config.toml`. The second one is
//! refused, naming the holder (its PID, host and start time, which the
//! holder writes into the file). The kernel releases the lock when the
//! holding process ends, however it ends (`kill -9` included), so a stale
//! lock never needs clearing by hand: the next run takes it over.
//!
//! On NFS, `flock` is carried by NFS's own locking (NFSv4, or lockd for
//! NFSv3 on Linux ≥ 2.6.12): a mount without it (`nolock`) fails to lock,
//! and the run is refused with the system's reason rather than run
//! unprotected. Only the writer (rank 0 of a data-parallel job) locks.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{io, Result, TrainError};

/// The lock file's name in a run directory.
pub const LOCK_FILE: &str = ".lock";

/// The lock on one run directory, released when dropped (or when the
/// process ends).
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

/// This machine's name (for the lock's holder line).
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".into())
}

impl RunLock {
    /// Takes the lock of `run_dir` (creating the directory), or says who
    /// holds it.
    ///
    /// # Errors
    /// Another process holds the lock (its PID and host named); the lock
    /// file is not a regular file; the file system cannot lock.
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
        let path = run_dir.join(LOCK_FILE);
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if !meta.file_type().is_file() {
                return Err(TrainError::Config(format!(
                    "{} is not a regular file: the run directory's lock cannot be taken (remove it)",
                    path.display()
                )));
            }
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "a process that has not written its name yet".to_string()
                } else {
                    holder.to_string()
                };
                return Err(TrainError::Config(format!(
                    "{} is in use by another run ({holder}); two runs on one directory would \
                     overwrite each other's checkpoints and metrics: wait for it to end, stop it, \
                     or choose another --out",
                    run_dir.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(TrainError::Config(format!(
                "cannot lock {}: {e} (on NFS the mount needs locking: NFSv4, or lockd for NFSv3)",
                path.display()
            )))
            }
        }
        let line = format!(
            "PID {} on {}, since {} s after the Unix epoch\n",
            std::process::id(),
            host(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        );
        file.set_len(0).map_err(io(&path))?;
        file.seek(SeekFrom::Start(0)).map_err(io(&path))?;
        file.write_all(line.as_bytes()).map_err(io(&path))?;
        file.sync_all().map_err(io(&path))?;
        Ok(Self { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_a_released_one_is_taken_over() {
        let dir = std::env::temp_dir().join(format!("ijepa-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = RunLock::acquire(&dir).unwrap();
        let err = RunLock::acquire(&dir).unwrap_err().to_string();
        assert!(
            err.contains(&format!("PID {}", std::process::id())) && err.contains("in use"),
            "{err}"
        );
        drop(first);
        let again = RunLock::acquire(&dir).unwrap();
        assert_eq!(again.path(), dir.join(LOCK_FILE));
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_lock_file_that_is_not_a_regular_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("ijepa-lock-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(LOCK_FILE)).unwrap();
        let err = RunLock::acquire(&dir).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
