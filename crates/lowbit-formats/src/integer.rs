//! Integer formats: `int2`..`int16` and `uint2`..`uint16`.

use serde::{Deserialize, Serialize};

use crate::error::{FormatError, Result};
use crate::rounding::{Conversion, Rounding};

/// An integer grid of `bits` bits.
///
/// Signed formats are narrow-range symmetric by default, `[−(2^(b−1) − 1), 2^(b−1) − 1]` (so
/// that negation is exact and a symmetric scale maps amax to the top code, as TensorRT and
/// PyTorch's symmetric quantizers do); full range `[−2^(b−1), 2^(b−1) − 1]` on request.
/// Unsigned formats cover `[0, 2^b − 1]`.
///
/// Codes are the two's-complement pattern in the low `bits` bits (the way ml_dtypes stores
/// `int4` in a byte). Integers have no inf/NaN codes: out-of-range values always saturate,
/// ±inf become the extremes and NaN becomes 0, under every [`crate::Overflow`] policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IntFormat {
    bits: u8,
    signed: bool,
    narrow: bool,
}

/// Smallest integer width accepted.
pub const MIN_INT_BITS: u32 = 2;
/// Largest integer width accepted.
pub const MAX_INT_BITS: u32 = 16;

impl IntFormat {
    /// A signed (`signed = true`) or unsigned integer format of `bits` bits (2..=16); `narrow`
    /// selects the symmetric range of signed formats and must be `false` for unsigned ones.
    pub fn new(bits: u32, signed: bool, narrow: bool) -> Result<Self> {
        let name = format!("{}int{bits}", if signed { "" } else { "u" });
        if !(MIN_INT_BITS..=MAX_INT_BITS).contains(&bits) {
            return Err(FormatError::InvalidParameter {
                format: name,
                param: "bits",
                value: bits as i64,
                reason: format!("integer formats have {MIN_INT_BITS} to {MAX_INT_BITS} bits"),
            });
        }
        if narrow && !signed {
            return Err(FormatError::InvalidParameter {
                format: name,
                param: "narrow",
                value: 1,
                reason: "unsigned formats have no narrow range".into(),
            });
        }
        Ok(IntFormat {
            bits: bits as u8,
            signed,
            narrow,
        })
    }

    pub(crate) const fn new_unchecked(bits: u8, signed: bool, narrow: bool) -> Self {
        IntFormat {
            bits,
            signed,
            narrow,
        }
    }

    /// Code width in bits.
    pub const fn bits(&self) -> u32 {
        self.bits as u32
    }
    /// Whether negative values exist.
    pub const fn is_signed(&self) -> bool {
        self.signed
    }
    /// Whether a signed format uses the symmetric (narrow) range.
    pub const fn is_narrow(&self) -> bool {
        self.narrow
    }
    /// Smallest value.
    pub const fn min_value(&self) -> i32 {
        if !self.signed {
            0
        } else if self.narrow {
            -((1i32 << (self.bits - 1)) - 1)
        } else {
            -(1i32 << (self.bits - 1))
        }
    }
    /// Largest value.
    pub const fn max_value(&self) -> i32 {
        if self.signed {
            (1i32 << (self.bits - 1)) - 1
        } else {
            (1i32 << self.bits) - 1
        }
    }
    /// Mask of the code bits.
    pub const fn code_mask(&self) -> u32 {
        (1u32 << self.bits) - 1
    }

    /// Rounds `x` to an integer value of this format (as `f32`) under `rounding`, saturating.
    /// `rand` is the stochastic-rounding word and is ignored by the other rules.
    ///
    /// Rounding acts on the exact value: `x − floor(x)` is exact in `f32`, so the rules need no
    /// wider arithmetic. Values with |x| ≥ 2²³ are already integers.
    pub fn round_value(&self, x: f32, rounding: Rounding, rand: u32) -> f32 {
        if x.is_nan() {
            return 0.0;
        }
        self.clamp(round_integer(x, rounding, rand))
    }

    /// `r` (an integer value) saturated to this format's range, with `−0` as `+0` (integers
    /// have a single zero).
    pub fn clamp(&self, r: f32) -> f32 {
        r.clamp(self.min_value() as f32, self.max_value() as f32) + 0.0
    }

    /// Encodes `x` (nearest-even, saturating).
    pub fn encode(&self, x: f32) -> u32 {
        self.encode_with(x, Conversion::REFERENCE, 0)
    }

    /// Encodes `x` under `conv` (the overflow policy does not matter: integers saturate).
    pub fn encode_with(&self, x: f32, conv: Conversion, rand: u32) -> u32 {
        (self.round_value(x, conv.rounding, rand) as i32 as u32) & self.code_mask()
    }

    /// Decodes the low `bits` bits of `code` (two's complement for signed formats).
    pub const fn decode(&self, code: u32) -> f32 {
        let c = code & self.code_mask();
        let v = if self.signed {
            let shift = 32 - self.bits as u32;
            ((c << shift) as i32) >> shift
        } else {
            c as i32
        };
        v as f32
    }
}

/// `x` rounded to an integer value under `rounding`, not saturated (NaN stays NaN). `rand` is
/// the stochastic-rounding word, ignored by the other rules. The rounding of
/// [`IntFormat::round_value`], for callers that add a zero point after rounding
/// (`round(x / s) + z`, as PyTorch's affine fake-quant does) and saturate the sum.
pub fn round_integer(x: f32, rounding: Rounding, rand: u32) -> f32 {
    match rounding {
        Rounding::NearestEven => x.round_ties_even(),
        Rounding::NearestAway => x.round(),
        Rounding::TowardZero => x.trunc(),
        Rounding::Stochastic { .. } => {
            let fl = x.floor();
            let frac = x - fl; // exact
            let frac32 = (frac as f64 * 4_294_967_296.0) as u64;
            if (rand as u64) < frac32 { fl + 1.0 } else { fl }
        }
    }
}
