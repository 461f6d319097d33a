//! Image resizing equal to Pillow's `Image.resize` on 8-bit RGB, to the bit.
//!
//! torchvision (and so timm) resizes PIL images with Pillow, whose
//! convolution resampler is antialiased (the kernel widens when shrinking),
//! uses 22-bit fixed-point coefficients, and rounds to 8 bits between its
//! horizontal and vertical passes. Reproducing those steps exactly is what
//! makes our features equal to timm's on the same image files. The order of
//! the passes follows Pillow 13 (`ImagingResampleInner`); Pillow ≤ 12 always
//! resampled horizontally first, which differs by one level in a few pixels
//! when the height shrinks much more than the width.

use image::RgbImage;

/// Resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Triangle kernel, support 1 (`PIL.Image.BILINEAR`).
    Bilinear,
    /// Cubic kernel `a = −0.5`, support 2 (`PIL.Image.BICUBIC`).
    Bicubic,
}

impl Filter {
    /// `bilinear` or `bicubic`, as in timm's `pretrained_cfg`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "bilinear" => Some(Self::Bilinear),
            "bicubic" => Some(Self::Bicubic),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Self::Bilinear => 1.0,
            Self::Bicubic => 2.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Self::Bilinear => (1.0 - x).max(0.0),
            Self::Bicubic => ijepa_encoder::pos_embed::cubic(x),
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: first input pixel and fixed-point weights.
struct Coefficients {
    starts: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis.
fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let mut starts = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let centre = (xx as f64 + 0.5) * scale;
        // C's `(int)` truncates toward zero.
        let lo = ((centre - support + 0.5) as i64).max(0) as usize;
        let hi = ((centre + support + 0.5) as i64).min(in_size as i64) as usize;
        let raw: Vec<f64> = (lo..hi)
            .map(|x| filter.eval((x as f64 - centre + 0.5) / filter_scale))
            .collect();
        let total: f64 = raw.iter().sum();
        let one = (1u32 << PRECISION_BITS) as f64;
        let fixed = raw
            .iter()
            .map(|w| {
                let w = if total != 0.0 { w / total } else { *w };
                if w < 0.0 {
                    (-0.5 + w * one) as i32
                } else {
                    (0.5 + w * one) as i32
                }
            })
            .collect();
        starts.push(lo);
        weights.push(fixed);
    }
    Coefficients { starts, weights }
}

fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `Σ src[k]·w[k]` over the taps of one output pixel, for the 3 channels;
/// `at(k)` gives the byte offset of tap `k`.
fn convolve(src: &[u8], weights: &[i32], at: impl Fn(usize) -> usize) -> [u8; 3] {
    let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
    for (k, w) in weights.iter().enumerate() {
        let base = at(k);
        for (c, a) in acc.iter_mut().enumerate() {
            *a += src[base + c] as i32 * w;
        }
    }
    acc.map(clip8)
}

/// Resamples each of `rows` rows of `width` RGB pixels along x.
fn horizontal(src: &[u8], width: usize, rows: usize, coef: &Coefficients) -> Vec<u8> {
    let out_w = coef.starts.len();
    let mut out = Vec::with_capacity(rows * out_w * 3);
    for y in 0..rows {
        for (start, ws) in coef.starts.iter().zip(&coef.weights) {
            out.extend(convolve(src, ws, |k| (y * width + start + k) * 3));
        }
    }
    out
}

/// Resamples each column of a `width`-pixel-wide RGB image along y.
fn vertical(src: &[u8], width: usize, coef: &Coefficients) -> Vec<u8> {
    let mut out = Vec::with_capacity(coef.starts.len() * width * 3);
    for (start, ws) in coef.starts.iter().zip(&coef.weights) {
        for x in 0..width {
            out.extend(convolve(src, ws, |k| ((start + k) * width + x) * 3));
        }
    }
    out
}

/// Resizes `img` to `width × height` as Pillow does
/// (`img.resize((width, height), filter)`).
pub fn resize(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (w0, h0) = (img.width() as usize, img.height() as usize);
    let (w1, h1) = (width as usize, height as usize);
    if (w0, h0) == (w1, h1) {
        return img.clone();
    }
    let across = coefficients(w0, w1, filter);
    let mut down = coefficients(h0, h1, filter);
    let mut data = img.as_raw().clone();
    // Pillow ≥ 13: when the height shrinks by more than twice as many pixels
    // as the width, the vertical pass runs first (the passes round to 8 bits
    // in between, so the order shows in the result).
    let (dh, dw) = (h0 as i64 - h1 as i64, w0 as i64 - w1 as i64);
    if dh > 0 && dh > 2 * dw {
        data = vertical(&data, w0, &down);
        if w1 != w0 {
            data = horizontal(&data, w0, h1, &across);
        }
    } else {
        if w1 != w0 {
            // Only the rows the vertical pass reads are resampled.
            let first = down.starts[0];
            let last = down.starts[h1 - 1] + down.weights[h1 - 1].len();
            down.starts.iter_mut().for_each(|s| *s -= first);
            data = horizontal(
                &data[first * w0 * 3..last * w0 * 3],
                w0,
                last - first,
                &across,
            );
        }
        if h1 != h0 {
            data = vertical(&data, w1, &down);
        }
    }
    RgbImage::from_raw(width, height, data).expect("buffer has width·height·3 bytes")
}
