//! The error type of this crate.

use std::path::PathBuf;

use thiserror::Error;

/// Errors of `lowbit-models`: data and checkpoint files (with their path), tensors of a
/// checkpoint (with their name and expected shape), and the errors of lowbit-nn and Candle
/// underneath.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A data or weight file that is not there, with the command that provides it.
    #[error("{}: file not found; `{setup}` provides it", path.display())]
    MissingFile {
        /// The path looked for.
        path: PathBuf,
        /// The setup command that creates the file.
        setup: String,
    },
    /// A file that could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An IDX file that is not what it should be (magic number, dimensions, size, labels).
    #[error("{}: {message}", path.display())]
    Idx {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor the model needs that the checkpoint lacks.
    #[error("{}: missing tensor `{name}` (expected shape {expected:?})", file.display())]
    MissingTensor {
        /// The checkpoint.
        file: PathBuf,
        /// The tensor name, e.g. `layer1.0.conv1.weight`.
        name: String,
        /// The shape the model expects.
        expected: Vec<usize>,
    },
    /// A tensor whose shape is not the one the model expects.
    #[error("{}: tensor `{name}` has shape {got:?}, expected {expected:?}", file.display())]
    TensorShape {
        /// The checkpoint.
        file: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape in the checkpoint.
        got: Vec<usize>,
    },
    /// A tensor of the checkpoint that no layer of the model uses (a checkpoint of another
    /// architecture, or a naming mismatch).
    #[error("{}: tensor `{name}` is not used by the model", file.display())]
    UnusedTensor {
        /// The checkpoint.
        file: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// A checkpoint that Candle could not read.
    #[error("{}: {source}", file.display())]
    Checkpoint {
        /// The checkpoint.
        file: PathBuf,
        /// Candle's error.
        source: candle_core::Error,
    },
    /// A text or JSON file (model config, tokenizer, evaluation set) that does not parse, with
    /// the 1-based line where it is known.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line (1-based), when the error is on one line.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// An image file that cannot be decoded (not PNG/JPEG, truncated, corrupt).
    #[error("{}: cannot decode image: {message}", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        message: String,
    },
    /// An ImageFolder-style data set directory that is missing, empty or malformed.
    #[error("{}: {message}", path.display())]
    ImageFolder {
        /// The root (or class) directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Bad arguments (batch size 0, …).
    #[error("{0}")]
    Invalid(String),
    /// From lowbit-nn (layers, configs).
    #[error(transparent)]
    Nn(#[from] lowbit_nn::NnError),
    /// From Candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    /// An I/O error on `path`, or [`ModelError::MissingFile`] naming `setup` when the file is
    /// not there.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error, setup: &str) -> ModelError {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            ModelError::MissingFile {
                path,
                setup: setup.to_string(),
            }
        } else {
            ModelError::Io { path, source }
        }
    }
}
