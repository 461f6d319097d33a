//! Per-step metrics: `metrics.csv`, TensorBoard scalars of the same
//! columns, and the running throughput the progress line shows.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::error::{io, Result};
use crate::report::tensorboard::EventWriter;

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
    /// Every column of [`HEADER`] with its value (`None`: not measured at
    /// this step), in order.
    pub fn values(&self) -> [(&'static str, Option<f64>); 14] {
        [
            ("epoch", Some(self.epoch as f64)),
            ("itr", Some(self.itr as f64)),
            ("step", Some(self.step as f64)),
            ("loss", Some(f64::from(self.loss))),
            ("context_tokens", Some(self.context_tokens as f64)),
            ("target_tokens", Some(self.target_tokens as f64)),
            ("time_ms", Some(self.time_ms)),
            ("lr", Some(self.lr)),
            ("wd", Some(self.weight_decay)),
            ("momentum", Some(self.momentum)),
            ("images", Some(self.images as f64)),
            ("img_per_s", Some(self.images_per_s)),
            ("grad_norm", Some(self.grad_norm)),
            ("knn_top1", self.knn_top1),
        ]
    }

    /// A row of `metrics.csv` (`None` when it is not one).
    pub fn from_csv(line: &str) -> Option<Self> {
        let c: Vec<&str> = line.split(',').collect();
        if c.len() != 14 {
            return None;
        }
        Some(Self {
            epoch: c[0].parse().ok()?,
            itr: c[1].parse().ok()?,
            step: c[2].parse().ok()?,
            loss: c[3].parse().ok()?,
            context_tokens: c[4].parse().ok()?,
            target_tokens: c[5].parse().ok()?,
            time_ms: c[6].parse().ok()?,
            lr: c[7].parse().ok()?,
            weight_decay: c[8].parse().ok()?,
            momentum: c[9].parse().ok()?,
            images: c[10].parse().ok()?,
            images_per_s: c[11].parse().ok()?,
            grad_norm: c[12].parse().ok()?,
            knn_top1: match c[13] {
                "" => None,
                v => Some(v.parse().ok()?),
            },
        })
    }

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

/// `metrics.csv` of a run directory, one flushed line per step, and the
/// same values as TensorBoard scalars (an event file in the directory;
/// tags are the column names).
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
    events: EventWriter,
    rows: Vec<StepMetrics>,
}

impl MetricsLog {
    /// Opens `run_dir/metrics.csv`, keeping only the rows of steps up to
    /// `keep_through` (the checkpoint a run resumes from: rows a killed run
    /// logged after it are dropped, they will be logged again), and starts
    /// a new TensorBoard event file that supersedes older files' steps
    /// after `keep_through`.
    ///
    /// # Errors
    /// A file that cannot be read or written.
    pub fn open(run_dir: &Path, keep_through: u64) -> Result<Self> {
        let path = run_dir.join("metrics.csv");
        let mut kept = vec![HEADER.to_string()];
        let mut rows = vec![];
        if keep_through > 0 && path.exists() {
            for (line, row) in lines(&path)? {
                if row.step <= keep_through {
                    rows.push(row);
                    kept.push(line);
                }
            }
        }
        let mut text = kept.join("\n");
        text.push('\n');
        ijepa_encoder::io::output::write_file(&path, text.as_bytes())?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let events = EventWriter::create(run_dir, Some(keep_through + 1))?;
        Ok(Self {
            path,
            file,
            events,
            rows,
        })
    }

    /// Appends one step.
    ///
    /// # Errors
    /// A failed write.
    pub fn push(&mut self, m: &StepMetrics) -> Result<()> {
        writeln!(self.file, "{}", m.csv())
            .and_then(|_| self.file.flush())
            .map_err(io(&self.path))?;
        let scalars: Vec<(&str, f32)> = m
            .values()
            .into_iter()
            .filter(|(name, _)| *name != "step")
            .filter_map(|(name, v)| Some((name, v? as f32)))
            .collect();
        self.events.scalars(m.step, &scalars)?;
        self.rows.push(m.clone());
        Ok(())
    }

    /// Every logged step, in order.
    pub fn rows(&self) -> &[StepMetrics] {
        &self.rows
    }
}

/// The rows of a `metrics.csv` file, each with its text (lines that are
/// not rows, such as the header, are left out).
fn lines(path: &Path) -> Result<Vec<(String, StepMetrics)>> {
    let f = File::open(path).map_err(io(path))?;
    let mut out = vec![];
    for line in BufReader::new(f).lines() {
        let line = line.map_err(io(path))?;
        if let Some(row) = StepMetrics::from_csv(&line) {
            out.push((line, row));
        }
    }
    Ok(out)
}

/// The steps logged in `run_dir/metrics.csv`, in order.
///
/// # Errors
/// The file cannot be read.
pub fn read_rows(run_dir: &Path) -> Result<Vec<StepMetrics>> {
    Ok(lines(&run_dir.join("metrics.csv"))?
        .into_iter()
        .map(|(_, row)| row)
        .collect())
}

/// Images per second over the last steps (a running window), and the time
/// left at that pace: the figure a person reads, where one step's rate
/// jumps with probes, checkpoints and the machine's load.
#[derive(Debug, Clone)]
pub struct Throughput {
    window: usize,
    recent: VecDeque<(usize, f64)>,
    images: usize,
    seconds: f64,
}

impl Throughput {
    /// A running window of `window` steps (at least 1).
    pub fn new(window: usize) -> Self {
        Self {
            window: window.max(1),
            recent: VecDeque::new(),
            images: 0,
            seconds: 0.0,
        }
    }

    /// Adds one step of `images` that took `seconds`.
    pub fn push(&mut self, images: usize, seconds: f64) {
        self.recent.push_back((images, seconds));
        self.images += images;
        self.seconds += seconds;
        if self.recent.len() > self.window {
            let (i, s) = self.recent.pop_front().unwrap_or_default();
            self.images -= i;
            self.seconds -= s;
        }
    }

    /// Images per second over the window (0 before any step).
    pub fn images_per_s(&self) -> f64 {
        match self.seconds > 0.0 {
            true => self.images as f64 / self.seconds,
            false => 0.0,
        }
    }

    /// Seconds `steps` more steps take at the window's mean step time.
    pub fn seconds_for(&self, steps: u64) -> f64 {
        match self.recent.len() {
            0 => 0.0,
            n => self.seconds / n as f64 * steps as f64,
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
            knn_top1: (step == 2).then_some(0.25),
        }
    }

    #[test]
    fn values_name_the_header_columns_and_rows_read_back() {
        let names: Vec<&str> = row(1, 0.5).values().iter().map(|v| v.0).collect();
        assert_eq!(names.join(","), HEADER);
        for r in [row(1, 0.5), row(2, 0.125)] {
            assert_eq!(StepMetrics::from_csv(&r.csv()), Some(r));
        }
        assert_eq!(StepMetrics::from_csv("1,2,3"), None);
        assert_eq!(StepMetrics::from_csv(HEADER), None);
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
        let steps: Vec<u64> = log.rows().iter().map(|r| r.step).collect();
        assert_eq!(steps, [1, 2, 3]);
        assert_eq!(read_rows(&dir).unwrap(), log.rows());
        assert_eq!(log.rows()[1], row(2, 0.5));
        let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(text.starts_with("epoch,itr,step,loss,context_tokens,target_tokens,time_ms,"));
        let events = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("tfevents")
            })
            .count();
        assert_eq!(events, 2, "one event file per opening");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn throughput_is_a_running_window() {
        let mut t = Throughput::new(2);
        assert_eq!(t.images_per_s(), 0.0);
        t.push(8, 1.0);
        t.push(8, 3.0);
        assert_eq!(t.images_per_s(), 4.0);
        t.push(16, 1.0); // the first step leaves the window
        assert_eq!(t.images_per_s(), 6.0);
        assert_eq!(t.seconds_for(10), 20.0);
    }
}
