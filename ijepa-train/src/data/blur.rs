//! Gaussian blur equal to Pillow's `ImageFilter.GaussianBlur` on 8-bit RGB,
//! to the bit, and the official I-JEPA `GaussianBlur(p=0.5)` around it.
//!
//! Pillow does not convolve with a Gaussian: it runs three passes of an
//! "extended" box blur (Gwosdek et al., SSVM 2011) of fractional radius per
//! axis, horizontally then vertically, with 8.24 fixed-point weights and
//! rounding to 8 bits after every pass; edges repeat the border pixel.

use image::RgbImage;
use rand::Rng;

/// Pillow's number of box passes for a Gaussian.
const PASSES: usize = 3;

/// Pillow's `_gaussian_blur_radius`: the extended box radius whose
/// `PASSES`-fold repetition has variance `radius²` (C `float`s, with the
/// `double` steps where Pillow takes them).
fn box_radius(radius: f32) -> f32 {
    let sigma2 = radius * radius / PASSES as f32;
    let length = (12.0 * f64::from(sigma2) + 1.0).sqrt() as f32;
    let l = ((f64::from(length) - 1.0) / 2.0).floor() as f32;
    let mut a = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2);
    a /= 6.0 * (sigma2 - (l + 1.0) * (l + 1.0));
    l + a
}

/// Pillow's 8.24 fixed-point box weights for a fractional radius: `ww`
/// for each whole pixel of the window, `fw` for the two pixels at its ends.
struct BoxWeights {
    whole: usize,
    ww: u32,
    fw: u32,
}

impl BoxWeights {
    fn new(radius: f32) -> Self {
        let whole = radius as usize;
        // Pillow: `(UINT32)(1 << 24) / (r * 2 + 1)` divides in float.
        let ww = ((1u32 << 24) as f32 / (radius * 2.0 + 1.0)) as u32;
        let fw = (1u32 << 24).wrapping_sub((whole as u32 * 2 + 1).wrapping_mul(ww)) / 2;
        Self { whole, ww, fw }
    }

    /// `PASSES` passes of Pillow's `ImagingLineBoxBlur` along each line of
    /// `lines` (RGB pixels, `len` per line), in place; `ext` is scratch.
    fn blur_lines(&self, lines: &mut [u8], len: usize, ext: &mut Vec<u8>) {
        let r = self.whole;
        // Each line padded with its border pixels (r + 1 before, r + 2
        // after): the window never leaves it, as Pillow's edge cases.
        let pad = r + 1;
        for line in lines.chunks_exact_mut(3 * len) {
            for _ in 0..PASSES {
                ext.clear();
                for _ in 0..pad {
                    ext.extend_from_slice(&line[..3]);
                }
                ext.extend_from_slice(line);
                for _ in 0..pad + 1 {
                    ext.extend_from_slice(&line[3 * (len - 1)..]);
                }
                self.pass(line, ext);
            }
        }
    }

    /// One pass: `out[x]` from the window of `ext` around `x + pad`.
    fn pass(&self, out: &mut [u8], ext: &[u8]) {
        let r = self.whole;
        let pad = r + 1;
        let px = |i: usize, c: usize| u32::from(ext[3 * i + c]);
        for c in 0..3 {
            // The window sum for pixel −1: positions −r−1 … r−1.
            let mut acc: u32 = (0..2 * r + 1).map(|i| px(i, c)).sum();
            for x in 0..out.len() / 3 {
                // Positions x + r in, x − r − 1 out (offset by pad).
                acc = acc.wrapping_add(px(x + pad + r, c)).wrapping_sub(px(x, c));
                let far = px(x, c) + px(x + pad + r + 1, c);
                let bulk = acc
                    .wrapping_mul(self.ww)
                    .wrapping_add(far.wrapping_mul(self.fw));
                out[3 * x + c] = (bulk.wrapping_add(1 << 23) >> 24) as u8;
            }
        }
    }
}

/// `src` (`h` rows of `w` RGB pixels) transposed into `dst`.
fn transpose(src: &[u8], dst: &mut [u8], w: usize, h: usize) {
    for y in 0..h {
        for x in 0..w {
            let (from, to) = (3 * (y * w + x), 3 * (x * h + y));
            dst[to..to + 3].copy_from_slice(&src[from..from + 3]);
        }
    }
}

/// `img.filter(ImageFilter.GaussianBlur(radius))`; a radius of 0 leaves the
/// image as it is, as does a negative or NaN one (which Pillow refuses).
pub fn gaussian_blur(img: &mut RgbImage, radius: f32) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 || radius.is_nan() || radius <= 0.0 {
        return;
    }
    let r = box_radius(radius);
    if r == 0.0 {
        return;
    }
    let weights = BoxWeights::new(r);
    let mut ext = Vec::with_capacity(3 * (w.max(h) + 2 * weights.whole + 3));
    let data: &mut [u8] = img;
    // Rows, then columns: Pillow transposes and blurs rows again.
    weights.blur_lines(data, w, &mut ext);
    let mut columns = vec![0u8; data.len()];
    transpose(data, &mut columns, w, h);
    weights.blur_lines(&mut columns, h, &mut ext);
    transpose(&columns, data, h, w);
}

/// The official `GaussianBlur(p=0.5, radius_min=0.1, radius_max=2.0)`:
/// with probability 0.5, a blur of radius uniform on `[0.1, 2.0]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomBlur;

impl RandomBlur {
    /// Probability that an image is blurred.
    pub const P: f64 = 0.5;
    /// Radius range.
    pub const RADIUS: (f32, f32) = (0.1, 2.0);

    /// Blurs `img` in place with probability [`Self::P`]; every random draw
    /// comes from `rng`.
    pub fn apply(&self, img: &mut RgbImage, rng: &mut impl Rng) {
        if rng.random::<f64>() < Self::P {
            let (lo, hi) = Self::RADIUS;
            gaussian_blur(img, lo + (hi - lo) * rng.random::<f32>());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::color::tests::{first_difference, fixture, floats, image, images};
    use super::*;
    use rand::SeedableRng;
    use safetensors::SafeTensors;

    #[test]
    fn blur_equals_pillow_at_every_radius_and_edge_case() {
        let bytes = fixture();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut checked = 0;
        for (i, source) in images(&st) {
            for (j, radius) in floats(&st, "blur").into_iter().enumerate() {
                let mut ours = source.clone();
                gaussian_blur(&mut ours, radius as f32);
                let want = image(&st, &format!("img{i}/blur/{j}"));
                if let Some(d) = first_difference(&ours, &want) {
                    panic!(
                        "img{i} ({}×{}) radius {radius}: {d}",
                        source.width(),
                        source.height()
                    );
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 4 * 9);
    }

    #[test]
    fn half_the_images_are_blurred() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut img = RgbImage::new(6, 6);
        img.put_pixel(3, 3, image::Rgb([255, 255, 255]));
        let n = 2000;
        let blurred = (0..n)
            .filter(|_| {
                let mut x = img.clone();
                RandomBlur.apply(&mut x, &mut rng);
                x != img
            })
            .count();
        // Even radius 0.1 dims a lone white pixel (255 → 254).
        let frac = blurred as f64 / n as f64;
        assert!((0.46..0.54).contains(&frac), "{frac}");
    }
}
