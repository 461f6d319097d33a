//! Block-shape rules: how a block's extent follows from a scale and an
//! aspect ratio.

use rand::Rng;

use crate::error::MaskingError;
use crate::grid::{BlockShape, Grid};

/// A `(min, max)` range of a configuration, as in the Python APIs.
pub type Range = (f64, f64);

pub(crate) fn lerp((lo, hi): Range, u: f64) -> f64 {
    lo + u * (hi - lo)
}

/// Checks `lo <= hi`, both finite, inside `[domain_lo, domain_hi]`, with
/// open ends where asked.
pub(crate) fn check_range(
    name: &'static str,
    (lo, hi): Range,
    open_lo: bool,
    domain_hi: f64,
    open_hi: bool,
    expected: &'static str,
) -> Result<(), MaskingError> {
    let ok = lo.is_finite()
        && hi.is_finite()
        && lo <= hi
        && if open_lo { lo > 0.0 } else { lo >= 0.0 }
        && if open_hi {
            hi < domain_hi
        } else {
            hi <= domain_hi
        };
    if ok {
        Ok(())
    } else {
        Err(MaskingError::InvalidRange {
            name,
            min: lo,
            max: hi,
            expected,
        })
    }
}

/// Checks a fraction in `(0, 1]` (scales).
/// Most blocks of one kind per image: far above any published recipe (the
/// paper uses 4 targets, V-JEPA 8), low enough that a typo cannot make
/// sampling slow or masks huge.
pub const MAX_BLOCKS: usize = 64;

/// A block count must lie in `1..=MAX_BLOCKS`.
pub(crate) fn check_count(name: &'static str, value: usize) -> Result<(), MaskingError> {
    if (1..=MAX_BLOCKS).contains(&value) {
        return Ok(());
    }
    Err(MaskingError::Count {
        name,
        value,
        max: MAX_BLOCKS,
    })
}

pub(crate) fn check_fraction(name: &'static str, range: Range) -> Result<(), MaskingError> {
    check_range(name, range, true, 1.0, false, "0 < min <= max <= 1")
}

/// Checks a positive, finite aspect-ratio range.
pub(crate) fn check_aspect_ratio(name: &'static str, range: Range) -> Result<(), MaskingError> {
    check_range(
        name,
        range,
        true,
        f64::INFINITY,
        true,
        "0 < min <= max, both finite",
    )
}

/// The temporal extent of a block on a rank-3 grid: `max(1, ⌊T·s⌋)` frames,
/// as V-JEPA's multi-block masks do (always 1 on 2-D grids).
fn frames(grid: &Grid, temporal_scale: Range, u: f64) -> usize {
    let t = (grid.frames() as f64 * lerp(temporal_scale, u)).floor() as usize;
    t.clamp(1, grid.frames())
}

/// The official rule (facebookresearch/ijepa `_sample_block_size`).
///
/// One uniform `u` sets *both* the scale and the aspect ratio; the block keeps
/// `⌊N·scale⌋` patches of the `N = H·W` in a frame, `h = round(√(area·ar))`,
/// `w = round(√(area/ar))` with Python's round-half-even, and each side is
/// capped at `H−1` / `W−1` as the official code does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OfficialShape {
    pub scale: Range,
    pub aspect_ratio: Range,
    pub temporal_scale: Range,
}

impl OfficialShape {
    pub fn shape(&self, grid: &Grid, u: f64) -> BlockShape {
        let area = (grid.spatial_patches() as f64 * lerp(self.scale, u)).floor();
        let ar = lerp(self.aspect_ratio, u);
        let side = |x: f64, cap: usize| (x.sqrt().round_ties_even() as usize).min(cap - 1);
        BlockShape {
            frames: frames(grid, self.temporal_scale, u),
            height: side(area * ar, grid.height()),
            width: side(area / ar, grid.width()),
        }
    }

    /// The smallest block (fewest patches) this rule can produce for any
    /// `u ∈ [0, 1)`.
    ///
    /// The shape is a step function of `u`; it can only change where the
    /// area, a rounded side or the frame count crosses an integer boundary.
    /// Evaluating at every such breakpoint and between each pair of them
    /// visits every step, so the minimum is exact.
    pub fn smallest(&self, grid: &Grid) -> BlockShape {
        let n = grid.spatial_patches() as f64;
        let t = grid.frames() as f64;
        let mut points = vec![0.0];
        // Where `x(u) = lerp(range, u)` equals `value`.
        let mut at = |range: Range, value: f64| {
            if range.1 > range.0 {
                let u = (value - range.0) / (range.1 - range.0);
                if (0.0..1.0).contains(&u) {
                    points.push(u);
                }
            }
        };
        let (a_lo, a_hi) = ((n * self.scale.0).floor(), (n * self.scale.1).ceil());
        let mut area = a_lo.max(0.0);
        while area <= a_hi {
            at(self.scale, area / n);
            if area > 0.0 {
                let longest = grid.height().max(grid.width());
                for m in 0..=longest {
                    let half = (m as f64 + 0.5).powi(2);
                    at(self.aspect_ratio, half / area);
                    at(self.aspect_ratio, area / half);
                }
            }
            area += 1.0;
        }
        for k in 0..=grid.frames() {
            at(self.temporal_scale, k as f64 / t);
        }
        points.sort_by(f64::total_cmp);
        points.dedup();
        let mut best = self.shape(grid, 0.0);
        for (i, &u) in points.iter().enumerate() {
            let next = points.get(i + 1).copied().unwrap_or(1.0);
            for v in [u, 0.5 * (u + next)] {
                let s = self.shape(grid, v);
                if s.area() < best.area() {
                    best = s;
                }
            }
        }
        best
    }
}

/// The stable-pretraining rule (`IJEPAMasking._sample_block_params`).
///
/// Scale uniform and aspect ratio log-uniform, drawn independently; the block
/// keeps `N·scale` patches (not floored), `h = round(√(area/ar))`,
/// `w = round(√(area·ar))` (so the aspect ratio is width / height here),
/// each side clamped to `[1, H]` / `[1, W]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SeedShape {
    pub scale: Range,
    pub aspect_ratio: Range,
    pub temporal_scale: Range,
}

impl SeedShape {
    pub fn draw(&self, grid: &Grid, rng: &mut impl Rng) -> BlockShape {
        let area = grid.spatial_patches() as f64 * lerp(self.scale, rng.random());
        let log_ar = lerp(
            (self.aspect_ratio.0.ln(), self.aspect_ratio.1.ln()),
            rng.random(),
        );
        let ar = log_ar.exp();
        let side = |x: f64, cap: usize| (x.sqrt().round_ties_even() as usize).clamp(1, cap);
        let frames = if grid.frames() > 1 {
            frames(grid, self.temporal_scale, rng.random())
        } else {
            1
        };
        BlockShape {
            frames,
            height: side(area / ar, grid.height()),
            width: side(area * ar, grid.width()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn official() -> OfficialShape {
        OfficialShape {
            scale: (0.15, 0.2),
            aspect_ratio: (0.75, 1.5),
            temporal_scale: (1.0, 1.0),
        }
    }

    #[test]
    fn official_shapes_match_hand_computed_values() {
        let g = Grid::new_2d(14, 14).unwrap();
        // u = 0: area ⌊196·0.15⌋ = 29, ar 0.75: h = round(4.66) = 5, w = round(6.22) = 6.
        let s = official().shape(&g, 0.0);
        assert_eq!((s.height, s.width, s.area()), (5, 6, 30));
        // u → 1: area ⌊196·0.2⌋ = 39, ar 1.5: h = round(7.65) = 8, w = round(5.10) = 5.
        let s = official().shape(&g, 0.999_999);
        assert_eq!((s.height, s.width, s.area()), (8, 5, 40));
        // The context block: scale (0.85, 1), ar 1, capped at 13 = H − 1.
        let ctx = OfficialShape {
            scale: (0.85, 1.0),
            aspect_ratio: (1.0, 1.0),
            temporal_scale: (1.0, 1.0),
        };
        assert_eq!(ctx.shape(&g, 0.0).height, 13);
        assert_eq!(ctx.shape(&g, 0.999).width, 13);
    }

    #[test]
    fn round_is_half_even_like_python() {
        // area 10, ar 0.625: √6.25 = 2.5 → 2 (half-even), √16 = 4.
        let rule = OfficialShape {
            scale: (0.1, 0.1),
            aspect_ratio: (0.625, 0.625),
            temporal_scale: (1.0, 1.0),
        };
        let s = rule.shape(&Grid::new_2d(10, 10).unwrap(), 0.3);
        assert_eq!((s.height, s.width), (2, 4));
    }

    #[test]
    fn smallest_matches_a_dense_scan() {
        for (g, rule) in [
            (Grid::new_2d(14, 14).unwrap(), official()),
            (
                Grid::new_3d(8, 16, 16).unwrap(),
                OfficialShape {
                    scale: (0.05, 0.4),
                    aspect_ratio: (0.3, 3.0),
                    temporal_scale: (0.3, 1.0),
                },
            ),
            (
                Grid::new_2d(5, 9).unwrap(),
                OfficialShape {
                    scale: (0.01, 0.9),
                    aspect_ratio: (0.2, 4.0),
                    temporal_scale: (1.0, 1.0),
                },
            ),
        ] {
            let smallest = rule.smallest(&g).area();
            let scanned = (0..200_000)
                .map(|i| rule.shape(&g, i as f64 / 200_000.0).area())
                .min()
                .unwrap();
            assert_eq!(smallest, scanned, "{g}");
        }
    }

    #[test]
    fn seed_shapes_stay_inside_the_grid() {
        let g = Grid::new_2d(3, 20).unwrap();
        let rule = SeedShape {
            scale: (0.5, 0.9),
            aspect_ratio: (0.1, 10.0),
            temporal_scale: (1.0, 1.0),
        };
        let mut rng = crate::rng::batch_rng(7, 0);
        for _ in 0..1000 {
            let s = rule.draw(&g, &mut rng);
            assert!((1..=3).contains(&s.height) && (1..=20).contains(&s.width));
        }
    }
}
