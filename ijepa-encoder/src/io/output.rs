//! Files ijepa-rs writes: complete or absent, and never in place of
//! anything but a regular file.
//!
//! [`OutputFile`] is the one way every output (features, weights,
//! checkpoints, configs, metrics, plots) reaches the disk:
//!
//! - a new path or a regular file: the bytes go to a temporary file beside
//!   it (`.{name}.tmp-…`), which is fsynced and renamed over the target on
//!   [`OutputFile::commit`] — a crash or an error leaves the old file (or
//!   none), never a truncated one, and the temporary file is removed;
//!   a replaced file keeps its permissions, a new one gets the usual
//!   `0666 & !umask`;
//! - a symbolic link: followed, and its target treated as above (the link
//!   stays a link);
//! - a FIFO or a character device (`/dev/null`, `/dev/stdout`): written
//!   through, as a shell redirection would;
//! - anything else (a folder, a block device, a socket, a dangling link):
//!   refused, naming what is there.
//!
//! [`write_safetensors`] streams tensors through it, one at a time.
//!
//! ```no_run
//! use std::io::Write;
//! use ijepa_encoder::io::output::OutputFile;
//!
//! let mut out = OutputFile::create("report.txt".as_ref())?;
//! writeln!(out, "hello")?;
//! out.commit()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Tensor};

use crate::error::{EncoderError, Result};

/// Where the bytes of an [`OutputFile`] go.
#[derive(Debug)]
enum Mode {
    /// A temporary file renamed over `target` on commit.
    Replace { tmp: PathBuf },
    /// Straight into `target` (a FIFO or character device).
    Through,
}

/// A file being written; see the [module documentation](self).
#[derive(Debug)]
pub struct OutputFile {
    target: PathBuf,
    mode: Mode,
    file: Option<BufWriter<File>>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> EncoderError + '_ {
    move |error| EncoderError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn refused(path: &Path, what: &str) -> EncoderError {
    EncoderError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::other(format!(
            "{what}: ijepa-rs writes only regular files (replaced atomically), FIFOs and character devices"
        )),
    }
}

/// Temporary files of this process are told apart by a counter.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The name prefix of `target`'s temporary files.
fn tmp_prefix(target: &Path) -> String {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.tmp-")
}

/// Removes temporary files of `target` left by a crashed or killed writer.
fn remove_stale(dir: &Path, target: &Path) {
    let prefix = tmp_prefix(target);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// What is at an output path, and so how it is written.
enum Target {
    /// A new file, or a regular file (with its permissions) replaced.
    Replace(PathBuf, Option<std::fs::Permissions>),
    /// A FIFO or character device, written through.
    Through(PathBuf),
}

/// Decides how `path` is written (following symbolic links), or why not.
fn classify(path: &Path) -> Result<Target> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Target::Replace(path.to_path_buf(), None))
        }
        Err(e) => return Err(io_error(path)(e)),
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        return match std::fs::canonicalize(path) {
            Ok(real) => classify(&real),
            Err(_) => Err(refused(path, "a symbolic link to nothing")),
        };
    }
    if kind.is_file() {
        return Ok(Target::Replace(
            path.to_path_buf(),
            Some(meta.permissions()),
        ));
    }
    if kind.is_dir() {
        return Err(refused(path, "a folder"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() || kind.is_char_device() {
            return Ok(Target::Through(path.to_path_buf()));
        }
        if kind.is_block_device() {
            return Err(refused(path, "a block device"));
        }
        if kind.is_socket() {
            return Err(refused(path, "a socket"));
        }
    }
    Err(refused(path, "not a regular file"))
}

/// The folder a new or replaced file goes into, which must exist.
fn folder_of(target: &Path) -> Result<&Path> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(EncoderError::Io {
            path: target.to_path_buf(),
            error: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("the folder {} does not exist", dir.display()),
            ),
        });
    }
    Ok(dir)
}

/// Checks that `path` can be written by [`OutputFile::create`] — call it
/// before long work whose result goes there. Creates nothing.
///
/// # Errors
/// As [`OutputFile::create`] would.
pub fn check(path: &Path) -> Result<()> {
    match classify(path)? {
        Target::Replace(target, _) => folder_of(&target).map(|_| ()),
        Target::Through(_) => Ok(()),
    }
}

impl OutputFile {
    /// Starts writing `path`.
    ///
    /// # Errors
    /// A path that is not a regular file, FIFO, character device or absent
    /// (named with what it is), a missing folder, or a file that cannot be
    /// created.
    pub fn create(path: &Path) -> Result<Self> {
        match classify(path)? {
            Target::Replace(target, permissions) => Self::replace(&target, permissions),
            Target::Through(target) => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&target)
                    .map_err(io_error(&target))?;
                Ok(Self {
                    target,
                    mode: Mode::Through,
                    file: Some(BufWriter::new(file)),
                })
            }
        }
    }

    fn replace(target: &Path, permissions: Option<std::fs::Permissions>) -> Result<Self> {
        let dir = folder_of(target)?;
        remove_stale(dir, target);
        let tmp = dir.join(format!(
            "{}{}-{}",
            tmp_prefix(target),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_error(target))?;
        if let Some(p) = permissions {
            file.set_permissions(p).map_err(io_error(target))?;
        }
        Ok(Self {
            target: target.to_path_buf(),
            mode: Mode::Replace { tmp },
            file: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The path being written (a symbolic link's target).
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Finishes the file: flushes, fsyncs and renames it into place (or
    /// flushes a written-through FIFO or device).
    ///
    /// # Errors
    /// A failed flush, fsync or rename (the target is then unchanged and
    /// the temporary file removed).
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("an open OutputFile has a file");
        let target = self.target.clone();
        let file = file
            .into_inner()
            .map_err(|e| io_error(&target)(e.into_error()))?;
        match &self.mode {
            Mode::Through => Ok(()),
            Mode::Replace { tmp } => {
                file.sync_all().map_err(io_error(&target))?;
                drop(file);
                std::fs::rename(tmp, &target).map_err(io_error(&target))?;
                self.mode = Mode::Through; // nothing left to remove
                if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
                    sync_dir(dir)?;
                }
                Ok(())
            }
        }
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file
            .as_mut()
            .expect("an open OutputFile has a file")
            .write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file
            .as_mut()
            .expect("an open OutputFile has a file")
            .flush()
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        // Not committed: the target is untouched, the partial file goes.
        if let Mode::Replace { tmp } = &self.mode {
            self.file.take();
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Fsyncs a folder, so a rename in it is durable (a no-op off Unix).
///
/// # Errors
/// A folder that cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> Result<()> {
    if cfg!(unix) {
        File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(io_error(dir))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` through an [`OutputFile`].
///
/// # Errors
/// See [`OutputFile::create`] and [`OutputFile::commit`].
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut out = OutputFile::create(path)?;
    out.write_all(bytes).map_err(io_error(path))?;
    out.commit()
}

/// The little-endian bytes of a tensor's elements, row-major.
fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let t = t.flatten_all()?;
    fn le<T, const N: usize>(v: Vec<T>, f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        v.into_iter().flat_map(f).collect()
    }
    Ok(match t.dtype() {
        DType::U8 => t.to_vec1::<u8>()?,
        DType::U32 => le(t.to_vec1::<u32>()?, u32::to_le_bytes),
        DType::I64 => le(t.to_vec1::<i64>()?, i64::to_le_bytes),
        DType::BF16 => le(t.to_vec1::<half::bf16>()?, |x| x.to_bits().to_le_bytes()),
        DType::F16 => le(t.to_vec1::<half::f16>()?, |x| x.to_bits().to_le_bytes()),
        DType::F32 => le(t.to_vec1::<f32>()?, f32::to_le_bytes),
        DType::F64 => le(t.to_vec1::<f64>()?, f64::to_le_bytes),
        other => {
            return Err(EncoderError::InvalidConfig(format!(
                "cannot write {other:?} tensors to safetensors"
            )))
        }
    })
}

/// Writes `tensors` (with optional string `metadata`) as a `.safetensors`
/// file through an [`OutputFile`], one tensor in memory at a time.
///
/// # Errors
/// A dtype safetensors cannot hold, or a write that fails (the target is
/// then unchanged).
pub fn write_safetensors<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: Option<&HashMap<String, String>>,
) -> Result<()> {
    let mut tensors: Vec<(&str, &Tensor)> = tensors.into_iter().collect();
    // Widest dtypes first, then by name: every tensor stays aligned to its
    // element size, as the safetensors crate lays files out.
    tensors.sort_by(|a, b| {
        (b.1.dtype().size_in_bytes(), a.0).cmp(&(a.1.dtype().size_in_bytes(), b.0))
    });
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        header.insert("__metadata__".into(), serde_json::json!(m));
    }
    let mut offset = 0usize;
    for (name, t) in &tensors {
        let len = t.elem_count() * t.dtype().size_in_bytes();
        let dtype =
            serde_json::to_value(safetensors::Dtype::from(t.dtype())).expect("a dtype serialises");
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": t.dims(), "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut head = serde_json::to_vec(&header).expect("JSON values serialise");
    head.resize(head.len().div_ceil(8) * 8, b' ');
    let mut out = OutputFile::create(path)?;
    let write = |out: &mut OutputFile, bytes: &[u8]| out.write_all(bytes).map_err(io_error(path));
    write(&mut out, &(head.len() as u64).to_le_bytes())?;
    write(&mut out, &head)?;
    for (_, t) in &tensors {
        write(&mut out, &tensor_bytes(t)?)?;
    }
    out.commit()
}
