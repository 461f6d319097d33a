//! The pretraining loader: shuffled, augmented, masked batches prepared on
//! worker threads ahead of the training step.
//!
//! Everything random is keyed, never carried: the order of epoch `e` comes
//! from `(seed, e)`, the augmentation of an image from `(seed, e, image)`
//! and the masks of a batch from the sampler's `(seed, batch number)`. A
//! loader started at any `(epoch, batch)` therefore yields exactly what an
//! uninterrupted one yields there — what makes resuming bit-exact.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use ijepa_masking::{MaskBatch, MaskSampler};
use rand::seq::SliceRandom;
use rand::SeedableRng;
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
    /// Images `(n, 3, H, W)`, channel-major, normalised; `n` is the batch
    /// size minus the images that could not be read.
    pub images: Vec<f32>,
    /// Images in the batch.
    pub len: usize,
    /// Class of each image.
    pub labels: Vec<usize>,
    /// Context and target masks for the `len` images.
    pub masks: MaskBatch,
    /// Images that could not be read: name and reason.
    pub skipped: Vec<(String, String)>,
}

/// Settings of a [`Loader`].
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch_size: usize,
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
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&item.to_le_bytes());
    key[24..].copy_from_slice(b"ijepa-ld");
    ChaCha8Rng::from_seed(key)
}

/// Batch `position` prepared on the calling thread (the loader's workers
/// call this; tests and tools may too).
pub fn prepare_batch(
    source: &ImageSource,
    sampler: &dyn MaskSampler,
    config: &LoaderConfig,
    order: &[usize],
    position: Position,
) -> Batch {
    let bs = config.batch_size;
    let start = position.batch as usize * bs;
    // Per image: its pixels and label, or its name and why it was skipped.
    type Prepared = Result<(Vec<f32>, usize), (String, String)>;
    let items: Vec<Prepared> = order[start..start + bs]
        .par_iter()
        .map(|&i| {
            let img = source
                .load(i)
                .map_err(|e: DataError| (source.name(i), e.to_string()))?;
            let mut rng = keyed_rng(config.seed, position.epoch, i as u64);
            Ok((config.transform.apply(&img, &mut rng), source.label(i)))
        })
        .collect();
    let mut images =
        Vec::with_capacity(bs * 3 * config.transform.size().0 * config.transform.size().1);
    let (mut labels, mut skipped) = (vec![], vec![]);
    for item in items {
        match item {
            Ok((pixels, label)) => {
                images.extend_from_slice(&pixels);
                labels.push(label);
            }
            Err(bad) => skipped.push(bad),
        }
    }
    let global = position.epoch * batches_per_epoch(order.len(), bs) + position.batch;
    let len = labels.len();
    Batch {
        position,
        images,
        len,
        labels,
        masks: sampler.sample(len.max(1), global),
        skipped,
    }
}

/// Batches from a start position to the end of the last epoch, prepared by
/// a background thread (with `workers` decoding threads) at most
/// `prefetch` batches ahead. Dropping the loader stops the thread.
pub struct Loader {
    rx: Option<Receiver<Batch>>,
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
                    let order = epoch_order(source.len(), config.seed, epoch);
                    let first = if epoch == start.epoch { start.batch } else { 0 };
                    for batch in first..per_epoch {
                        let position = Position { epoch, batch };
                        let b = pool.install(|| {
                            prepare_batch(&source, sampler.as_ref(), &config, &order, position)
                        });
                        if tx.send(b).is_err() {
                            return; // the trainer stopped
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
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
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
mod tests {
    use super::*;
    use crate::data::SyntheticShapes;
    use ijepa_masking::{Grid, MultiBlock, MultiBlockConfig};

    fn setup() -> (Arc<ImageSource>, Arc<dyn MaskSampler>, LoaderConfig) {
        let source = Arc::new(ImageSource::Synthetic(SyntheticShapes::new(40, 20, 5)));
        let sampler: Arc<dyn MaskSampler> = Arc::new(
            MultiBlock::new(Grid::new_2d(12, 12).unwrap(), MultiBlockConfig::default()).unwrap(),
        );
        let transform = TrainTransform::new(
            (24, 24),
            (0.3, 1.0),
            (0.75, 4.0 / 3.0),
            true,
            [0.5; 3],
            [0.25; 3],
        )
        .unwrap();
        let config = LoaderConfig {
            batch_size: 6,
            seed: 9,
            workers: 2,
            prefetch: 1,
            transform,
        };
        (source, sampler, config)
    }

    #[test]
    fn a_loader_started_midway_yields_what_a_full_one_yields_there() {
        let (source, sampler, config) = setup();
        let all: Vec<Batch> = Loader::start(
            source.clone(),
            sampler.clone(),
            config.clone(),
            Position::default(),
            3,
        )
        .unwrap()
        .collect();
        assert_eq!(all.len(), 9); // 20 images / 6 → 3 batches per epoch, 3 epochs
        let resumed: Vec<Batch> =
            Loader::start(source, sampler, config, Position { epoch: 1, batch: 2 }, 3)
                .unwrap()
                .collect();
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

    #[test]
    fn unreadable_images_are_skipped_and_named() {
        let dir = std::env::temp_dir().join(format!("ijepa-loader-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a")).unwrap();
        for i in 0..3 {
            let (img, _) = SyntheticShapes::new(30, 3, 0).get(i);
            img.save(dir.join(format!("a/{i}.png"))).unwrap();
        }
        std::fs::write(dir.join("a/broken.jpg"), b"not a jpeg").unwrap();
        let source = ImageSource::Folder(crate::data::ImageFolder::open(&dir).unwrap());
        let (_, sampler, mut config) = setup();
        config.batch_size = 4;
        let order: Vec<usize> = (0..4).collect();
        let b = prepare_batch(
            &source,
            sampler.as_ref(),
            &config,
            &order,
            Position::default(),
        );
        assert_eq!(b.len, 3);
        assert_eq!(b.images.len(), 3 * 3 * 24 * 24);
        assert_eq!(b.masks.contexts[0].batch_size(), 3);
        assert_eq!(b.skipped.len(), 1);
        assert!(b.skipped[0].0.ends_with("broken.jpg"), "{:?}", b.skipped);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
