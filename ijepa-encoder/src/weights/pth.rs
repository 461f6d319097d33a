//! PyTorch checkpoint files (`torch.save`'s zip format, PyTorch ≥ 1.6): the
//! tensors of one entry of the saved dictionary, read as data through our
//! own unpickler ([`super::pickle`]); no code runs.
//!
//! An archive holds `{name}/data.pkl` (the pickled object; tensors refer to
//! storages by key) and `{name}/data/{key}` (each storage's raw bytes,
//! little-endian). The legacy format (PyTorch < 1.6, or
//! `_use_new_zipfile_serialization=False`) is recognised and refused with
//! how to convert it.

use std::collections::BTreeMap;
use std::io::{Read, Seek};

use candle_core::{DType, Device, Tensor};

use super::pickle::{self, TensorRef};

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

/// The tensors of `file`'s entry `key` (the whole object when `None`), as
/// `(name, tensor)` on the CPU; entries that are not tensors are left out.
///
/// # Errors
/// A reason (the caller names the file): not a zip archive (with the
/// legacy format recognised), no `data.pkl`, a malformed pickle, no such
/// key (the keys there are listed), a storage that is missing, too short
/// or of a dtype we do not read.
pub(crate) fn read_tensors<R: Read + Seek>(
    mut file: R,
    key: Option<&str>,
) -> Result<Vec<(String, Tensor)>, String> {
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
    for (storage, tensors) in by_storage {
        let (_, first) = &tensors[0];
        let dtype = dtype_of(&first.storage_type).ok_or_else(|| {
            format!(
                "tensor {}: storage type {} is not supported",
                tensors[0].0, first.storage_type
            )
        })?;
        let path = format!("{prefix}data/{storage}");
        let want = first.storage_len.checked_mul(dtype.size_in_bytes());
        let data = {
            let entry = zip
                .by_name(&path)
                .map_err(|_| format!("tensor {}: storage {path} is missing", tensors[0].0))?;
            match want {
                Some(w) if entry.size() >= w as u64 => {}
                _ => {
                    return Err(format!(
                    "tensor {}: storage {path} has {} bytes, {} elements of {dtype:?} announced",
                    tensors[0].0,
                    entry.size(),
                    first.storage_len
                ))
                }
            }
            let w = want.unwrap_or(0);
            let mut data = Vec::with_capacity(w);
            entry
                .take(w as u64)
                .read_to_end(&mut data)
                .map_err(|e| format!("{path}: {e}"))?;
            data
        };
        for (name, t) in tensors {
            out.push((
                name.clone(),
                view(&data, dtype, &t).map_err(|e| format!("tensor {name}: {e}"))?,
            ));
        }
    }
    Ok(out)
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
