//! PyTorch checkpoint files (`torch.save`'s zip format, PyTorch ≥ 1.6): the
//! tensors of one entry of the saved dictionary, read as data through our
//! own unpickler (`pickle`); no code runs.
//!
//! An archive holds `{name}/data.pkl` (the pickled object; tensors refer to
//! storages by key) and `{name}/data/{key}` (each storage's raw bytes,
//! little-endian). The legacy format (PyTorch < 1.6, or
//! `_use_new_zipfile_serialization=False`) is recognised and refused with
//! how to convert it.

mod pickle;

use std::collections::BTreeMap;
use std::io::{Read, Seek};

use candle_core::{DType, Device, Tensor};

use pickle::TensorRef;

/// Largest `data.pkl` read (an official ViT-g checkpoint's is ≈ 0.1 MiB).
const MAX_PICKLE: u64 = 1 << 30;

/// How a legacy `torch.save` file starts: protocol 2, then the magic
/// number 0x1950a86a20f9469cfc6c as a pickled LONG1.
const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

/// The dtype of a storage class (`FloatStorage` …).
fn dtype_of(storage: &str) -> Option<DType> {
    Some(match storage {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "ByteStorage" | "BoolStorage" => DType::U8,
        _ => return None,
    })
}

/// An opened `torch.save` zip archive: where its storages are.
struct Archive<R> {
    zip: zip::ZipArchive<R>,
    /// The folder its entries lie in (`archive/`).
    prefix: String,
}

/// Opens `file` as a `torch.save` archive and reads its pickle.
fn open_archive<R: Read + Seek>(mut file: R) -> Result<(Archive<R>, Vec<u8>), String> {
    let mut head = [0u8; 16];
    let n = file.read(&mut head).map_err(|e| e.to_string())?;
    file.rewind().map_err(|e| e.to_string())?;
    if !head[..n].starts_with(b"PK\x03\x04") {
        if head[..n].starts_with(LEGACY_MAGIC) {
            return Err("a legacy (non-zip) torch.save file, from PyTorch < 1.6 or \
                 _use_new_zipfile_serialization=False: convert it once with \
                 `torch.save(torch.load(path, weights_only=True), new_path)` in PyTorch >= 1.6"
                .into());
        }
        return Err("not a PyTorch checkpoint: no zip archive (the format of torch.save)".into());
    }
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("invalid zip archive: {e}"))?;
    let names: Vec<String> = zip
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid zip archive: {e}"))?;
    let pkl = names
        .iter()
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .min()
        .ok_or("no */data.pkl in the archive: not a torch.save checkpoint")?
        .clone();
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    if let Ok(mut order) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut text = String::new();
        let _ = order.by_ref().take(16).read_to_string(&mut text);
        if text.trim() == "big" {
            return Err("a big-endian checkpoint; re-save it on a little-endian machine".into());
        }
    }
    let bytes = {
        let entry = zip.by_name(&pkl).map_err(|e| format!("{pkl}: {e}"))?;
        if entry.size() > MAX_PICKLE {
            return Err(format!(
                "{pkl} is {} bytes, more than a checkpoint's pickle",
                entry.size()
            ));
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .take(MAX_PICKLE)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{pkl}: {e}"))?;
        bytes
    };
    Ok((Archive { zip, prefix }, bytes))
}

impl<R: Read + Seek> Archive<R> {
    /// The bytes of the storage tensor `name` (`t`) views, and their dtype.
    fn storage(&mut self, name: &str, t: &TensorRef) -> Result<(Vec<u8>, DType), String> {
        let dtype = dtype_of(&t.storage_type).ok_or_else(|| {
            format!(
                "tensor {name}: storage type {} is not supported",
                t.storage_type
            )
        })?;
        let path = format!("{}data/{}", self.prefix, t.key);
        let want = t.storage_len.checked_mul(dtype.size_in_bytes());
        let entry = self
            .zip
            .by_name(&path)
            .map_err(|_| format!("tensor {name}: storage {path} is missing"))?;
        match want {
            Some(w) if entry.size() >= w as u64 => {}
            _ => {
                return Err(format!(
                "tensor {name}: storage {path} has {} bytes, {} elements of {dtype:?} announced",
                entry.size(),
                t.storage_len
            ))
            }
        }
        let w = want.unwrap_or(0);
        let mut data = Vec::with_capacity(w);
        entry
            .take(w as u64)
            .read_to_end(&mut data)
            .map_err(|e| format!("{path}: {e}"))?;
        Ok((data, dtype))
    }
}

/// The tensors of `file`'s entry `key` (the whole object when `None`), as
/// `(name, tensor)` on the CPU; entries that are not tensors are left out.
///
/// # Errors
/// A reason (the caller names the file): not a zip archive (with the
/// legacy format recognised), no `data.pkl`, a malformed pickle, no such
/// key (the keys there are listed), a storage that is missing, too short
/// or of a dtype we do not read.
pub(crate) fn read_tensors<R: Read + Seek>(
    file: R,
    key: Option<&str>,
) -> Result<Vec<(String, Tensor)>, String> {
    let (mut archive, bytes) = open_archive(file)?;
    let pkl = format!("{}data.pkl", archive.prefix);
    let found = pickle::load(&bytes, |root| match key {
        None => Ok(root.tensors()),
        Some(k) => match root.get(k) {
            Some(v) => Ok(v.tensors()),
            None => Err(root.keys()),
        },
    })
    .map_err(|e| format!("{pkl}: {e}"))?;
    let refs = match (found, key) {
        (Ok(refs), _) => refs,
        (Err(keys), Some(k)) => {
            return Err(format!(
                "no {k:?} in this checkpoint (it holds {})",
                if keys.is_empty() {
                    "no named entries".to_string()
                } else {
                    keys.join(", ")
                }
            ))
        }
        (Err(_), None) => unreachable!("no key, no lookup"),
    };
    // One storage read at a time, with every tensor that views it.
    let mut by_storage: BTreeMap<String, Vec<(String, TensorRef)>> = BTreeMap::new();
    for (name, t) in refs {
        by_storage.entry(t.key.clone()).or_default().push((name, t));
    }
    let mut out = vec![];
    for (_, tensors) in by_storage {
        let (first_name, first) = tensors[0].clone();
        let (data, dtype) = archive.storage(&first_name, &first)?;
        for (name, t) in tensors {
            if t.storage_type != first.storage_type {
                return Err(format!(
                    "tensor {name}: storage {} is read as {} and as {}",
                    t.key, first.storage_type, t.storage_type
                ));
            }
            out.push((
                name.clone(),
                view(&data, dtype, &t).map_err(|e| format!("tensor {name}: {e}"))?,
            ));
        }
    }
    Ok(out)
}

/// Most values [`TorchFile::open`] builds (a training checkpoint's optimizer
/// state holds a few per parameter: thousands, not millions).
const MAX_VALUES: usize = 1 << 22;

/// Deepest nesting [`TorchFile::open`] follows (a checkpoint nests 4 deep).
const MAX_DEPTH: usize = 32;

/// A value of a PyTorch file, read as data: the containers and scalars
/// `torch.load` would give, tensors as references read on demand with
/// [`TorchFile::tensor`].
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer that fits 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A list or a tuple.
    List(Vec<PyValue>),
    /// A dictionary's pairs, in their order.
    Dict(Vec<(PyValue, PyValue)>),
    /// A tensor.
    Tensor(PyTensor),
    /// Anything else (an object, bytes, a wider integer), by kind.
    Other(&'static str),
}

/// A tensor in a PyTorch file: its shape, read with [`TorchFile::tensor`].
#[derive(Debug, Clone, PartialEq)]
pub struct PyTensor {
    /// Its shape.
    pub shape: Vec<usize>,
    at: TensorRef,
}

impl PyValue {
    /// The value under string key `key` of a dictionary.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        self.pairs()
            .iter()
            .find(|(k, _)| matches!(k, PyValue::Str(s) if s == key))
            .map(|(_, v)| v)
    }

    /// A dictionary's pairs (none for another value).
    pub fn pairs(&self) -> &[(PyValue, PyValue)] {
        match self {
            PyValue::Dict(d) => d,
            _ => &[],
        }
    }

    /// A list's or tuple's items.
    pub fn items(&self) -> Option<&[PyValue]> {
        match self {
            PyValue::List(v) => Some(v),
            _ => None,
        }
    }

    /// The string keys of a dictionary, in order.
    pub fn keys(&self) -> Vec<&str> {
        self.pairs()
            .iter()
            .filter_map(|(k, _)| k.as_str())
            .collect()
    }

    /// A string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An integer (a boolean is one, as in Python).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            PyValue::Int(i) => Some(*i),
            PyValue::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// A number, integer or float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            PyValue::Float(f) => Some(*f),
            v => v.as_int().map(|i| i as f64),
        }
    }

    /// What kind of value this is, for messages (`float`, `dict` …).
    pub fn kind(&self) -> &'static str {
        match self {
            PyValue::None => "None",
            PyValue::Bool(_) => "bool",
            PyValue::Int(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Str(_) => "str",
            PyValue::List(_) => "list",
            PyValue::Dict(_) => "dict",
            PyValue::Tensor(_) => "tensor",
            PyValue::Other(kind) => kind,
        }
    }

    /// An owned copy of the pickle's `value`, counting what it builds
    /// against `budget`; beyond [`MAX_DEPTH`] a container is `Other`.
    fn from_pickle(
        value: &pickle::Value,
        depth: usize,
        budget: &mut usize,
    ) -> Result<Self, String> {
        use pickle::Value as V;
        *budget = budget
            .checked_sub(1)
            .ok_or(format!("more than {MAX_VALUES} values in the pickle"))?;
        let many = |items: &[V], budget: &mut usize| -> Result<Vec<PyValue>, String> {
            items
                .iter()
                .map(|v| Self::from_pickle(v, depth + 1, budget))
                .collect()
        };
        Ok(match value {
            V::None => PyValue::None,
            V::Bool(b) => PyValue::Bool(*b),
            V::Int(i) => PyValue::Int(*i),
            V::Float(f) => PyValue::Float(*f),
            V::Str(s) => PyValue::Str(s.to_string()),
            V::Tensor(t) => PyValue::Tensor(PyTensor {
                shape: t.shape.clone(),
                at: (**t).clone(),
            }),
            V::List(_) | V::Tuple(_) | V::Dict(_) if depth >= MAX_DEPTH => {
                PyValue::Other("nested too deep")
            }
            V::List(n) | V::Tuple(n) => PyValue::List(many(&n.borrow(), budget)?),
            V::Dict(n) => {
                let items = many(&n.borrow(), budget)?;
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                PyValue::Dict(pairs)
            }
            V::BigInt => PyValue::Other("int wider than 64 bits"),
            V::Bytes => PyValue::Other("bytes"),
            V::Global(_) => PyValue::Other("global"),
            V::Call(_) | V::Persistent(_) => PyValue::Other("object"),
        })
    }
}

/// A `torch.save` file opened as data: its object ([`TorchFile::root`])
/// and its tensors, each read when asked for. No code in the file runs.
///
/// ```no_run
/// use ijepa_encoder::io::torch::TorchFile;
///
/// let mut file = TorchFile::open(std::path::Path::new("jepa-latest.pth.tar"))?;
/// let epoch = file.root().get("epoch").and_then(|e| e.as_int());
/// println!("epoch {epoch:?}");
/// # Ok::<(), ijepa_encoder::EncoderError>(())
/// ```
pub struct TorchFile {
    path: std::path::PathBuf,
    archive: Archive<std::io::BufReader<std::fs::File>>,
    root: PyValue,
}

impl TorchFile {
    /// Opens `path` and reads its pickle.
    ///
    /// # Errors
    /// As [`crate::weights::read_pytorch`]; a pickle of more than 4 M values.
    pub fn open(path: &std::path::Path) -> crate::error::Result<Self> {
        let bad = |reason: String| crate::error::EncoderError::UnknownLayout {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|error| crate::error::EncoderError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let (archive, bytes) = open_archive(std::io::BufReader::new(file)).map_err(bad)?;
        let mut budget = MAX_VALUES;
        let root = pickle::load(&bytes, |root| PyValue::from_pickle(root, 0, &mut budget))
            .map_err(|e| bad(format!("{}data.pkl: {e}", archive.prefix)))?
            .map_err(bad)?;
        Ok(Self {
            path: path.to_path_buf(),
            archive,
            root,
        })
    }

    /// The saved object.
    pub fn root(&self) -> &PyValue {
        &self.root
    }

    /// The file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The tensor `t` (named `name` in errors), on the CPU.
    ///
    /// # Errors
    /// A storage that is missing, too short or of a dtype we do not read.
    pub fn tensor(&mut self, name: &str, t: &PyTensor) -> crate::error::Result<Tensor> {
        let read = self.archive.storage(name, &t.at).and_then(|(data, dtype)| {
            view(&data, dtype, &t.at).map_err(|e| format!("tensor {name}: {e}"))
        });
        read.map_err(|reason| crate::error::EncoderError::UnknownLayout {
            path: self.path.clone(),
            reason,
        })
    }
}

/// The tensor `t` describes, copied out of its storage's bytes.
fn view(storage: &[u8], dtype: DType, t: &TensorRef) -> Result<Tensor, String> {
    let size = dtype.size_in_bytes();
    let len = storage.len() / size;
    if t.shape.len() != t.stride.len() {
        return Err(format!(
            "shape {:?} and stride {:?} differ in rank",
            t.shape, t.stride
        ));
    }
    let count = t
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("its shape overflows")?;
    if count > 0 {
        // The last element it reaches must lie in the storage.
        t.shape
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |a, (&d, &s)| a.checked_add((d - 1).checked_mul(s)?))
            .filter(|&l| l < len)
            .ok_or_else(|| {
                format!(
                    "offset {} with shape {:?} and stride {:?} reaches past the {len} elements of its storage",
                    t.offset, t.shape, t.stride
                )
            })?;
    }
    let contiguous = {
        let mut expected = 1;
        let mut ok = true;
        for (&d, &s) in t.shape.iter().zip(&t.stride).rev() {
            ok &= d <= 1 || s == expected;
            expected *= d;
        }
        ok
    };
    let bytes: Vec<u8> = if contiguous {
        storage[t.offset * size..(t.offset + count) * size].to_vec()
    } else {
        let mut bytes = Vec::with_capacity(count * size);
        let mut index = vec![0usize; t.shape.len()];
        for _ in 0..count {
            let at = t.offset
                + index
                    .iter()
                    .zip(&t.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            bytes.extend_from_slice(&storage[at * size..(at + 1) * size]);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        bytes
    };
    Tensor::from_raw_buffer(&bytes, dtype, &t.shape, &Device::Cpu).map_err(|e| e.to_string())
}
