//! Patch embedding: a stride-`p` convolution with kernel `p`, written as a
//! reshape and one matrix product (same result, cheaper, and differentiable).

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::error::{EncoderError, Result};
use crate::nn::Linear;

/// `(B, C, H, W)` images → `(B, ⌊H/p⌋ · ⌊W/p⌋, D)` patch tokens,
/// row-major. As timm's stride-`p` convolution, trailing rows and columns
/// that make no whole patch are not seen; with `pad` (timm's
/// `dynamic_img_pad`) the image is zero-padded to whole patches instead.
#[derive(Debug, Clone)]
pub struct PatchEmbed {
    proj: Linear,
    patch_size: usize,
    in_channels: usize,
    pad: bool,
}

impl PatchEmbed {
    /// Reads `{prefix}.proj.weight` `(D, C, p, p)` and, with `bias`,
    /// `{prefix}.proj.bias`.
    pub fn new(
        in_channels: usize,
        patch_size: usize,
        dim: usize,
        bias: bool,
        pad: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vb = vb.pp("proj");
        let weight = vb.get((dim, in_channels, patch_size, patch_size), "weight")?;
        let bias = bias.then(|| vb.get(dim, "bias")).transpose()?;
        // A conv weight flattened over (C, p, p) matches patches flattened the same way.
        let weight = weight.reshape((dim, in_channels * patch_size * patch_size))?;
        Ok(Self {
            proj: Linear::from_tensors(weight, bias),
            patch_size,
            in_channels,
            pad,
        })
    }

    /// The device of the weights.
    pub fn device(&self) -> &candle_core::Device {
        self.proj.weight().device()
    }

    /// Patch grid `(rows, cols)` of `images`, or why they do not fit.
    pub fn grid(&self, images: &Tensor) -> Result<(usize, usize)> {
        let p = self.patch_size;
        let shape_err = |reason: String| EncoderError::InputShape {
            shape: images.dims().to_vec(),
            reason,
        };
        let (_, c, h, w) = images
            .dims4()
            .map_err(|_| shape_err("expected (batch, channels, height, width)".into()))?;
        if c != self.in_channels {
            return Err(shape_err(format!(
                "expected {} channels, got {c}",
                self.in_channels
            )));
        }
        let (h, w) = if self.pad {
            (h.div_ceil(p) * p, w.div_ceil(p) * p)
        } else {
            (h, w)
        };
        crate::config::patch_grid(h, w, p).map_err(|e| match e {
            EncoderError::OutOfRange(reason) => shape_err(reason),
            other => other,
        })
    }

    /// Embeds `images`; returns the tokens and the patch grid.
    pub fn forward(&self, images: &Tensor) -> Result<(Tensor, (usize, usize))> {
        let (gh, gw) = self.grid(images)?;
        let (b, c, p) = (images.dim(0)?, self.in_channels, self.patch_size);
        let (h, w) = (images.dim(2)?, images.dim(3)?);
        let images = if self.pad {
            images
                .pad_with_zeros(2, 0, gh * p - h)?
                .pad_with_zeros(3, 0, gw * p - w)?
        } else {
            images.narrow(2, 0, gh * p)?.narrow(3, 0, gw * p)?
        };
        // (B, C, gh, p, gw, p) -> (B, gh, gw, C, p, p) -> (B, gh·gw, C·p·p)
        let patches = images
            .reshape(vec![b, c, gh, p, gw, p])?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, gh * gw, c * p * p))?;
        Ok((self.proj.forward(&patches)?, (gh, gw)))
    }
}
