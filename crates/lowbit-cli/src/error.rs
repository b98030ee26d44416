//! The CLI's error type and its exit codes.

use thiserror::Error;

/// What can go wrong in a command.
#[derive(Debug, Error)]
pub enum CliError {
    /// A bad config file (file, line and key in the message): exit code 2.
    #[error("{0}")]
    Config(String),
    /// Bad arguments: exit code 2.
    #[error("{0}")]
    Usage(String),
    /// Anything else: exit code 1.
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => 2,
            CliError::Other(_) => 1,
        }
    }
}

impl From<lowbit_nn::NnError> for CliError {
    fn from(e: lowbit_nn::NnError) -> Self {
        match e {
            lowbit_nn::NnError::Config { .. } => CliError::Config(e.to_string()),
            e => CliError::Other(e.to_string()),
        }
    }
}

impl From<lowbit_eval::EvalError> for CliError {
    fn from(e: lowbit_eval::EvalError) -> Self {
        match e {
            lowbit_eval::EvalError::Nn(e) => e.into(),
            e => CliError::Other(e.to_string()),
        }
    }
}

impl From<candle_core::Error> for CliError {
    fn from(e: candle_core::Error) -> Self {
        CliError::Other(e.to_string())
    }
}

impl From<lowbit_quant::QuantError> for CliError {
    fn from(e: lowbit_quant::QuantError) -> Self {
        CliError::Other(e.to_string())
    }
}

/// `Result` with [`CliError`].
pub type Result<T, E = CliError> = std::result::Result<T, E>;
