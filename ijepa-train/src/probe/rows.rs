//! Feature rows a probe reads a chunk at a time: a tensor in memory, or a
//! file written once by the feature extraction, so that a probe's memory
//! does not grow with the data set (ImageNet's 1.28 M images × 1,280
//! dimensions of ViT-H are 6.5 GB of f32).
//!
//! A feature file is two files in one folder: `NAME.f32`, the rows of
//! little-endian f32 back to back (`numpy.fromfile(path, "<f4").reshape(rows,
//! dim)`), and `NAME.json` ([`FeatureMeta`]: rows, dim, labels and what
//! made them), written last, so a set without its `.json` is incomplete.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{io, Result, TrainError};

/// Rows of features, read in chunks.
pub trait Rows {
    /// Number of rows.
    fn rows(&self) -> usize;

    /// Values per row.
    fn dim(&self) -> usize;

    /// Rows `start..start + len`, as an `(len, dim)` f32 tensor on the CPU.
    ///
    /// # Errors
    /// Rows out of range, or a failed read.
    fn read(&self, start: usize, len: usize) -> Result<Tensor>;

    /// The rows at `indices`, in that order, as an `(indices.len(), dim)`
    /// f32 tensor on the CPU.
    ///
    /// # Errors
    /// An index out of range, or a failed read.
    fn pick(&self, indices: &[usize]) -> Result<Tensor>;
}

impl Rows for Tensor {
    fn rows(&self) -> usize {
        self.dims().first().copied().unwrap_or(0)
    }

    fn dim(&self) -> usize {
        self.dims().get(1).copied().unwrap_or(0)
    }

    fn read(&self, start: usize, len: usize) -> Result<Tensor> {
        let rows = self
            .narrow(0, start, len)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?;
        finite_rows(rows, |i| start + i, "in-memory features")
    }

    fn pick(&self, indices: &[usize]) -> Result<Tensor> {
        let idx: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
        let idx = Tensor::from_vec(idx, indices.len(), self.device())?;
        let rows = self
            .index_select(&idx, 0)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?;
        finite_rows(rows, |i| indices[i], "in-memory features")
    }
}

/// `rows` if every value is finite; otherwise an error naming the first
/// row (numbered by `row_of`) of `origin` that is not.
fn finite_rows(rows: Tensor, row_of: impl Fn(usize) -> usize, origin: &str) -> Result<Tensor> {
    // x·0 is 0 for finite x and NaN otherwise.
    let probe = (&rows * 0.0)?.sum(1)?.to_vec1::<f32>()?;
    match probe.iter().position(|v| *v != 0.0) {
        None => Ok(rows),
        Some(i) => Err(TrainError::Probe(format!(
            "{origin}: row {} holds NaN or infinite values",
            row_of(i)
        ))),
    }
}

/// A fingerprint of the files a feature set is made from — how many, their
/// bytes, and the CRC-32C of every path with its length and modification
/// time — so features extracted before the files changed are not reused.
///
/// # Errors
/// A file whose metadata cannot be read.
pub fn fingerprint(files: &[PathBuf]) -> Result<String> {
    let (mut crc, mut bytes) = (0u32, 0u64);
    for f in files {
        let meta = std::fs::metadata(f).map_err(io(f))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        bytes += meta.len();
        crc = crc32c::crc32c_append(crc, f.as_os_str().as_encoded_bytes());
        crc = crc32c::crc32c_append(crc, &meta.len().to_le_bytes());
        crc = crc32c::crc32c_append(crc, &modified.to_le_bytes());
    }
    Ok(format!(
        "{} files, {bytes} bytes, list CRC-32C {crc:08x}",
        files.len()
    ))
}

/// What a feature file holds: its shape, a label per row, and what made it
/// (weights, transform, layers: a set made otherwise is not reused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureMeta {
    /// Number of rows.
    pub rows: usize,
    /// Values per row.
    pub dim: usize,
    /// The class of each row.
    pub labels: Vec<usize>,
    /// Images that could not be read (no row).
    pub skipped: usize,
    /// What made the rows, in words.
    pub source: String,
}

/// A feature file opened for reading.
#[derive(Debug)]
pub struct FeatureFile {
    path: PathBuf,
    file: File,
    meta: FeatureMeta,
}

fn paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.f32")),
        dir.join(format!("{name}.json")),
    )
}

impl FeatureFile {
    /// The feature set `name` in `dir`, or `None` when it was never
    /// completed there (no `NAME.json`).
    ///
    /// # Errors
    /// An unreadable file, or a `.f32` whose size is not `rows × dim` floats.
    pub fn open(dir: &Path, name: &str) -> Result<Option<Self>> {
        let (data, meta_path) = paths(dir, name);
        if !meta_path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&meta_path).map_err(io(&meta_path))?;
        let meta: FeatureMeta = serde_json::from_str(&text).map_err(|e| {
            TrainError::Probe(format!(
                "{}: not a feature set's description: {e}",
                meta_path.display()
            ))
        })?;
        let file = File::open(&data).map_err(io(&data))?;
        let size = file.metadata().map_err(io(&data))?.len();
        let want = (meta.rows * meta.dim * 4) as u64;
        if size != want || meta.labels.len() != meta.rows {
            return Err(TrainError::Probe(format!(
                "{}: {size} bytes and {} labels, but {} says {} rows of {} floats ({want} bytes): \
                 remove both files to extract the features again",
                data.display(),
                meta.labels.len(),
                meta_path.display(),
                meta.rows,
                meta.dim
            )));
        }
        Ok(Some(Self {
            path: data,
            file,
            meta,
        }))
    }

    /// Its description.
    pub fn meta(&self) -> &FeatureMeta {
        &self.meta
    }

    fn read_at(&self, row: usize, len: usize, out: &mut Vec<f32>) -> Result<()> {
        use std::os::unix::fs::FileExt;
        if row + len > self.meta.rows {
            return Err(TrainError::Probe(format!(
                "{}: rows {row}..{} asked of {}",
                self.path.display(),
                row + len,
                self.meta.rows
            )));
        }
        let mut bytes = vec![0u8; len * self.meta.dim * 4];
        self.file
            .read_exact_at(&mut bytes, (row * self.meta.dim * 4) as u64)
            .map_err(io(&self.path))?;
        let first = out.len();
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        if let Some(i) = out[first..].iter().position(|v| !v.is_finite()) {
            return Err(TrainError::Probe(format!(
                "{}: row {} holds NaN or infinite values (remove it and its .json to extract the features again)",
                self.path.display(),
                row + i / self.meta.dim.max(1)
            )));
        }
        Ok(())
    }
}

impl Rows for FeatureFile {
    fn rows(&self) -> usize {
        self.meta.rows
    }

    fn dim(&self) -> usize {
        self.meta.dim
    }

    fn read(&self, start: usize, len: usize) -> Result<Tensor> {
        let mut v = Vec::with_capacity(len * self.meta.dim);
        self.read_at(start, len, &mut v)?;
        Ok(Tensor::from_vec(v, (len, self.meta.dim), &Device::Cpu)?)
    }

    fn pick(&self, indices: &[usize]) -> Result<Tensor> {
        let mut v = Vec::with_capacity(indices.len() * self.meta.dim);
        for &i in indices {
            self.read_at(i, 1, &mut v)?;
        }
        Ok(Tensor::from_vec(
            v,
            (indices.len(), self.meta.dim),
            &Device::Cpu,
        )?)
    }
}

/// A feature file being written, a chunk of rows at a time.
pub struct FeatureWriter {
    dir: PathBuf,
    name: String,
    out: ijepa_encoder::io::output::OutputFile,
    rows: usize,
    dim: Option<usize>,
}

impl FeatureWriter {
    /// Starts the feature set `name` in `dir` (replaced only when
    /// [`FeatureWriter::finish`] succeeds).
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(dir: &Path, name: &str) -> Result<Self> {
        let (data, _) = paths(dir, name);
        Ok(Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            out: ijepa_encoder::io::output::OutputFile::create(&data)?,
            rows: 0,
            dim: None,
        })
    }

    /// Appends the rows of `features` `(n, dim)`.
    ///
    /// # Errors
    /// A width other than the first chunk's, or a failed write.
    pub fn append(&mut self, features: &Tensor) -> Result<()> {
        let (n, d) = features.dims2()?;
        if *self.dim.get_or_insert(d) != d {
            return Err(TrainError::Probe(format!(
                "{}: rows of {d} values after rows of {:?}",
                self.out.path().display(),
                self.dim
            )));
        }
        let values = features
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let path = self.out.path().to_path_buf();
        self.out.write_all(&bytes).map_err(io(path))?;
        self.rows += n;
        Ok(())
    }

    /// Completes the set: the rows, then its description (`labels`, one per
    /// row, the number of images `skipped`, and `source`), and opens it for
    /// reading.
    ///
    /// # Errors
    /// Not one label per row, or a failed write.
    pub fn finish(self, labels: Vec<usize>, skipped: usize, source: String) -> Result<FeatureFile> {
        if labels.len() != self.rows {
            return Err(TrainError::Probe(format!(
                "{}: {} labels for {} rows",
                self.out.path().display(),
                labels.len(),
                self.rows
            )));
        }
        let meta = FeatureMeta {
            rows: self.rows,
            dim: self.dim.unwrap_or(0),
            labels,
            skipped,
            source,
        };
        let (_, meta_path) = paths(&self.dir, &self.name);
        // An older description must not outlive the rows it described.
        if std::fs::symlink_metadata(&meta_path).is_ok_and(|m| m.is_file()) {
            std::fs::remove_file(&meta_path).map_err(io(&meta_path))?;
        }
        self.out.commit()?;
        let text = serde_json::to_string(&meta)
            .map_err(|e| TrainError::Probe(format!("{}: {e}", meta_path.display())))?;
        ijepa_encoder::io::output::write_file(&meta_path, text.as_bytes())?;
        FeatureFile::open(&self.dir, &self.name)?
            .ok_or_else(|| TrainError::Probe(format!("{} vanished", meta_path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_set_reads_back_as_its_tensor() {
        let dir = std::env::temp_dir().join(format!("ijepa-rows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let x = Tensor::arange(0f32, 35.0, &Device::Cpu)
            .unwrap()
            .reshape((7, 5))
            .unwrap();
        assert!(FeatureFile::open(&dir, "train").unwrap().is_none());
        let mut w = FeatureWriter::create(&dir, "train").unwrap();
        w.append(&x.narrow(0, 0, 3).unwrap()).unwrap();
        w.append(&x.narrow(0, 3, 4).unwrap()).unwrap();
        assert!(w
            .append(&Tensor::zeros((1, 4), DType::F32, &Device::Cpu).unwrap())
            .is_err());
        let f = w.finish((0..7).collect(), 0, "test".into()).unwrap();
        assert_eq!((f.rows(), f.dim()), (7, 5));
        let same = |a: Tensor, b: Tensor| {
            assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap())
        };
        same(f.read(2, 4).unwrap(), x.read(2, 4).unwrap());
        same(f.pick(&[6, 0, 3]).unwrap(), x.pick(&[6, 0, 3]).unwrap());
        assert!(f.read(5, 3).is_err());
        let again = FeatureFile::open(&dir, "train").unwrap().unwrap();
        assert_eq!(again.meta(), f.meta());
        // A truncated data file is refused, naming both files.
        std::fs::write(dir.join("train.f32"), [0u8; 8]).unwrap();
        let err = FeatureFile::open(&dir, "train").unwrap_err().to_string();
        assert!(
            err.contains("train.f32") && err.contains("train.json"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
