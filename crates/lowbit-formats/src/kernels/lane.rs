//! The lane algorithm: the per-element computation every SIMD kernel performs, written once in
//! plain Rust. It is the [`super::Isa::Scalar`] level and the line-by-line model for `avx2.rs`
//! and `avx512.rs` (and for CUDA kernels).
//!
//! It differs from the scalar reference in one way only, chosen because it vectorises: `f32`
//! subnormal inputs are not normalised first; they are taken as exponent 1 without the
//! implicit bit, which is the same value. That gives the same rounding as the reference as long
//! as the target's smallest normal is not below 2⁻¹²⁶ (bias ≤ 127), so formats with a larger
//! bias run on the reference instead ([`FloatLane::new`] says `None`). Special inputs and
//! overflow are not computed per lane: their results are constants of the conversion, taken
//! from the reference once, and blended in by mask. Stochastic rounding takes one more input
//! per element, its random word ([`FloatLane::quantize_stochastic`]); its kernels live in
//! `stochastic.rs`.

use crate::format::Format;
use crate::integer::IntFormat;
use crate::minifloat::{Encoding, MiniFloat, pow2_bits};
use crate::rounding::{Conversion, Rounding};

/// Rounding rule of a deterministic lane kernel.
pub(crate) const RNE: u8 = 0;
pub(crate) const AWAY: u8 = 1;
pub(crate) const ZERO: u8 = 2;
/// Stochastic rounding: only the `*_stochastic` functions, which take the random word.
pub(crate) const STOCH: u8 = 3;

fn rounding_id(r: Rounding) -> u8 {
    match r {
        Rounding::NearestEven => RNE,
        Rounding::NearestAway => AWAY,
        Rounding::TowardZero => ZERO,
        Rounding::Stochastic { .. } => STOCH,
    }
}

/// A result for a class of inputs: its code and its decoded `f32` bits, `[positive, negative]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Special {
    pub code: [u32; 2],
    pub value: [u32; 2],
}

impl Special {
    fn of(f: &MiniFloat, conv: Conversion, x: f32) -> Special {
        let cp = f.encode_with(x, conv, 0);
        let cn = f.encode_with(-x, conv, 0);
        Special {
            code: [cp, cn],
            value: [f.decode(cp).to_bits(), f.decode(cn).to_bits()],
        }
    }
}

/// Constants of the lane algorithm for one minifloat and one deterministic conversion.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FloatLane {
    /// Mantissa bits.
    pub m: u32,
    /// `23 − m`.
    pub mant_shift: u32,
    /// `bias − 128`: `e + tb_off` is the target's biased exponent minus one for f32 exponent `e`.
    pub tb_off: i32,
    /// Largest finite magnitude code.
    pub max_mag: u32,
    /// `(127 − bias) << 23`, wrapping: rebiases a normal magnitude shifted into f32 position.
    pub norm_add: u32,
    /// `2^(1 − bias − m)`: the value of one subnormal step.
    pub sub_scale: f32,
    /// `f32` bits of magnitude code 0 (0, or 2⁻¹²⁷ for E8M0, which has no zero).
    pub zero_mag_value: u32,
    /// Sign bit of a code (0 for unsigned formats).
    pub code_sign: u32,
    /// FNUZ: a zero magnitude never carries a sign.
    pub fnuz: bool,
    /// Unsigned format: negative inputs take `neg`.
    pub unsigned: bool,
    /// Rounding rule (`RNE`, `AWAY`, `ZERO`, `STOCH`).
    pub rounding: u8,
    /// Whether the nearest-even fast path applies (see [`FloatLane::quantize_fast`]).
    pub fast: bool,
    /// Whether stochastic rounding may take its fast path
    /// ([`FloatLane::quantize_stochastic_fast`]): the nearest-even fast path's conditions
    /// (not E8M0 style, smallest normal ≥ 2⁻¹²⁶) and a subnormal step `q = 2^(emin − m)` with
    /// `2⁻⁹⁴ ≤ q ≤ 1`, so that `f32` subnormal inputs round to 0 (`|x| / q < 2⁻³²`) and can
    /// be left out of the float arithmetic.
    pub sr_fast: bool,
    /// `2^(emin − m)` and `2^(m − emin)`: the subnormal step and its reciprocal.
    pub sr_step: f32,
    pub sr_inv_step: f32,
    /// Whether the fast path also serves encoding ([`FloatLane::encode_fast`]): `fast`, a
    /// signed format, and ±0 encode as the sign bit over code 0 (never for FNUZ).
    pub fast_encode: bool,
    /// `(127 − bias) << m`: subtracted from a normal `f32` pattern shifted right by `23 − m`,
    /// it leaves the format's magnitude code.
    pub rebias: u32,
    /// `f32` bits of the smallest normal value.
    pub min_normal_bits: u32,
    /// `f32` bits of the largest finite value.
    pub max_bits: u32,
    /// `2^(emin − m + 23)`: adding and subtracting it rounds a value below the smallest
    /// normal to a multiple of the subnormal step, nearest-even, in one float addition.
    pub magic: f32,
    /// Whether the fast path may take its sign-symmetric form: a signed, non-FNUZ format
    /// whose overflow, inf and NaN results are a positive value and that value with the sign
    /// bit set (in the `f32` and in the code), so the special results can be blended as
    /// magnitudes and the input's sign put back with one OR ([`FloatLane::quantize_fast`] and
    /// [`FloatLane::encode_fast`] give the same bits either way).
    pub sym: bool,
    /// Whether the fast path may take its finite-input form: as `sym`, but only the overflow
    /// results need to be sign-symmetric (inputs known to be finite never reach the inf and
    /// NaN cases).
    pub sym_finite: bool,
    /// `inf` gives the same results as `ovf` (the inf blend is then a no-op).
    pub inf_is_ovf: bool,
    /// `nan` gives the same results as `ovf` (the NaN blend is then a no-op).
    pub nan_is_ovf: bool,
    /// Results for NaN, ±inf, ±0, finite overflow and (unsigned) negative inputs.
    pub nan: Special,
    pub inf: Special,
    pub zero: Special,
    pub ovf: Special,
    pub neg: Special,
}

impl FloatLane {
    /// The lane constants, or `None` when the conversion must run on the reference
    /// (bias > 127, E8M0 style under a rule other than nearest-even).
    pub fn new(f: &MiniFloat, conv: Conversion) -> Option<FloatLane> {
        let rounding = rounding_id(conv.rounding);
        // Bias > 127: the unnormalised subnormal trick is not exact; E8M0 style with a rule
        // other than nearest-even: the exact-minimum special case of the reference.
        if f.bias() > 127 || (f.encoding() == Encoding::Fnu && rounding != RNE) {
            return None;
        }
        let m = f.man_bits();
        let emin = f.min_exponent();
        let magic_exp = emin - m as i32 + 23;
        let fast_ok = f.encoding() != Encoding::Fnu && (-126..=127).contains(&magic_exp);
        let fast = rounding == RNE && fast_ok;
        let inv_step_exp = m as i32 - emin;
        let sr_fast = rounding == STOCH && fast_ok && (0..=94).contains(&inv_step_exp);
        let (nan, inf, ovf) = (
            Special::of(f, conv, f32::NAN),
            Special::of(f, conv, f32::INFINITY),
            Special::of(f, conv, f32::MAX),
        );
        // A result that is a positive value and that value negated, in both the decoded `f32`
        // and the code (so the sign can be ORed in last when quantizing and when encoding).
        let symmetric = |s: &Special| {
            s.value[0] & 0x8000_0000 == 0
                && s.value[1] == s.value[0] | 0x8000_0000
                && s.code[0] & f.sign_bit() == 0
                && s.code[1] == s.code[0] | f.sign_bit()
        };
        let fnuz = f.encoding() == Encoding::Fnuz;
        let zero = Special::of(f, conv, 0.0);
        let sign_of_zero = if fnuz { 0 } else { f.sign_bit() };
        Some(FloatLane {
            fast,
            sr_fast,
            // Exact powers of two (the step may be an `f32` subnormal, down to 2⁻¹²⁷).
            sr_step: 2f64.powi(-inv_step_exp.clamp(0, 94)) as f32,
            sr_inv_step: 2f64.powi(inv_step_exp.clamp(0, 94)) as f32,
            fast_encode: fast && f.is_signed() && zero.code == [0, sign_of_zero],
            rebias: ((127 - f.bias()) as u32) << m,
            sym: !fnuz && f.is_signed() && [nan, inf, ovf].iter().all(symmetric),
            sym_finite: !fnuz && f.is_signed() && symmetric(&ovf),
            inf_is_ovf: inf.value == ovf.value,
            nan_is_ovf: nan.value == ovf.value,
            min_normal_bits: pow2_bits(emin.max(-126)),
            max_bits: f.decode(f.max_magnitude_code()).to_bits(),
            magic: f32::from_bits(pow2_bits(magic_exp.clamp(-126, 127))),
            m,
            mant_shift: 23 - m,
            tb_off: f.bias() - 128,
            max_mag: f.max_magnitude_code(),
            norm_add: ((127 - f.bias()) as u32) << 23,
            sub_scale: f32::from_bits(pow2_bits(1 - f.bias() - m as i32)),
            zero_mag_value: if f.encoding() == Encoding::Fnu {
                f.decode(0).to_bits()
            } else {
                0
            },
            code_sign: f.sign_bit(),
            fnuz,
            unsigned: !f.is_signed(),
            rounding,
            nan,
            inf,
            zero,
            ovf,
            neg: Special::of(f, conv, 1.0),
        })
    }

    /// The magnitude code of `|x|` (bits `a`, finite and nonzero), possibly above `max_mag`.
    #[inline(always)]
    pub fn magnitude(&self, a: u32) -> u32 {
        let e = a >> 23;
        let mant = (a & 0x7F_FFFF) | if e != 0 { 0x80_0000 } else { 0 };
        let tb = e.max(1) as i32 + self.tb_off;
        let denormal = (-tb).max(0) as u32;
        let sh = (self.mant_shift + denormal).min(25);
        let r = match self.rounding {
            RNE => (mant + ((mant >> sh) & 1) + (1 << (sh - 1)) - 1) >> sh,
            AWAY => (mant + (1 << (sh - 1))) >> sh,
            _ => mant >> sh,
        };
        r + ((tb.max(0) as u32) << self.m)
    }

    /// [`magnitude`](Self::magnitude) under stochastic rounding with the random word `rand`:
    /// the reference's `round_shift` rule, "round up when `rand` is below the dropped
    /// fraction of the step, as a 32-bit fixed-point number", on the unnormalised mantissa.
    ///
    /// The shift `sh` is not clamped here (stochastic rounding needs the exact fraction):
    /// with `d` the dropped bits (below `2^sh`), the fraction is `d << (32 − sh)` when
    /// `sh ≤ 32` and `⌊d / 2^(sh − 32)⌋` beyond (shifts of 32 or more give 0, as the SIMD
    /// variable shifts do). The reference normalises an `f32` subnormal first, which moves
    /// `k` more bits into both `d` and `sh`: the same fraction while `sh + k ≤ 56`, and 0 on
    /// both sides beyond (the reference caps the shift at 56; here `d < 2^(24 − k)` makes
    /// `⌊d · 2^(32 − sh)⌋ = 0`).
    #[inline(always)]
    pub fn magnitude_stochastic(&self, a: u32, rand: u32) -> u32 {
        let e = a >> 23;
        let mant = (a & 0x7F_FFFF) | if e != 0 { 0x80_0000 } else { 0 };
        let tb = e.max(1) as i32 + self.tb_off;
        let denormal = (-tb).max(0) as u32;
        let sh = self.mant_shift + denormal;
        let kept = mant.checked_shr(sh).unwrap_or(0);
        let dropped = mant & 1u32.checked_shl(sh).unwrap_or(0).wrapping_sub(1);
        let frac32 = dropped.checked_shl(32u32.wrapping_sub(sh)).unwrap_or(0)
            | dropped.checked_shr(sh.wrapping_sub(32)).unwrap_or(0);
        let r = kept + (rand < frac32) as u32;
        r + ((tb.max(0) as u32) << self.m)
    }

    /// `f32` bits of a finite magnitude code `packed ≤ max_mag`.
    #[inline(always)]
    pub fn magnitude_value(&self, packed: u32) -> u32 {
        if packed >> self.m == 0 {
            (packed as f32 * self.sub_scale).to_bits()
                | if packed == 0 { self.zero_mag_value } else { 0 }
        } else {
            (packed << self.mant_shift).wrapping_add(self.norm_add)
        }
    }

    /// Encodes one value.
    #[inline(always)]
    pub fn encode(&self, x: f32) -> u32 {
        self.code_of(x, self.magnitude(x.to_bits() & 0x7FFF_FFFF))
    }

    /// Encodes one value under stochastic rounding with the random word `rand`.
    #[inline(always)]
    pub fn encode_stochastic(&self, x: f32, rand: u32) -> u32 {
        self.code_of(
            x,
            self.magnitude_stochastic(x.to_bits() & 0x7FFF_FFFF, rand),
        )
    }

    /// The code of `x` whose rounded magnitude code is `packed`: the sign put on, then the
    /// special classes in the reference's order of precedence.
    #[inline(always)]
    fn code_of(&self, x: f32, packed: u32) -> u32 {
        let b = x.to_bits();
        let s = (b >> 31) as usize;
        let a = b & 0x7FFF_FFFF;
        let signed_zero_ok = !(self.fnuz && packed == 0);
        let mut code = packed
            | if s == 1 && signed_zero_ok {
                self.code_sign
            } else {
                0
            };
        if packed > self.max_mag {
            code = self.ovf.code[s];
        }
        if s == 1 && self.unsigned {
            code = self.neg.code[s];
        }
        if a == 0 {
            code = self.zero.code[s];
        }
        if a == 0x7F80_0000 {
            code = self.inf.code[s];
        }
        if a > 0x7F80_0000 {
            code = self.nan.code[s];
        }
        code
    }

    /// `a` (absolute bits) plus the nearest-even rounding increment at bit `23 − m`: clearing
    /// the low `23 − m` bits of the result rounds `a` to the format's mantissa (with `m = 0`
    /// the kept bit is the implicit one, so ties go up). No u32 overflow: `a ≤ 2^31 − 1` and
    /// the increment is below 2^23. The fast paths' shared first step.
    #[inline(always)]
    fn nearest_even_carry(&self, a: u32) -> u32 {
        let sh = self.mant_shift;
        let lsb = ((a >> sh) & 1) | (self.m == 0) as u32;
        a + lsb + (1 << (sh - 1)) - 1
    }

    /// The nearest-even fast path of [`quantize`](Self::quantize), branch-free in SIMD.
    ///
    /// In the format's normal range, rounding to `m` mantissa bits is nearest-even rounding of
    /// the `f32` bit pattern at bit `23 − m` (a carry into the exponent is the right answer;
    /// with `m = 0` the kept bit is the implicit one, so ties go up, as in the reference).
    /// Below the smallest normal the step is the constant `2^(emin − m)`, and
    /// `(|x| + 2^(emin − m + 23)) − 2^(emin − m + 23)` rounds to it exactly: the sum stays in the
    /// binade of the constant, whose ulp is that step, and IEEE addition rounds to nearest-even.
    /// A rounded magnitude above the largest finite value is an overflow (this also catches
    /// ±inf and NaN, which are then told apart); their results are the conversion's constants.
    /// Zero needs no case: it rounds to zero. Only for formats with `fast` set (nearest-even,
    /// not E8M0 style).
    #[inline(always)]
    pub fn quantize_fast(&self, x: f32) -> f32 {
        let a = x.to_bits() & 0x7FFF_FFFF;
        let normal = self.nearest_even_carry(a) & !((1u32 << self.mant_shift) - 1);
        let sub = ((f32::from_bits(a) + self.magic) - self.magic).to_bits();
        let r = if a < self.min_normal_bits {
            sub
        } else {
            normal
        };
        self.finish_fast(x, r)
    }

    /// The fast paths' last step: the sign of `x` put on its rounded magnitude `r` (an `f32`
    /// pattern; not on a zero for FNUZ), and the overflow, inf and NaN results.
    #[inline(always)]
    fn finish_fast(&self, x: f32, r: u32) -> f32 {
        let b = x.to_bits();
        let a = b & 0x7FFF_FFFF;
        let s = (b >> 31) as usize;
        let sign = if self.fnuz && r == 0 {
            0
        } else {
            b & 0x8000_0000
        };
        let mut out = r | sign;
        if r > self.max_bits {
            out = self.ovf.value[s];
        }
        if a == 0x7F80_0000 {
            out = self.inf.value[s];
        }
        if a > 0x7F80_0000 {
            out = self.nan.value[s];
        }
        f32::from_bits(out)
    }

    /// The nearest-even fast path of [`encode`](Self::encode), for formats with `fast_encode`
    /// set: the rounding of [`quantize_fast`](Self::quantize_fast), read out as a code.
    ///
    /// A normal result's `f32` pattern shifted right by `23 − m` is `(E − bias + 127) << m | F`
    /// for the format's exponent field `E` and mantissa `F`, so subtracting
    /// `(127 − bias) << m` leaves the code `E << m | F` (rounded first, so a carry into the
    /// exponent is right). Below the smallest normal, `|x| + 2^(emin − m + 23)` lies in the
    /// binade of the constant, whose ulp is the subnormal step: the low bits of the sum's
    /// pattern minus the constant's count the steps, i.e. they are the subnormal code `F`
    /// (`2^m`, the smallest normal's code, when it rounds up to it). Zero gives code 0 and the
    /// sign is ORed in (not over zero for FNUZ). Overflow, inf and NaN are told apart as in
    /// `quantize_fast`; a code above the largest magnitude code is an overflow because the
    /// map from rounded patterns to codes is increasing.
    #[inline(always)]
    pub fn encode_fast(&self, x: f32) -> u32 {
        let b = x.to_bits();
        let a = b & 0x7FFF_FFFF;
        let s = (b >> 31) as usize;
        let normal = (self.nearest_even_carry(a) >> self.mant_shift).wrapping_sub(self.rebias);
        let sub = (f32::from_bits(a) + self.magic)
            .to_bits()
            .wrapping_sub(self.magic.to_bits());
        let mag = if a < self.min_normal_bits {
            sub
        } else {
            normal
        };
        let mut code = mag
            | if s == 1 && !(self.fnuz && mag == 0) {
                self.code_sign
            } else {
                0
            };
        if mag > self.max_mag {
            code = self.ovf.code[s];
        }
        if a == 0x7F80_0000 {
            code = self.inf.code[s];
        }
        if a > 0x7F80_0000 {
            code = self.nan.code[s];
        }
        code
    }

    /// Fake-quantizes one value.
    #[inline(always)]
    pub fn quantize(&self, x: f32) -> f32 {
        self.value_of(x, self.magnitude(x.to_bits() & 0x7FFF_FFFF))
    }

    /// Fake-quantizes one value under stochastic rounding with the random word `rand`.
    #[inline(always)]
    pub fn quantize_stochastic(&self, x: f32, rand: u32) -> f32 {
        self.value_of(
            x,
            self.magnitude_stochastic(x.to_bits() & 0x7FFF_FFFF, rand),
        )
    }

    /// The fast path of [`quantize_stochastic`](Self::quantize_stochastic), for formats with
    /// `sr_fast` set: the structure of [`quantize_fast`](Self::quantize_fast) with the
    /// stochastic rule.
    ///
    /// In the format's normal range the shift is the constant `s = 23 − m`, and "round up iff
    /// `rand < d · 2^(32 − s)`" (`d` the dropped bits) is "round up iff
    /// `d + (!rand >> (32 − s)) ≥ 2^s`", since `rand < d · 2^(32−s)` ⟺ `⌊rand / 2^(32−s)⌋ < d`:
    /// add `!rand >> (32 − s)` to the `f32` pattern and clear the low `s` bits (a carry into
    /// the exponent is right, as for nearest-even). Below the smallest normal the step is the
    /// constant `q = 2^(emin − m)`: `y = |x| / q` is exact (a power of two, `y < 2^m`), its
    /// fraction `y − ⌊y⌋` is the dropped fraction `d / 2^s` of the reference, so
    /// `(⌊y⌋ + (rand < fraction_word(y − ⌊y⌋))) · q` is the rounded value (exact again). An
    /// `f32` subnormal `|x|` gives `y < 2⁻³²`, a zero word and the result 0, as `|x| = 0`
    /// does: it is replaced by 0 first, because arithmetic on subnormal operands is slow on
    /// some CPUs (on AMD Zen 5, 3 % subnormal inputs made the kernel 3× slower). The special
    /// results are those of `quantize_fast`.
    #[inline(always)]
    pub fn quantize_stochastic_fast(&self, x: f32, rand: u32) -> f32 {
        let a = x.to_bits() & 0x7FFF_FFFF;
        let normal = (a + (!rand >> (32 - self.mant_shift))) & !((1u32 << self.mant_shift) - 1);
        let a_sub = if a < 0x80_0000 { 0 } else { a };
        let y = f32::from_bits(a_sub) * self.sr_inv_step;
        let k = y.floor();
        let up = rand < fraction_word(y - k);
        let sub = ((k + if up { 1.0 } else { 0.0 }) * self.sr_step).to_bits();
        let r = if a < self.min_normal_bits {
            sub
        } else {
            normal
        };
        self.finish_fast(x, r)
    }

    /// The fake-quantized value of `x` whose rounded magnitude code is `packed`.
    #[inline(always)]
    fn value_of(&self, x: f32, packed: u32) -> f32 {
        let b = x.to_bits();
        let s = (b >> 31) as usize;
        let a = b & 0x7FFF_FFFF;
        let signed_zero_ok = !(self.fnuz && packed == 0);
        let mut out = self.magnitude_value(packed.min(self.max_mag))
            | if s == 1 && signed_zero_ok && !self.unsigned {
                0x8000_0000
            } else {
                0
            };
        if packed > self.max_mag {
            out = self.ovf.value[s];
        }
        if s == 1 && self.unsigned {
            out = self.neg.value[s];
        }
        if a == 0 {
            out = self.zero.value[s];
        }
        if a == 0x7F80_0000 {
            out = self.inf.value[s];
        }
        if a > 0x7F80_0000 {
            out = self.nan.value[s];
        }
        f32::from_bits(out)
    }
}

/// Constants of the lane algorithm for an integer format.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IntLane {
    pub lo: f32,
    pub hi: f32,
    pub mask: u32,
    pub rounding: u8,
}

impl IntLane {
    pub fn new(i: &IntFormat, conv: Conversion) -> Option<IntLane> {
        Some(IntLane {
            lo: i.min_value() as f32,
            hi: i.max_value() as f32,
            mask: i.code_mask(),
            rounding: rounding_id(conv.rounding),
        })
    }

    /// Fake-quantizes one value: round, clamp, NaN → 0, −0 → +0.
    #[inline(always)]
    pub fn quantize(&self, x: f32) -> f32 {
        if x.is_nan() {
            return 0.0;
        }
        let r = match self.rounding {
            RNE => x.round_ties_even(),
            AWAY => x.round(),
            _ => x.trunc(),
        };
        r.max(self.lo).min(self.hi) + 0.0
    }

    /// Encodes one value.
    #[inline(always)]
    pub fn encode(&self, x: f32) -> u32 {
        (self.quantize(x) as i32 as u32) & self.mask
    }

    /// Fake-quantizes one value under stochastic rounding with the random word `rand`: up
    /// from `floor(x)` when `rand` is below the fraction `x − floor(x)` as a 32-bit
    /// fixed-point number ([`fraction_word`]); a fraction that rounded to 1 in `f32` (tiny
    /// negative `x`) always goes up, as in the reference. ±inf give a NaN fraction, which
    /// never rounds up, then saturate. An `f32` subnormal `x` rounds to 0 either way (up from
    /// −1 or not up from 0), as ±0 does: it is replaced by 0 first, because arithmetic on
    /// subnormal operands is slow on some CPUs.
    #[inline(always)]
    pub fn quantize_stochastic(&self, x: f32, rand: u32) -> f32 {
        if x.is_nan() {
            return 0.0;
        }
        let x = if x.abs() < f32::MIN_POSITIVE { 0.0 } else { x };
        let fl = x.floor();
        let frac = x - fl;
        let up = frac >= 1.0 || rand < fraction_word(frac);
        let r = if up { fl + 1.0 } else { fl };
        r.max(self.lo).min(self.hi) + 0.0
    }

    /// Encodes one value under stochastic rounding with the random word `rand`.
    #[inline(always)]
    pub fn encode_stochastic(&self, x: f32, rand: u32) -> u32 {
        (self.quantize_stochastic(x, rand) as i32 as u32) & self.mask
    }
}

/// `⌊f · 2³²⌋` for `f` in `[0, 1)` (and 0 for NaN), from the bit pattern: `f` is
/// `M · 2^(e − 150)` with the 24-bit significand `M`, so the word is `M << (e − 118)` for
/// `e ≥ 118` and `M >> (118 − e)` below (shift counts of 32 or more give 0, as in SIMD;
/// NaN's `e = 255` shifts everything out). The reference computes the same number as
/// `(f as f64 · 2³²) as u64`.
#[inline(always)]
pub(crate) fn fraction_word(f: f32) -> u32 {
    let b = f.to_bits();
    let e = b >> 23;
    let m = (b & 0x7F_FFFF) | if e != 0 { 0x80_0000 } else { 0 };
    m.checked_shl(e.wrapping_sub(118)).unwrap_or(0)
        | m.checked_shr(118u32.wrapping_sub(e)).unwrap_or(0)
}

/// The lane constants of a format under a conversion, or `None` for the reference path.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Lane {
    Float(FloatLane),
    Int(IntLane),
}

impl Lane {
    /// The lane constants of a deterministic conversion (`None` for stochastic rounding, which
    /// has [`StochasticLane`], and for the formats [`FloatLane::new`] leaves to the reference).
    pub fn new(format: &Format, conv: Conversion) -> Option<Lane> {
        if matches!(conv.rounding, Rounding::Stochastic { .. }) {
            return None;
        }
        Lane::any(format, conv)
    }

    fn any(format: &Format, conv: Conversion) -> Option<Lane> {
        match format {
            Format::Float(f) => FloatLane::new(f, conv).map(Lane::Float),
            Format::Int(i) => IntLane::new(i, conv).map(Lane::Int),
        }
    }

    #[inline(always)]
    pub fn quantize(&self, x: f32) -> f32 {
        match self {
            Lane::Float(p) if p.fast => p.quantize_fast(x),
            Lane::Float(p) => p.quantize(x),
            Lane::Int(p) => p.quantize(x),
        }
    }

    #[inline(always)]
    pub fn encode(&self, x: f32) -> u32 {
        match self {
            Lane::Float(p) if p.fast_encode => p.encode_fast(x),
            Lane::Float(p) => p.encode(x),
            Lane::Int(p) => p.encode(x),
        }
    }
}

/// The lane constants of a stochastic-rounding conversion and the seed of its generator.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StochasticLane {
    pub lane: Lane,
    pub seed: u64,
}

impl StochasticLane {
    /// `Some` for stochastic rounding on a format the lane algorithm covers.
    pub fn new(format: &Format, conv: Conversion) -> Option<StochasticLane> {
        let Rounding::Stochastic { seed } = conv.rounding else {
            return None;
        };
        Lane::any(format, conv).map(|lane| StochasticLane { lane, seed })
    }

    /// Fake-quantizes one value with the random word `rand`.
    #[inline(always)]
    pub fn quantize(&self, x: f32, rand: u32) -> f32 {
        match &self.lane {
            Lane::Float(p) if p.sr_fast => p.quantize_stochastic_fast(x, rand),
            Lane::Float(p) => p.quantize_stochastic(x, rand),
            Lane::Int(p) => p.quantize_stochastic(x, rand),
        }
    }

    /// Encodes one value with the random word `rand`.
    #[inline(always)]
    pub fn encode(&self, x: f32, rand: u32) -> u32 {
        match &self.lane {
            Lane::Float(p) => p.encode_stochastic(x, rand),
            Lane::Int(p) => p.encode_stochastic(x, rand),
        }
    }
}

/// Per-block maximum of `|x|` on the bit patterns: NaN (largest patterns) beats inf beats
/// numbers, so a block with a NaN reports NaN and one with an inf reports inf.
pub(crate) fn abs_max_blocks(src: &[f32], block: usize, out: &mut [f32]) {
    for (s, o) in src.chunks(block).zip(out.iter_mut()) {
        *o = f32::from_bits(
            s.iter()
                .map(|x| x.to_bits() & 0x7FFF_FFFF)
                .max()
                .unwrap_or(0),
        );
    }
}
