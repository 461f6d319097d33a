//! The one error type of this crate. It holds sides as plain numbers (not
//! the grid types, whose constructors return it).

/// Why a grid or a masking configuration was rejected.
///
/// Every configuration that could make sampling loop forever or produce an
/// invalid mask is refused when the sampler is built, so `sample` itself
/// never fails and never hangs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MaskingError {
    /// A grid side of zero, or a grid too large for `u32` patch indices.
    #[error("invalid patch grid {dims:?}: {reason}")]
    InvalidGrid {
        /// The sides as given (frames, height, width for rank 3).
        dims: Vec<usize>,
        /// What is wrong with them.
        reason: &'static str,
    },

    /// A grid string such as `14x14` or `8x14x14` that does not parse.
    #[error("cannot parse patch grid {input:?}: expected HxW or TxHxW with positive integers, e.g. 14x14 or 8x14x14")]
    GridSyntax {
        /// The text as given.
        input: String,
    },

    /// A `(min, max)` range that is empty, not finite, or outside its domain.
    #[error("{name} = ({min}, {max}) is invalid: expected {expected}")]
    InvalidRange {
        /// The configuration field, e.g. `target_scale`.
        name: &'static str,
        /// Lower end as given.
        min: f64,
        /// Upper end as given.
        max: f64,
        /// The domain it must lie in, in words.
        expected: &'static str,
    },

    /// A count outside `1..=max`.
    #[error("{name} = {value} is invalid: expected 1 to {max}")]
    Count {
        /// The configuration field, e.g. `num_targets`.
        name: &'static str,
        /// The value as given.
        value: usize,
        /// The largest value accepted.
        max: usize,
    },

    /// A block the configuration can draw is too small to ever be kept.
    ///
    /// The official code retries such a block forever (facebookresearch/ijepa
    /// issue #68); we refuse the configuration instead.
    #[error(
        "{which} blocks can be as small as {} = {area} patches on the {} grid, \
         which is not more than min_keep = {min_keep}: sampling could never keep such a block \
         (the official code loops forever here). Raise {which}_scale or lower min_keep",
        sides(shape),
        sides(grid)
    )]
    BlockTooSmall {
        /// `"target"` or `"context"`.
        which: &'static str,
        /// The smallest block shape the configuration can draw, as
        /// [`crate::BlockShape::dims`] gives it.
        shape: Vec<usize>,
        /// Its number of patches.
        area: usize,
        /// The configured `min_keep`.
        min_keep: usize,
        /// The grid it was checked on, as [`crate::Grid::dims`] gives it.
        grid: Vec<usize>,
    },
}

/// `14x14`, `8x14x14`: sides as grids and blocks print them (the one place
/// that format is written).
pub(crate) fn sides(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}
