//! The error type of this crate.

use thiserror::Error;

/// Everything that can go wrong in `lowbit-formats`: a bad format string, a parameter out of
/// range, or slices whose lengths do not fit. Messages are lower-case and say what was wrong and
/// where.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FormatError {
    /// A format name that does not parse.
    #[error("unknown format `{name}`: {reason}")]
    UnknownFormat {
        /// The string that was given.
        name: String,
        /// Why it was rejected, with the accepted forms.
        reason: String,
    },
    /// A format parameter outside its valid range.
    #[error("invalid parameter `{param}` = {value} for format `{format}`: {reason}")]
    InvalidParameter {
        /// The format being built (as written by the user where known).
        format: String,
        /// Which parameter (`exponent bits`, `bias`, …).
        param: &'static str,
        /// The value given.
        value: i64,
        /// The valid range or the rule that was broken.
        reason: String,
    },
    /// Two slices that must have related lengths do not.
    #[error("length mismatch in {op}: {what} has {got} elements, expected {expected}")]
    LengthMismatch {
        /// The operation (`encode_slice`, `pack`, …).
        op: &'static str,
        /// Which argument is off.
        what: &'static str,
        /// The length it should have.
        expected: usize,
        /// The length it has.
        got: usize,
    },
    /// The codes of a format do not fit the container an entry point stores them in.
    #[error("format `{format}` has {bits}-bit codes, which do not fit `{container}`; use {hint}")]
    CodeTooWide {
        /// The format.
        format: String,
        /// Its code width in bits.
        bits: u32,
        /// The container type of the entry point that was called.
        container: &'static str,
        /// The entry point to call instead.
        hint: &'static str,
    },
    /// A code that is not a valid code of the format (bits set above its width).
    #[error("code {code:#x} at index {index} is not a {bits}-bit code of format `{format}`")]
    InvalidCode {
        /// The format.
        format: String,
        /// Its code width.
        bits: u32,
        /// The offending code.
        code: u32,
        /// Its position in the input slice.
        index: usize,
    },
    /// An instruction set was forced that this CPU does not have.
    #[error(
        "instruction set {isa} was requested but this CPU does not support it (available: {available})"
    )]
    IsaUnavailable {
        /// The requested level.
        isa: String,
        /// The levels this CPU has.
        available: String,
    },
    /// A bit width that the packer does not support.
    #[error("cannot pack {bits}-bit codes: supported widths are 1 to 8 bits")]
    PackWidth {
        /// The requested width.
        bits: u32,
    },
}

/// `Result` with [`FormatError`].
pub type Result<T, E = FormatError> = std::result::Result<T, E>;
