//! A built-in labelled image set, drawn procedurally: pretraining and a
//! probe run on a fresh machine with nothing downloaded.
//!
//! Each image shows one shape (disc, square, triangle, ring) filled with one
//! texture (flat or striped) on a noisy background; the class is the
//! (shape, texture) pair, 8 classes. Colours, position, size and stripe
//! angle are random and carry no label information, so a probe cannot
//! succeed on colour statistics alone: it needs the shape and its texture.

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Number of classes: 4 shapes × 2 textures.
pub const NUM_CLASSES: usize = 8;

/// The procedural data set: `len` images of `size × size` pixels, image `i`
/// fully determined by `(seed, i)`.
///
/// ```
/// use ijepa_train::data::SyntheticShapes;
///
/// let data = SyntheticShapes::new(64, 100, 7);
/// let (image, label) = data.get(3);
/// assert_eq!(image.dimensions(), (64, 64));
/// assert!(label < 8);
/// assert_eq!(data.get(3), (image, label)); // deterministic
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticShapes {
    size: u32,
    len: usize,
    seed: u64,
}

impl SyntheticShapes {
    /// `len` images of `size × size` pixels from `seed`.
    pub fn new(size: u32, len: usize, seed: u64) -> Self {
        Self { size, len, seed }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Class of image `index` (balanced: `index mod 8`).
    pub fn label(&self, index: usize) -> usize {
        index % NUM_CLASSES
    }

    /// Image `index` and its class.
    pub fn get(&self, index: usize) -> (RgbImage, usize) {
        let label = self.label(index);
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&self.seed.to_le_bytes());
        key[8..16].copy_from_slice(&(index as u64).to_le_bytes());
        key[16..].copy_from_slice(b"ijepa-rs shapes!");
        let mut rng = ChaCha8Rng::from_seed(key);
        (draw(self.size, label, &mut rng), label)
    }
}

fn colour(rng: &mut ChaCha8Rng) -> [f32; 3] {
    [rng.random(), rng.random(), rng.random()]
}

fn draw(size: u32, label: usize, rng: &mut ChaCha8Rng) -> RgbImage {
    let (shape, striped) = (label / 2, label % 2 == 1);
    let s = size as f32;
    let (bg_a, bg_b) = (colour(rng), colour(rng));
    let (fg_a, fg_b) = (colour(rng), colour(rng));
    let cx = s * rng.random_range(0.4..0.6);
    let cy = s * rng.random_range(0.4..0.6);
    let r = s * rng.random_range(0.28..0.42);
    let angle: f32 = rng.random_range(0.0..std::f32::consts::PI);
    let period = s * rng.random_range(0.06..0.12);
    let noise_seed: u64 = rng.random();
    let mut noise = ChaCha8Rng::seed_from_u64(noise_seed);
    let (dx, dy) = (angle.cos(), angle.sin());
    RgbImage::from_fn(size, size, |x, y| {
        let (px, py) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
        let inside = match shape {
            0 => px * px + py * py <= r * r,
            1 => px.abs() <= r * 0.85 && py.abs() <= r * 0.85,
            2 => py <= r * 0.7 && py >= -r && px.abs() <= (py + r) * 0.6,
            _ => {
                let d = (px * px + py * py).sqrt();
                d <= r && d >= r * 0.55
            }
        };
        let n: f32 = noise.random_range(-0.08..0.08);
        let c = if inside {
            let t = if striped && ((px * dx + py * dy) / period).rem_euclid(2.0) < 1.0 {
                1.0
            } else {
                0.0
            };
            [0, 1, 2].map(|k| fg_a[k] * (1.0 - t) + fg_b[k] * t)
        } else {
            let t = 0.25 * y as f32 / s;
            [0, 1, 2].map(|k| bg_a[k] * (1.0 - t) + bg_b[k] * t)
        };
        Rgb(c.map(|v| ((v + n).clamp(0.0, 1.0) * 255.0).round() as u8))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_balanced_and_varied() {
        let a = SyntheticShapes::new(32, 64, 1);
        let b = SyntheticShapes::new(32, 64, 2);
        assert_eq!(a.get(5), a.get(5));
        assert_ne!(a.get(5).0, b.get(5).0);
        let mut counts = [0; NUM_CLASSES];
        for i in 0..a.len() {
            counts[a.get(i).1] += 1;
        }
        assert_eq!(counts, [8; NUM_CLASSES]);
        // Same class, different images.
        assert_ne!(a.get(0).0, a.get(8).0);
    }

    #[test]
    fn colour_statistics_do_not_give_the_class_away() {
        // Nearest class-centroid on each image's mean colour, trained on 800
        // images, tested on 400 others: close to chance (1/8), far from what
        // a probe that sees shapes can reach.
        let data = SyntheticShapes::new(32, 1200, 4);
        let mean = |i: usize| {
            let (img, _) = data.get(i);
            let mut m = [0f64; 3];
            for p in img.pixels() {
                for k in 0..3 {
                    m[k] += p[k] as f64;
                }
            }
            m.map(|v| v / (32.0 * 32.0))
        };
        let mut centroids = [[0f64; 3]; NUM_CLASSES];
        for i in 0..800 {
            let m = mean(i);
            for k in 0..3 {
                centroids[data.label(i)][k] += m[k] / 100.0;
            }
        }
        let correct = (800..1200)
            .filter(|&i| {
                let m = mean(i);
                let dist = |c: &[f64; 3]| (0..3).map(|k| (c[k] - m[k]).powi(2)).sum::<f64>();
                let best = (0..NUM_CLASSES)
                    .min_by(|&a, &b| dist(&centroids[a]).total_cmp(&dist(&centroids[b])))
                    .unwrap();
                best == data.label(i)
            })
            .count();
        let accuracy = correct as f64 / 400.0;
        assert!(
            accuracy < 0.25,
            "mean colour predicts the class {accuracy:.2} of the time"
        );
    }
}
