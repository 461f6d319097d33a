//! Frozen-feature evaluation: the weighted k-nearest-neighbour probe.

use candle_core::{Device, Tensor, D};
use ijepa_encoder::{TokenEncoder, VisionTransformer};

use crate::error::{Result, TrainError};

/// Frozen features of `count` images given as normalised `(3, H, W)`
/// floats back to back: the encoder's patch tokens, mean-pooled (as the
/// paper probes the average-pooled target encoder), computed `batch` images
/// at a time. Returns `(count, D)`.
///
/// # Errors
/// A pixel buffer that is not `count` images of `size`, or a model error.
pub fn pooled_features(
    encoder: &VisionTransformer,
    pixels: &[f32],
    count: usize,
    size: (usize, usize),
    batch: usize,
    device: &Device,
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
        let x = Tensor::from_slice(chunk, (n, 3, size.0, size.1), device)?;
        let tokens = encoder.forward(&x)?.detach();
        out.push(encoder.pool_patches(&tokens)?);
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
    train: &Tensor,
    train_labels: &[usize],
    test: &Tensor,
    test_labels: &[usize],
) -> Result<usize> {
    let (n, m) = (train.dim(0)?, test.dim(0)?);
    if n != train_labels.len() || m != test_labels.len() || n == 0 || m == 0 {
        return Err(TrainError::Probe(format!(
            "{what}: {n} train features for {} labels, {m} test features for {} labels",
            train_labels.len(),
            test_labels.len()
        )));
    }
    Ok(train_labels
        .iter()
        .chain(test_labels)
        .max()
        .map_or(1, |c| c + 1))
}

/// Top-1/top-5 from one score row per test sample.
fn accuracy(scores: &[Vec<f64>], labels: &[usize], classes: usize) -> Accuracy {
    let (mut top1, mut top5) = (0usize, 0usize);
    for (row, &label) in scores.iter().zip(labels) {
        // Classes scoring at least as high as the true one (ties go against
        // it), the true one itself not counted.
        let better = row
            .iter()
            .filter(|&&s| s >= row[label])
            .count()
            .saturating_sub(1);
        top1 += usize::from(better == 0);
        top5 += usize::from(better < 5);
    }
    let m = labels.len() as f64;
    Accuracy {
        top1: top1 as f64 / m,
        top5: (classes >= 5).then_some(top5 as f64 / m),
    }
}

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
/// `train` `(N, D)` and `test` `(M, D)` features; labels in `0..classes`.
///
/// # Errors
/// Mismatched features and labels, settings [`check_knn`] refuses, or a
/// tensor error.
pub fn knn(
    train: &Tensor,
    train_labels: &[usize],
    test: &Tensor,
    test_labels: &[usize],
    k: usize,
    temperature: f64,
) -> Result<Accuracy> {
    check_knn(k, temperature)?;
    let classes = check_inputs("k-NN", train, train_labels, test, test_labels)?;
    let normalise = |x: &Tensor| -> candle_core::Result<Tensor> {
        x.broadcast_div(
            &x.sqr()?
                .sum_keepdim(D::Minus1)?
                .sqrt()?
                .clamp(1e-12, f64::INFINITY)?,
        )
    };
    let n = train.dim(0)?;
    let k = k.min(n);
    let mut scores = Vec::with_capacity(test.dim(0)?);
    // Chunks of test samples keep the similarity matrix small.
    let train_n = normalise(train)?.t()?.contiguous()?;
    let test_n = normalise(test)?;
    for start in (0..test.dim(0)?).step_by(1024) {
        let len = 1024.min(test.dim(0)? - start);
        let sims = test_n
            .narrow(0, start, len)?
            .matmul(&train_n)?
            .to_vec2::<f32>()?;
        for row in sims {
            let mut order: Vec<usize> = (0..n).collect();
            order.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]));
            let mut votes = vec![0f64; classes];
            for &j in &order[..k] {
                votes[train_labels[j]] += (row[j] as f64 / temperature).exp();
            }
            scores.push(votes);
        }
    }
    Ok(accuracy(&scores, test_labels, classes))
}

/// A linear classifier on frozen features: features standardised with the
/// training set's mean and std, then multinomial logistic regression
/// trained full-batch with AdamW (lr 1e-2, weight decay 1e-4) for `steps`
/// steps (300 is plenty) from zero weights — deterministic.
///
/// # Errors
/// Mismatched features and labels, `steps` of 0, or a tensor error.
pub fn linear(
    train: &Tensor,
    train_labels: &[usize],
    test: &Tensor,
    test_labels: &[usize],
    steps: usize,
) -> Result<Accuracy> {
    check_linear(steps)?;
    let classes = check_inputs("linear", train, train_labels, test, test_labels)?;
    let n = train.dim(0)?;
    let mean = train.mean_keepdim(0)?;
    let std = (train.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?.sqrt()? + 1e-6)?;
    let z = |x: &Tensor| x.broadcast_sub(&mean)?.broadcast_div(&std);
    let (xtr, xte) = (z(train)?.detach(), z(test)?.detach());
    let dim = train.dim(1)?;
    let device = train.device();
    let w = candle_core::Var::zeros((dim, classes), candle_core::DType::F32, device)?;
    let b = candle_core::Var::zeros(classes, candle_core::DType::F32, device)?;
    let ytr = Tensor::from_vec(
        train_labels.iter().map(|&l| l as u32).collect::<Vec<_>>(),
        n,
        device,
    )?;
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
    for _ in 0..steps {
        let loss = candle_nn::loss::cross_entropy(&logits(&xtr)?, &ytr)?;
        opt.step(&loss.backward()?)?;
    }
    let scores: Vec<Vec<f64>> = logits(&xte)?
        .to_dtype(candle_core::DType::F64)?
        .to_vec2::<f64>()?;
    Ok(accuracy(&scores, test_labels, classes))
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
    use rayon::prelude::*;
    let (h, w) = transform.size();
    let batch = batch.max(1);
    let (mut pooled, mut tokens, mut read, mut skipped) = (vec![], vec![], vec![], vec![]);
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
                pooled.push(Tensor::from_vec(pixels, (n, 3 * h * w), &Device::Cpu)?);
                progress(chunk.len(), None);
                continue;
            };
            let images = Tensor::from_vec(pixels, (n, 3, h, w), encoder.device())?;
            if last_layers <= 1 {
                let t = encoder.forward(&images)?.detach();
                pooled.push(encoder.pool_patches(&t)?);
                if keep_tokens {
                    tokens.push(t);
                }
            } else {
                let layers = encoder.forward_last_layers(&images, last_layers)?;
                let prefix = encoder.num_prefix_tokens();
                let means = layers
                    .iter()
                    .map(|t| t.narrow(1, prefix, t.dim(1)? - prefix)?.mean(1))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                pooled.push(Tensor::cat(&means, 1)?.detach());
                if keep_tokens {
                    tokens.push(layers[layers.len() - 1].detach());
                }
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
/// (the raw-pixel baseline). Chance is 1/8.
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
    device: &Device,
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
            Some(e) => pooled_features(e, &pixels, n, (h, w), 32, device)?,
            None => Tensor::from_vec(pixels, (n, 3 * h * w), device)?,
        };
        Ok((features, labels))
    };
    let (train_x, train_y) = set(PROBE_SEEDS.0, train)?;
    let (test_x, test_y) = set(PROBE_SEEDS.1, test)?;
    Ok(ProbeScores {
        knn: knn(&train_x, &train_y, &test_x, &test_y, 20, 0.07)?,
        linear: linear(&train_x, &train_y, &test_x, &test_y, 300)?,
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
        assert_eq!(linear(&train, &yt, &test, &ye, 300).unwrap().top1, 1.0);
        // Labels scrambled per sample: the neighbours vote at random.
        let scrambled: Vec<usize> = (0..200).map(|i| (i * 37 / 7) % 4).collect();
        let acc = knn(&train, &scrambled, &test, &ye, 20, 0.07).unwrap().top1;
        assert!(acc < 0.5, "{acc}");
        let acc = linear(&train, &scrambled, &test, &ye, 300).unwrap().top1;
        assert!(acc < 0.5, "{acc}");
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
        let scores = vec![
            vec![0.9, 0.1, 0.0, 0.0, 0.0, 0.0], // label 0: top-1
            vec![0.9, 0.8, 0.7, 0.6, 0.5, 0.4], // label 4: 5th best
            vec![0.9, 0.8, 0.7, 0.6, 0.5, 0.4], // label 5: 6th best
            vec![0.5, 0.5, 0.0, 0.0, 0.0, 0.0], // label 1: tied first, counted as a miss
        ];
        let acc = accuracy(&scores, &[0, 4, 5, 1], 6);
        assert_eq!((acc.top1, acc.top5), (0.25, Some(0.75)));
    }
}
