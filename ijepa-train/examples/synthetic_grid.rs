//! Draws the first 32 images of the built-in synthetic set into one PNG (a
//! row per 8 images: the 8 classes in order).
//!
//! `cargo run --release -p ijepa-train --example synthetic_grid -- shapes.png`

use ijepa_train::data::SyntheticShapes;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "shapes.png".into());
    let data = SyntheticShapes::new(64, 32, 0);
    let mut grid = image::RgbImage::new(8 * 66, 4 * 66);
    for i in 0..32 {
        let (img, _) = data.get(i);
        let (x, y) = ((i % 8) as i64 * 66, (i / 8) as i64 * 66);
        image::imageops::replace(&mut grid, &img, x, y);
    }
    grid.save(&out)?;
    println!("wrote {out}");
    Ok(())
}
