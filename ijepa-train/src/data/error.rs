use std::path::PathBuf;

/// What can go wrong reading images.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A file that is not a decodable image.
    #[error("{path}: cannot decode image: {reason}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// A folder without any image.
    #[error("{path}: no .jpg, .jpeg or .png image found")]
    NoImages {
        /// The folder.
        path: PathBuf,
    },
    /// A transform setting out of range.
    #[error("invalid image transform: {0}")]
    InvalidTransform(String),
}
