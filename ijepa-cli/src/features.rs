//! Frozen-encoder features of image files, shared by `embed` and `probe`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ijepa_encoder::weights::DataConfig;
use ijepa_encoder::VisionTransformer;
use ijepa_train::data::{EvalTransform, Filter};
use ijepa_train::probe::{extract_files, FileFeatures};
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

/// The evaluation transform the weights ask for (timm's, Pillow-exact), at
/// `image_size` when given; the size is checked against the encoder's
/// patch (at most [`ijepa_encoder::MAX_PATCHES`] patches) before any image
/// is decoded.
pub fn eval_transform(
    data: &DataConfig,
    image_size: Option<usize>,
    encoder: &ijepa_encoder::VitConfig,
) -> Result<EvalTransform> {
    let size = image_size.map_or(data.input_size, |s| (s, s));
    ijepa_encoder::patch_grid(size.0, size.1, encoder.patch_size).with_context(
        || match image_size {
            Some(s) => format!("--image-size {s}"),
            None => "the weights' input size".to_string(),
        },
    )?;
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

/// [`ijepa_train::probe::extract_files`] with a progress bar and a warning
/// per unreadable file.
pub fn extract(
    vit: &VisionTransformer,
    transform: &EvalTransform,
    files: &[PathBuf],
    batch: usize,
    last_layers: usize,
    keep_tokens: bool,
) -> Result<FileFeatures> {
    let bar = progress(files.len(), "images");
    let features = extract_files(
        vit,
        transform,
        files,
        batch,
        last_layers,
        keep_tokens,
        &mut |done, skipped| {
            // The reason names the file.
            if let Some((_, why)) = skipped {
                bar.suspend(|| eprintln!("warning: skipped {why}"));
            }
            bar.inc(done as u64);
        },
    );
    bar.finish_and_clear();
    Ok(features?)
}
