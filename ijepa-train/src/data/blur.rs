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

/// One pass of Pillow's `ImagingLineBoxBlur` over one channel of a line:
/// `input` read, `out` written (the same length).
fn box_line(out: &mut [u8], input: &[u8], radius: usize, ww: u32, fw: u32) {
    let n = input.len();
    let last = n - 1;
    // Pixels beyond either end repeat the border pixel.
    let at = |i: isize| u32::from(input[i.clamp(0, last as isize) as usize]);
    let r = radius as isize;
    // The window sum for pixel −1: from −r−1 to r−1.
    let mut acc: u32 = (-r - 1..r).map(at).fold(0u32, u32::wrapping_add);
    for (x, o) in out.iter_mut().enumerate() {
        let x = x as isize;
        acc = acc.wrapping_add(at(x + r)).wrapping_sub(at(x - r - 1));
        let far = at(x - r - 1) + at(x + r + 1);
        let bulk = acc.wrapping_mul(ww).wrapping_add(far.wrapping_mul(fw));
        *o = (bulk.wrapping_add(1 << 23) >> 24) as u8;
    }
}

/// `PASSES` box passes of fractional radius `radius` along every line of
/// `lines` (`count` lines of `len` pixels, pixel `i` of line `l` at
/// `l * line_stride + i * stride`, 3 channels each).
fn blur_lines(
    data: &mut [u8],
    count: usize,
    len: usize,
    line_stride: usize,
    stride: usize,
    radius: f32,
) {
    let whole = radius as usize;
    // Pillow: `(UINT32)(1 << 24) / (r * 2 + 1)` divides in float.
    let ww = ((1u32 << 24) as f32 / (radius * 2.0 + 1.0)) as u32;
    let fw = ((1u32 << 24).wrapping_sub((whole as u32 * 2 + 1).wrapping_mul(ww))) / 2;
    let (mut line, mut out) = (vec![0u8; len], vec![0u8; len]);
    for l in 0..count {
        for c in 0..3 {
            let index = |i: usize| l * line_stride + i * stride + c;
            for (i, v) in line.iter_mut().enumerate() {
                *v = data[index(i)];
            }
            for _ in 0..PASSES {
                box_line(&mut out, &line, whole, ww, fw);
                std::mem::swap(&mut line, &mut out);
            }
            for (i, v) in line.iter().enumerate() {
                data[index(i)] = *v;
            }
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
    let data: &mut [u8] = img;
    // Rows, then columns (Pillow transposes and blurs rows again).
    blur_lines(data, h, w, 3 * w, 3, r);
    blur_lines(data, w, h, 3, 3 * w, r);
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
