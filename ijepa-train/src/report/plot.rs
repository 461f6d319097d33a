//! Training curves of a run, drawn with plotters from its `metrics.csv`
//! rows: `loss.png` / `loss.svg` (every step's loss and a centred running
//! mean) and `metrics.png` / `metrics.svg` (panels for the loss, learning
//! rate, weight decay, EMA momentum, gradient norm and online k-NN).
//! Titles, axis names and ticks are drawn with the DejaVu Sans subset in
//! `assets/` (no system font needed).

use std::ops::Range;
use std::path::Path;
use std::sync::Once;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Result, TrainError};
use crate::report::metrics::StepMetrics;

/// How the loss axis is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    /// Evenly spaced values.
    #[default]
    Linear,
    /// Evenly spaced powers of ten (losses that fall by decades).
    Log,
}

const FONT: &[u8] = include_bytes!("../../assets/plot-font.ttf");
const FAMILY: &str = "sans-serif";
const LOSS_SIZE: (u32, u32) = (1000, 560);
const PANELS_SIZE: (u32, u32) = (1500, 820);
/// Lines of at most this many points get a marker at each.
const MARKED: usize = 40;
const RAW: RGBColor = RGBColor(150, 190, 230);
const MEAN: RGBColor = RGBColor(20, 60, 150);

fn register_font() {
    static ONCE: Once = Once::new();
    // The embedded font is valid (tested); a failure would only leave text out.
    ONCE.call_once(|| {
        drop(plotters::style::register_font(
            FAMILY,
            FontStyle::Normal,
            FONT,
        ))
    });
}

/// Half-width of the centred running mean for `n` steps: 1/100 of the run
/// on each side (a window of 1/50), at least 1 step.
pub fn half_window(n: usize) -> usize {
    (n / 100).max(1)
}

/// The centred running mean of `points` (each point's mean over `half`
/// steps on both sides, fewer at the ends): a smoothed curve that does not
/// lag the raw one.
pub fn centred_mean(points: &[(f64, f64)], half: usize) -> Vec<(f64, f64)> {
    let mut prefix = Vec::with_capacity(points.len() + 1);
    prefix.push(0.0);
    for p in points {
        prefix.push(prefix[prefix.len() - 1] + p.1);
    }
    (0..points.len())
        .map(|i| {
            let k = half.min(i).min(points.len() - 1 - i);
            let (a, b) = (i - k, i + k + 1);
            (points[i].0, (prefix[b] - prefix[a]) / (b - a) as f64)
        })
        .collect()
}

/// A named line of a chart.
struct Line {
    name: String,
    colour: RGBColor,
    width: u32,
    points: Vec<(f64, f64)>,
}

/// One chart: title, axis names, lines, the y scale.
struct Chart {
    title: &'static str,
    y_label: &'static str,
    lines: Vec<Line>,
    scale: Scale,
}

fn column(rows: &[StepMetrics], value: impl Fn(&StepMetrics) -> Option<f64>) -> Vec<(f64, f64)> {
    rows.iter()
        .filter_map(|r| Some((r.step as f64, value(r)?)))
        .filter(|p| p.1.is_finite())
        .collect()
}

fn single(name: &str, points: Vec<(f64, f64)>) -> Vec<Line> {
    vec![Line {
        name: name.into(),
        colour: MEAN,
        width: 2,
        points,
    }]
}

fn loss_chart(rows: &[StepMetrics], scale: Scale) -> Chart {
    let raw = column(rows, |r| Some(f64::from(r.loss)));
    let raw: Vec<(f64, f64)> = match scale {
        Scale::Linear => raw,
        Scale::Log => raw.into_iter().filter(|p| p.1 > 0.0).collect(),
    };
    let half = half_window(raw.len());
    let mean = centred_mean(&raw, half);
    Chart {
        title: "I-JEPA loss",
        y_label: "loss",
        lines: vec![
            Line {
                name: "each step".into(),
                colour: RAW,
                width: 1,
                points: raw,
            },
            Line {
                name: format!("centred mean of {} steps", 2 * half + 1),
                colour: MEAN,
                width: 2,
                points: mean,
            },
        ],
        scale,
    }
}

fn panels(rows: &[StepMetrics], scale: Scale) -> Vec<Chart> {
    let chart = |title, y_label, lines| Chart {
        title,
        y_label,
        lines,
        scale: Scale::Linear,
    };
    let knn = column(rows, |r| r.knn_top1.map(|v| 100.0 * v));
    vec![
        loss_chart(rows, scale),
        chart(
            "learning rate",
            "lr",
            single("lr", column(rows, |r| Some(r.lr))),
        ),
        chart(
            "weight decay",
            "wd",
            single("wd", column(rows, |r| Some(r.weight_decay))),
        ),
        chart(
            "EMA momentum",
            "momentum",
            single("momentum", column(rows, |r| Some(r.momentum))),
        ),
        chart(
            "gradient norm (before clipping)",
            "global L2 norm",
            single("norm", column(rows, |r| Some(r.grad_norm))),
        ),
        chart(
            "online k-NN top-1 (target encoder)",
            "top-1 %",
            single("k-NN", knn),
        ),
    ]
}

/// The range of `values` with a margin (a unit range around a constant).
fn span(values: impl Iterator<Item = f64>, scale: Scale) -> Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return match scale {
            Scale::Linear => 0.0..1.0,
            Scale::Log => 0.1..1.0,
        };
    }
    match scale {
        Scale::Log => lo / 1.2..hi * 1.2,
        Scale::Linear if hi > lo => {
            let m = 0.05 * (hi - lo);
            lo - m..hi + m
        }
        Scale::Linear => {
            let m = if lo == 0.0 { 1.0 } else { 0.01 * lo.abs() };
            lo - m..hi + m
        }
    }
}

type Drawn<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw_on<DB: DrawingBackend, Y>(
    area: &DrawingArea<DB, Shift>,
    chart: &Chart,
    x: Range<f64>,
    y: Y,
    (lo, hi): (f64, f64),
    big: bool,
) -> Drawn<DB>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let (title, label, ticks) = if big { (26, 20, 16) } else { (20, 16, 13) };
    let mut ctx = ChartBuilder::on(area)
        .caption(chart.title, (FAMILY, title))
        .margin(12)
        .x_label_area_size(if big { 48 } else { 40 })
        .y_label_area_size(if big { 84 } else { 78 })
        .build_cartesian_2d(x, y)?;
    ctx.configure_mesh()
        .x_desc("step")
        .y_desc(chart.y_label)
        .axis_desc_style((FAMILY, label))
        .label_style((FAMILY, ticks))
        .x_labels(if big { 10 } else { 6 })
        .y_labels(if big { 10 } else { 6 })
        .y_label_formatter(&|v| tick(*v, lo, hi))
        .x_label_formatter(&|v| step_tick(*v))
        .draw()?;
    let mut legend = false;
    for line in &chart.lines {
        let style = line.colour.stroke_width(line.width);
        if line.points.len() == 1 {
            ctx.draw_series(std::iter::once(Circle::new(
                line.points[0],
                4,
                style.filled(),
            )))?;
            continue;
        }
        if line.points.len() <= MARKED {
            // Few measurements (the online probe): each one marked.
            ctx.draw_series(
                line.points
                    .iter()
                    .map(|&p| Circle::new(p, 3, style.filled())),
            )?;
        }
        let drawn = ctx.draw_series(LineSeries::new(line.points.iter().copied(), style))?;
        if chart.lines.len() > 1 {
            legend = true;
            drawn
                .label(&line.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
    }
    if chart.lines.iter().all(|l| l.points.is_empty()) {
        let (w, h) = area.dim_in_pixel();
        area.draw(&Text::new(
            "not measured in this run",
            (w as i32 / 2 - 90, h as i32 / 2),
            (FAMILY, label),
        ))?;
    }
    if legend {
        ctx.configure_series_labels()
            .label_font((FAMILY, label))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    Ok(())
}

/// A tick label on an axis from `lo` to `hi`: every tick in one notation
/// (scientific for very small or large values), with the digits that tell
/// neighbouring ticks apart.
fn tick(v: f64, lo: f64, hi: f64) -> String {
    let magnitude = lo.abs().max(hi.abs());
    let spacing = ((hi - lo) / 10.0).max(f64::MIN_POSITIVE);
    if v == 0.0 {
        "0".into()
    } else if !(1e-2..1e5).contains(&magnitude) {
        let d = ((magnitude / spacing).log10().ceil() as i64).clamp(1, 6) as usize;
        format!("{v:.d$e}")
    } else {
        let d = ((-spacing.log10()).ceil() as i64).clamp(0, 8) as usize;
        let s = format!("{v:.d$}");
        match s.contains('.') {
            true => s.trim_end_matches('0').trim_end_matches('.').to_string(),
            false => s,
        }
    }
}

/// A step label: whole steps only.
fn step_tick(v: f64) -> String {
    match (v - v.round()).abs() < 1e-6 {
        true => format!("{v:.0}"),
        false => String::new(),
    }
}

fn draw_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &Chart,
    x: Range<f64>,
    big: bool,
) -> Drawn<DB> {
    let y = span(
        chart
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1)),
        chart.scale,
    );
    let ends = (y.start, y.end);
    match chart.scale {
        Scale::Linear => draw_on(area, chart, x, y, ends, big),
        Scale::Log => draw_on(area, chart, x, y.log_scale(), ends, big),
    }
}

fn steps(rows: &[StepMetrics]) -> Range<f64> {
    match (rows.first(), rows.last()) {
        (Some(a), Some(b)) if b.step > a.step => a.step as f64..b.step as f64,
        (Some(a), _) => a.step as f64 - 1.0..a.step as f64 + 1.0,
        _ => 0.0..1.0,
    }
}

fn loss_figure<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    rows: &[StepMetrics],
    scale: Scale,
) -> Drawn<DB> {
    area.fill(&WHITE)?;
    draw_chart(area, &loss_chart(rows, scale), steps(rows), true)?;
    area.present()
}

fn panels_figure<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    rows: &[StepMetrics],
    scale: Scale,
) -> Drawn<DB> {
    area.fill(&WHITE)?;
    for (cell, chart) in area.split_evenly((2, 3)).iter().zip(panels(rows, scale)) {
        draw_chart(cell, &chart, steps(rows), false)?;
    }
    area.present()
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::other(format!("drawing the plot: {e}")),
    }
}

/// `figure` as a PNG file at `path` (`size` in pixels).
fn png<F>(path: &Path, size: (u32, u32), figure: F) -> Result<()>
where
    F: for<'a> Fn(&DrawingArea<BitMapBackend<'a>, Shift>) -> Drawn<BitMapBackend<'a>>,
{
    register_font();
    let mut rgb = vec![0u8; (size.0 * size.1 * 3) as usize];
    figure(&BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area())
        .map_err(|e| plot_error(path, e))?;
    let img = image::RgbImage::from_raw(size.0, size.1, rgb)
        .ok_or_else(|| plot_error(path, "buffer size"))?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| plot_error(path, e))?;
    Ok(ijepa_encoder::io::output::write_file(
        path,
        bytes.get_ref(),
    )?)
}

/// `figure` as an SVG file at `path`.
fn svg<F>(path: &Path, size: (u32, u32), figure: F) -> Result<()>
where
    F: for<'a> Fn(&DrawingArea<SVGBackend<'a>, Shift>) -> Drawn<SVGBackend<'a>>,
{
    let mut text = String::new();
    figure(&SVGBackend::with_string(&mut text, size).into_drawing_area())
        .map_err(|e| plot_error(path, e))?;
    Ok(ijepa_encoder::io::output::write_file(
        path,
        text.as_bytes(),
    )?)
}

/// Draws the run's curves into `dir`: `loss.png`, `loss.svg`,
/// `metrics.png` and `metrics.svg` (each replaced whole, never half
/// written), the loss axis scaled by `scale`.
///
/// # Errors
/// A file that cannot be written.
pub fn draw(rows: &[StepMetrics], dir: &Path, scale: Scale) -> Result<()> {
    png(&dir.join("loss.png"), LOSS_SIZE, |a| {
        loss_figure(a, rows, scale)
    })?;
    svg(&dir.join("loss.svg"), LOSS_SIZE, |a| {
        loss_figure(a, rows, scale)
    })?;
    png(&dir.join("metrics.png"), PANELS_SIZE, |a| {
        panels_figure(a, rows, scale)
    })?;
    svg(&dir.join("metrics.svg"), PANELS_SIZE, |a| {
        panels_figure(a, rows, scale)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_font_loads() {
        assert!(plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    }

    #[test]
    fn the_running_mean_is_centred() {
        let p: Vec<(f64, f64)> = (0..7).map(|i| (i as f64, (i * i) as f64)).collect();
        let m = centred_mean(&p, 1);
        assert_eq!(m[0], (0.0, 0.0)); // an end: its own value only
        assert_eq!(m[3], (3.0, (4.0 + 9.0 + 16.0) / 3.0));
        assert_eq!(m[6], (6.0, 36.0));
        // A straight line is its own centred mean: no lag.
        let line: Vec<(f64, f64)> = (0..50).map(|i| (i as f64, 2.0 * i as f64)).collect();
        assert_eq!(centred_mean(&line, 5), line);
    }

    fn run(n: u64) -> Vec<StepMetrics> {
        (1..=n)
            .map(|step| {
                let t = step as f64 / n as f64;
                StepMetrics {
                    epoch: step / 100,
                    itr: step % 100,
                    step,
                    loss: (0.5 * (-3.0 * t).exp() + 0.02 * (step as f64 * 1.7).sin().abs()) as f32,
                    context_tokens: 60,
                    target_tokens: 120,
                    time_ms: 100.0,
                    lr: 1e-3 * t.min(0.1) * 10.0,
                    weight_decay: 0.04 + 0.36 * t,
                    momentum: 0.996 + 0.004 * t,
                    images: 32,
                    images_per_s: 320.0,
                    grad_norm: 1.0 / (1.0 + 5.0 * t),
                    knn_top1: step.is_multiple_of(100).then_some(0.2 + 0.5 * t),
                }
            })
            .collect()
    }

    #[test]
    fn a_run_draws_to_png_and_svg_files() {
        let dir = std::env::temp_dir().join(format!("ijepa-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (rows, scale) in [
            (run(1000), Scale::Log),
            (run(1), Scale::Linear),
            (vec![], Scale::Linear),
        ] {
            draw(&rows, &dir, scale).unwrap();
            for name in ["loss", "metrics"] {
                let img = image::open(dir.join(format!("{name}.png")))
                    .unwrap()
                    .to_rgb8();
                let size = if name == "loss" {
                    LOSS_SIZE
                } else {
                    PANELS_SIZE
                };
                assert_eq!(img.dimensions(), size);
                // Text was rasterised: dark pixels that are no line's colour.
                assert!(
                    img.pixels()
                        .filter(|p| p.0[0] < 60 && p.0 == [p.0[0]; 3])
                        .count()
                        > 500
                );
                let svg = std::fs::read_to_string(dir.join(format!("{name}.svg"))).unwrap();
                assert!(svg.starts_with("<svg") && svg.contains("step"));
            }
            let svg = std::fs::read_to_string(dir.join("loss.svg")).unwrap();
            assert!(svg.contains("I-JEPA loss") && svg.contains("\nloss\n"));
            if rows.len() > 1 {
                let png = image::open(dir.join("loss.png")).unwrap().to_rgb8();
                assert!(png.pixels().any(|p| p.0 == [MEAN.0, MEAN.1, MEAN.2]));
                assert!(svg.contains("centred mean of 21 steps"));
            }
            if let Ok(keep) = std::env::var("IJEPA_KEEP_PLOTS") {
                let to = Path::new(&keep).join(format!("{}", rows.len()));
                std::fs::create_dir_all(&to).unwrap();
                for f in ["loss.png", "loss.svg", "metrics.png", "metrics.svg"] {
                    std::fs::copy(dir.join(f), to.join(f)).unwrap();
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ticks_read_as_numbers() {
        assert_eq!(tick(0.0, 0.0, 1.0), "0");
        assert_eq!(tick(0.25, 0.0, 0.5), "0.25");
        assert_eq!(tick(1500.0, 0.0, 2000.0), "1500");
        assert_eq!(tick(0.998, 0.996, 1.0), "0.998");
        assert_eq!(tick(8e-4, 0.0, 1e-3), "8.0e-4");
        // A constant: ticks close together stay apart.
        assert_eq!(tick(1.005e-3, 0.99e-3, 1.01e-3), "1.005e-3");
        assert_eq!(step_tick(3.0), "3");
        assert_eq!(step_tick(2.5), "");
    }
}
