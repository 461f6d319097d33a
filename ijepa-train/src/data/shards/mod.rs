//! Tar shards in the WebDataset layout: each shard a tar file of samples,
//! a sample the run of members sharing a key (`dir/key.jpg`,
//! `dir/key.cls`, …: the key is the path up to the first dot of the file
//! name). The image is the sample's `.jpg`, `.jpeg` or `.png` member, its
//! class the decimal number in its `.cls` member (0 without one); other
//! members are ignored.
//!
//! Opening the shards reads their tar headers only (every shard at once,
//! on the decoding threads), keeping where each image's bytes lie: about
//! 60 bytes an image, no image bytes. An image is read — one seek and one
//! read in its shard — when its batch is prepared, so a rank of a
//! data-parallel job reads the images of its share and nothing else.
//!
//! The order of an epoch is shard-local, as a sharded data set is meant
//! to be read: the shards are shuffled from `(seed, epoch)`, and the images
//! of each run of [`SHARDS_MIXED`] consecutive shards of that order are
//! shuffled together. Like the folder's order, it is a function of the
//! seed, the epoch and the shard list only, so resumed and data-parallel
//! runs read exactly what an uninterrupted single process reads.

mod pattern;
mod write;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use image::RgbImage;
use rand::seq::SliceRandom;
use rayon::prelude::*;

pub(crate) use pattern::is_pattern;
pub use pattern::{expand_braces, shard_paths, MAX_SHARDS};
pub use write::{write_shards, WrittenShards};

use super::files::is_image_ending;
use super::loader::tagged_rng;
use super::{decode_rgb_bytes, DataError};

/// Shards whose images one epoch shuffles together (see the module doc).
pub const SHARDS_MIXED: usize = 4;

/// Largest image member read (bigger ones are left out with a note): far
/// above any photograph, far below what a corrupt size field can claim.
const MAX_MEMBER_BYTES: u64 = 256 << 20;

/// Largest class number a `.cls` member may hold.
const MAX_CLASS: usize = 1 << 24;

/// Images in tar shards (see the module doc).
#[derive(Debug, Clone)]
pub struct TarShards {
    paths: Vec<PathBuf>,
    members: Vec<Member>,
    /// `starts[s]..starts[s + 1]`: the images of shard `s`.
    starts: Vec<usize>,
    num_classes: usize,
    notes: Vec<String>,
}

/// Where one image lies.
#[derive(Debug, Clone)]
struct Member {
    shard: u32,
    label: u32,
    offset: u64,
    len: u64,
    /// The member's name in its tar file.
    name: Box<str>,
}

/// What indexing one shard found besides its images.
#[derive(Debug, Default)]
struct Findings {
    unlabelled: usize,
    without_image: usize,
    two_images: usize,
    too_large: usize,
    /// Why the shard could not be read to its end.
    cut: Option<String>,
}

impl TarShards {
    /// Indexes the shards `spec` names ([`shard_paths`]): a brace pattern
    /// such as `train-{000000..001281}.tar`, one `.tar`, or a list file.
    ///
    /// # Errors
    /// A specification that names no file, a shard that is missing or not
    /// a regular file, a `.cls` member that is not a class number, or no
    /// image in any shard. A shard that is cut short or corrupt keeps the
    /// images before the damage, with a note ([`TarShards::notes`]).
    pub fn open(spec: &Path) -> Result<Self, DataError> {
        let paths = shard_paths(spec)?;
        for path in &paths {
            let meta = std::fs::metadata(path).map_err(|error| DataError::Io {
                path: path.clone(),
                error,
            })?;
            if !meta.is_file() {
                return Err(DataError::Shards(format!(
                    "{}: a shard must be a regular file (a folder, FIFO or device is never read)",
                    path.display()
                )));
            }
        }
        let indexed: Vec<(Vec<Member>, Findings)> = paths
            .par_iter()
            .enumerate()
            .map(|(s, path)| index_shard(path, s as u32))
            .collect::<Result<_, _>>()?;
        let mut starts = vec![0];
        let mut members = vec![];
        let mut per_shard = vec![];
        for (shard_members, findings) in indexed {
            members.extend(shard_members);
            starts.push(members.len());
            per_shard.push(findings);
        }
        let notes = summarise(&paths, &per_shard, members.len());
        if members.is_empty() {
            let why = notes.first().map_or(String::new(), |n| format!(" ({n})"));
            return Err(DataError::Shards(format!(
                "{}: no .jpg, .jpeg or .png image in {} shard(s){why}",
                spec.display(),
                paths.len()
            )));
        }
        let num_classes = members
            .iter()
            .map(|m| m.label as usize + 1)
            .max()
            .unwrap_or(1);
        Ok(Self {
            paths,
            members,
            starts,
            num_classes,
            notes,
        })
    }

    /// What indexing left out or assumed, to tell the user: one line per
    /// kind, with a count and an example.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The shard files, in the order the specification names them.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there is no image (never true of an opened set).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Class of image `index`: its `.cls` number, 0 without one.
    pub fn label(&self, index: usize) -> usize {
        self.members[index].label as usize
    }

    /// One more than the largest class.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// What image `index` is called in logs: `shard.tar:member`.
    pub fn name(&self, index: usize) -> String {
        let m = &self.members[index];
        format!("{}:{}", self.paths[m.shard as usize].display(), m.name)
    }

    /// Image `index`, read from its shard and decoded to RGB.
    ///
    /// # Errors
    /// A shard that cannot be read there, or bytes that do not decode, named
    /// as [`TarShards::name`] names them.
    pub fn load(&self, index: usize) -> Result<RgbImage, DataError> {
        let m = &self.members[index];
        let name = PathBuf::from(self.name(index));
        let io = |error| DataError::Io {
            path: name.clone(),
            error,
        };
        let mut file = File::open(&self.paths[m.shard as usize]).map_err(io)?;
        file.seek(SeekFrom::Start(m.offset)).map_err(io)?;
        let mut bytes = vec![0; m.len as usize];
        file.read_exact(&mut bytes).map_err(io)?;
        decode_rgb_bytes(&bytes, &name)
    }

    /// The order of the images in `epoch` (see the module doc).
    pub fn epoch_order(&self, seed: u64, epoch: u64) -> Vec<usize> {
        let mut shards: Vec<usize> = (0..self.paths.len()).collect();
        shards.shuffle(&mut tagged_rng(seed, epoch, u64::MAX, b"ijepa-so"));
        let mut order = Vec::with_capacity(self.members.len());
        for (run, mixed) in shards.chunks(SHARDS_MIXED).enumerate() {
            let first = order.len();
            for &s in mixed {
                order.extend(self.starts[s]..self.starts[s + 1]);
            }
            order[first..].shuffle(&mut tagged_rng(seed, epoch, run as u64, b"ijepa-sm"));
        }
        order
    }
}

/// The key and the ending of a member name: `a/b.c.d` → (`a/b`, `c.d`).
fn split_key(name: &str) -> (&str, &str) {
    let base = name.rfind('/').map_or(0, |i| i + 1);
    match name[base..].find('.') {
        Some(dot) => (&name[..base + dot], &name[base + dot + 1..]),
        None => (name, ""),
    }
}

/// The sample being gathered while the members of one key go by.
#[derive(Default)]
struct Pending {
    key: String,
    image: Option<(Box<str>, u64, u64)>,
    label: Option<u32>,
    any: bool,
}

impl Pending {
    fn flush(&mut self, shard: u32, members: &mut Vec<Member>, found: &mut Findings) {
        let pending = std::mem::take(self);
        match pending.image {
            Some((name, offset, len)) => {
                found.unlabelled += usize::from(pending.label.is_none());
                members.push(Member {
                    shard,
                    label: pending.label.unwrap_or(0),
                    offset,
                    len,
                    name,
                });
            }
            None if pending.any => found.without_image += 1,
            None => {}
        }
    }
}

/// Where the images of one shard lie. Reads headers and `.cls` members
/// only; stops at the first damage, keeping what came before.
fn index_shard(path: &Path, shard: u32) -> Result<(Vec<Member>, Findings), DataError> {
    let io = |error| DataError::Io {
        path: path.to_path_buf(),
        error,
    };
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut archive = tar::Archive::new(file);
    let (mut members, mut found) = (vec![], Findings::default());
    let mut pending = Pending::default();
    let entries = match archive.entries_with_seek() {
        Ok(entries) => entries,
        Err(e) => {
            found.cut = Some(format!("at byte 0: {e}"));
            return Ok((members, found));
        }
    };
    let mut at = 0u64;
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                found.cut = Some(format!("after byte {at}: {e}"));
                break;
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let (offset, len) = (entry.raw_file_position(), entry.size());
        at = offset;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            found.cut = Some(format!(
                "the member at byte {offset} claims {len} bytes but the file ends at byte {size}"
            ));
            break;
        }
        let name = entry.path_bytes();
        let name = String::from_utf8_lossy(&name).into_owned();
        let (key, ending) = split_key(&name);
        if key != pending.key {
            pending.flush(shard, &mut members, &mut found);
            pending.key = key.to_string();
        }
        pending.any = true;
        if is_image_ending(ending) {
            if pending.image.is_some() {
                found.two_images += 1;
            } else if len > MAX_MEMBER_BYTES {
                found.too_large += 1;
            } else {
                pending.image = Some((name.into(), offset, len));
            }
        } else if ending.eq_ignore_ascii_case("cls") {
            let mut text = String::new();
            let read = (&mut entry).take(64).read_to_string(&mut text);
            let class = read
                .ok()
                .and_then(|_| text.trim().parse::<usize>().ok())
                .filter(|&c| c < MAX_CLASS && len <= 64);
            match class {
                Some(c) => pending.label = Some(c as u32),
                None => {
                    return Err(DataError::Shards(format!(
                        "{}: member {name} holds {:?}, expected a class number 0 to {}",
                        path.display(),
                        text.trim(),
                        MAX_CLASS - 1
                    )))
                }
            }
        }
    }
    pending.flush(shard, &mut members, &mut found);
    Ok((members, found))
}

/// One note per kind of finding over all shards.
fn summarise(paths: &[PathBuf], found: &[Findings], images: usize) -> Vec<String> {
    let mut notes = vec![];
    let mut kind = |count: fn(&Findings) -> usize, what: &str| {
        let total: usize = found.iter().map(count).sum();
        if let Some(s) = found.iter().position(|f| count(f) > 0) {
            notes.push(format!("{total} {what} (e.g. in {})", paths[s].display()));
        }
    };
    // Labels matter only where some image has one.
    if found.iter().map(|f| f.unlabelled).sum::<usize>() < images {
        kind(
            |f| f.unlabelled,
            "images have no .cls member and are labelled 0",
        );
    }
    kind(
        |f| f.without_image,
        "samples have no .jpg, .jpeg or .png member and are skipped",
    );
    kind(
        |f| f.two_images,
        "samples have a second image member, which is skipped",
    );
    kind(
        |f| f.too_large,
        "image members are over 256 MiB and are skipped",
    );
    let cut: Vec<usize> = (0..found.len())
        .filter(|&s| found[s].cut.is_some())
        .collect();
    if let Some(&s) = cut.first() {
        notes.push(format!(
            "{} shard(s) are cut short or corrupt and keep only the images before the damage: {} {}",
            cut.len(),
            paths[s].display(),
            found[s].cut.as_deref().unwrap_or_default()
        ));
    }
    notes
}

#[cfg(test)]
mod tests;
