//! The pretraining transform: torchvision's `RandomResizedCrop` (bilinear),
//! an optional horizontal flip, the official colour distortion and Gaussian
//! blur when asked for, and normalisation.

use image::RgbImage;
use rand::Rng;

use super::{resize, ColorDistortion, DataError, Filter, RandomBlur};

/// RandomResizedCrop → optional flip → optional colour distortion →
/// optional blur → normalise, as the official `make_transforms` (each step
/// equal to torchvision's and Pillow's on the same draws).
///
/// ```
/// use ijepa_train::data::{SyntheticShapes, TrainTransform};
/// use rand::SeedableRng;
///
/// let t = TrainTransform::new((32, 32), (0.3, 1.0), (0.75, 4.0 / 3.0), false,
///                             [0.5; 3], [0.5; 3])?;
/// let (image, _) = SyntheticShapes::new(64, 1, 0).get(0);
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// assert_eq!(t.apply(&image, &mut rng).len(), 3 * 32 * 32);
/// # Ok::<(), ijepa_train::data::DataError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TrainTransform {
    size: (usize, usize),
    scale: (f64, f64),
    ratio: (f64, f64),
    flip: bool,
    color: Option<ColorDistortion>,
    blur: Option<RandomBlur>,
    mean: [f32; 3],
    std: [f32; 3],
}

/// A crop `(top, left, height, width)` in pixels.
pub type CropBox = (u32, u32, u32, u32);

impl TrainTransform {
    /// Crops of area fraction `scale` and aspect ratio `ratio`, resized to
    /// `size` `(height, width)`.
    ///
    /// # Errors
    /// A zero size, a scale outside `(0, 1]`, a non-positive ratio or std.
    pub fn new(
        size: (usize, usize),
        scale: (f64, f64),
        ratio: (f64, f64),
        flip: bool,
        mean: [f32; 3],
        std: [f32; 3],
    ) -> Result<Self, DataError> {
        let bad = |m: String| Err(DataError::InvalidTransform(m));
        if size.0 == 0 || size.1 == 0 {
            return bad(format!("image size {size:?} must be positive"));
        }
        if !(scale.0 > 0.0 && scale.0 <= scale.1 && scale.1 <= 1.0) {
            return bad(format!(
                "crop scale {scale:?} must satisfy 0 < lo <= hi <= 1"
            ));
        }
        if !(ratio.0 > 0.0 && ratio.0 <= ratio.1 && ratio.1.is_finite()) {
            return bad(format!("crop ratio {ratio:?} must satisfy 0 < lo <= hi"));
        }
        if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return bad(format!("std {std:?} must be positive"));
        }
        Ok(Self {
            size,
            scale,
            ratio,
            flip,
            color: None,
            blur: None,
            mean,
            std,
        })
    }

    /// The same transform with the official colour distortion after the
    /// crop and flip (`use_color_distortion`).
    pub fn with_color_distortion(mut self, color: ColorDistortion) -> Self {
        self.color = Some(color);
        self
    }

    /// The same transform with the official random Gaussian blur after the
    /// colour distortion (`use_gaussian_blur`).
    pub fn with_blur(mut self) -> Self {
        self.blur = Some(RandomBlur);
        self
    }

    /// Output `(height, width)`.
    pub fn size(&self) -> (usize, usize) {
        self.size
    }

    /// torchvision's `RandomResizedCrop.get_params` for a `width × height`
    /// image: ten tries at a random area and log-uniform aspect ratio, then
    /// the centre crop clamped to the ratio range.
    pub fn crop_box(&self, width: u32, height: u32, rng: &mut impl Rng) -> CropBox {
        let area = f64::from(width) * f64::from(height);
        let (lr0, lr1) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * uniform(rng, self.scale.0, self.scale.1);
            let aspect = uniform(rng, lr0, lr1).exp();
            let w = (target * aspect).sqrt().round_ties_even();
            let h = (target / aspect).sqrt().round_ties_even();
            if w > 0.0 && h > 0.0 && w <= f64::from(width) && h <= f64::from(height) {
                let (w, h) = (w as u32, h as u32);
                let top = rng.random_range(0..=height - h);
                let left = rng.random_range(0..=width - w);
                return (top, left, h, w);
            }
        }
        let in_ratio = f64::from(width) / f64::from(height);
        let (w, h) = if in_ratio < self.ratio.0 {
            (
                width,
                (f64::from(width) / self.ratio.0).round_ties_even() as u32,
            )
        } else if in_ratio > self.ratio.1 {
            (
                (f64::from(height) * self.ratio.1).round_ties_even() as u32,
                height,
            )
        } else {
            (width, height)
        };
        ((height - h) / 2, (width - w) / 2, h, w)
    }

    /// The augmented image as normalised `(3, H, W)` floats, channel-major;
    /// every random draw comes from `rng`.
    pub fn apply(&self, img: &RgbImage, rng: &mut impl Rng) -> Vec<f32> {
        let (top, left, h, w) = self.crop_box(img.width(), img.height(), rng);
        let crop = image::imageops::crop_imm(img, left, top, w, h).to_image();
        let (th, tw) = self.size;
        let mut out = resize(&crop, tw as u32, th as u32, Filter::Bilinear);
        if self.flip && rng.random_bool(0.5) {
            image::imageops::flip_horizontal_in_place(&mut out);
        }
        if let Some(color) = &self.color {
            color.apply(&mut out, rng);
        }
        if let Some(blur) = &self.blur {
            blur.apply(&mut out, rng);
        }
        normalise(&out, self.mean, self.std)
    }
}

fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// An image as `(3, H, W)` floats, `(pixel/255 − mean) / std`.
pub fn normalise(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0f32; 3 * h * w];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * h * w + i] = (px[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn transform(scale: (f64, f64), ratio: (f64, f64)) -> TrainTransform {
        TrainTransform::new((16, 16), scale, ratio, false, [0.0; 3], [1.0; 3]).unwrap()
    }

    #[test]
    fn crops_stay_inside_and_follow_scale_and_ratio() {
        let t = transform((0.3, 1.0), (0.75, 4.0 / 3.0));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut areas, mut n) = (0.0, 0);
        for _ in 0..2000 {
            let (top, left, h, w) = t.crop_box(200, 150, &mut rng);
            assert!(top + h <= 150 && left + w <= 200 && h > 0 && w > 0);
            let frac = f64::from(h * w) / 30000.0;
            assert!((0.29..=1.0).contains(&frac), "{frac}");
            areas += frac;
            n += 1;
        }
        // Uniform scale on [0.3, 1] with rejections of the largest crops: mean below 0.65.
        let mean = areas / n as f64;
        assert!((0.5..0.65).contains(&mean), "{mean}");
    }

    #[test]
    fn impossible_ratios_fall_back_to_the_clamped_centre_crop() {
        // A 100×10 strip cannot hold a crop of ratio ≤ 4/3 with area ≥ 0.9.
        let t = transform((0.9, 1.0), (0.75, 4.0 / 3.0));
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(t.crop_box(100, 10, &mut rng), (0, 43, 10, 13));
    }

    #[test]
    fn flip_mirrors_the_image() {
        let (img, _) = super::super::SyntheticShapes::new(32, 1, 3).get(0);
        let base = TrainTransform::new((32, 32), (1.0, 1.0), (1.0, 1.0), false, [0.0; 3], [1.0; 3])
            .unwrap();
        let flip = TrainTransform {
            flip: true,
            ..base.clone()
        };
        let plain = base.apply(&img, &mut ChaCha8Rng::seed_from_u64(0));
        // Find a seed whose coin says "flip".
        let flipped = (0..16)
            .map(|s| flip.apply(&img, &mut ChaCha8Rng::seed_from_u64(s)))
            .find(|v| *v != plain)
            .expect("some seed flips");
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    assert_eq!(
                        flipped[(c * 32 + y) * 32 + x],
                        plain[(c * 32 + y) * 32 + 31 - x]
                    );
                }
            }
        }
    }
}
