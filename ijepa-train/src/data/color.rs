//! Colour distortion equal to torchvision's on PIL images, to the bit: the
//! official `make_transforms`' `ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)`
//! applied with probability 0.8, then `RandomGrayscale(p=0.2)`.
//!
//! torchvision adjusts PIL images with Pillow: brightness, contrast and
//! saturation are `Image.blend` of the image with a "degenerate" image
//! (black, the mean grey level, the image's own grey) in 32-bit floats,
//! truncated to 8 bits; hue goes through Pillow's 8-bit HSV conversion and
//! shifts the hue byte with wrap-around; grey is Pillow's 16-bit fixed-point
//! luma. Each step below is written with the same arithmetic (which
//! operations are `float` and which `double` in Pillow's C code), so the
//! result equals torchvision's on the same image and factors.

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::Rng;

use super::DataError;

/// Pillow's `L` conversion (ITU-R 601-2 luma in 16-bit fixed point).
pub(crate) fn luma(px: [u8; 3]) -> u8 {
    let [r, g, b] = px.map(u32::from);
    ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
}

/// Pillow's `ImagingBlend` of one byte: `a + α (b − a)` in `float`,
/// truncated and clipped to 8 bits.
fn blend(a: u8, b: u8, alpha: f32) -> u8 {
    // `as u8` truncates toward zero and saturates, as Pillow's clip does.
    (f32::from(a) + alpha * (i32::from(b) - i32::from(a)) as f32) as u8
}

/// `Image.blend(degenerate, img, factor)` for a constant degenerate grey
/// `d`: a table of the 256 results.
fn blend_constant(img: &mut RgbImage, d: u8, factor: f64) {
    // Pillow's `blend` takes a C double and passes a float.
    let alpha = factor as f32;
    let table: [u8; 256] = std::array::from_fn(|x| blend(d, x as u8, alpha));
    for v in img.iter_mut() {
        *v = table[usize::from(*v)];
    }
}

/// `F.adjust_brightness`: blended with black.
pub fn adjust_brightness(img: &mut RgbImage, factor: f64) {
    blend_constant(img, 0, factor);
}

/// `F.adjust_contrast`: blended with the image's mean grey level
/// (`int(mean + 0.5)` of its luma).
pub fn adjust_contrast(img: &mut RgbImage, factor: f64) {
    let n = u64::from(img.width()) * u64::from(img.height());
    let sum: u64 = img.pixels().map(|px| u64::from(luma(px.0))).sum();
    // ImageStat's mean in Python floats; a 0-pixel image has nothing to blend.
    let mean = if n == 0 {
        0
    } else {
        (sum as f64 / n as f64 + 0.5) as u8
    };
    blend_constant(img, mean, factor);
}

/// `F.adjust_saturation`: blended with the pixel's own grey.
pub fn adjust_saturation(img: &mut RgbImage, factor: f64) {
    let alpha = factor as f32;
    for px in img.pixels_mut() {
        let grey = luma(px.0);
        px.0 = px.0.map(|v| blend(grey, v, alpha));
    }
}

/// `F.adjust_hue` for `factor` in `[-0.5, 0.5]`: RGB → Pillow's 8-bit HSV,
/// the hue byte plus `int32(factor · 255)` modulo 256, back to RGB.
pub fn adjust_hue(img: &mut RgbImage, factor: f64) {
    // numpy: int32 truncates toward zero, astype(uint8) wraps.
    let shift = (factor * 255.0) as i32 as u8;
    let tables = HsvTables::get();
    for px in img.pixels_mut() {
        let [h, s, v] = rgb_to_hsv(px.0, tables);
        px.0 = hsv_to_rgb([h.wrapping_add(shift), s, v], tables);
    }
}

/// `F.rgb_to_grayscale(img, 3)`: the luma in all three channels.
pub fn to_grayscale(img: &mut RgbImage) {
    for px in img.pixels_mut() {
        px.0 = [luma(px.0); 3];
    }
}

/// The divisions of Pillow's HSV conversions, each computed once with
/// Pillow's arithmetic (a table lookup is the same value as the division).
struct HsvTables {
    /// `n / d` in float, at `d · 256 + n`.
    quotient: Vec<f32>,
    /// The saturation byte `(int)((d / max) · 255.0)`, at `max · 256 + d`.
    saturation: Vec<u8>,
    /// Per hue byte: the sector `floor(h · 6 / 255) mod 6` and its fraction
    /// (float).
    sector: Vec<(u8, f32)>,
    /// Per saturation byte: `s / 255` as float.
    fs: Vec<f32>,
}

impl HsvTables {
    fn get() -> &'static Self {
        static TABLES: std::sync::OnceLock<HsvTables> = std::sync::OnceLock::new();
        TABLES.get_or_init(|| {
            let quotient = (0..256 * 256)
                .map(|i| f32::from((i % 256) as u8) / f32::from((i / 256) as u8))
                .collect();
            let saturation = (0..256 * 256)
                .map(|i| {
                    let s = f32::from((i % 256) as u8) / f32::from((i / 256) as u8);
                    (f64::from(s) * 255.0) as i32
                })
                .map(|v| v.clamp(0, 255) as u8)
                .collect();
            let sector = (0..=255u8)
                .map(|h| {
                    let x = f64::from(h) * 6.0 / 255.0;
                    // floor of a non-negative value.
                    let i = x as i32;
                    ((i % 6) as u8, (x - f64::from(i)) as f32)
                })
                .collect();
            let fs = (0..=255u8).map(|s| (f64::from(s) / 255.0) as f32).collect();
            Self {
                quotient,
                saturation,
                sector,
                fs,
            }
        })
    }
}

/// Pillow's `rgb2hsv` (colorsys' formulas in 8 bits).
fn rgb_to_hsv([r, g, b]: [u8; 3], t: &HsvTables) -> [u8; 3] {
    let (maxc, minc) = (r.max(g).max(b), r.min(g).min(b));
    if maxc == minc {
        return [0, 0, maxc];
    }
    let cr = usize::from(maxc - minc);
    let over_cr = |n: u8| t.quotient[cr * 256 + usize::from(maxc - n)];
    // The literals are C doubles: these sums run in double, stored as float.
    let h: f32 = if r == maxc {
        over_cr(b) - over_cr(g)
    } else if g == maxc {
        (2.0 + f64::from(over_cr(r)) - f64::from(over_cr(b))) as f32
    } else {
        (4.0 + f64::from(over_cr(g)) - f64::from(over_cr(r))) as f32
    };
    // fmod(x, 1) of x in [5/6, 11/6]: exact, as the subtraction is.
    let x = f64::from(h) / 6.0 + 1.0;
    let h = if x >= 1.0 { x - 1.0 } else { x } as f32;
    let hue = ((f64::from(h) * 255.0) as i32).clamp(0, 255) as u8;
    [hue, t.saturation[usize::from(maxc) * 256 + cr], maxc]
}

/// Pillow's `hsv2rgb`.
fn hsv_to_rgb([h, s, v]: [u8; 3], t: &HsvTables) -> [u8; 3] {
    if s == 0 {
        return [v; 3];
    }
    let (i, f) = t.sector[usize::from(h)];
    let fs = t.fs[usize::from(s)];
    let v64 = f64::from(v);
    // C's `round` of a value in [0, 255]: halves up (the fraction is exact).
    let byte = |x: f64| {
        let whole = x as i32;
        (whole + i32::from(x - f64::from(whole) >= 0.5)).clamp(0, 255) as u8
    };
    let p = byte(v64 * (1.0 - f64::from(fs)));
    let q = byte(v64 * (1.0 - f64::from(fs * f)));
    let t = byte(v64 * (1.0 - f64::from(fs) * (1.0 - f64::from(f))));
    // Per sector, which of (v, p, q, t) are red, green and blue.
    const ORDER: [[usize; 3]; 6] = [
        [0, 3, 1],
        [2, 0, 1],
        [1, 0, 3],
        [1, 2, 0],
        [3, 1, 0],
        [0, 1, 2],
    ];
    let values = [v, p, q, t];
    ORDER[usize::from(i)].map(|k| values[k])
}

/// The most colour-jitter strength accepted: torchvision requires the hue
/// range `0.2 s` to stay within 0.5.
pub const MAX_STRENGTH: f64 = 2.5;

/// One draw of `ColorJitter`: the order of its four adjustments
/// (0 brightness, 1 contrast, 2 saturation, 3 hue) and their factors, `None`
/// for an adjustment whose range is empty (strength 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterDraw {
    /// The adjustments in the order applied.
    pub order: [u8; 4],
    /// Brightness factor.
    pub brightness: Option<f64>,
    /// Contrast factor.
    pub contrast: Option<f64>,
    /// Saturation factor.
    pub saturation: Option<f64>,
    /// Hue shift in `[-0.5, 0.5]`.
    pub hue: Option<f64>,
}

impl JitterDraw {
    /// Applies the adjustments in order, as `ColorJitter.forward`.
    pub fn apply(&self, img: &mut RgbImage) {
        let adjust: [fn(&mut RgbImage, f64); 4] = [
            adjust_brightness,
            adjust_contrast,
            adjust_saturation,
            adjust_hue,
        ];
        let factors = [self.brightness, self.contrast, self.saturation, self.hue];
        for op in self.order.map(usize::from) {
            if let Some(Some(f)) = factors.get(op) {
                adjust[op](img, *f);
            }
        }
    }
}

/// The official colour distortion of strength `s`:
/// `RandomApply([ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)], p=0.8)` then
/// `RandomGrayscale(p=0.2)`.
///
/// ```
/// use ijepa_train::data::ColorDistortion;
/// use rand::SeedableRng;
///
/// let distort = ColorDistortion::new(1.0)?;
/// let mut img = image::RgbImage::from_pixel(8, 8, image::Rgb([200, 40, 90]));
/// distort.apply(&mut img, &mut rand_chacha::ChaCha8Rng::seed_from_u64(3));
/// # Ok::<(), ijepa_train::data::DataError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColorDistortion {
    strength: f64,
}

impl ColorDistortion {
    /// Probability that the jitter is applied.
    pub const JITTER_P: f64 = 0.8;
    /// Probability that the result is made grey.
    pub const GRAYSCALE_P: f64 = 0.2;

    /// The distortion of strength `s` (the official `color_jitter_strength`).
    ///
    /// # Errors
    /// A strength that is not finite or outside `[0, 2.5]`.
    pub fn new(strength: f64) -> Result<Self, DataError> {
        if !(strength.is_finite() && (0.0..=MAX_STRENGTH).contains(&strength)) {
            return Err(DataError::InvalidTransform(format!(
                "color_jitter_strength {strength} must be 0 to {MAX_STRENGTH} (the hue range 0.2·s may not pass torchvision's 0.5)"
            )));
        }
        Ok(Self { strength })
    }

    /// The strength `s`.
    pub fn strength(&self) -> f64 {
        self.strength
    }

    /// `ColorJitter.get_params`: a random order, then each factor uniform
    /// on brightness, contrast, saturation `[max(0, 1 − 0.8s), 1 + 0.8s]`
    /// and hue `[−0.2s, 0.2s]`.
    pub fn draw(&self, rng: &mut impl Rng) -> JitterDraw {
        let mut order = [0, 1, 2, 3];
        order.shuffle(rng);
        let s = self.strength;
        let mut factor = |lo: f64, hi: f64| (s > 0.0).then(|| lo + (hi - lo) * rng.random::<f64>());
        let (lo, hi) = ((1.0 - 0.8 * s).max(0.0), 1.0 + 0.8 * s);
        JitterDraw {
            order,
            brightness: factor(lo, hi),
            contrast: factor(lo, hi),
            saturation: factor(lo, hi),
            hue: factor(-0.2 * s, 0.2 * s),
        }
    }

    /// Distorts `img` in place; every random draw comes from `rng`.
    pub fn apply(&self, img: &mut RgbImage, rng: &mut impl Rng) {
        if rng.random::<f64>() < Self::JITTER_P {
            self.draw(rng).apply(img);
        }
        if rng.random::<f64>() < Self::GRAYSCALE_P {
            to_grayscale(img);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;
    use safetensors::SafeTensors;

    /// `tests/fixtures/color_expected.safetensors` (made by
    /// `make_color_fixture.py` with torchvision 0.29.2 and Pillow 13.0.0).
    pub(crate) fn fixture() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/color_expected.safetensors"
        );
        std::fs::read(path).unwrap()
    }

    pub(crate) fn image(st: &SafeTensors, key: &str) -> RgbImage {
        let t = st.tensor(key).unwrap();
        let (h, w) = (t.shape()[0] as u32, t.shape()[1] as u32);
        RgbImage::from_raw(w, h, t.data().to_vec()).unwrap()
    }

    pub(crate) fn floats(st: &SafeTensors, key: &str) -> Vec<f64> {
        let t = st.tensor(key).unwrap();
        match t.dtype() {
            safetensors::Dtype::F64 => t
                .data()
                .chunks(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            safetensors::Dtype::F32 => t
                .data()
                .chunks(4)
                .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
                .collect(),
            other => panic!("{key}: {other:?}"),
        }
    }

    pub(crate) fn images(st: &SafeTensors) -> Vec<(usize, RgbImage)> {
        (0..)
            .map_while(|i| {
                st.tensor(&format!("img{i}"))
                    .is_ok()
                    .then(|| (i, image(st, &format!("img{i}"))))
            })
            .collect()
    }

    /// Where two images differ, as `(x, y, ours, reference)`.
    pub(crate) fn first_difference(ours: &RgbImage, want: &RgbImage) -> Option<String> {
        assert_eq!(ours.dimensions(), want.dimensions());
        ours.enumerate_pixels()
            .find(|(x, y, px)| *px != want.get_pixel(*x, *y))
            .map(|(x, y, px)| {
                format!(
                    "({x}, {y}): ours {:?}, reference {:?}",
                    px.0,
                    want.get_pixel(x, y).0
                )
            })
    }

    #[test]
    fn each_adjustment_equals_torchvision_on_pil_images() {
        let bytes = fixture();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        type Adjust = fn(&mut RgbImage, f64);
        let ops: [(&str, Adjust); 4] = [
            ("brightness", adjust_brightness),
            ("contrast", adjust_contrast),
            ("saturation", adjust_saturation),
            ("hue", adjust_hue),
        ];
        let mut checked = 0;
        for (i, source) in images(&st) {
            for (op, f) in ops {
                for (j, factor) in floats(&st, op).into_iter().enumerate() {
                    let mut ours = source.clone();
                    f(&mut ours, factor);
                    let want = image(&st, &format!("img{i}/{op}/{j}"));
                    if let Some(d) = first_difference(&ours, &want) {
                        panic!("img{i} {op} {factor}: {d}");
                    }
                    checked += 1;
                }
            }
            let mut ours = source.clone();
            to_grayscale(&mut ours);
            assert_eq!(
                first_difference(&ours, &image(&st, &format!("img{i}/gray"))),
                None
            );
        }
        assert_eq!(checked, 4 * (3 * 8 + 10));
    }

    #[test]
    fn color_jitter_equals_torchvision_given_its_draws() {
        let bytes = fixture();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut checked = 0;
        for (i, source) in images(&st) {
            for s in ["1", "0.5", "2.5"] {
                for k in 0..6 {
                    let p = floats(&st, &format!("jitter{s}/{k}/params"));
                    let draw = JitterDraw {
                        order: [p[0], p[1], p[2], p[3]].map(|o| o as u8),
                        brightness: Some(p[4]),
                        contrast: Some(p[5]),
                        saturation: Some(p[6]),
                        hue: Some(p[7]),
                    };
                    let mut ours = source.clone();
                    draw.apply(&mut ours);
                    let want = image(&st, &format!("img{i}/jitter{s}/{k}"));
                    if let Some(d) = first_difference(&ours, &want) {
                        panic!("img{i} jitter {s} seed {k} {draw:?}: {d}");
                    }
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 4 * 3 * 6);
    }

    #[test]
    fn draws_follow_torchvision_ranges_and_the_official_probabilities() {
        let d = ColorDistortion::new(1.0).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut firsts = [0usize; 4];
        for _ in 0..4000 {
            let j = d.draw(&mut rng);
            let mut sorted = j.order;
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2, 3]);
            firsts[j.order[0] as usize] += 1;
            for f in [j.brightness, j.contrast, j.saturation] {
                assert!((0.2..=1.8).contains(&f.unwrap()));
            }
            assert!((-0.2..=0.2).contains(&j.hue.unwrap()));
        }
        assert!(
            firsts.iter().all(|&n| (850..1150).contains(&n)),
            "{firsts:?}"
        );
        let none = ColorDistortion::new(0.0).unwrap().draw(&mut rng);
        assert_eq!((none.brightness, none.hue), (None, None));
        let strong = ColorDistortion::new(2.5).unwrap().draw(&mut rng);
        assert!(strong.brightness.unwrap() >= 0.0 && strong.hue.unwrap().abs() <= 0.5);

        // Jitter 0.8 and grey 0.2: a colour pixel stays as it is with
        // probability 0.2 · 0.8 = 0.16 (a jitter with every factor drawn at 1
        // has measure zero), and is grey with probability 0.2.
        let (mut kept, mut grey, n) = (0, 0, 5000);
        for _ in 0..n {
            let mut img = RgbImage::from_pixel(2, 2, image::Rgb([200, 40, 90]));
            d.apply(&mut img, &mut rng);
            let px = img.get_pixel(0, 0).0;
            kept += usize::from(px == [200, 40, 90]);
            grey += usize::from(px[0] == px[1] && px[1] == px[2]);
        }
        let (kept, grey) = (kept as f64 / n as f64, grey as f64 / n as f64);
        assert!((0.14..0.18).contains(&kept), "{kept}");
        assert!((0.18..0.23).contains(&grey), "{grey}");
    }

    #[test]
    fn strengths_torchvision_refuses_are_refused_by_name() {
        for bad in [-0.1, 2.6, f64::NAN, f64::INFINITY] {
            let err = ColorDistortion::new(bad).unwrap_err().to_string();
            assert!(
                err.contains("color_jitter_strength") && err.contains("2.5"),
                "{err}"
            );
        }
    }
}
