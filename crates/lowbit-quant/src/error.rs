//! The error type of this crate.

use thiserror::Error;

/// Everything that can go wrong in `lowbit-quant`. Messages are lower-case and say what was
/// wrong and where.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum QuantError {
    /// A spec that cannot be built: the field and why.
    #[error("invalid quantization spec: {field}: {reason}")]
    InvalidSpec {
        /// The field (`block size`, `format`, `zero point`, …).
        field: &'static str,
        /// The rule that was broken.
        reason: String,
    },
    /// A preset name that does not exist.
    #[error("unknown quantization preset `{name}`{suggestion}; known presets: {known}")]
    UnknownPreset {
        /// The name given.
        name: String,
        /// ` (did you mean `…`?)` for a near miss, else empty.
        suggestion: String,
        /// The accepted names.
        known: String,
    },
    /// An axis outside the tensor's rank.
    #[error("axis {axis} is out of range for a tensor of rank {rank} (shape {shape:?})")]
    AxisOutOfRange {
        /// The axis of the spec (negative counts from the end).
        axis: isize,
        /// The rank of the tensor.
        rank: usize,
        /// The shape of the tensor.
        shape: Vec<usize>,
    },
    /// A slice whose length does not match a shape or another slice.
    #[error("length mismatch in {op}: {what} has {got} elements, expected {expected}")]
    LengthMismatch {
        /// The operation.
        op: &'static str,
        /// Which argument.
        what: &'static str,
        /// The expected length.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// Frozen scales whose shape does not fit the tensor and spec.
    #[error("scales of shape {got:?} do not fit {op}: expected shape {expected:?}")]
    ScaleShape {
        /// The operation.
        op: &'static str,
        /// The shape the spec and tensor need.
        expected: Vec<usize>,
        /// The shape given.
        got: Vec<usize>,
    },
    /// A static spec was used where scales must come from the tensor.
    #[error(
        "{op}: the spec is static (frozen scales); call the `_with_scales` variant or use a dynamic spec"
    )]
    StaticNeedsScales {
        /// The operation.
        op: &'static str,
    },
    /// A calibration method that does not work with this spec.
    #[error("calibration method {method} cannot be used with {spec}: {reason}")]
    UnsupportedCalibration {
        /// The method.
        method: String,
        /// The spec, printed.
        spec: String,
        /// Why.
        reason: String,
    },
    /// A calibrator that saw no data, or batches that change the group count.
    #[error("calibration: {reason}")]
    Calibration {
        /// What went wrong.
        reason: String,
    },
    /// Scales that are not powers of two where a shift report was asked for.
    #[error(
        "scale {scale} at index {index} is not a power of two; a shift report needs power-of-two scales"
    )]
    NotPowerOfTwo {
        /// The scale.
        scale: f32,
        /// Its position.
        index: usize,
    },
    /// A safetensors file that is not a quantized tensor written by this crate.
    #[error("safetensors: {reason}")]
    Safetensors {
        /// What was missing or wrong.
        reason: String,
    },
    /// An error from the formats crate (codec, packing).
    #[error(transparent)]
    Format(#[from] lowbit_formats::FormatError),
    /// A JSON error while reading or writing a spec or scales.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// An I/O error while saving or loading.
    #[error("i/o on `{path}`: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// `Result` with [`QuantError`].
pub type Result<T, E = QuantError> = std::result::Result<T, E>;

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> QuantError {
    QuantError::InvalidSpec {
        field,
        reason: reason.into(),
    }
}
