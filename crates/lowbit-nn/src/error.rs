//! The error type of this crate.

use thiserror::Error;

/// Errors of `lowbit-nn`: configs (with file, line and key), layers (with their name), and
/// the errors of Candle and lowbit-quant underneath.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NnError {
    /// A config that does not parse or does not fit the model.
    #[error("{file}{}: {}{message}", line.map(|l| format!(":{l}")).unwrap_or_default(), if key.is_empty() { String::new() } else { format!("key `{key}`: ") })]
    Config {
        /// The config file (or `<config>` when built in code).
        file: String,
        /// The 1-based line, where it could be found.
        line: Option<usize>,
        /// The key, e.g. `layers[2].pattern`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// An error in a named layer.
    #[error("layer `{layer}`: {message}")]
    Layer {
        /// Full layer name.
        layer: String,
        /// What is wrong.
        message: String,
    },
    /// An op kind that no registry entry provides.
    #[error("no op of kind `{kind}` is registered (known: {known})")]
    UnknownOp {
        /// The kind asked for.
        kind: String,
        /// The registered kinds.
        known: String,
    },
    /// A file that could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A device name that does not parse, or a device that cannot be opened.
    #[error("device `{name}`: {message}")]
    Device {
        /// The name given (`cpu`, `cuda`, `cuda:N`).
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A fake-quant op that the device kernels cannot run as asked (frozen scales of the
    /// wrong shape, an axis out of range).
    #[error("{0}")]
    Kernel(String),
    /// From Candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// From lowbit-quant.
    #[error(transparent)]
    Quant(#[from] lowbit_quant::QuantError),
}

/// `Result` with [`NnError`].
pub type Result<T, E = NnError> = std::result::Result<T, E>;

impl NnError {
    /// Wraps any error as an error of layer `layer`.
    pub fn layer(layer: &str, e: impl std::fmt::Display) -> NnError {
        NnError::Layer {
            layer: layer.to_string(),
            message: e.to_string(),
        }
    }
}
