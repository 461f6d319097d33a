//! The pretraining loader: shuffled, augmented, masked batches prepared on
//! worker threads ahead of the training step.
//!
//! Everything random is keyed, never carried: the order of epoch `e` comes
//! from `(seed, e)`, the augmentation of an image from `(seed, e, image)`
//! and the masks of a batch from the sampler's `(seed, batch number)`. A
//! loader started at any `(epoch, batch)` therefore yields exactly what an
//! uninterrupted one yields there — what makes resuming bit-exact.
//!
//! Batches are always full. An image that cannot be read is replaced by
//! the first readable one of a stream keyed by `(seed, epoch, image)`,
//! augmented from that stream: which image that is depends only on the
//! files, not on what the loader already knew to be unreadable, so a
//! resumed run draws the same replacements. Unreadable files are remembered
//! ([`BadImages`]) and never decoded again, and each is reported once.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ijepa_masking::{MaskBatch, MaskSampler};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::{DataError, ImageSource, TrainTransform};

/// Where in the data a loader is: batch `batch` of epoch `epoch`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Position {
    /// Epoch, from 0.
    pub epoch: u64,
    /// Batch within the epoch, from 0.
    pub batch: u64,
}

/// One prepared batch.
#[derive(Debug)]
pub struct Batch {
    /// Where it comes from.
    pub position: Position,
    /// Images `(n, 3, H, W)`, channel-major, normalised; `n` is this
    /// process's share of the batch size (unreadable images are replaced).
    pub images: Vec<f32>,
    /// Images in the batch.
    pub len: usize,
    /// Class of each image.
    pub labels: Vec<usize>,
    /// Context and target masks for the `len` images.
    pub masks: MaskBatch,
    /// Images found unreadable while preparing this batch (each file is
    /// reported by one batch only): name and reason.
    pub skipped: Vec<(String, String)>,
}

/// Images of a source known to be unreadable, by index, with the reason;
/// shared by the loader's threads. A run's checkpoint keeps them so a
/// resumed run does not decode them again.
#[derive(Debug, Default)]
pub struct BadImages(Mutex<BTreeMap<usize, String>>);

impl BadImages {
    /// Marks `index` unreadable; true the first time.
    fn insert(&self, index: usize, reason: &str) -> bool {
        let mut bad = self.0.lock().unwrap_or_else(|p| p.into_inner());
        bad.insert(index, reason.to_string()).is_none()
    }

    fn contains(&self, index: usize) -> bool {
        let bad = self.0.lock().unwrap_or_else(|p| p.into_inner());
        bad.contains_key(&index)
    }

    /// Marks every image of `source` named in `names` unreadable (those of
    /// a checkpoint's `skipped` list).
    pub fn preload(&self, source: &ImageSource, names: &[(String, String)]) {
        let by_name: BTreeMap<String, usize> =
            (0..source.len()).map(|i| (source.name(i), i)).collect();
        for (name, reason) in names {
            if let Some(&i) = by_name.get(name) {
                self.insert(i, reason);
            }
        }
    }

    /// How many images are known unreadable.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no image is known unreadable.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Candidates drawn for one unreadable image before the batch fails: with
/// a fraction `f` of the files unreadable, all fail with probability `f^64`.
const REPLACEMENT_TRIES: usize = 64;

/// The share of every batch one process of a data-parallel job prepares:
/// images `rank·B/ranks .. (rank + 1)·B/ranks` of each batch of `B`, with
/// their masks cut from the masks drawn for the whole batch. The order,
/// the augmentation and the masks stay keyed by the global position, so
/// the shares of all ranks together are exactly the single-process batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This process, `0..ranks`.
    pub rank: usize,
    /// Processes sharing each batch (they divide the batch size).
    pub ranks: usize,
}

impl Default for Shard {
    /// The whole batch: one process.
    fn default() -> Self {
        Self { rank: 0, ranks: 1 }
    }
}

impl Shard {
    /// The images of a batch of `batch` this share takes.
    pub fn range(&self, batch: usize) -> std::ops::Range<usize> {
        let per = batch / self.ranks.max(1);
        self.rank * per..(self.rank + 1) * per
    }
}

/// Settings of a [`Loader`].
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Images per batch (over all processes: the global batch).
    pub batch_size: usize,
    /// The share of each batch this process prepares.
    pub shard: Shard,
    /// Seed of the order and the augmentation.
    pub seed: u64,
    /// Decoding threads (at least 1).
    pub workers: usize,
    /// Batches prepared ahead (at least 1).
    pub prefetch: usize,
    /// The augmentation.
    pub transform: TrainTransform,
}

/// Batches per epoch: the last incomplete batch is dropped, as the
/// official loader does.
pub fn batches_per_epoch(len: usize, batch_size: usize) -> u64 {
    (len / batch_size.max(1)) as u64
}

/// The order of the images in `epoch`.
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut keyed_rng(seed, epoch, u64::MAX));
    order
}

fn keyed_rng(seed: u64, epoch: u64, item: u64) -> ChaCha8Rng {
    tagged_rng(seed, epoch, item, b"ijepa-ld")
}

pub(crate) fn tagged_rng(seed: u64, epoch: u64, item: u64, tag: &[u8; 8]) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&item.to_le_bytes());
    key[24..].copy_from_slice(tag);
    ChaCha8Rng::from_seed(key)
}

/// One image's pixels and label, or the newly found unreadable files and
/// why none could fill the slot.
type Slot = Result<(Vec<f32>, usize, Vec<(usize, String)>), Vec<(usize, String)>>;

/// Image `index` of `epoch`, augmented; if it cannot be read, the first
/// readable image of its replacement stream. Also returns the images found
/// unreadable on the way (not those already in `bad`).
fn fill_slot(
    source: &ImageSource,
    config: &LoaderConfig,
    bad: &BadImages,
    epoch: u64,
    index: usize,
) -> Slot {
    let mut found = vec![];
    let mut try_load = |i: usize| -> Option<image::RgbImage> {
        if bad.contains(i) {
            return None;
        }
        match source.load(i) {
            Ok(img) => Some(img),
            Err(e) => {
                let reason = e.cause();
                if bad.insert(i, &reason) {
                    found.push((i, reason));
                }
                None
            }
        }
    };
    if let Some(img) = try_load(index) {
        let mut rng = keyed_rng(config.seed, epoch, index as u64);
        return Ok((
            config.transform.apply(&img, &mut rng),
            source.label(index),
            found,
        ));
    }
    let mut rng = tagged_rng(config.seed, epoch, index as u64, b"ijepa-rp");
    for _ in 0..REPLACEMENT_TRIES {
        let candidate = rng.random_range(0..source.len());
        if let Some(img) = try_load(candidate) {
            let pixels = config.transform.apply(&img, &mut rng);
            return Ok((pixels, source.label(candidate), found));
        }
    }
    Err(found)
}

/// Batch `position` prepared on the calling thread (the loader's workers
/// call this; tests and tools may too): this process's share of it. `bad`
/// holds the images known to be unreadable and learns of new ones.
///
/// # Errors
/// An unreadable image for which no readable replacement was found, with
/// how many files are known unreadable.
pub fn prepare_batch(
    source: &ImageSource,
    sampler: &dyn MaskSampler,
    config: &LoaderConfig,
    order: &[usize],
    position: Position,
    bad: &BadImages,
) -> Result<Batch, DataError> {
    let bs = config.batch_size;
    let share = config.shard.range(bs);
    let mine = &order[position.batch as usize * bs..][share.clone()];
    let slots: Vec<Slot> = mine
        .par_iter()
        .map(|&i| fill_slot(source, config, bad, position.epoch, i))
        .collect();
    let (h, w) = config.transform.size();
    let mut images = Vec::with_capacity(share.len() * 3 * h * w);
    let (mut labels, mut skipped) = (vec![], vec![]);
    let name = |(i, reason): (usize, String)| (source.name(i), reason);
    for (slot, &index) in slots.into_iter().zip(mine) {
        match slot {
            Ok((pixels, label, found)) => {
                images.extend_from_slice(&pixels);
                labels.push(label);
                skipped.extend(found.into_iter().map(name));
            }
            Err(found) => {
                let example = found
                    .into_iter()
                    .next()
                    .map(name)
                    .map_or(String::new(), |(n, r)| format!("; e.g. {n}: {r}"));
                return Err(DataError::Unreadable(format!(
                    "{} cannot be read and none of {REPLACEMENT_TRIES} replacements drawn for it could: \
                     {} of the {} images are known unreadable{example}",
                    source.name(index),
                    bad.len(),
                    source.len()
                )));
            }
        }
    }
    let global = position.epoch * batches_per_epoch(order.len(), bs) + position.batch;
    let mut masks = sampler.sample(bs, global);
    if share.len() != bs {
        masks = masks.slice_images(share.start, share.len());
    }
    Ok(Batch {
        position,
        images,
        len: share.len(),
        labels,
        masks,
        skipped,
    })
}

/// Batches from a start position to the end of the last epoch, prepared by
/// a background thread (with `workers` decoding threads) at most
/// `prefetch` batches ahead. A batch that cannot be prepared ends the
/// stream with its error. Dropping the loader stops the thread.
pub struct Loader {
    rx: Option<Receiver<Result<Batch, DataError>>>,
    thread: Option<JoinHandle<()>>,
}

impl Loader {
    /// Starts preparing batches from `start` through epoch `epochs − 1`.
    ///
    /// # Errors
    /// A source with fewer images than one batch, or a worker pool that
    /// cannot be created.
    pub fn start(
        source: Arc<ImageSource>,
        sampler: Arc<dyn MaskSampler>,
        config: LoaderConfig,
        start: Position,
        epochs: u64,
        bad: Arc<BadImages>,
    ) -> Result<Self, DataError> {
        let per_epoch = batches_per_epoch(source.len(), config.batch_size);
        if per_epoch == 0 {
            return Err(DataError::InvalidTransform(format!(
                "{} images cannot fill one batch of {}",
                source.len(),
                config.batch_size
            )));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers.max(1))
            .thread_name(|i| format!("ijepa-data-{i}"))
            .build()
            .map_err(|e| DataError::InvalidTransform(format!("data worker threads: {e}")))?;
        let (tx, rx) = sync_channel(config.prefetch.max(1));
        let thread = std::thread::Builder::new()
            .name("ijepa-loader".into())
            .spawn(move || {
                for epoch in start.epoch..epochs {
                    let order = source.epoch_order(config.seed, epoch);
                    let first = if epoch == start.epoch { start.batch } else { 0 };
                    for batch in first..per_epoch {
                        let position = Position { epoch, batch };
                        let b = pool.install(|| {
                            prepare_batch(
                                &source,
                                sampler.as_ref(),
                                &config,
                                &order,
                                position,
                                &bad,
                            )
                        });
                        let failed = b.is_err();
                        if tx.send(b).is_err() || failed {
                            return; // the trainer stopped, or this batch ended the stream
                        }
                    }
                }
            })
            .map_err(|e| DataError::InvalidTransform(format!("loader thread: {e}")))?;
        Ok(Self {
            rx: Some(rx),
            thread: Some(thread),
        })
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel makes the thread's next send fail.
        self.rx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::SyntheticShapes;
    use ijepa_masking::{Grid, MultiBlock, MultiBlockConfig};

    fn setup() -> (Arc<ImageSource>, Arc<dyn MaskSampler>, LoaderConfig) {
        let source = Arc::new(ImageSource::Synthetic(SyntheticShapes::new(40, 20, 5)));
        let (sampler, mut config) = loader_setup(24, 6, 9);
        // Every random augmentation on: each is keyed like the crops.
        config.transform = config
            .transform
            .with_color_distortion(crate::data::ColorDistortion::new(1.0).unwrap())
            .with_blur();
        (source, sampler, config)
    }

    /// A 12×12 multi-block sampler and a loader of `batch_size` images
    /// cropped to `size`² (flips on), 2 workers.
    pub(crate) fn loader_setup(
        size: usize,
        batch_size: usize,
        seed: u64,
    ) -> (Arc<dyn MaskSampler>, LoaderConfig) {
        let sampler: Arc<dyn MaskSampler> = Arc::new(
            MultiBlock::new(Grid::new_2d(12, 12).unwrap(), MultiBlockConfig::default()).unwrap(),
        );
        let transform = TrainTransform::new(
            (size, size),
            (0.3, 1.0),
            (0.75, 4.0 / 3.0),
            true,
            [0.5; 3],
            [0.25; 3],
        )
        .unwrap();
        let config = LoaderConfig {
            batch_size,
            shard: Shard::default(),
            seed,
            workers: 2,
            prefetch: 1,
            transform,
        };
        (sampler, config)
    }

    fn start(source: Arc<ImageSource>, config: LoaderConfig, at: Position) -> Vec<Batch> {
        let (_, sampler, _) = setup();
        Loader::start(source, sampler, config, at, 3, Arc::default())
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_loader_started_midway_yields_what_a_full_one_yields_there() {
        let (source, _, config) = setup();
        let all = start(source.clone(), config.clone(), Position::default());
        assert_eq!(all.len(), 9); // 20 images / 6 → 3 batches per epoch, 3 epochs
        let resumed = start(source, config, Position { epoch: 1, batch: 2 });
        assert_eq!(resumed.len(), 4);
        for (a, b) in all[5..].iter().zip(&resumed) {
            assert_eq!(a.position, b.position);
            assert_eq!(a.images, b.images);
            assert_eq!(a.labels, b.labels);
            assert_eq!(a.masks.contexts[0].as_flat(), b.masks.contexts[0].as_flat());
        }
        // Epochs are shuffled differently; images are augmented differently.
        assert_ne!(all[0].labels, all[3].labels);
        assert_ne!(all[0].images, all[3].images);
    }

    /// 7 good PNGs and `broken` undecodable files in a labelled folder.
    #[test]
    fn the_shares_of_all_ranks_are_the_whole_batch() {
        let (source, sampler, config) = setup();
        let order = epoch_order(source.len(), config.seed, 1);
        let at = Position { epoch: 1, batch: 2 };
        let bad = BadImages::default();
        let whole = prepare_batch(&source, sampler.as_ref(), &config, &order, at, &bad).unwrap();
        let (mut images, mut labels) = (vec![], vec![]);
        let mut contexts: Vec<u32> = vec![];
        for rank in 0..3 {
            let mut c = config.clone();
            c.shard = Shard { rank, ranks: 3 };
            let share = prepare_batch(&source, sampler.as_ref(), &c, &order, at, &bad).unwrap();
            assert_eq!(share.len, 2);
            assert_eq!(share.masks.contexts[0].len(), whole.masks.contexts[0].len());
            images.extend(share.images);
            labels.extend(share.labels);
            contexts.extend(share.masks.contexts[0].as_flat());
            for (t, w) in share.masks.targets.iter().zip(&whole.masks.targets) {
                assert_eq!(t.as_flat(), w.slice_rows(2 * rank, 2).as_flat());
            }
        }
        assert_eq!(images, whole.images);
        assert_eq!(labels, whole.labels);
        assert_eq!(contexts, whole.masks.contexts[0].as_flat());
    }

    fn folder(name: &str, broken: usize) -> (std::path::PathBuf, Arc<ImageSource>) {
        let dir = std::env::temp_dir().join(format!("ijepa-loader-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a")).unwrap();
        for i in 0..7 {
            let (img, _) = SyntheticShapes::new(30, 7, 0).get(i);
            img.save(dir.join(format!("a/{i}.png"))).unwrap();
        }
        for i in 0..broken {
            std::fs::write(dir.join(format!("a/broken{i}.jpg")), b"not a jpeg").unwrap();
        }
        let source = ImageSource::Folder(crate::data::ImageFolder::open(&dir).unwrap());
        (dir, Arc::new(source))
    }

    #[test]
    fn unreadable_images_are_replaced_reported_once_and_resume_the_same() {
        let (dir, source) = folder("replace", 3);
        let (_, sampler, mut config) = setup();
        config.batch_size = 5; // 10 images: 2 full batches per epoch
        let run = |at: Position, bad: Arc<BadImages>| -> Vec<Batch> {
            Loader::start(source.clone(), sampler.clone(), config.clone(), at, 3, bad)
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let all = run(Position::default(), Arc::default());
        assert_eq!(all.len(), 6);
        for b in &all {
            assert_eq!((b.len, b.labels.len()), (5, 5), "batches stay full");
            assert_eq!(b.images.len(), 5 * 3 * 24 * 24);
            assert_eq!(b.masks.contexts[0].batch_size(), 5);
        }
        // Each broken file is reported once, by name, with a reason without its path.
        let mut reported: Vec<&(String, String)> = all.iter().flat_map(|b| &b.skipped).collect();
        reported.sort();
        assert_eq!(reported.len(), 3, "{reported:?}");
        for (name, reason) in &reported {
            assert!(name.contains("broken"), "{name}");
            assert!(
                reason.contains("cannot decode") && !reason.contains("broken"),
                "{reason}"
            );
        }
        // A loader that already knows the broken files (a resumed run) skips
        // decoding them and yields the same batches.
        let known = Arc::new(BadImages::default());
        let names: Vec<(String, String)> = reported.iter().map(|r| (*r).clone()).collect();
        known.preload(&source, &names);
        assert_eq!(known.len(), 3);
        let resumed = run(Position { epoch: 1, batch: 1 }, known);
        for (a, b) in all[3..].iter().zip(&resumed) {
            assert_eq!(a.images, b.images);
            assert_eq!(a.labels, b.labels);
            assert!(b.skipped.is_empty(), "reported again: {:?}", b.skipped);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_of_unreadable_images_is_an_error_that_says_so() {
        let dir = std::env::temp_dir().join(format!("ijepa-loader-{}-all-bad", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..6 {
            std::fs::write(dir.join(format!("{i}.png")), b"not a png").unwrap();
        }
        let source = ImageSource::Folder(crate::data::ImageFolder::open(&dir).unwrap());
        let (_, sampler, mut config) = setup();
        config.batch_size = 3;
        let order: Vec<usize> = (0..6).collect();
        let err = prepare_batch(
            &source,
            sampler.as_ref(),
            &config,
            &order,
            Position::default(),
            &BadImages::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("cannot be read")
                && err.contains("6 of the 6 images are known unreadable"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
