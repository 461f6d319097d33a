//! Decoding, and timm's evaluation transform.

use std::path::Path;

use image::RgbImage;

use super::{resize, DataError, Filter};

/// Most pixels an image may have (an 8K photo has 33 M); a larger header is
/// refused before its pixels are allocated.
pub const MAX_PIXELS: u64 = 100_000_000;

/// The largest side an evaluation transform resizes to (4× the 2048 px of
/// the largest ImageNet evaluation in timm): a resize, or `size /
/// crop_pct`, beyond it is refused before anything is allocated.
pub const MAX_RESIZE: usize = 8192;

/// Decodes an image file to 8-bit RGB (grey is replicated, alpha dropped,
/// as PIL's `convert('RGB')`).
///
/// # Errors
/// An unreadable file, or one [`decode_rgb_bytes`] refuses.
pub fn decode_rgb(path: &Path) -> Result<RgbImage, DataError> {
    let io = |error| DataError::Io {
        path: path.to_path_buf(),
        error,
    };
    // Opening a FIFO blocks until a writer comes: only regular files are read.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, socket or device is never opened)",
        )));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    decode_rgb_bytes(&bytes, path)
}

/// Decodes the bytes of a JPEG or PNG file (read from `origin`) to 8-bit
/// RGB, the format told by its content, not its name.
///
/// # Errors
/// Bytes that are not an image we decode, or an image of more than
/// [`MAX_PIXELS`] pixels (refused from its header).
pub fn decode_rgb_bytes(bytes: &[u8], origin: &Path) -> Result<RgbImage, DataError> {
    let bad = |reason: String| DataError::Decode {
        path: origin.to_path_buf(),
        reason,
    };
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(4 * MAX_PIXELS);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| bad(e.to_string()))?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(bad(format!(
            "{w}x{h} pixels is more than the {MAX_PIXELS} an image may have"
        )));
    }
    let img = image::DynamicImage::from_decoder(decoder).map_err(|e| bad(e.to_string()))?;
    Ok(img.to_rgb8())
}

/// timm's evaluation transform (`transforms_imagenet_eval`): resize to
/// `⌊size / crop_pct⌋` (the shorter side, or both sides with `squash`),
/// centre-crop `size`, scale to `[0, 1]`, normalise per channel.
///
/// ```
/// use ijepa_train::data::{EvalTransform, Filter};
///
/// let t = EvalTransform::new((224, 224), 0.875, false, Filter::Bicubic, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])?;
/// let img = image::RgbImage::from_pixel(640, 480, image::Rgb([128, 64, 32]));
/// let chw = t.apply(&img);
/// assert_eq!(chw.len(), 3 * 224 * 224);
/// # Ok::<(), ijepa_train::data::DataError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EvalTransform {
    size: (usize, usize),
    /// `(height, width)` resized to before the crop (a square: the
    /// shorter side, unless `squash`).
    scaled: (usize, usize),
    squash: bool,
    filter: Filter,
    mean: [f32; 3],
    std: [f32; 3],
}

impl EvalTransform {
    /// A transform to `size` `(height, width)`; `squash` resizes both sides
    /// (ignoring the aspect ratio) instead of the shorter one.
    ///
    /// # Errors
    /// A zero size, `crop_pct` outside `(0, 1]` or resizing beyond
    /// [`MAX_RESIZE`], or a non-positive std.
    pub fn new(
        size: (usize, usize),
        crop_pct: f64,
        squash: bool,
        filter: Filter,
        mean: [f32; 3],
        std: [f32; 3],
    ) -> Result<Self, DataError> {
        if size.0 == 0 || size.1 == 0 {
            return Err(DataError::InvalidTransform(format!(
                "image size {size:?} must be positive"
            )));
        }
        if !(crop_pct.is_finite() && crop_pct > 0.0 && crop_pct <= 1.0) {
            return Err(DataError::InvalidTransform(format!(
                "crop_pct {crop_pct} must be in (0, 1]"
            )));
        }
        if std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(DataError::InvalidTransform(format!(
                "std {std:?} must be positive"
            )));
        }
        let scaled = (
            (size.0 as f64 / crop_pct).floor(),
            (size.1 as f64 / crop_pct).floor(),
        );
        if scaled.0.max(scaled.1) > MAX_RESIZE as f64 {
            return Err(DataError::InvalidTransform(format!(
                "crop_pct {crop_pct} resizes to {} px for a {}×{} crop, more than the {MAX_RESIZE} px accepted: crop_pct must be at least {:.4}",
                scaled.0.max(scaled.1),
                size.0,
                size.1,
                size.0.max(size.1) as f64 / MAX_RESIZE as f64
            )));
        }
        Ok(Self {
            size,
            scaled: (scaled.0 as usize, scaled.1 as usize),
            squash,
            filter,
            mean,
            std,
        })
    }

    /// The same transform resizing to `resize` (the shorter side, or both
    /// sides with `squash`) instead of `⌊size / crop_pct⌋`, as timm's eval
    /// transform given a resize size.
    ///
    /// # Errors
    /// A `resize` outside `1..=`[`MAX_RESIZE`].
    pub fn with_resize(mut self, resize: usize) -> Result<Self, DataError> {
        if !(1..=MAX_RESIZE).contains(&resize) {
            return Err(DataError::InvalidTransform(format!(
                "resize {resize} must be 1 to {MAX_RESIZE} px"
            )));
        }
        self.scaled = (resize, resize);
        Ok(self)
    }

    /// Output `(height, width)`.
    pub fn size(&self) -> (usize, usize) {
        self.size
    }

    /// The steps in words, e.g. `resize the shorter side to 256 (bicubic),
    /// centre crop 224×224, mean [..] std [..]`.
    pub fn describe(&self) -> String {
        let resize = match (self.scaled.0 == self.scaled.1, self.squash) {
            (true, false) => format!("resize the shorter side to {}", self.scaled.0),
            _ => format!("resize to {}×{}", self.scaled.0, self.scaled.1),
        };
        let filter = match self.filter {
            Filter::Bilinear => "bilinear",
            Filter::Bicubic => "bicubic",
        };
        format!(
            "{resize} ({filter}), centre crop {}×{} (crop_pct {:.4}), mean {:?} std {:?}",
            self.size.0,
            self.size.1,
            self.size.0 as f64 / self.scaled.0 as f64,
            self.mean,
            self.std
        )
    }

    /// The image as normalised `(3, H, W)` floats, channel-major.
    pub fn apply(&self, img: &RgbImage) -> Vec<f32> {
        let (th, tw) = self.size;
        // timm: a square size resizes the shorter side; otherwise both sides.
        let scaled = self.scaled;
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (rw, rh) = if scaled.0 == scaled.1 && !self.squash {
            // torchvision: short side → size, long side → int(size · long / short).
            let s = scaled.0;
            if w <= h {
                (s, (s as f64 * h as f64 / w as f64) as usize)
            } else {
                ((s as f64 * w as f64 / h as f64) as usize, s)
            }
        } else {
            (scaled.1, scaled.0)
        };
        let resized = resize(img, rw as u32, rh as u32, self.filter);
        // torchvision centre crop: offsets int(round((size − crop) / 2)),
        // padding with zeros where the crop is larger than the image.
        let offset =
            |full: usize, crop: usize| ((full as f64 - crop as f64) / 2.0).round_ties_even() as i64;
        let (top, left) = (offset(rh, th), offset(rw, tw));
        let mut out = vec![0f32; 3 * th * tw];
        for c in 0..3 {
            let (m, s) = (self.mean[c], self.std[c]);
            for y in 0..th {
                for x in 0..tw {
                    let (sy, sx) = (y as i64 + top, x as i64 + left);
                    let v = if sy >= 0 && sx >= 0 && (sy as usize) < rh && (sx as usize) < rw {
                        resized.get_pixel(sx as u32, sy as u32)[c] as f32 / 255.0
                    } else {
                        0.0
                    };
                    out[(c * th + y) * tw + x] = (v - m) / s;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_beyond_the_bound_are_refused_before_anything_is_allocated() {
        let make = |crop_pct| {
            EvalTransform::new(
                (224, 224),
                crop_pct,
                false,
                Filter::Bicubic,
                [0.5; 3],
                [0.5; 3],
            )
        };
        for tiny in [1e-9, 0.001, 0.02] {
            let err = make(tiny).unwrap_err().to_string();
            assert!(
                err.contains(&format!("{MAX_RESIZE} px")) && err.contains("at least 0.0273"),
                "{err}"
            );
        }
        let t = make(0.0274).unwrap();
        assert!(t.clone().with_resize(MAX_RESIZE).is_ok());
        for bad in [0, MAX_RESIZE + 1, 30_000] {
            let err = t.clone().with_resize(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("1 to {MAX_RESIZE}")), "{err}");
        }
    }
}
