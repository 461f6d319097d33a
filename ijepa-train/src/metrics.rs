//! Per-step metrics: `metrics.csv` and the loss-curve picture.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};

use crate::error::{io, Result};

/// One optimizer step, as logged.
#[derive(Debug, Clone, PartialEq)]
pub struct StepMetrics {
    /// Epoch, from 0.
    pub epoch: u64,
    /// Iteration within the epoch, from 0 (the official `itr`).
    pub itr: u64,
    /// Optimizer step, from 1.
    pub step: u64,
    /// Loss (mean over the accumulated batches).
    pub loss: f32,
    /// Context patches per image.
    pub context_tokens: usize,
    /// Target patches per image, over all target blocks.
    pub target_tokens: usize,
    /// Wall time of the step in milliseconds.
    pub time_ms: f64,
    /// Learning rate.
    pub lr: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// EMA momentum of the teacher update.
    pub momentum: f64,
    /// Images in the step.
    pub images: usize,
    /// Images per second of this step.
    pub images_per_s: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Online k-NN probe top-1 of the target encoder, on the steps it runs.
    pub knn_top1: Option<f64>,
}

/// The columns of `metrics.csv`: the official log's first, then ours.
pub const HEADER: &str =
    "epoch,itr,step,loss,context_tokens,target_tokens,time_ms,lr,wd,momentum,images,img_per_s,grad_norm,knn_top1";

impl StepMetrics {
    fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{:.1},{:.6e},{:.6e},{:.8},{},{:.2},{:.6e},{}",
            self.epoch,
            self.itr,
            self.step,
            self.loss,
            self.context_tokens,
            self.target_tokens,
            self.time_ms,
            self.lr,
            self.weight_decay,
            self.momentum,
            self.images,
            self.images_per_s,
            self.grad_norm,
            self.knn_top1.map_or(String::new(), |v| format!("{v:.4}"))
        )
    }
}

/// `metrics.csv` of a run directory, one flushed line per step.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
    losses: Vec<(u64, f32)>,
}

impl MetricsLog {
    /// Opens `run_dir/metrics.csv`, keeping only the rows of steps up to
    /// `keep_through` (the checkpoint a run resumes from: rows a killed run
    /// logged after it are dropped, they will be logged again).
    ///
    /// # Errors
    /// A file that cannot be read or written.
    pub fn open(run_dir: &Path, keep_through: u64) -> Result<Self> {
        let path = run_dir.join("metrics.csv");
        let mut kept = vec![HEADER.to_string()];
        let mut losses = vec![];
        if keep_through > 0 && path.exists() {
            let f = File::open(&path).map_err(io(&path))?;
            for line in BufReader::new(f).lines().skip(1) {
                let line = line.map_err(io(&path))?;
                let cols: Vec<&str> = line.split(',').collect();
                let (Some(step), Some(loss)) = (
                    cols.get(2).and_then(|s| s.parse::<u64>().ok()),
                    cols.get(3).and_then(|s| s.parse::<f32>().ok()),
                ) else {
                    continue;
                };
                if step <= keep_through {
                    losses.push((step, loss));
                    kept.push(line);
                }
            }
        }
        let mut text = kept.join("\n");
        text.push('\n');
        ijepa_encoder::output::write_file(&path, text.as_bytes())?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(Self { path, file, losses })
    }

    /// Appends one step.
    ///
    /// # Errors
    /// A failed write.
    pub fn push(&mut self, m: &StepMetrics) -> Result<()> {
        writeln!(self.file, "{}", m.csv())
            .and_then(|_| self.file.flush())
            .map_err(io(&self.path))?;
        self.losses.push((m.step, m.loss));
        Ok(())
    }

    /// `(step, loss)` of every logged step.
    pub fn losses(&self) -> &[(u64, f32)] {
        &self.losses
    }
}

const W: u32 = 800;
const H: u32 = 400;
const MARGIN: u32 = 40;

/// Draws the loss curve (each step in light blue, a running mean over 1/50
/// of the run in dark blue; the y axis spans the losses, labelled with its
/// ends; the x axis the steps) to a PNG file.
///
/// # Errors
/// A file that cannot be written.
pub fn plot_losses(losses: &[(u64, f32)], path: &Path) -> Result<()> {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let (x0, x1, y0, y1) = (MARGIN, W - 10, 10, H - MARGIN);
    let axis = Rgb([90, 90, 90]);
    for x in x0..=x1 {
        img.put_pixel(x, y1, axis);
    }
    for y in y0..=y1 {
        img.put_pixel(x0, y, axis);
    }
    let finite: Vec<(u64, f32)> = losses
        .iter()
        .copied()
        .filter(|(_, l)| l.is_finite())
        .collect();
    if let (Some(first), Some(last)) = (finite.first(), finite.last()) {
        let lo = finite.iter().map(|p| p.1).fold(f32::INFINITY, f32::min);
        let hi = finite.iter().map(|p| p.1).fold(f32::NEG_INFINITY, f32::max);
        let span_y = (hi - lo).max(1e-12);
        let span_x = (last.0 - first.0).max(1) as f64;
        let to_px = |step: u64, loss: f32| {
            let fx = (step - first.0) as f64 / span_x;
            let fy = ((loss - lo) / span_y) as f64;
            (
                x0 as f64 + fx * (x1 - x0) as f64,
                y1 as f64 - fy * (y1 - y0) as f64,
            )
        };
        let raw: Vec<(f64, f64)> = finite.iter().map(|&(s, l)| to_px(s, l)).collect();
        polyline(&mut img, &raw, Rgb([160, 200, 235]));
        let window = (finite.len() / 50).max(1);
        let mut sum = 0.0f64;
        let smooth: Vec<(f64, f64)> = finite
            .iter()
            .enumerate()
            .map(|(i, &(s, l))| {
                sum += l as f64;
                if i >= window {
                    sum -= finite[i - window].1 as f64;
                }
                to_px(s, (sum / (i + 1).min(window) as f64) as f32)
            })
            .collect();
        polyline(&mut img, &smooth, Rgb([20, 60, 150]));
        text(&mut img, 2, y0, &format!("{hi:.4}"));
        text(&mut img, 2, y1 - 7, &format!("{lo:.4}"));
        text(&mut img, x0, y1 + 6, &first.0.to_string());
        let end = last.0.to_string();
        text(&mut img, x1 - 4 * end.len() as u32, y1 + 6, &end);
    }
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| crate::error::TrainError::Io {
            path: path.to_path_buf(),
            error: std::io::Error::other(e),
        })?;
    Ok(ijepa_encoder::output::write_file(path, png.get_ref())?)
}

fn polyline(img: &mut RgbImage, points: &[(f64, f64)], colour: Rgb<u8>) {
    for pair in points.windows(2) {
        let ((ax, ay), (bx, by)) = (pair[0], pair[1]);
        let n = ((bx - ax).abs().max((by - ay).abs()).ceil() as usize).max(1);
        for i in 0..=n {
            let t = i as f64 / n as f64;
            let (x, y) = (ax + t * (bx - ax), ay + t * (by - ay));
            if x >= 0.0 && y >= 0.0 && (x as u32) < img.width() && (y as u32) < img.height() {
                img.put_pixel(x as u32, y as u32, colour);
            }
        }
    }
}

/// 3×5 glyphs of the characters numbers need, one row per 3 bits.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'e' => [0, 7, 7, 4, 7],
        _ => return None,
    })
}

fn text(img: &mut RgbImage, x: u32, y: u32, s: &str) {
    for (i, c) in s.chars().enumerate() {
        let Some(rows) = glyph(c) else { continue };
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    let (px, py) = (x + 4 * i as u32 + col, y + r as u32);
                    if px < img.width() && py < img.height() {
                        img.put_pixel(px, py, Rgb([0, 0, 0]));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: u64, loss: f32) -> StepMetrics {
        StepMetrics {
            epoch: 0,
            itr: step - 1,
            step,
            loss,
            context_tokens: 50,
            target_tokens: 120,
            time_ms: 10.0,
            lr: 1e-3,
            weight_decay: 0.04,
            momentum: 0.996,
            images: 8,
            images_per_s: 800.0,
            grad_norm: 1.0,
            knn_top1: None,
        }
    }

    #[test]
    fn resuming_drops_rows_logged_after_the_checkpoint() {
        let dir = std::env::temp_dir().join(format!("ijepa-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = MetricsLog::open(&dir, 0).unwrap();
        for s in 1..=5 {
            log.push(&row(s, 1.0 / s as f32)).unwrap();
        }
        drop(log);
        let log = MetricsLog::open(&dir, 3).unwrap();
        assert_eq!(log.losses(), &[(1, 1.0), (2, 0.5), (3, 1.0 / 3.0)]);
        let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(text.starts_with("epoch,itr,step,loss,context_tokens,target_tokens,time_ms,"));
        plot_losses(log.losses(), &dir.join("loss.png")).unwrap();
        let png = image::open(dir.join("loss.png")).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), (W, H));
        // The curve is drawn: some pixels are the running-mean colour.
        assert!(png.pixels().any(|p| *p == Rgb([20, 60, 150])));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
