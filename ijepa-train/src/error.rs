//! The one error type of this crate.

use std::path::PathBuf;

use crate::data::DataError;

/// Errors of the training run: configuration, data, model, checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value, file or override that is not valid.
    #[error("configuration: {0}")]
    Config(String),
    /// A mask setting the samplers refuse.
    #[error(transparent)]
    Masking(#[from] ijepa_masking::MaskingError),
    /// Images could not be found or prepared.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The model could not be built or run.
    #[error(transparent)]
    Model(#[from] ijepa_encoder::EncoderError),
    /// A probe's inputs or settings that cannot give a meaningful score.
    #[error("probe: {0}")]
    Probe(String),
    /// Optimizer state that does not fit the parameters.
    #[error("optimizer state: {0}")]
    Optimizer(String),
    /// A file or folder of the run directory could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A checkpoint that cannot be used.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint folder or file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The processes of a data-parallel job could not work together
    /// (MPI not initialised, a launch the build cannot serve).
    #[error("data-parallel job: {0}")]
    Collective(String),
    /// A step whose loss, gradients or updated weights are not finite: it
    /// was not applied, and training stopped.
    #[error(
        "step {step}: {what}; the step was not applied and training stopped. \
         The last good state is {last_checkpoint}; lower optim.lr (or set optim.grad_clip) and --resume"
    )]
    NonFinite {
        /// Optimizer step (1-based) that was refused.
        step: u64,
        /// What was not finite, with its value.
        what: String,
        /// The newest checkpoint on disk (written for the last good step
        /// when it was not yet), or `none`.
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
    move |error| TrainError::Io { path, error }
}
