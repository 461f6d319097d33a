//! Frozen-encoder features of image files, shared by `embed` and `probe`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use ijepa_encoder::weights::DataConfig;
use ijepa_encoder::{TokenEncoder, VisionTransformer};
use ijepa_train::data::{decode_rgb, EvalTransform, Filter};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

/// The evaluation transform the weights ask for (timm's, Pillow-exact), at
/// `image_size` when given.
pub fn eval_transform(data: &DataConfig, image_size: Option<usize>) -> Result<EvalTransform> {
    let size = image_size.map_or(data.input_size, |s| (s, s));
    let filter = Filter::from_name(&data.interpolation).with_context(|| {
        format!(
            "interpolation {:?} is not supported (bilinear, bicubic)",
            data.interpolation
        )
    })?;
    Ok(EvalTransform::new(
        size,
        data.crop_pct,
        data.crop_mode == "squash",
        filter,
        data.mean,
        data.std,
    )?)
}

/// What [`extract`] returns.
pub struct Features {
    /// `(n, D·last_layers)`: mean of the patch tokens (through `fc_norm` when
    /// the model has one and one layer is taken), layers concatenated.
    pub pooled: Tensor,
    /// `(n, T, D)` every token of the last layer, when asked for.
    pub tokens: Option<Tensor>,
    /// Indices into the file list of the `n` images read, in order.
    pub read: Vec<usize>,
    /// Indices and reasons of the files that could not be read.
    pub skipped: Vec<(usize, String)>,
}

/// A progress bar over `n` images (hidden when stderr is not a terminal).
pub fn progress(n: usize, what: &str) -> ProgressBar {
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new(n as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what}  {{per_sec}}  eta {{eta}}"
        ))
        .expect("static template is valid"),
    );
    bar
}

/// Features of `files`, `batch` images per forward pass; files that cannot
/// be decoded are skipped and reported (a warning on stderr too).
pub fn extract(
    vit: &VisionTransformer,
    transform: &EvalTransform,
    files: &[PathBuf],
    batch: usize,
    last_layers: usize,
    keep_tokens: bool,
) -> Result<Features> {
    let (h, w) = transform.size();
    let bar = progress(files.len(), "images");
    let (mut pooled, mut tokens, mut read, mut skipped) = (vec![], vec![], vec![], vec![]);
    for (c, chunk) in files.chunks(batch.max(1)).enumerate() {
        let decoded: Vec<Result<Vec<f32>, String>> = chunk
            .par_iter()
            .map(|p| {
                decode_rgb(p)
                    .map(|img| transform.apply(&img))
                    .map_err(|e| e.to_string())
            })
            .collect();
        let mut pixels = vec![];
        for (i, result) in decoded.into_iter().enumerate() {
            let index = c * batch.max(1) + i;
            match result {
                Ok(chw) => {
                    pixels.extend(chw);
                    read.push(index);
                }
                Err(e) => {
                    bar.suspend(|| eprintln!("warning: skipped {e}"));
                    skipped.push((index, e));
                }
            }
        }
        let n = pixels.len() / (3 * h * w);
        if n > 0 {
            let images = Tensor::from_vec(pixels, (n, 3, h, w), &Device::Cpu)?;
            if last_layers <= 1 {
                let t = vit.forward(&images)?;
                pooled.push(vit.pool_patches(&t)?);
                if keep_tokens {
                    tokens.push(t);
                }
            } else {
                let layers = vit.forward_last_layers(&images, last_layers)?;
                let prefix = vit.num_prefix_tokens();
                let means = layers
                    .iter()
                    .map(|t| t.narrow(1, prefix, t.dim(1)? - prefix)?.mean(1))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                pooled.push(Tensor::cat(&means, 1)?);
                if keep_tokens {
                    tokens.push(layers[layers.len() - 1].clone());
                }
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    anyhow::ensure!(
        !read.is_empty(),
        "none of the {} images could be read",
        files.len()
    );
    Ok(Features {
        pooled: Tensor::cat(&pooled, 0)?,
        tokens: if keep_tokens {
            Some(Tensor::cat(&tokens, 0)?)
        } else {
            None
        },
        read,
        skipped,
    })
}
