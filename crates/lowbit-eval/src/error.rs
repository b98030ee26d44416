//! The error type of this crate.

use thiserror::Error;

/// Errors of `lowbit-eval`.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EvalError {
    /// From lowbit-nn (configs, layers, Candle underneath).
    #[error(transparent)]
    Nn(#[from] lowbit_nn::NnError),
    /// From lowbit-quant (specs, compliance).
    #[error(transparent)]
    Quant(#[from] lowbit_quant::QuantError),
    /// From Candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// From lowbit-models (models, their files, evaluation sets).
    #[error(transparent)]
    Model(#[from] lowbit_models::ModelError),
    /// A file that could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Inputs that do not fit together (batch sizes, label counts, layer names).
    #[error("{what}: {message}")]
    Mismatch {
        /// What was being matched.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// A chart that could not be drawn.
    #[error("chart `{chart}`: {message}")]
    Chart {
        /// The chart.
        chart: String,
        /// What went wrong.
        message: String,
    },
}

/// `Result` with [`EvalError`].
pub type Result<T, E = EvalError> = std::result::Result<T, E>;

impl EvalError {
    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, e: impl std::fmt::Display) -> EvalError {
        EvalError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
    /// A mismatch.
    pub fn mismatch(what: impl Into<String>, message: impl Into<String>) -> EvalError {
        EvalError::Mismatch {
            what: what.into(),
            message: message.into(),
        }
    }
}
