//! Labelled image folders, tar shards and the built-in set behind one type.

use std::path::{Path, PathBuf};

use image::RgbImage;

use super::{decode_rgb, image_files, shards, DataError, SyntheticShapes, TarShards};

/// An image folder: every `.jpg`/`.jpeg`/`.png` below `root` at any depth,
/// labelled by its first sub-folder (`root/<class>/…/x.jpg`; images directly
/// in `root` form the class `""`). Classes are numbered in sorted order.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    files: Vec<PathBuf>,
    labels: Vec<usize>,
    classes: Vec<String>,
    notes: Vec<String>,
}

impl ImageFolder {
    /// Lists the images below `root`.
    ///
    /// # Errors
    /// An unreadable folder, or one without images.
    pub fn open(root: &Path) -> Result<Self, DataError> {
        let (files, notes) = image_files(root)?;
        let class_of = |f: &PathBuf| -> String {
            let rel = f.strip_prefix(root).unwrap_or(f);
            let mut parts = rel.components();
            match (parts.next(), parts.next()) {
                (Some(first), Some(_)) => first.as_os_str().to_string_lossy().into_owned(),
                _ => String::new(),
            }
        };
        let mut classes: Vec<String> = files.iter().map(class_of).collect();
        classes.sort();
        classes.dedup();
        let labels = files
            .iter()
            .map(|f| classes.binary_search(&class_of(f)).unwrap_or(0))
            .collect();
        Ok(Self {
            root: root.to_path_buf(),
            files,
            labels,
            classes,
            notes,
        })
    }

    /// What the listing left out, to tell the user ([`image_files`]).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The image files, sorted.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Class of image `index` (of [`ImageFolder::files`]).
    pub fn label(&self, index: usize) -> usize {
        self.labels[index]
    }

    /// Class names, sorted; label `i` is `classes()[i]`.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
}

/// Where the images of a run come from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// A labelled image folder.
    Folder(ImageFolder),
    /// Images in tar shards.
    Shards(TarShards),
    /// The built-in synthetic shapes.
    Synthetic(SyntheticShapes),
}

impl ImageSource {
    /// The images `data.path` names — the one place a data path's kind is
    /// decided: a brace pattern or a `.tar` path is a set of tar shards
    /// ([`TarShards::open`]), a folder or an image file an
    /// [`ImageFolder`], any other file a list of shards.
    ///
    /// # Errors
    /// What [`ImageFolder::open`] or [`TarShards::open`] refuse.
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let is_image_or_folder = || {
            std::fs::metadata(path).is_ok_and(|m| m.is_dir())
                || super::files::is_image(path)
                || !path.exists()
        };
        if !shards::is_pattern(&path.to_string_lossy()) && is_image_or_folder() {
            Ok(Self::Folder(ImageFolder::open(path)?))
        } else {
            Ok(Self::Shards(TarShards::open(path)?))
        }
    }

    /// What opening the source left out or assumed, to tell the user.
    pub fn notes(&self) -> &[String] {
        match self {
            Self::Folder(f) => f.notes(),
            Self::Shards(s) => s.notes(),
            Self::Synthetic(_) => &[],
        }
    }

    /// The order of the images in `epoch`: a shuffle keyed by `(seed,
    /// epoch)` — of all images for a folder, shard-local for shards.
    pub fn epoch_order(&self, seed: u64, epoch: u64) -> Vec<usize> {
        match self {
            Self::Shards(s) => s.epoch_order(seed, epoch),
            _ => super::loader::epoch_order(self.len(), seed, epoch),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        match self {
            Self::Folder(f) => f.files.len(),
            Self::Shards(s) => s.len(),
            Self::Synthetic(s) => s.len(),
        }
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Class of image `index`.
    pub fn label(&self, index: usize) -> usize {
        match self {
            Self::Folder(f) => f.labels[index],
            Self::Shards(s) => s.label(index),
            Self::Synthetic(s) => s.label(index),
        }
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        match self {
            Self::Folder(f) => f.classes.len(),
            Self::Shards(s) => s.num_classes(),
            Self::Synthetic(_) => super::NUM_CLASSES,
        }
    }

    /// What image `index` is called in logs (its path, or `synthetic #i`).
    pub fn name(&self, index: usize) -> String {
        match self {
            Self::Folder(f) => f.files[index].display().to_string(),
            Self::Shards(s) => s.name(index),
            Self::Synthetic(_) => format!("synthetic #{index}"),
        }
    }

    /// Image `index`, decoded to RGB.
    ///
    /// # Errors
    /// An unreadable or undecodable file, named.
    pub fn load(&self, index: usize) -> Result<RgbImage, DataError> {
        match self {
            Self::Folder(f) => decode_rgb(&f.files[index]),
            Self::Shards(s) => s.load(index),
            Self::Synthetic(s) => Ok(s.get(index).0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_the_first_sub_folder() {
        let dir = std::env::temp_dir().join(format!("ijepa-folder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (p, ok) in [
            ("cat/a.png", true),
            ("cat/deep/b.PNG", true),
            ("dog/c.jpg", true),
            ("dog/notes.txt", false),
            ("top.jpeg", true),
        ] {
            let path = dir.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            if ok {
                RgbImage::new(4, 4)
                    .save_with_format(&path, image::ImageFormat::Png)
                    .unwrap();
            } else {
                std::fs::write(&path, "x").unwrap();
            }
        }
        let f = ImageFolder::open(&dir).unwrap();
        assert_eq!(f.classes(), ["", "cat", "dog"]);
        let src = ImageSource::Folder(f);
        let labels: Vec<usize> = (0..src.len()).map(|i| src.label(i)).collect();
        // Sorted paths: cat/a.png, cat/deep/b.PNG, dog/c.jpg, top.jpeg.
        assert_eq!(labels, [1, 1, 2, 0]);
        assert_eq!(src.num_classes(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
