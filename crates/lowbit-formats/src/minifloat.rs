//! Minifloats: any `ExMy` binary floating-point format, with its special-value convention.
//!
//! The scalar reference codec lives here. It follows ml_dtypes' `ConvertImpl` (float8.h,
//! ml_dtypes 0.6) step for step on integer bit patterns, so that its results are those of
//! `np.float32(...).astype(ml_dtypes.<type>)` bit for bit; the golden tables in
//! `tests/golden/` prove it over every run boundary of the `f32` space.

use serde::{Deserialize, Serialize};

use crate::error::{FormatError, Result};
use crate::rounding::{Conversion, Overflow, round_shift};

/// How a minifloat spends its special codes (infinities, NaN, negative zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// IEEE 754 style: the all-ones exponent holds ±inf (mantissa 0) and NaN (mantissa ≠ 0;
    /// the quiet NaN has the top mantissa bit set). E5M2, E4M3 (IEEE), ml_dtypes' E3M4.
    Ieee,
    /// Finite plus NaN (OCP 8-bit FP E4M3, ml_dtypes `fn` for 8-bit types): no infinity; only
    /// `S.11…1.11…1` is NaN, so the all-ones exponent also holds numbers.
    Fn,
    /// Finite, unsigned zero (ml_dtypes `fnuz`, Graphcore/AMD FP8): no infinity, no −0; the code
    /// `1000…0` (negative zero's pattern) is the single NaN. The bias is one more than usual.
    Fnuz,
    /// No infinity and no NaN: every code is a number (OCP MX FP6 and FP4). ml_dtypes converts
    /// NaN to a zero whose sign is the *inverse* of the NaN's sign; lowbit does the same.
    Finite,
    /// Unsigned, no zero, all-ones is NaN (OCP MX E8M0 scale, ml_dtypes `float8_e8m0fnu`):
    /// code `k` is `2^(k − bias)`.
    Fnu,
}

impl Encoding {
    /// The suffix used in format names (`ieee`, `fn`, `fnuz`, `none`, `fnu`).
    pub const fn suffix(self) -> &'static str {
        match self {
            Encoding::Ieee => "ieee",
            Encoding::Fn => "fn",
            Encoding::Fnuz => "fnuz",
            Encoding::Finite => "none",
            Encoding::Fnu => "fnu",
        }
    }
}

/// A binary minifloat: 1 sign bit (none for [`Encoding::Fnu`]), `exp_bits` exponent bits,
/// `man_bits` mantissa bits, an exponent bias and a special-value [`Encoding`].
///
/// Values: for exponent field `E` and mantissa field `F`,
/// `(1 + F/2^m) · 2^(E − bias)` when `E ≥ 1`, and `F/2^m · 2^(1 − bias)` (subnormal) when `E = 0`.
/// Build it with [`MiniFloat::new`], which checks that every value is exactly representable in
/// `f32` (so decoding is exact).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MiniFloat {
    exp_bits: u8,
    man_bits: u8,
    bias: i16,
    encoding: Encoding,
}

/// Largest exponent-field width accepted.
pub const MAX_EXP_BITS: u32 = 8;
/// Largest mantissa-field width accepted.
pub const MAX_MAN_BITS: u32 = 10;

impl MiniFloat {
    /// The default bias of an `ExMy` format under `encoding`: `2^(x−1) − 1`, plus one for FNUZ.
    pub const fn default_bias(exp_bits: u32, encoding: Encoding) -> i32 {
        let b = (1i32 << (exp_bits - 1)) - 1;
        match encoding {
            Encoding::Fnuz => b + 1,
            _ => b,
        }
    }

    /// A minifloat with `exp_bits` (1..=8) exponent bits, `man_bits` (0..=10) mantissa bits,
    /// the given bias (`None`: [`MiniFloat::default_bias`]) and encoding.
    ///
    /// Errors when a parameter is out of range, when the encoding cannot exist with these
    /// widths (IEEE needs a mantissa bit for NaN and an exponent bit beyond the specials), or
    /// when some value would not be exactly representable in `f32` (largest value above
    /// `f32::MAX`, smallest subnormal below 2⁻¹⁴⁹).
    pub fn new(
        exp_bits: u32,
        man_bits: u32,
        bias: Option<i32>,
        encoding: Encoding,
    ) -> Result<Self> {
        let name = || format!("e{exp_bits}m{man_bits}");
        let bad = |param: &'static str, value: i64, reason: String| FormatError::InvalidParameter {
            format: name(),
            param,
            value,
            reason,
        };
        if !(1..=MAX_EXP_BITS).contains(&exp_bits) {
            return Err(bad(
                "exponent bits",
                exp_bits as i64,
                format!("must be between 1 and {MAX_EXP_BITS}"),
            ));
        }
        if man_bits > MAX_MAN_BITS {
            return Err(bad(
                "mantissa bits",
                man_bits as i64,
                format!("must be between 0 and {MAX_MAN_BITS}"),
            ));
        }
        match encoding {
            Encoding::Ieee if man_bits == 0 => {
                return Err(bad(
                    "mantissa bits",
                    0,
                    "the ieee convention needs at least one mantissa bit to encode NaN".into(),
                ));
            }
            Encoding::Ieee if exp_bits < 2 => {
                return Err(bad(
                    "exponent bits",
                    exp_bits as i64,
                    "the ieee convention needs at least 2 exponent bits (one exponent is reserved for inf/NaN)".into(),
                ));
            }
            Encoding::Fnu if man_bits != 0 => {
                return Err(bad(
                    "mantissa bits",
                    man_bits as i64,
                    "the unsigned exponent-only convention (E8M0 style) has no mantissa bits"
                        .into(),
                ));
            }
            _ => {}
        }
        let bias = bias.unwrap_or_else(|| Self::default_bias(exp_bits, encoding));
        let f = MiniFloat {
            exp_bits: exp_bits as u8,
            man_bits: man_bits as u8,
            bias: bias.clamp(i16::MIN as i32, i16::MAX as i32) as i16,
            encoding,
        };
        // Every value must be an exact f32: top exponent ≤ 127, smallest quantum ≥ 2^-149.
        let emax = f.max_exponent();
        let min_q = f.min_exponent()
            - if encoding == Encoding::Fnu {
                0
            } else {
                man_bits as i32
            };
        if bias != f.bias as i32 || emax > 127 || min_q < -149 {
            let lo = (f.max_field_exponent() - 127).max(-(1 << 14));
            let hi = 150 - man_bits as i32 - if encoding == Encoding::Fnu { 1 } else { 0 };
            return Err(bad(
                "bias",
                bias as i64,
                format!(
                    "must be between {lo} and {hi} so that every value is an exact f32 (largest exponent {emax}, smallest step 2^{min_q})"
                ),
            ));
        }
        Ok(f)
    }

    /// Same as [`MiniFloat::new`] for parameters known to be valid at compile time.
    pub(crate) const fn new_unchecked(
        exp_bits: u8,
        man_bits: u8,
        bias: i16,
        encoding: Encoding,
    ) -> Self {
        MiniFloat {
            exp_bits,
            man_bits,
            bias,
            encoding,
        }
    }

    /// Exponent field width.
    pub const fn exp_bits(&self) -> u32 {
        self.exp_bits as u32
    }
    /// Mantissa field width.
    pub const fn man_bits(&self) -> u32 {
        self.man_bits as u32
    }
    /// Exponent bias.
    pub const fn bias(&self) -> i32 {
        self.bias as i32
    }
    /// Special-value convention.
    pub const fn encoding(&self) -> Encoding {
        self.encoding
    }
    /// Whether the format has a sign bit.
    pub const fn is_signed(&self) -> bool {
        !matches!(self.encoding, Encoding::Fnu)
    }
    /// Code width in bits: sign + exponent + mantissa.
    pub const fn bits(&self) -> u32 {
        self.is_signed() as u32 + self.exp_bits as u32 + self.man_bits as u32
    }
    /// Mask of the magnitude (exponent and mantissa) bits.
    pub const fn magnitude_mask(&self) -> u32 {
        (1u32 << (self.exp_bits as u32 + self.man_bits as u32)) - 1
    }
    /// The sign bit of a code (0 for unsigned formats).
    pub const fn sign_bit(&self) -> u32 {
        if self.is_signed() {
            1u32 << (self.exp_bits as u32 + self.man_bits as u32)
        } else {
            0
        }
    }
    /// Largest exponent field that holds finite numbers.
    const fn max_field_exponent(&self) -> i32 {
        let all_ones = (1i32 << self.exp_bits) - 1;
        match self.encoding {
            // The all-ones exponent holds inf/NaN.
            Encoding::Ieee => all_ones - 1,
            // The all-ones code is NaN; with no mantissa bits that is the whole top exponent.
            Encoding::Fnu => all_ones - 1,
            Encoding::Fn if self.man_bits == 0 => all_ones - 1,
            Encoding::Fn | Encoding::Fnuz | Encoding::Finite => all_ones,
        }
    }
    /// Unbiased exponent of the largest finite value.
    pub const fn max_exponent(&self) -> i32 {
        self.max_field_exponent() - self.bias as i32
    }
    /// Unbiased exponent of the smallest normal value (`1 − bias`; for E8M0 style `−bias`).
    pub const fn min_exponent(&self) -> i32 {
        match self.encoding {
            Encoding::Fnu => -(self.bias as i32),
            _ => 1 - self.bias as i32,
        }
    }
    /// Magnitude code of the largest finite value.
    pub const fn max_magnitude_code(&self) -> u32 {
        let m = self.man_bits as u32;
        match self.encoding {
            Encoding::Ieee => (((1u32 << self.exp_bits) - 2) << m) | ((1u32 << m) - 1),
            Encoding::Fn | Encoding::Fnu => self.magnitude_mask() - 1,
            Encoding::Fnuz | Encoding::Finite => self.magnitude_mask(),
        }
    }
    /// The code of positive infinity, if the format has one.
    pub const fn inf_code(&self) -> Option<u32> {
        match self.encoding {
            Encoding::Ieee => Some(((1u32 << self.exp_bits) - 1) << self.man_bits),
            _ => None,
        }
    }
    /// The code a positive NaN converts to (the quiet NaN), if the format has NaN.
    pub const fn nan_code(&self) -> Option<u32> {
        let m = self.man_bits as u32;
        match self.encoding {
            Encoding::Ieee => Some((((1u32 << self.exp_bits) - 1) << m) | (1u32 << (m - 1))),
            Encoding::Fn | Encoding::Fnu => Some(self.magnitude_mask()),
            Encoding::Fnuz => Some(self.sign_bit()),
            Encoding::Finite => None,
        }
    }
    /// Whether `code` is a NaN of this format.
    pub const fn is_nan_code(&self, code: u32) -> bool {
        let mag = code & self.magnitude_mask();
        match self.encoding {
            Encoding::Ieee => mag > ((1u32 << self.exp_bits) - 1) << self.man_bits,
            Encoding::Fn | Encoding::Fnu => mag == self.magnitude_mask(),
            Encoding::Fnuz => code == self.sign_bit(),
            Encoding::Finite => false,
        }
    }
    /// Whether `code` is ±inf of this format.
    pub const fn is_inf_code(&self, code: u32) -> bool {
        match self.inf_code() {
            Some(inf) => code & self.magnitude_mask() == inf,
            None => false,
        }
    }

    /// Decodes a code (its low [`bits`](Self::bits) bits; higher bits are ignored) to `f32`,
    /// exactly. NaN codes decode to the quiet `f32` NaN with the code's sign (ml_dtypes).
    pub const fn decode(&self, code: u32) -> f32 {
        let m = self.man_bits as u32;
        let code = code & (self.sign_bit() | self.magnitude_mask());
        let sign = if code & self.sign_bit() != 0 {
            0x8000_0000u32
        } else {
            0
        };
        if self.is_nan_code(code) {
            // ml_dtypes: the fnuz NaN (0x80) has its sign bit set, so it decodes to -NaN.
            return f32::from_bits(sign | 0x7FC0_0000);
        }
        if self.is_inf_code(code) {
            return f32::from_bits(sign | 0x7F80_0000);
        }
        let mag = code & self.magnitude_mask();
        let e = (mag >> m) as i32;
        let f = mag & ((1u32 << m) - 1);
        let bits = if matches!(self.encoding, Encoding::Fnu) {
            pow2_bits(e - self.bias as i32)
        } else if e == 0 {
            // Subnormal: F · 2^(1 − bias − m). F < 2^10 and the power of two is ≥ 2^-149, so
            // the product is exact.
            let v = f as f32 * f32::from_bits(pow2_bits(1 - self.bias as i32 - m as i32));
            v.to_bits()
        } else {
            // Normal: rebias the exponent, left-align the mantissa. Exact (checked in `new`).
            let fe = e - self.bias as i32 + 127;
            if fe >= 1 {
                ((fe as u32) << 23) | (f << (23 - m))
            } else {
                // A normal of the format that is subnormal in f32 (bias > 127).
                let v = ((1u32 << m) | f) as f32
                    * f32::from_bits(pow2_bits(e - self.bias as i32 - m as i32));
                v.to_bits()
            }
        };
        f32::from_bits(sign | bits)
    }

    /// Encodes `x` with ml_dtypes `astype` semantics (nearest-even, the format's own overflow
    /// rule).
    pub const fn encode(&self, x: f32) -> u32 {
        self.encode_with(x, Conversion::REFERENCE, 0)
    }

    /// Encodes `x` under `conv`; `rand` is the 32-bit random word for stochastic rounding
    /// ([`crate::stochastic_bits`]) and is ignored otherwise.
    ///
    /// The scalar reference. Steps (ml_dtypes `ConvertImpl<float, To>`):
    /// 1. ±inf and NaN map to the format's specials (see [`Encoding`]);
    /// 2. ±0 keeps its sign (no −0 for FNUZ; NaN for E8M0, which has no zero);
    /// 3. the input is normalised to an unbiased exponent and a 24-bit mantissa with its
    ///    implicit bit at bit 23 (f32 subnormals are shifted up);
    /// 4. `target = exponent + bias − 1` is the target's biased exponent minus one; when it is
    ///    negative the value is subnormal in the target and the mantissa is shifted further right;
    /// 5. the mantissa is rounded right by `23 − m (+ denormal shift)` bits with
    ///    [`round_shift`]; a carry out of the mantissa lands in the exponent
    ///    on its own;
    /// 6. `max(target, 0) << m` is added: the implicit bit still sitting at bit `m` adds the
    ///    missing one to the exponent field, so the sum is exactly the packed magnitude code;
    /// 7. a magnitude above the largest finite code is an overflow (inf, NaN or ±max by policy);
    /// 8. the sign is applied (a zero magnitude stays +0 in FNUZ).
    pub const fn encode_with(&self, x: f32, conv: Conversion, rand: u32) -> u32 {
        let bits = x.to_bits();
        let neg = bits >> 31 != 0;
        let a = bits & 0x7FFF_FFFF;
        let sat = matches!(conv.overflow, Overflow::Saturate);
        let sign = if neg { self.sign_bit() } else { 0 };
        let max = self.max_magnitude_code();
        // 1. Non-finite inputs.
        if a > 0x7F80_0000 {
            return match self.encoding {
                Encoding::Ieee | Encoding::Fn => sign | self.nan_bits_unsigned(),
                Encoding::Fnuz => self.sign_bit(),
                // ml_dtypes: quiet_NaN() of a NaN-less type is −0, and the sign flip of
                // `from_sign ? -nan : nan` then applies to it.
                Encoding::Finite => {
                    if neg {
                        0
                    } else {
                        self.sign_bit()
                    }
                }
                Encoding::Fnu => self.magnitude_mask(),
            };
        }
        if a == 0x7F80_0000 {
            if sat {
                return if neg && !self.is_signed() {
                    0
                } else {
                    sign | max
                };
            }
            return self.overflow_code(neg);
        }
        // 2. Zero.
        if a == 0 {
            return match self.encoding {
                Encoding::Fnu => {
                    if sat {
                        0
                    } else {
                        self.magnitude_mask()
                    }
                }
                Encoding::Fnuz => 0,
                _ => sign,
            };
        }
        if neg && !self.is_signed() {
            return if sat { 0 } else { self.magnitude_mask() };
        }
        // E8M0 style: ml_dtypes' algorithm treats code 0 as a zero when rounding, although it
        // is 2^-bias. Nearest-even still maps 2^-bias itself to code 0 (a tie with an even
        // kept bit), but the other rules would move it; an exactly representable value must
        // stay put under every rule.
        if matches!(self.encoding, Encoding::Fnu) && a == pow2_bits(-(self.bias as i32)) {
            return 0;
        }
        // 3. Normalise.
        let e = (a >> 23) as i32;
        let f = a & 0x7F_FFFF;
        let (unbiased, mant) = if e != 0 {
            (e - 127, f | 0x80_0000)
        } else {
            let k = f.leading_zeros() as i32 - 8;
            (-126 - k, f << k)
        };
        // 4.–5. Align to the target and round.
        let m = self.man_bits as i32;
        let target = unbiased + self.bias as i32 - 1;
        let denormal = if target < 0 { -target } else { 0 };
        let shift = (23 - m + denormal) as u32;
        // ml_dtypes clamps the shift at 25 (anything beyond rounds to 0 under the deterministic
        // rules); round_shift clamps at 56 instead, which gives the same deterministic results
        // and keeps stochastic rounding's probability exact.
        let r = round_shift(mant as u64, shift, conv.rounding, rand);
        // 6. Pack.
        let packed = r + (((if target > 0 { target } else { 0 }) as u64) << m);
        // 7. Overflow.
        if packed > max as u64 {
            return if sat {
                sign | max
            } else {
                self.overflow_code(neg)
            };
        }
        let packed = packed as u32;
        // 8. Sign.
        if matches!(self.encoding, Encoding::Fnuz) && packed == 0 {
            0
        } else {
            sign | packed
        }
    }

    /// NaN magnitude pattern used when converting a NaN (the quiet NaN).
    const fn nan_bits_unsigned(&self) -> u32 {
        match self.nan_code() {
            Some(c) => c,
            None => 0,
        }
    }

    /// The code an overflowing value (or ±inf) converts to under [`Overflow::Reference`].
    pub const fn overflow_code(&self, neg: bool) -> u32 {
        let sign = if neg { self.sign_bit() } else { 0 };
        match self.encoding {
            Encoding::Ieee => sign | (((1u32 << self.exp_bits) - 1) << self.man_bits),
            Encoding::Fn => sign | self.magnitude_mask(),
            Encoding::Fnuz => self.sign_bit(),
            Encoding::Finite => sign | self.max_magnitude_code(),
            Encoding::Fnu => self.magnitude_mask(),
        }
    }

    /// `decode(encode_with(x, conv, rand))`: the fake-quantized value, the hot path.
    #[inline]
    pub const fn quantize_with(&self, x: f32, conv: Conversion, rand: u32) -> f32 {
        self.decode(self.encode_with(x, conv, rand))
    }
}

/// `f32` bit pattern of `2^k` for `-149 ≤ k ≤ 127` (subnormal below −126).
pub(crate) const fn pow2_bits(k: i32) -> u32 {
    if k >= -126 {
        ((k + 127) as u32) << 23
    } else {
        1u32 << (k + 149)
    }
}
