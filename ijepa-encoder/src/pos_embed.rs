//! Position embeddings: the fixed 2-D sin-cos table of I-JEPA, and timm's
//! resampling of a table to another patch grid.

use candle_core::{Device, Tensor};

use crate::error::Result;

/// The 2-D sin-cos table, `(rows·cols, dim)` row-major, computed in f64.
///
/// With `ω_k = 10000^(−4k/dim)` for `k < dim/4`, the patch at (row `i`, col
/// `j`) gets `[sin jω | cos jω | sin iω | cos iω]` when `column_first` (the
/// official encoder and predictor), `[sin iω | cos iω | sin jω | cos jω]`
/// otherwise (stable-pretraining's predictor).
///
/// # Panics
/// If `dim` is not a multiple of 4 (a programming error: configurations are
/// validated before).
pub fn sincos_2d(rows: usize, cols: usize, dim: usize, column_first: bool) -> Vec<f32> {
    assert!(
        dim.is_multiple_of(4),
        "sin-cos embedding width {dim} is not a multiple of 4"
    );
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / quarter as f64))
        .collect();
    let mut table = Vec::with_capacity(rows * cols * dim);
    for i in 0..rows {
        for j in 0..cols {
            let (first, second) = if column_first { (j, i) } else { (i, j) };
            for pos in [first as f64, second as f64] {
                table.extend(omega.iter().map(|w| (pos * w).sin() as f32));
                table.extend(omega.iter().map(|w| (pos * w).cos() as f32));
            }
        }
    }
    table
}

/// Bicubic kernel with `a = −0.5`, the one PyTorch (and PIL) use when
/// antialiasing.
pub fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// `(n_out, n_in)` weights of PyTorch's `interpolate(mode='bicubic',
/// antialias=True, align_corners=False)` along one axis: the kernel is
/// widened by the scale when shrinking, and each row is normalised.
fn axis_weights(n_in: usize, n_out: usize) -> Vec<f64> {
    let scale = n_in as f64 / n_out as f64;
    let (support, inv_scale) = if scale >= 1.0 {
        (2.0 * scale, 1.0 / scale)
    } else {
        (2.0, 1.0)
    };
    let mut w = vec![0.0; n_out * n_in];
    for i in 0..n_out {
        let centre = scale * (i as f64 + 0.5);
        // Truncation toward zero, as the C++ `(int64_t)` cast.
        let lo = ((centre - support + 0.5).trunc() as i64).max(0) as usize;
        let hi = ((centre + support + 0.5).trunc() as usize).min(n_in);
        let row = &mut w[i * n_in..(i + 1) * n_in];
        for (j, slot) in row.iter_mut().enumerate().take(hi).skip(lo) {
            *slot = cubic((j as f64 - centre + 0.5) * inv_scale);
        }
        let total: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= total);
    }
    w
}

/// The `(new_rows·new_cols, old_rows·old_cols)` matrix that resamples a
/// row-major grid as timm's `resample_abs_pos_embed` does (bicubic,
/// antialias, separable).
pub fn resample_matrix(old: (usize, usize), new: (usize, usize)) -> Vec<f32> {
    let wh = axis_weights(old.0, new.0);
    let ww = axis_weights(old.1, new.1);
    let (n_old, n_new) = (old.0 * old.1, new.0 * new.1);
    let mut m = vec![0f32; n_new * n_old];
    for (oi, row) in m.chunks_mut(n_old).enumerate() {
        let (r, c) = (oi / new.1, oi % new.1);
        for (ii, slot) in row.iter_mut().enumerate() {
            let (r0, c0) = (ii / old.1, ii % old.1);
            *slot = (wh[r * old.0 + r0] * ww[c * old.1 + c0]) as f32;
        }
    }
    m
}

/// Resamples the patch part of a `(1, prefix + old_rows·old_cols, D)`
/// position embedding to a `new` grid; the first `prefix` rows (class and
/// register tokens) are kept as they are. A matrix product, so gradients
/// reach a learned table.
pub fn resample(
    pos: &Tensor,
    prefix: usize,
    old: (usize, usize),
    new: (usize, usize),
) -> Result<Tensor> {
    if old == new {
        return Ok(pos.clone());
    }
    let (_, len, dim) = pos.dims3()?;
    let patches = pos
        .narrow(1, prefix, len - prefix)?
        .reshape((len - prefix, dim))?;
    let m = Tensor::from_vec(
        resample_matrix(old, new),
        (new.0 * new.1, old.0 * old.1),
        &Device::Cpu,
    )?
    .to_device(pos.device())?
    .to_dtype(pos.dtype())?;
    let patches = m.matmul(&patches)?.unsqueeze(0)?;
    if prefix == 0 {
        return Ok(patches);
    }
    Ok(Tensor::cat(&[&pos.narrow(1, 0, prefix)?, &patches], 1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sincos_matches_the_formula() {
        let t = sincos_2d(3, 5, 8, true);
        let dim = 8;
        // Patch (row 2, col 3): [sin 3ω | cos 3ω | sin 2ω | cos 2ω], ω = (1, 0.01).
        let p = &t[(2 * 5 + 3) * dim..(2 * 5 + 4) * dim];
        let expect = [
            3f64.sin(),
            0.03f64.sin(),
            3f64.cos(),
            0.03f64.cos(),
            2f64.sin(),
            0.02f64.sin(),
            2f64.cos(),
            0.02f64.cos(),
        ];
        for (a, b) in p.iter().zip(expect) {
            assert!((*a as f64 - b).abs() < 1e-7, "{p:?}");
        }
        let r = sincos_2d(3, 5, 8, false);
        assert_eq!(
            &r[(2 * 5 + 3) * dim..][..4],
            &t[(2 * 5 + 3) * dim + 4..][..4]
        );
    }

    #[test]
    fn resampling_to_the_same_grid_is_identity_and_rows_sum_to_one() {
        let m = resample_matrix((4, 5), (4, 5));
        for (i, row) in m.chunks(20).enumerate() {
            for (j, v) in row.iter().enumerate() {
                assert!((v - f32::from(i == j)).abs() < 1e-6);
            }
        }
        for (old, new) in [((4, 4), (6, 7)), ((16, 16), (14, 14)), ((3, 9), (5, 2))] {
            let m = resample_matrix(old, new);
            for row in m.chunks(old.0 * old.1) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
    }
}
