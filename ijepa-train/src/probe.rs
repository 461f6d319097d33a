//! Frozen-feature evaluation: the weighted k-nearest-neighbour probe.

use candle_core::{Device, Tensor, D};
use ijepa_encoder::{EncoderError, Result, TokenEncoder, VisionTransformer};

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
        return Err(EncoderError::InvalidConfig(format!(
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

/// Top-1 accuracy of a cosine k-NN classifier with temperature-weighted
/// votes (each of the `k` nearest training features votes for its class with
/// weight `exp(similarity / temperature)`), as in the DINO and
/// stable-pretraining probes.
///
/// `train` `(N, D)` and `test` `(M, D)` features; labels in `0..num_classes`.
pub fn knn_top1(
    train: &Tensor,
    train_labels: &[usize],
    test: &Tensor,
    test_labels: &[usize],
    k: usize,
    temperature: f64,
) -> Result<f64> {
    let (n, m) = (train.dim(0)?, test.dim(0)?);
    if n != train_labels.len() || m != test_labels.len() || n == 0 || m == 0 || k == 0 {
        return Err(EncoderError::InvalidConfig(format!(
            "k-NN probe: {n} train features for {} labels, {m} test features for {} labels, k = {k}",
            train_labels.len(),
            test_labels.len()
        )));
    }
    let normalise = |x: &Tensor| -> candle_core::Result<Tensor> {
        x.broadcast_div(
            &x.sqr()?
                .sum_keepdim(D::Minus1)?
                .sqrt()?
                .clamp(1e-12, f64::INFINITY)?,
        )
    };
    let sims = normalise(test)?
        .matmul(&normalise(train)?.t()?)?
        .to_vec2::<f32>()?;
    let num_classes = train_labels
        .iter()
        .chain(test_labels)
        .max()
        .map_or(0, |m| m + 1);
    let k = k.min(n);
    let mut correct = 0;
    for (row, &label) in sims.iter().zip(test_labels) {
        let mut order: Vec<usize> = (0..n).collect();
        order.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]));
        let mut votes = vec![0f64; num_classes];
        for &j in &order[..k] {
            votes[train_labels[j]] += (row[j] as f64 / temperature).exp();
        }
        let best = (0..num_classes)
            .max_by(|&a, &b| votes[a].total_cmp(&votes[b]))
            .unwrap_or(0);
        correct += usize::from(best == label);
    }
    Ok(correct as f64 / m as f64)
}

/// Top-1 accuracy of a linear classifier on frozen features: features
/// standardised with the training set's mean and std, then multinomial
/// logistic regression trained full-batch with AdamW (lr 1e-2, weight decay
/// 1e-4) for `steps` steps from zero weights — deterministic.
///
/// # Errors
/// Mismatched features and labels, or a model error.
pub fn linear_top1(
    train: &Tensor,
    train_labels: &[usize],
    test: &Tensor,
    test_labels: &[usize],
    steps: usize,
) -> Result<f64> {
    let (n, m) = (train.dim(0)?, test.dim(0)?);
    if n != train_labels.len() || m != test_labels.len() || n == 0 || m == 0 {
        return Err(EncoderError::InvalidConfig(format!(
            "linear probe: {n} train features for {} labels, {m} test features for {} labels",
            train_labels.len(),
            test_labels.len()
        )));
    }
    let classes = train_labels
        .iter()
        .chain(test_labels)
        .max()
        .map_or(1, |c| c + 1);
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
    let pred = logits(&xte)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let correct = pred
        .iter()
        .zip(test_labels)
        .filter(|(p, l)| **p as usize == **l)
        .count();
    Ok(correct as f64 / m as f64)
}

/// Seeds of the held-out synthetic probe sets (never a run's data: runs draw
/// images from `run.seed`, these from fixed seeds far from small integers).
const PROBE_SEEDS: (u64, u64) = (0x7072_6f62_6574_726e, 0x7072_6f62_6574_7374);

/// Top-1 accuracies of one encoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeScores {
    /// Weighted k-NN (k = 20, temperature 0.07).
    pub knn_top1: f64,
    /// Linear classifier ([`linear_top1`], 300 steps).
    pub linear_top1: f64,
}

/// k-NN and linear probes of `encoder`'s mean-pooled features on held-out
/// synthetic shapes: `train` labelled images to fit on, `test` images to
/// classify, drawn at the encoder's input size and normalised with
/// `mean`/`std`. Chance is 1/8.
///
/// # Errors
/// A model error.
pub fn synthetic_probe(
    encoder: &VisionTransformer,
    train: usize,
    test: usize,
    mean: [f32; 3],
    std: [f32; 3],
    device: &Device,
) -> Result<ProbeScores> {
    let (h, w) = encoder.config().image_size;
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
        Ok((
            pooled_features(encoder, &pixels, n, (h, w), 32, device)?,
            labels,
        ))
    };
    let (train_x, train_y) = set(PROBE_SEEDS.0, train)?;
    let (test_x, test_y) = set(PROBE_SEEDS.1, test)?;
    Ok(ProbeScores {
        knn_top1: knn_top1(&train_x, &train_y, &test_x, &test_y, 20, 0.07)?,
        linear_top1: linear_top1(&train_x, &train_y, &test_x, &test_y, 300)?,
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
        assert_eq!(knn_top1(&train, &yt, &test, &ye, 20, 0.07).unwrap(), 1.0);
        // Labels scrambled per sample: the neighbours vote at random.
        let scrambled: Vec<usize> = (0..200).map(|i| (i * 37 / 7) % 4).collect();
        let acc = knn_top1(&train, &scrambled, &test, &ye, 20, 0.07).unwrap();
        assert!(acc < 0.5, "{acc}");
    }

    #[test]
    fn mismatched_inputs_are_refused() {
        let (train, yt) = clusters(10, 0.1, 1);
        let err = knn_top1(&train, &yt[..5], &train, &yt, 3, 0.07)
            .unwrap_err()
            .to_string();
        assert!(err.contains("10 train features for 5 labels"), "{err}");
    }
}
