//! Frozen-encoder features of image files, shared by `embed` and `probe`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ijepa_encoder::weights::DataConfig;
use ijepa_encoder::VisionTransformer;
use ijepa_train::data::{EvalTransform, Filter};
use ijepa_train::probe::{
    extract_files, extract_files_into, Extracted, FileFeatures, Progress, Sink,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Most images per forward pass of `embed` and `probe`.
pub const MAX_BATCH: usize = 4096;

/// Checks `--batch-size` before any work.
pub fn check_batch(batch: usize) -> Result<()> {
    anyhow::ensure!(
        (1..=MAX_BATCH).contains(&batch),
        "--batch-size {batch} is out of range: 1 to {MAX_BATCH} images per forward pass"
    );
    Ok(())
}

/// How images are prepared for the encoder: the weights' evaluation
/// transform (timm's `pretrained_cfg`), or its size, resize and crop as set
/// here (small images are often trained without ImageNet's 0.875 crop).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TransformArgs {
    /// Square input size in pixels (default: the weights' pretrained_cfg; at
    /// most 16,384 patches per image, e.g. 2048 at patch 16).
    #[arg(long)]
    image_size: Option<usize>,
    /// Fraction of the resized image the centre crop keeps, in (0, 1] and at
    /// least image size / 8192 (default: the weights'; 1: no crop).
    #[arg(long, conflicts_with = "resize")]
    crop_pct: Option<f64>,
    /// Size the shorter side is resized to before the centre crop (1 to 8192).
    #[arg(long)]
    resize: Option<usize>,
}

impl TransformArgs {
    /// `--image-size`, when given.
    pub fn image_size(&self) -> Option<usize> {
        self.image_size
    }
}

/// The evaluation transform the weights ask for (timm's, Pillow-exact), with
/// `args`' changes; the size is checked against the encoder's patch (at
/// most [`ijepa_encoder::MAX_PATCHES`] patches) before any image is
/// decoded. Prints it in one line.
pub fn eval_transform(
    data: &DataConfig,
    args: &TransformArgs,
    encoder: &ijepa_encoder::VitConfig,
) -> Result<EvalTransform> {
    let size = args.image_size.map_or(data.input_size, |s| (s, s));
    ijepa_encoder::patch_grid(size.0, size.1, encoder.patch_size).with_context(|| {
        match args.image_size {
            Some(s) => format!("--image-size {s}"),
            None => "the weights' input size".to_string(),
        }
    })?;
    transform(data, args)
}

/// The evaluation transform of `data` with `args`' changes, printed in one
/// line (no encoder to check the size against: [`eval_transform`] does).
pub fn transform(data: &DataConfig, args: &TransformArgs) -> Result<EvalTransform> {
    let size = args.image_size.map_or(data.input_size, |s| (s, s));
    let filter = Filter::from_name(&data.interpolation).with_context(|| {
        format!(
            "interpolation {:?} is not supported (bilinear, bicubic)",
            data.interpolation
        )
    })?;
    let crop_pct = args.crop_pct.unwrap_or(data.crop_pct);
    let mut t = EvalTransform::new(
        size,
        crop_pct,
        data.crop_mode == "squash",
        filter,
        data.mean,
        data.std,
    )
    .with_context(|| match args.crop_pct {
        Some(_) => "--crop-pct".to_string(),
        None => "the weights' evaluation transform".to_string(),
    })?;
    if let Some(r) = args.resize {
        t = t.with_resize(r).context("--resize")?;
    }
    eprintln!("eval transform: {}", t.describe());
    Ok(t)
}

/// A progress bar over `n` items (hidden when stderr is not a terminal).
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

/// Runs `f` with a progress callback that draws a bar over `n` images and
/// warns once per unreadable file.
fn with_progress<T>(n: usize, f: impl FnOnce(&mut Progress<'_>) -> T) -> T {
    let bar = progress(n, "images");
    let out = f(&mut |done, skipped| {
        // The reason names the file.
        if let Some((_, why)) = skipped {
            bar.suspend(|| eprintln!("warning: skipped {why}"));
        }
        bar.inc(done as u64);
    });
    bar.finish_and_clear();
    out
}

/// [`ijepa_train::probe::extract_files`] (`None`: the pixels themselves)
/// with a progress bar and a warning per unreadable file.
pub fn extract(
    vit: Option<&VisionTransformer>,
    transform: &EvalTransform,
    files: &[PathBuf],
    batch: usize,
    last_layers: usize,
    keep_tokens: bool,
) -> Result<FileFeatures> {
    Ok(with_progress(files.len(), |p| {
        extract_files(vit, transform, files, batch, last_layers, keep_tokens, p)
    })?)
}

/// [`extract`], each batch's pooled features handed to `sink` (a feature
/// file being written).
pub fn extract_into(
    vit: Option<&VisionTransformer>,
    transform: &EvalTransform,
    files: &[PathBuf],
    batch: usize,
    last_layers: usize,
    sink: &mut Sink<'_>,
) -> Result<Extracted> {
    Ok(with_progress(files.len(), |p| {
        extract_files_into(vit, transform, files, batch, last_layers, false, p, sink)
    })?)
}
