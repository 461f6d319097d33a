//! Finding the images of a folder tree.

use std::path::{Path, PathBuf};

use super::DataError;

/// Extensions read as images (case-insensitive).
const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// `path` itself if it is a file, else every `.jpg`/`.jpeg`/`.png` below it
/// at any depth, sorted by path so the order is the same on every machine.
pub fn image_files(path: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |error| DataError::Io { path: p, error }
    };
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut found = vec![];
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let p = entry.map_err(io(&dir))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if is_image(&p) {
                found.push(p);
            }
        }
    }
    if found.is_empty() {
        return Err(DataError::NoImages {
            path: path.to_path_buf(),
        });
    }
    found.sort();
    Ok(found)
}
