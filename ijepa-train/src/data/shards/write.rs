//! Writing an image folder as tar shards that [`super::TarShards`] (and
//! WebDataset) read.

use std::path::{Path, PathBuf};

use ijepa_encoder::io::output::OutputFile;
use rand::seq::SliceRandom;

use super::super::loader::tagged_rng;
use super::super::{DataError, ImageFolder};

/// What [`write_shards`] wrote.
#[derive(Debug, Clone)]
pub struct WrittenShards {
    /// The shard files, in order.
    pub shards: Vec<PathBuf>,
    /// Images written.
    pub images: usize,
    /// The brace pattern naming every shard, for `data.path`.
    pub pattern: String,
    /// `classes.txt` beside the shards: line `i` names class `i`.
    pub classes: PathBuf,
}

/// Writes the images of `folder` into `out/shard-000000.tar`, … with
/// `per_shard` images each (the last may hold fewer), in an order shuffled
/// from `seed` so that every shard mixes the classes. Sample `k` of the
/// shuffled order is `{k:09}.{ext}` (the file's bytes as they are, its
/// ending lower-cased) and `{k:09}.cls` (its class number; the class names
/// go to `out/classes.txt`). The tar headers carry no time, owner or
/// mode of the source files: the same folder and seed give the same
/// bytes. Each shard is complete or absent ([`OutputFile`]); `progress`
/// is told the images written so far after each shard.
///
/// # Errors
/// `per_shard` 0, an image that cannot be read, or an output that cannot
/// be written (a folder where a shard would go is never replaced).
pub fn write_shards(
    folder: &ImageFolder,
    out: &Path,
    per_shard: usize,
    seed: u64,
    progress: &mut dyn FnMut(usize),
) -> Result<WrittenShards, DataError> {
    if per_shard == 0 {
        return Err(DataError::Shards(
            "images per shard must be at least 1".into(),
        ));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| DataError::Io { path, error }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let files = folder.files();
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.shuffle(&mut tagged_rng(seed, 0, u64::MAX, b"ijepa-wr"));
    let mut shards = vec![];
    for (s, chunk) in order.chunks(per_shard).enumerate() {
        let path = out.join(format!("shard-{s:06}.tar"));
        let file = OutputFile::create(&path).map_err(|e| write_error(&path, e))?;
        let mut tar = tar::Builder::new(file);
        for (i, &f) in chunk.iter().enumerate() {
            let key = format!("{:09}", s * per_shard + i);
            let source = &files[f];
            let bytes = std::fs::read(source).map_err(io(source))?;
            let ending = source
                .extension()
                .map_or(String::new(), |e| e.to_string_lossy().to_ascii_lowercase());
            let class = folder.label(f).to_string();
            for (name, data) in [
                (format!("{key}.{ending}"), bytes.as_slice()),
                (format!("{key}.cls"), class.as_bytes()),
            ] {
                let mut header = tar::Header::new_ustar();
                header.set_size(data.len() as u64);
                header.set_mode(0o644);
                header.set_mtime(0);
                header.set_entry_type(tar::EntryType::Regular);
                tar.append_data(&mut header, &name, data)
                    .map_err(|e| write_error(&path, e))?;
            }
        }
        let file = tar.into_inner().map_err(|e| write_error(&path, e))?;
        file.commit().map_err(|e| write_error(&path, e))?;
        shards.push(path);
        progress((s * per_shard + chunk.len()).min(files.len()));
    }
    let classes = out.join("classes.txt");
    let mut list = OutputFile::create(&classes).map_err(|e| write_error(&classes, e))?;
    for name in folder.classes() {
        std::io::Write::write_all(&mut list, format!("{name}\n").as_bytes())
            .map_err(io(&classes))?;
    }
    list.commit().map_err(|e| write_error(&classes, e))?;
    let last = shards.len().saturating_sub(1);
    let pattern = if last == 0 {
        out.join("shard-000000.tar").display().to_string()
    } else {
        out.join(format!("shard-{{000000..{last:06}}}.tar"))
            .display()
            .to_string()
    };
    Ok(WrittenShards {
        shards,
        images: files.len(),
        pattern,
        classes,
    })
}

/// An output error (which names the file already, or not), named once.
fn write_error(path: &Path, error: impl std::fmt::Display) -> DataError {
    let text = error.to_string();
    let shown = path.display().to_string();
    if text.contains(&shown) {
        DataError::Shards(text)
    } else {
        DataError::Shards(format!("{shown}: {text}"))
    }
}
