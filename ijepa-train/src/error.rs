//! What can go wrong configuring and running a training run.

use std::path::PathBuf;

use crate::data::DataError;

/// Errors of the training run: configuration, data, model, checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value, file or override that is not valid.
    #[error("configuration: {0}")]
    Config(String),
    /// Images could not be found or prepared.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The model could not be built or run.
    #[error(transparent)]
    Model(#[from] ijepa_encoder::EncoderError),
    /// A file or folder of the run directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint that cannot be used.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint folder or file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The loss became NaN or infinite.
    #[error(
        "the loss is {loss} at step {step}: training stopped; the last good checkpoint is kept ({last_checkpoint})"
    )]
    NonFinite {
        /// Optimizer step (1-based) whose loss was not finite.
        step: u64,
        /// The loss value.
        loss: f32,
        /// The newest checkpoint on disk, or `none`.
        last_checkpoint: String,
    },
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        Self::Model(e.into())
    }
}

/// `Result` with [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// An I/O error that names its path.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}
