//! The one error type of this crate.

use std::fmt::Write;
use std::path::PathBuf;

/// Everything that can go wrong building, loading or running an encoder.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// A tensor operation failed (shapes, devices, dtypes).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },

    /// A model name that is not a preset we know.
    #[error("unknown model {name:?}: {reason}")]
    UnknownModel {
        /// The name as given.
        name: String,
        /// What was expected.
        reason: String,
    },

    /// A request outside what the model or this library can do (an image
    /// size, a number of blocks), with what is accepted.
    #[error("{0}")]
    OutOfRange(String),
    /// A device that cannot be named or opened.
    #[error("device {spec}: {reason}")]
    Device {
        /// The device as named (`cuda:1`).
        spec: String,
        /// What is wrong.
        reason: String,
    },

    /// A configuration value out of range or inconsistent with another.
    #[error("invalid encoder configuration: {0}")]
    InvalidConfig(String),

    /// A configuration file that does not parse or lacks a field we need.
    #[error("{path}: {reason}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Weights that do not fit the architecture.
    #[error("{}", weights_message(.path, .missing, .unexpected, .mismatched))]
    Weights {
        /// The weight file.
        path: PathBuf,
        /// Keys the architecture needs that the file lacks.
        missing: Vec<String>,
        /// Keys in the file the architecture does not use.
        unexpected: Vec<String>,
        /// `(key, shape in file, shape expected)`.
        mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    },

    /// A weight file or folder whose layout we cannot tell.
    #[error("{path}: {reason}")]
    UnknownLayout {
        /// The file or folder.
        path: PathBuf,
        /// What we found and what we expected.
        reason: String,
    },

    /// Images whose shape does not fit the model.
    #[error("images of shape {shape:?} do not fit: {reason}")]
    InputShape {
        /// The shape given.
        shape: Vec<usize>,
        /// What was expected.
        reason: String,
    },

    /// Resolving or downloading from the Hugging Face Hub failed.
    #[error("{0}")]
    Hub(String),
}

fn weights_message(
    path: &std::path::Path,
    missing: &[String],
    unexpected: &[String],
    mismatched: &[(String, Vec<usize>, Vec<usize>)],
) -> String {
    let mut s = format!("{}: weights do not fit the architecture", path.display());
    if !missing.is_empty() {
        let _ = write!(s, "\n  missing keys: {}", missing.join(", "));
    }
    if !unexpected.is_empty() {
        let _ = write!(s, "\n  unexpected keys: {}", unexpected.join(", "));
    }
    for (key, found, expected) in mismatched {
        let _ = write!(
            s,
            "\n  {key}: shape {found:?} in file, expected {expected:?}"
        );
    }
    s
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, EncoderError>;
