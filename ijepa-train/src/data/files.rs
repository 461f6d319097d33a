//! Finding the images of a folder tree.

use std::path::{Path, PathBuf};

use super::DataError;

/// Extensions read as images (case-insensitive).
const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

/// Whether a file name's ending (after its last dot, or the key's dot in a
/// tar shard) is one read as an image.
pub(crate) fn is_image_ending(ending: &str) -> bool {
    EXTENSIONS.iter().any(|x| ending.eq_ignore_ascii_case(x))
}

pub(crate) fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(is_image_ending)
}

/// `path` itself if it is a file, else every `.jpg`/`.jpeg`/`.png` below it
/// at any depth, sorted by path so the order is the same on every machine,
/// and notes on what was left out: image names that are not regular files
/// (a FIFO, socket or device would block or never end when read) and
/// folders reached again through a symbolic link (a loop, or a second way
/// to the same images), each kind said once.
///
/// # Errors
/// An unreadable folder, or one without images.
pub fn image_files(path: &Path) -> Result<(Vec<PathBuf>, Vec<String>), DataError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |error| DataError::Io { path: p, error }
    };
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.is_file() {
        return Ok((vec![path.to_path_buf()], vec![]));
    }
    let mut found = vec![];
    let (mut special, mut again): (Vec<PathBuf>, Vec<PathBuf>) = (vec![], vec![]);
    let mut seen = std::collections::HashSet::new();
    seen.insert(identity(&meta, path));
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let p = entry.map_err(io(&dir))?.path();
            // Follows symbolic links; a dangling one is left to the reader.
            let Ok(meta) = std::fs::metadata(&p) else {
                if is_image(&p) {
                    found.push(p);
                }
                continue;
            };
            if meta.is_dir() {
                if seen.insert(identity(&meta, &p)) {
                    stack.push(p);
                } else {
                    again.push(p);
                }
            } else if is_image(&p) {
                if meta.is_file() {
                    found.push(p);
                } else {
                    special.push(p);
                }
            }
        }
    }
    let mut notes = vec![];
    let example = |v: &mut Vec<PathBuf>| {
        v.sort();
        v[0].display().to_string()
    };
    if !special.is_empty() {
        notes.push(format!(
            "{} image name(s) below {} are not regular files (e.g. {}): skipped, never opened",
            special.len(),
            path.display(),
            example(&mut special)
        ));
    }
    if !again.is_empty() {
        notes.push(format!(
            "{} folder(s) below {} lead back to a folder already listed (a symbolic-link loop or a second link, e.g. {}): not read again",
            again.len(),
            path.display(),
            example(&mut again)
        ));
    }
    if found.is_empty() {
        return Err(DataError::NoImages {
            path: path.to_path_buf(),
        });
    }
    found.sort();
    Ok((found, notes))
}

/// What identifies a folder, however it is reached: its device and inode
/// (its canonical path where those are not available).
fn identity(meta: &std::fs::Metadata, path: &Path) -> (u64, u64, PathBuf) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let _ = path;
        (meta.dev(), meta.ino(), PathBuf::new())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        (
            0,
            0,
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        )
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_skipped_and_link_loops_read_once() {
        let root = std::env::temp_dir().join(format!("ijepa-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let a = root.join("a");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(a.join("one.png"), b"not decoded here").unwrap();
        std::fs::write(root.join("two.jpg"), b"nor here").unwrap();
        let fifo = a.join("x.jpg");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        std::os::unix::fs::symlink("..", a.join("loop")).unwrap();
        let (files, notes) = image_files(&root).unwrap();
        assert_eq!(files, [a.join("one.png"), root.join("two.jpg")]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("not regular files") && notes[0].contains("x.jpg"));
        assert!(notes[1].contains("lead back") && notes[1].contains("loop"));
        // Named directly, a FIFO is refused at once, never opened.
        let err = crate::data::decode_rgb(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
