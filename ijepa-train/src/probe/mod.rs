//! Frozen-feature evaluation: the weighted k-nearest-neighbour probe and
//! the linear probe, both reading their features a chunk at a time
//! ([`Rows`]: in memory or in a feature file), so their memory does not grow
//! with the data set.

mod rows;

pub use rows::{fingerprint, FeatureFile, FeatureMeta, FeatureWriter, Rows};

use candle_core::{Device, Tensor, D};
use ijepa_encoder::{TokenEncoder, VisionTransformer};

use crate::error::{Result, TrainError};

/// Frozen features of `count` images given as normalised `(3, H, W)`
/// floats back to back: the encoder's patch tokens, mean-pooled (as the
/// paper probes the average-pooled target encoder), computed `batch` images
/// at a time on the encoder's device. Returns `(count, D)` on the CPU,
/// where the probes run.
///
/// # Errors
/// A pixel buffer that is not `count` images of `size`, or a model error.
pub fn pooled_features(
    encoder: &VisionTransformer,
    pixels: &[f32],
    count: usize,
    size: (usize, usize),
    batch: usize,
) -> Result<Tensor> {
    let per = 3 * size.0 * size.1;
    if pixels.len() != count * per || count == 0 {
        return Err(TrainError::Probe(format!(
            "features: {} floats are not {count} images of 3x{}x{}",
            pixels.len(),
            size.0,
            size.1
        )));
    }
    let mut out = vec![];
    for chunk in pixels.chunks(per * batch.max(1)) {
        let n = chunk.len() / per;
        let x = Tensor::from_slice(chunk, (n, 3, size.0, size.1), encoder.device())?;
        let tokens = encoder.forward(&x)?.detach();
        out.push(encoder.pool_patches(&tokens)?.to_device(&Device::Cpu)?);
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// Top-1 and top-5 accuracy (top-5 only with at least 5 classes).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Accuracy {
    /// Fraction of test samples whose best class is right.
    pub top1: f64,
    /// Fraction whose right class is among the best five.
    pub top5: Option<f64>,
}

fn check_inputs(
    what: &str,
    train: &dyn Rows,
    train_labels: &[usize],
    test: &dyn Rows,
    test_labels: &[usize],
) -> Result<usize> {
    let (n, m) = (train.rows(), test.rows());
    if n != train_labels.len() || m != test_labels.len() || n == 0 || m == 0 {
        return Err(TrainError::Probe(format!(
            "{what}: {n} train features for {} labels, {m} test features for {} labels",
            train_labels.len(),
            test_labels.len()
        )));
    }
    if train.dim() != test.dim() {
        return Err(TrainError::Probe(format!(
            "{what}: train features of {} values, test features of {}",
            train.dim(),
            test.dim()
        )));
    }
    Ok(train_labels
        .iter()
        .chain(test_labels)
        .max()
        .map_or(1, |c| c + 1))
}

/// Top-1 / top-5 counts, one score row at a time.
#[derive(Debug, Default)]
struct Counts {
    top1: usize,
    top5: usize,
    seen: usize,
}

impl Counts {
    fn add(&mut self, row: &[f64], label: usize) {
        // Classes scoring at least as high as the true one (ties go against
        // it), the true one itself not counted.
        let better = row
            .iter()
            .filter(|&&s| s >= row[label])
            .count()
            .saturating_sub(1);
        self.top1 += usize::from(better == 0);
        self.top5 += usize::from(better < 5);
        self.seen += 1;
    }

    fn accuracy(&self, classes: usize) -> Accuracy {
        let m = self.seen.max(1) as f64;
        Accuracy {
            top1: self.top1 as f64 / m,
            top5: (classes >= 5).then_some(self.top5 as f64 / m),
        }
    }
}

/// Rows one chunk of a probe reads at a time.
pub const CHUNK: usize = 4096;

/// Checks k-NN settings: `k ≥ 1` and a finite temperature `> 0` (the votes
/// are `exp(similarity / temperature)`).
///
/// # Errors
/// The setting out of range, named.
pub fn check_knn(k: usize, temperature: f64) -> Result<()> {
    if k == 0 {
        return Err(TrainError::Probe(
            "k-NN: k must be at least 1 (the usual protocol uses 20)".into(),
        ));
    }
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(TrainError::Probe(format!(
            "k-NN: the temperature {temperature} must be a finite number > 0 (e.g. 0.07)"
        )));
    }
    Ok(())
}

/// Checks linear-probe settings: at least one optimisation step.
///
/// # Errors
/// `steps` of 0.
pub fn check_linear(steps: usize) -> Result<()> {
    if steps == 0 {
        return Err(TrainError::Probe(
            "linear: steps must be at least 1 (300 is plenty)".into(),
        ));
    }
    Ok(())
}

/// A cosine k-NN classifier with temperature-weighted votes (each of the
/// `k` nearest training features votes for its class with weight
/// `exp(similarity / temperature)`), as in the DINO and stable-pretraining
/// probes (k = 20, temperature 0.07).
///
/// `train` `(N, D)` and `test` `(M, D)` features, read [`CHUNK`] rows at a
/// time (each training chunk once); memory: two chunks, their similarities
/// and the `k` best neighbours of every test row. Ties in similarity go to
/// the earlier training row. Labels in `0..classes`.
///
/// # Errors
/// Mismatched features and labels, settings [`check_knn`] refuses, or a
/// read or tensor error.
pub fn knn(
    train: &dyn Rows,
    train_labels: &[usize],
    test: &dyn Rows,
    test_labels: &[usize],
    k: usize,
    temperature: f64,
) -> Result<Accuracy> {
    knn_chunked(
        train,
        train_labels,
        test,
        test_labels,
        k,
        temperature,
        CHUNK,
    )
}

fn unit_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    x.broadcast_div(
        &x.sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::INFINITY)?,
    )
}

fn knn_chunked(
    train: &dyn Rows,
    train_labels: &[usize],
    test: &dyn Rows,
    test_labels: &[usize],
    k: usize,
    temperature: f64,
    chunk: usize,
) -> Result<Accuracy> {
    check_knn(k, temperature)?;
    let classes = check_inputs("k-NN", train, train_labels, test, test_labels)?;
    let (n, m) = (train.rows(), test.rows());
    let k = k.min(n);
    // The k best (similarity, training row) of every test row so far.
    let mut best: Vec<Vec<(f32, usize)>> = vec![Vec::with_capacity(2 * k); m];
    let order = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let mut scratch: Vec<(f32, usize)> = Vec::with_capacity(chunk.min(n));
    for t0 in (0..n).step_by(chunk) {
        let tlen = chunk.min(n - t0);
        let keys = unit_rows(&train.read(t0, tlen)?)?.t()?.contiguous()?;
        for q0 in (0..m).step_by(chunk) {
            let qlen = chunk.min(m - q0);
            let sims = unit_rows(&test.read(q0, qlen)?)?
                .matmul(&keys)?
                .to_vec2::<f32>()?;
            for (row, kept) in sims.iter().zip(&mut best[q0..q0 + qlen]) {
                // This chunk's k best, then merged with the k kept: each
                // list stays at most 2k long.
                scratch.clear();
                scratch.extend(row.iter().enumerate().map(|(j, &s)| (s, t0 + j)));
                if scratch.len() > k {
                    scratch.select_nth_unstable_by(k - 1, order);
                    scratch.truncate(k);
                }
                kept.extend_from_slice(&scratch);
                if kept.len() > k {
                    kept.select_nth_unstable_by(k - 1, order);
                    kept.truncate(k);
                }
            }
        }
    }
    let mut counts = Counts::default();
    for (kept, &label) in best.iter().zip(test_labels) {
        // exp((s − s_max)/T): the same ranking as exp(s/T), and the
        // nearest neighbour's vote is 1, so no temperature overflows.
        let top = kept
            .iter()
            .map(|&(s, _)| s as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        let mut votes = vec![0f64; classes];
        for &(s, j) in kept {
            votes[train_labels[j]] += ((s as f64 - top) / temperature).exp();
        }
        counts.add(&votes, label);
    }
    Ok(counts.accuracy(classes))
}

/// The linear probe's optimisation: AdamW (lr 1e-2, weight decay 1e-4 on
/// the weights) from zero weights, `steps` steps of `batch` training rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearSchedule {
    /// Optimizer steps (300 is plenty full-batch).
    pub steps: usize,
    /// Training rows per step; `None`: all of them (full batch, its gradient
    /// summed over chunks). Mini-batches are drawn without replacement from a
    /// seeded shuffle of the rows, reshuffled each epoch.
    pub batch: Option<usize>,
    /// Seed of the mini-batch order.
    pub seed: u64,
}

impl LinearSchedule {
    /// Full batch for `steps` steps (the default probe, deterministic).
    pub fn full(steps: usize) -> Self {
        Self {
            steps,
            batch: None,
            seed: 0,
        }
    }
}

/// Per-feature mean and std (population, + 1e-6) of `rows`, in two chunked
/// passes accumulated in f64.
fn moments(rows: &dyn Rows, chunk: usize) -> Result<(Tensor, Tensor)> {
    let (n, d) = (rows.rows(), rows.dim());
    let mut sum = vec![0f64; d];
    for s0 in (0..n).step_by(chunk) {
        for row in rows.read(s0, chunk.min(n - s0))?.to_vec2::<f32>()? {
            for (a, v) in sum.iter_mut().zip(row) {
                *a += f64::from(v);
            }
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
    let mut sq = vec![0f64; d];
    for s0 in (0..n).step_by(chunk) {
        for row in rows.read(s0, chunk.min(n - s0))?.to_vec2::<f32>()? {
            for ((a, v), m) in sq.iter_mut().zip(row).zip(&mean) {
                *a += (f64::from(v) - m).powi(2);
            }
        }
    }
    let std: Vec<f32> = sq
        .iter()
        .map(|s| ((s / n as f64).sqrt() + 1e-6) as f32)
        .collect();
    let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    Ok((
        Tensor::from_vec(mean, (1, d), &Device::Cpu)?,
        Tensor::from_vec(std, (1, d), &Device::Cpu)?,
    ))
}

/// A linear classifier on frozen features: features standardised with the
/// training set's mean and std, then multinomial logistic regression
/// trained as `schedule` says — deterministic for a given schedule. Rows are
/// read [`CHUNK`] at a time; memory: one chunk (or mini-batch), the weights
/// and their AdamW moments.
///
/// # Errors
/// Mismatched features and labels, `steps` or `batch` of 0, or a read or
/// tensor error.
pub fn linear(
    train: &dyn Rows,
    train_labels: &[usize],
    test: &dyn Rows,
    test_labels: &[usize],
    schedule: LinearSchedule,
) -> Result<Accuracy> {
    linear_chunked(train, train_labels, test, test_labels, schedule, CHUNK)
}

fn linear_chunked(
    train: &dyn Rows,
    train_labels: &[usize],
    test: &dyn Rows,
    test_labels: &[usize],
    schedule: LinearSchedule,
    chunk: usize,
) -> Result<Accuracy> {
    use candle_core::{DType, Var};
    check_linear(schedule.steps)?;
    if schedule.batch == Some(0) {
        return Err(TrainError::Probe(
            "linear: a mini-batch must hold at least 1 row".into(),
        ));
    }
    let classes = check_inputs("linear", train, train_labels, test, test_labels)?;
    let (n, dim) = (train.rows(), train.dim());
    let (mean, std) = moments(train, chunk)?;
    let z = |x: Tensor| -> Result<Tensor> { Ok(x.broadcast_sub(&mean)?.broadcast_div(&std)?) };
    let device = Device::Cpu;
    let w = Var::zeros((dim, classes), DType::F32, &device)?;
    let b = Var::zeros(classes, DType::F32, &device)?;
    let labels = |rows: &mut dyn Iterator<Item = usize>| -> Result<Tensor> {
        let v: Vec<u32> = rows.map(|i| train_labels[i] as u32).collect();
        let len = v.len();
        Ok(Tensor::from_vec(v, len, &device)?)
    };
    let mut opt = crate::optim::AdamW::new(
        vec![
            crate::optim::ParamGroup {
                params: vec![("w".into(), w.clone())],
                weight_decay: 1e-4,
                scheduled: false,
            },
            crate::optim::ParamGroup {
                params: vec![("b".into(), b.clone())],
                weight_decay: 0.0,
                scheduled: false,
            },
        ],
        1e-2,
    );
    let logits = |x: &Tensor| x.matmul(w.as_tensor())?.broadcast_add(b.as_tensor());
    // The gradient of the mean loss over `parts` (row chunks), summed
    // chunk by chunk: each chunk's mean loss weighted by its share.
    let gradient = |parts: &mut dyn Iterator<Item = Result<(Tensor, Tensor)>>,
                    total: usize|
     -> Result<candle_core::backprop::GradStore> {
        let mut sum: Option<(candle_core::backprop::GradStore, Tensor, Tensor)> = None;
        for part in parts {
            let (x, y) = part?;
            let share = x.dim(0)? as f64 / total as f64;
            let loss = (candle_nn::loss::cross_entropy(&logits(&x)?, &y)? * share)?;
            let g = loss.backward()?;
            let (gw, gb) = match (g.get(w.as_tensor()), g.get(b.as_tensor())) {
                (Some(gw), Some(gb)) => (gw.clone(), gb.clone()),
                _ => return Err(TrainError::Probe("linear: no gradient".into())),
            };
            sum = Some(match sum {
                None => (g, gw, gb),
                Some((store, sw, sb)) => (store, (sw + gw)?, (sb + gb)?),
            });
        }
        let (mut store, gw, gb) = sum.ok_or_else(|| TrainError::Probe("linear: no rows".into()))?;
        store.insert(w.as_tensor(), gw);
        store.insert(b.as_tensor(), gb);
        Ok(store)
    };
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(schedule.seed);
    let mut order: Vec<usize> = vec![];
    let mut at = 0;
    for _ in 0..schedule.steps {
        let grads = match schedule.batch {
            Some(batch) if batch < n => {
                let mut picked = Vec::with_capacity(batch);
                while picked.len() < batch {
                    if at == order.len() {
                        order = (0..n).collect();
                        rand::seq::SliceRandom::shuffle(&mut order[..], &mut rng);
                        at = 0;
                    }
                    let take = (batch - picked.len()).min(order.len() - at);
                    picked.extend_from_slice(&order[at..at + take]);
                    at += take;
                }
                let x = z(train.pick(&picked)?)?;
                let y = labels(&mut picked.iter().copied())?;
                gradient(&mut std::iter::once(Ok((x, y))), batch)?
            }
            _ => {
                let mut parts = (0..n).step_by(chunk).map(|s0| {
                    let len = chunk.min(n - s0);
                    Ok((z(train.read(s0, len)?)?, labels(&mut (s0..s0 + len))?))
                });
                gradient(&mut parts, n)?
            }
        };
        opt.step(&grads)?;
    }
    let mut counts = Counts::default();
    let m = test.rows();
    for s0 in (0..m).step_by(chunk) {
        let len = chunk.min(m - s0);
        let scores = logits(&z(test.read(s0, len)?)?)?
            .to_dtype(DType::F64)?
            .to_vec2::<f64>()?;
        for (row, &label) in scores.iter().zip(&test_labels[s0..s0 + len]) {
            counts.add(row, label);
        }
    }
    Ok(counts.accuracy(classes))
}

/// Features of image files ([`extract_files`]).
pub struct FileFeatures {
    /// `(n, D·last_layers)`: mean of the patch tokens (through `fc_norm`
    /// when the model has one and one layer is taken), layers concatenated.
    pub pooled: Tensor,
    /// `(n, T, D)`: every token of the last layer, when asked for.
    pub tokens: Option<Tensor>,
    /// Indices into the file list of the `n` images read, in order.
    pub read: Vec<usize>,
    /// Indices and reasons of the files that could not be read.
    pub skipped: Vec<(usize, String)>,
}

/// Hears of every finished batch (images done, `None`) and of every skipped
/// file (0, its path and the reason).
pub type Progress<'a> = dyn FnMut(usize, Option<(&std::path::Path, &str)>) + 'a;

/// Frozen features of image files prepared by `transform`, `batch` images
/// per forward pass (decoded in parallel): the `encoder`'s, or with `None`
/// the normalised pixels themselves, flattened (the raw-pixel baseline a
/// probe's result is read against). Unreadable files are skipped and
/// reported; `progress` hears of every finished batch (images done) and of
/// every skipped file.
///
/// # Errors
/// No file readable, or a model error.
pub fn extract_files(
    encoder: Option<&VisionTransformer>,
    transform: &crate::data::EvalTransform,
    files: &[std::path::PathBuf],
    batch: usize,
    last_layers: usize,
    keep_tokens: bool,
    progress: &mut Progress<'_>,
) -> Result<FileFeatures> {
    let (mut pooled, mut tokens) = (vec![], vec![]);
    let Extracted { read, skipped } = extract_files_into(
        encoder,
        transform,
        files,
        batch,
        last_layers,
        keep_tokens,
        progress,
        &mut |p, t| {
            pooled.push(p);
            tokens.extend(t);
            Ok(())
        },
    )?;
    Ok(FileFeatures {
        pooled: Tensor::cat(&pooled, 0)?,
        tokens: if keep_tokens && !tokens.is_empty() {
            Some(Tensor::cat(&tokens, 0)?)
        } else {
            None
        },
        read,
        skipped,
    })
}

/// Which files [`extract_files_into`] read.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// Indices into the file list of the images read, in order (one row
    /// each).
    pub read: Vec<usize>,
    /// Indices and reasons of the files that could not be read.
    pub skipped: Vec<(usize, String)>,
}

/// Where [`extract_files_into`] puts each batch's features: the pooled
/// `(n, D)` rows and, when asked for, the `(n, T, D)` tokens.
pub type Sink<'a> = dyn FnMut(Tensor, Option<Tensor>) -> Result<()> + 'a;

/// [`extract_files`], each batch's features handed to `sink` as soon as
/// they are computed (e.g. to a [`FeatureWriter`], so nothing but one batch
/// is held).
///
/// # Errors
/// No file readable, a model error, or the sink's error.
#[allow(clippy::too_many_arguments)]
pub fn extract_files_into(
    encoder: Option<&VisionTransformer>,
    transform: &crate::data::EvalTransform,
    files: &[std::path::PathBuf],
    batch: usize,
    last_layers: usize,
    keep_tokens: bool,
    progress: &mut Progress<'_>,
    sink: &mut Sink<'_>,
) -> Result<Extracted> {
    use rayon::prelude::*;
    let (h, w) = transform.size();
    let batch = batch.max(1);
    let (mut read, mut skipped) = (vec![], vec![]);
    for (c, chunk) in files.chunks(batch).enumerate() {
        let decoded: Vec<std::result::Result<Vec<f32>, String>> = chunk
            .par_iter()
            .map(|p| {
                crate::data::decode_rgb(p)
                    .map(|img| transform.apply(&img))
                    .map_err(|e| e.to_string())
            })
            .collect();
        let mut pixels = vec![];
        for (i, result) in decoded.into_iter().enumerate() {
            let index = c * batch + i;
            match result {
                Ok(chw) => {
                    pixels.extend(chw);
                    read.push(index);
                }
                Err(e) => {
                    progress(0, Some((&files[index], &e)));
                    skipped.push((index, e));
                }
            }
        }
        let n = pixels.len() / (3 * h * w);
        if n > 0 {
            let Some(encoder) = encoder else {
                sink(
                    Tensor::from_vec(pixels, (n, 3 * h * w), &Device::Cpu)?,
                    None,
                )?;
                progress(chunk.len(), None);
                continue;
            };
            let images = Tensor::from_vec(pixels, (n, 3, h, w), encoder.device())?;
            // Features come back to the host, where the probes and files are.
            let host = |t: &Tensor| t.to_device(&Device::Cpu);
            if last_layers <= 1 {
                let t = encoder.forward(&images)?.detach();
                let tokens = keep_tokens.then(|| host(&t)).transpose()?;
                sink(host(&encoder.pool_patches(&t)?)?, tokens)?;
            } else {
                let layers = encoder.forward_last_layers(&images, last_layers)?;
                let prefix = encoder.num_prefix_tokens();
                let means = layers
                    .iter()
                    .map(|t| t.narrow(1, prefix, t.dim(1)? - prefix)?.mean(1))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let last = &layers[layers.len() - 1];
                let tokens = keep_tokens.then(|| host(last)).transpose()?;
                sink(host(&Tensor::cat(&means, 1)?.detach())?, tokens)?;
            }
        }
        progress(chunk.len(), None);
    }
    if read.is_empty() {
        return Err(TrainError::Probe(format!(
            "none of the {} images could be read",
            files.len()
        )));
    }
    Ok(Extracted { read, skipped })
}

/// At most `max` of `len` items, spread evenly (every ⌈len/max⌉-th), so a
/// class-sorted folder keeps every class.
pub fn spread(len: usize, max: usize) -> Vec<usize> {
    let step = len.div_ceil(max.max(1)).max(1);
    (0..len).step_by(step).collect()
}

/// Features and labels of (at most `max` of) a labelled folder's images,
/// for a probe.
///
/// # Errors
/// An unreadable folder or a model error.
pub fn folder_features(
    encoder: &VisionTransformer,
    transform: &crate::data::EvalTransform,
    folder: &crate::data::ImageFolder,
    max: usize,
) -> Result<(Tensor, Vec<usize>)> {
    let picked = spread(folder.files().len(), max);
    let files: Vec<std::path::PathBuf> =
        picked.iter().map(|&i| folder.files()[i].clone()).collect();
    let f = extract_files(
        Some(encoder),
        transform,
        &files,
        64,
        1,
        false,
        &mut |_, _| {},
    )?;
    let labels = f.read.iter().map(|&i| folder.label(picked[i])).collect();
    Ok((f.pooled, labels))
}

/// Seeds of the held-out synthetic probe sets (never a run's data: runs draw
/// images from `run.seed`, these from fixed seeds far from small integers).
const PROBE_SEEDS: (u64, u64) = (0x7072_6f62_6574_726e, 0x7072_6f62_6574_7374);

/// Both probes of one encoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeScores {
    /// Weighted k-NN (k = 20, temperature 0.07).
    pub knn: Accuracy,
    /// Linear classifier ([`linear`], 300 steps).
    pub linear: Accuracy,
}

/// k-NN and linear probes of `encoder`'s mean-pooled features on held-out
/// synthetic shapes: `train` labelled images to fit on, `test` images to
/// classify, drawn at `size` (the encoder's input size) and normalised
/// with `mean`/`std`; with no encoder, of the normalised pixels themselves
/// (the raw-pixel baseline). Chance is 1/8. The encoder runs on its
/// device, the probes on the CPU.
///
/// # Errors
/// A model error.
pub fn synthetic_probe(
    encoder: Option<&VisionTransformer>,
    size: (usize, usize),
    train: usize,
    test: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<ProbeScores> {
    let (h, w) = size;
    let set = |seed: u64, n: usize| -> Result<(Tensor, Vec<usize>)> {
        let data = crate::data::SyntheticShapes::new(h.max(w) as u32, n, seed);
        let mut pixels = Vec::with_capacity(n * 3 * h * w);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let (img, label) = data.get(i);
            let img = image::imageops::crop_imm(&img, 0, 0, w as u32, h as u32).to_image();
            pixels.extend(crate::data::normalise(&img, mean, std));
            labels.push(label);
        }
        let features = match encoder {
            Some(e) => pooled_features(e, &pixels, n, (h, w), 32)?,
            None => Tensor::from_vec(pixels, (n, 3 * h * w), &Device::Cpu)?,
        };
        Ok((features, labels))
    };
    let (train_x, train_y) = set(PROBE_SEEDS.0, train)?;
    let (test_x, test_y) = set(PROBE_SEEDS.1, test)?;
    Ok(ProbeScores {
        knn: knn(&train_x, &train_y, &test_x, &test_y, 20, 0.07)?,
        linear: linear(
            &train_x,
            &train_y,
            &test_x,
            &test_y,
            LinearSchedule::full(300),
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Features = class direction + noise.
    fn clusters(n: usize, noise: f32, seed: u64) -> (Tensor, Vec<usize>) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let labels: Vec<usize> = (0..n).map(|i| i % 4).collect();
        let data: Vec<f32> = labels
            .iter()
            .flat_map(|&l| {
                let mut v = [0f32; 8];
                v[l] = 1.0;
                v.map(|x| x + noise * rng.random_range(-1.0f32..1.0))
            })
            .collect();
        (
            Tensor::from_vec(data, (n, 8), &Device::Cpu).unwrap(),
            labels,
        )
    }

    #[test]
    fn separable_features_are_classified_and_random_labels_are_not() {
        let (train, yt) = clusters(200, 0.3, 1);
        let (test, ye) = clusters(100, 0.3, 2);
        let acc = knn(&train, &yt, &test, &ye, 20, 0.07).unwrap();
        assert_eq!((acc.top1, acc.top5), (1.0, None)); // 4 classes: no top-5
        assert_eq!(
            linear(&train, &yt, &test, &ye, LinearSchedule::full(300))
                .unwrap()
                .top1,
            1.0
        );
        // Labels scrambled per sample: the neighbours vote at random.
        let scrambled: Vec<usize> = (0..200).map(|i| (i * 37 / 7) % 4).collect();
        let acc = knn(&train, &scrambled, &test, &ye, 20, 0.07).unwrap().top1;
        assert!(acc < 0.5, "{acc}");
        let acc = linear(&train, &scrambled, &test, &ye, LinearSchedule::full(300))
            .unwrap()
            .top1;
        assert!(acc < 0.5, "{acc}");
    }

    #[test]
    fn any_positive_temperature_ranks_the_votes_right() {
        let (train, yt) = clusters(200, 0.3, 1);
        let (test, ye) = clusters(100, 0.3, 2);
        // exp(s/T) overflowed from T ≈ 0.0014 (s ≤ 1) and ranked nothing.
        for t in [1e-30, 1e-5, 0.001, 0.005, 0.07, 10.0] {
            let acc = knn(&train, &yt, &test, &ye, 20, t).unwrap();
            assert_eq!(acc.top1, 1.0, "temperature {t}");
        }
    }

    #[test]
    fn non_finite_features_are_refused_by_row() {
        let (train, yt) = clusters(50, 0.3, 1);
        let (test, ye) = clusters(20, 0.3, 2);
        let mut bad = train.to_vec2::<f32>().unwrap();
        bad[37][3] = f32::NAN;
        let bad = Tensor::new(bad, &Device::Cpu).unwrap();
        for err in [
            knn(&bad, &yt, &test, &ye, 5, 0.07).unwrap_err().to_string(),
            linear(&bad, &yt, &test, &ye, LinearSchedule::full(5))
                .unwrap_err()
                .to_string(),
        ] {
            assert!(err.contains("row 37 holds NaN or infinite values"), "{err}");
        }
    }

    #[test]
    fn mismatched_inputs_are_refused() {
        let (train, yt) = clusters(10, 0.1, 1);
        let err = knn(&train, &yt[..5], &train, &yt, 3, 0.07)
            .unwrap_err()
            .to_string();
        assert!(err.contains("10 train features for 5 labels"), "{err}");
    }

    #[test]
    fn top5_counts_the_true_class_among_the_best_five() {
        let scores = [
            [0.9, 0.1, 0.0, 0.0, 0.0, 0.0], // label 0: top-1
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], // label 4: 5th best
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], // label 5: 6th best
            [0.5, 0.5, 0.0, 0.0, 0.0, 0.0], // label 1: tied first, counted as a miss
        ];
        let mut counts = Counts::default();
        for (row, label) in scores.iter().zip([0, 4, 5, 1]) {
            counts.add(row, label);
        }
        let acc = counts.accuracy(6);
        assert_eq!((acc.top1, acc.top5), (0.25, Some(0.75)));
    }

    /// 10 classes in 16 dimensions, noisy enough that probes make mistakes
    /// (so equal accuracies say something).
    fn hard(n: usize, seed: u64) -> (Tensor, Vec<usize>) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let labels: Vec<usize> = (0..n).map(|i| (i * 7 + i / 3) % 10).collect();
        let data: Vec<f32> = labels
            .iter()
            .flat_map(|&l| {
                let mut v = [0f32; 16];
                v[l] = 1.0;
                v[(l + 3) % 16] = 0.5;
                v.map(|x| 3.0 + x + 0.9 * rng.random_range(-1.0f32..1.0))
            })
            .collect();
        (
            Tensor::from_vec(data, (n, 16), &Device::Cpu).unwrap(),
            labels,
        )
    }

    #[test]
    fn chunked_probes_equal_the_whole_set_at_once() {
        let (train, yt) = hard(300, 3);
        let (test, ye) = hard(150, 4);
        // k-NN: the same neighbours whatever the chunks.
        let whole = knn_chunked(&train, &yt, &test, &ye, 20, 0.07, 1 << 20).unwrap();
        for chunk in [1, 7, 64] {
            let c = knn_chunked(&train, &yt, &test, &ye, 20, 0.07, chunk).unwrap();
            assert_eq!(c, whole, "chunks of {chunk}");
        }
        assert!(whole.top1 > 0.3 && whole.top1 < 1.0, "{whole:?}");
        // Linear, full batch: the gradient summed over chunks is the
        // gradient of the whole set (up to float summation order).
        let full = LinearSchedule::full(100);
        let whole = linear_chunked(&train, &yt, &test, &ye, full, 1 << 20).unwrap();
        for chunk in [7, 64] {
            let c = linear_chunked(&train, &yt, &test, &ye, full, chunk).unwrap();
            assert_eq!(c, whole, "chunks of {chunk}");
        }
        assert!(whole.top1 > 0.3 && whole.top1 < 1.0, "{whole:?}");
        // A mini-batch as large as the set is the full batch; smaller ones
        // learn too, the same for the same seed.
        let mut s = full;
        s.batch = Some(300);
        assert_eq!(
            linear_chunked(&train, &yt, &test, &ye, s, 64).unwrap(),
            whole
        );
        s.batch = Some(32);
        let mini = linear(&train, &yt, &test, &ye, s).unwrap();
        assert_eq!(linear(&train, &yt, &test, &ye, s).unwrap(), mini);
        assert!(mini.top1 > 0.8 * whole.top1, "{mini:?} vs {whole:?}");
        s.batch = Some(0);
        assert!(linear(&train, &yt, &test, &ye, s).is_err());
    }

    #[test]
    fn a_feature_file_gives_what_the_tensor_gives() {
        let dir = std::env::temp_dir().join(format!("ijepa-probe-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (train, yt) = hard(200, 5);
        let (test, ye) = hard(60, 6);
        let mut w = FeatureWriter::create(&dir, "train").unwrap();
        for s0 in (0..200).step_by(64) {
            w.append(&train.narrow(0, s0, 64.min(200 - s0)).unwrap())
                .unwrap();
        }
        let file = w.finish(yt.clone(), 0, "test".into()).unwrap();
        let full = LinearSchedule::full(50);
        assert_eq!(
            knn(&file, &yt, &test, &ye, 10, 0.1).unwrap(),
            knn(&train, &yt, &test, &ye, 10, 0.1).unwrap()
        );
        assert_eq!(
            linear(&file, &yt, &test, &ye, full).unwrap(),
            linear(&train, &yt, &test, &ye, full).unwrap()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
