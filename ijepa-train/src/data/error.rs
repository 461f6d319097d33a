//! The data pipeline's error type.

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
    /// A shard specification, shard file or shard output that is wrong;
    /// the message names it.
    #[error("{0}")]
    Shards(String),
    /// A transform setting out of range.
    #[error("invalid image transform: {0}")]
    InvalidTransform(String),
    /// No readable image could fill a batch.
    #[error("{0}")]
    Unreadable(String),
}

impl DataError {
    /// The message without the path it concerns (for lists that show the
    /// path beside it).
    pub fn cause(&self) -> String {
        match self {
            Self::Io { error, .. } => error.to_string(),
            Self::Decode { reason, .. } => format!("cannot decode image: {reason}"),
            other => other.to_string(),
        }
    }
}
