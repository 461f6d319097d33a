//! Patch grids of rank 2 (H×W, images) and rank 3 (T×H×W, video), and the
//! blocks placed on them.

use std::fmt;
use std::str::FromStr;

use crate::error::MaskingError;

/// A patch grid: `height × width` patches, optionally over `frames` time steps.
///
/// Patches are numbered row-major, `n = (t·H + row)·W + col`, which is the
/// order a convolutional patch embedding flattens them in.
///
/// ```
/// use ijepa_masking::Grid;
///
/// let grid: Grid = "14x14".parse()?;
/// assert_eq!(grid.num_patches(), 196);
/// assert_eq!(grid.index(0, 1, 2), 16);
/// let video = Grid::new_3d(8, 14, 14)?;
/// assert_eq!(video.to_string(), "8x14x14");
/// # Ok::<(), ijepa_masking::MaskingError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Grid {
    rank: u8,
    frames: usize,
    height: usize,
    width: usize,
}

impl Grid {
    /// A 2-D grid of `height × width` patches (224 px / patch 16 → 14×14).
    pub fn new_2d(height: usize, width: usize) -> Result<Self, MaskingError> {
        Self::checked(2, 1, height, width)
    }

    /// A 3-D grid of `frames × height × width` patches (video tubelets).
    pub fn new_3d(frames: usize, height: usize, width: usize) -> Result<Self, MaskingError> {
        Self::checked(3, frames, height, width)
    }

    fn checked(rank: u8, frames: usize, height: usize, width: usize) -> Result<Self, MaskingError> {
        let grid = Self {
            rank,
            frames,
            height,
            width,
        };
        let dims = || grid.dims();
        if frames == 0 || height == 0 || width == 0 {
            return Err(MaskingError::InvalidGrid {
                dims: dims(),
                reason: "every side must be at least 1",
            });
        }
        let total = frames
            .checked_mul(height)
            .and_then(|n| n.checked_mul(width));
        match total {
            Some(n) if n <= u32::MAX as usize => Ok(grid),
            _ => Err(MaskingError::InvalidGrid {
                dims: dims(),
                reason: "more patches than u32 indices can address",
            }),
        }
    }

    /// The sides: `[H, W]`, or `[T, H, W]` for a video grid.
    pub fn dims(&self) -> Vec<usize> {
        match self.rank {
            2 => vec![self.height, self.width],
            _ => vec![self.frames, self.height, self.width],
        }
    }

    /// 2 for images, 3 for video grids.
    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    /// Number of time steps (1 for a 2-D grid).
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Patches per column.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Patches per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Patches in one frame, `H·W`.
    pub fn spatial_patches(&self) -> usize {
        self.height * self.width
    }

    /// All patches, `T·H·W`.
    pub fn num_patches(&self) -> usize {
        self.frames * self.height * self.width
    }

    /// Flat row-major index of the patch at (`frame`, `row`, `col`).
    pub fn index(&self, frame: usize, row: usize, col: usize) -> u32 {
        debug_assert!(frame < self.frames && row < self.height && col < self.width);
        ((frame * self.height + row) * self.width + col) as u32
    }

    /// (`frame`, `row`, `col`) of a flat index; the inverse of [`Grid::index`].
    pub fn coords(&self, index: u32) -> (usize, usize, usize) {
        let n = index as usize;
        let col = n % self.width;
        let row = (n / self.width) % self.height;
        (n / self.spatial_patches(), row, col)
    }
}

impl fmt::Display for Grid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::error::sides(&self.dims()))
    }
}

impl FromStr for Grid {
    type Err = MaskingError;

    /// Parses `HxW` or `TxHxW` (`x`, `X` or `×` as separator).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || MaskingError::GridSyntax {
            input: s.to_string(),
        };
        let sides = s
            .trim()
            .split(['x', 'X', '×'])
            .map(|p| p.trim().parse::<usize>().map_err(|_| syntax()))
            .collect::<Result<Vec<_>, _>>()?;
        match sides[..] {
            [h, w] => Grid::new_2d(h, w),
            [t, h, w] => Grid::new_3d(t, h, w),
            _ => Err(syntax()),
        }
    }
}

/// The extent of a block in patches: `frames × height × width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BlockShape {
    /// Extent in time (1 on 2-D grids).
    pub frames: usize,
    /// Extent along rows.
    pub height: usize,
    /// Extent along columns.
    pub width: usize,
}

impl BlockShape {
    /// The extents: `[height, width]`, with `frames` first when it is not 1.
    pub fn dims(&self) -> Vec<usize> {
        match self.frames {
            1 => vec![self.height, self.width],
            _ => vec![self.frames, self.height, self.width],
        }
    }

    /// Patches covered by the block.
    pub fn area(&self) -> usize {
        self.frames * self.height * self.width
    }
}

impl fmt::Display for BlockShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::error::sides(&self.dims()))
    }
}

/// A block placed on a grid: its shape and the coordinates of its first patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Extent of the block.
    pub shape: BlockShape,
    /// First frame covered.
    pub frame: usize,
    /// First row covered.
    pub top: usize,
    /// First column covered.
    pub left: usize,
}

impl Block {
    /// Calls `f` with the flat index of every patch of the block, ascending.
    pub fn for_each_index(&self, grid: &Grid, mut f: impl FnMut(u32)) {
        for t in self.frame..self.frame + self.shape.frames {
            for r in self.top..self.top + self.shape.height {
                let start = grid.index(t, r, self.left);
                for i in 0..self.shape.width as u32 {
                    f(start + i);
                }
            }
        }
    }

    /// Calls `f(start, len)` for every contiguous row run of the block, ascending.
    pub(crate) fn for_each_run(&self, grid: &Grid, mut f: impl FnMut(usize, usize)) {
        for t in self.frame..self.frame + self.shape.frames {
            for r in self.top..self.top + self.shape.height {
                f(grid.index(t, r, self.left) as usize, self.shape.width);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_grids() {
        let g: Grid = "16x14".parse().unwrap();
        assert_eq!((g.rank(), g.height(), g.width()), (2, 16, 14));
        assert_eq!(g.to_string(), "16x14");
        let v: Grid = " 8 x 14 x 14 ".parse().unwrap();
        assert_eq!((v.rank(), v.frames(), v.num_patches()), (3, 8, 1568));
        assert_eq!(v.to_string(), "8x14x14");
        for bad in ["", "14", "14x", "axb", "1x2x3x4", "-1x4"] {
            assert!(
                matches!(bad.parse::<Grid>(), Err(MaskingError::GridSyntax { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            "0x14".parse::<Grid>(),
            Err(MaskingError::InvalidGrid { .. })
        ));
    }

    #[test]
    fn index_and_coords_are_inverse() {
        let g = Grid::new_3d(3, 4, 5).unwrap();
        for n in 0..g.num_patches() as u32 {
            let (t, r, c) = g.coords(n);
            assert_eq!(g.index(t, r, c), n);
        }
    }

    #[test]
    fn block_indices_are_row_major() {
        let g = Grid::new_2d(4, 5).unwrap();
        let b = Block {
            shape: BlockShape {
                frames: 1,
                height: 2,
                width: 3,
            },
            frame: 0,
            top: 1,
            left: 2,
        };
        let mut seen = vec![];
        b.for_each_index(&g, |i| seen.push(i));
        assert_eq!(seen, vec![7, 8, 9, 12, 13, 14]);
    }
}
