//! Frozen-feature evaluation: the weighted k-nearest-neighbour probe.

use candle_core::{Tensor, D};
use ijepa_encoder::{EncoderError, Result};

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
