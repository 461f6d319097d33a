//! A picture of sampled masks, so a user can see what the recipe does.
//!
//! One panel per image (up to 8, fewer for wide video grids), one tile per frame; each patch is a cell:
//! context in light grey, each target block in its own colour, patches in
//! both a context and a target in red, the rest dark.

use std::path::Path;

use anyhow::Result;
use ijepa_masking::{Grid, MaskBatch};

const CELL: usize = 12;
/// Space around and between images.
const GAP: usize = 24;
/// Space between the frames of one video image.
const FRAME_GAP: usize = 4;
const MAX_IMAGES: usize = 8;
/// Video grids draw fewer images so the picture stays viewable.
const MAX_WIDTH: usize = 2400;

const BACKGROUND: [u8; 3] = [255, 255, 255];
const UNUSED: [u8; 3] = [60, 60, 66];
const CONTEXT: [u8; 3] = [200, 204, 212];
const OVERLAP: [u8; 3] = [220, 30, 30];
const TARGETS: [[u8; 3]; 6] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [148, 103, 189],
    [23, 190, 207],
    [188, 189, 34],
];

/// Colour of every patch of image `b`.
fn colours(grid: &Grid, masks: &MaskBatch, b: usize) -> Vec<[u8; 3]> {
    let mut cells = vec![UNUSED; grid.num_patches()];
    let mut in_context = vec![false; grid.num_patches()];
    for c in &masks.contexts {
        for &i in c.row(b) {
            cells[i as usize] = CONTEXT;
            in_context[i as usize] = true;
        }
    }
    for (t, target) in masks.targets.iter().enumerate() {
        for &i in target.row(b) {
            let i = i as usize;
            cells[i] = if in_context[i] {
                OVERLAP
            } else {
                TARGETS[t % TARGETS.len()]
            };
        }
    }
    cells
}

/// Writes the first images of `masks` to `path` as an RGB PNG.
pub fn write(path: &Path, grid: &Grid, masks: &MaskBatch) -> Result<()> {
    let tile_w = grid.width() * CELL;
    let tile_h = grid.height() * CELL;
    let panel_w = grid.frames() * tile_w + (grid.frames() - 1) * FRAME_GAP;
    let images = masks
        .contexts
        .first()
        .map_or(0, |c| c.batch_size())
        .min(MAX_IMAGES)
        .min((MAX_WIDTH / (panel_w + GAP)).max(1));
    anyhow::ensure!(images > 0, "no image to draw");
    let width = GAP + images * (panel_w + GAP);
    let height = 2 * GAP + tile_h;
    let mut pixels = vec![BACKGROUND; width * height];

    for b in 0..images {
        let cells = colours(grid, masks, b);
        let panel_x = GAP + b * (panel_w + GAP);
        for (n, colour) in cells.iter().enumerate() {
            let (t, row, col) = grid.coords(n as u32);
            let x0 = panel_x + t * (tile_w + FRAME_GAP) + col * CELL;
            let y0 = GAP + row * CELL;
            // One-pixel seams between cells keep the grid readable.
            for y in y0..y0 + CELL - 1 {
                pixels[y * width + x0..y * width + x0 + CELL - 1].fill(*colour);
            }
        }
    }

    let mut out = ijepa_encoder::io::output::OutputFile::create(path)?;
    let mut encoder = png::Encoder::new(&mut out, width as u32, height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels.as_flattened())?;
    writer.finish()?;
    out.commit()?;
    Ok(())
}
