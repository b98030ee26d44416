//! [`Accumulator`]: the number format a dot product keeps its running sum in (the adder of a
//! MAC array), to simulate matmuls whose partial sums have fewer bits than `f32`: FP16 or BF16
//! accumulation, Hopper's FP8 tensor cores (whose sums DeepSeek-V3 measured at about 14 bits of
//! precision, and promoted to FP32 every 128 products), narrower adders of a design under study.
//!
//! The model, for `dot(a, b) = Σₖ aₖ·bₖ`:
//!
//! - each product `aₖ·bₖ` is computed exactly (two `f32` values multiply exactly in `f64`),
//!   then rounded once to the accumulator format;
//! - the running sum starts at `+0` and takes the products in order `k = 0, 1, …`; after each
//!   addition it is rounded once to the accumulator format (the exact sum of two values of at
//!   most 24 significant bits is held exactly in `f64` or is so far from a rounding boundary
//!   that its `f64` rounding cannot move the result, so every step is one correct rounding);
//! - with a `chunk` of `c`, the running sum restarts from 0 every `c` products and each
//!   finished chunk is added into an `f32` total (rounded to nearest even): FP32 promotion;
//! - a NaN anywhere (a NaN input, `inf − inf`, `0 · inf`) gives the canonical quiet NaN.
//!
//! The formats are IEEE-style binary floats: `e` exponent bits (bias `2^(e−1) − 1`), `m`
//! fraction bits, subnormals, ±inf, within `f32` (`2 ≤ e ≤ 8`, `1 ≤ m ≤ 23`), so every
//! accumulator value is an `f32` value. Rounding to nearest even overflows to ±inf; toward
//! zero stops at ±max (as a truncating adder does).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{FormatError, Result};

/// How an accumulator rounds each product and each sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccumulatorRounding {
    /// Round to nearest, ties to even (IEEE's default); overflow gives ±inf.
    #[default]
    NearestEven,
    /// Truncate (round toward zero); overflow stops at ±max.
    TowardZero,
}

/// The number format of an accumulator: `e` exponent bits, `m` fraction bits (IEEE-style).
///
/// Names: `fp32` / `f32` (e8m23), `tf32` (e8m10), `fp22` (e8m13), `bf16` / `bfloat16`
/// (e8m7), `fp16` / `f16` / `float16` (e5m10), or any `eXmY` with `2 ≤ X ≤ 8`, `1 ≤ Y ≤ 23`.
///
/// ```
/// use lowbit_formats::AccumulatorFormat;
/// let f: AccumulatorFormat = "fp22".parse()?;
/// assert_eq!((f.exp_bits(), f.man_bits()), (8, 13));
/// assert_eq!(f.to_string(), "e8m13");
/// # Ok::<(), lowbit_formats::FormatError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AccumulatorFormat {
    exp_bits: u32,
    man_bits: u32,
}

impl AccumulatorFormat {
    /// IEEE single precision (the default accumulator of every f32 matmul).
    pub const F32: AccumulatorFormat = AccumulatorFormat {
        exp_bits: 8,
        man_bits: 23,
    };

    /// `e` exponent bits and `m` fraction bits. Errors: `e` outside 2..=8, `m` outside 1..=23.
    pub fn new(exp_bits: u32, man_bits: u32) -> Result<AccumulatorFormat> {
        let name = format!("e{exp_bits}m{man_bits}");
        if !(2..=8).contains(&exp_bits) {
            return Err(FormatError::InvalidParameter {
                format: name,
                param: "exponent bits",
                value: i64::from(exp_bits),
                reason: "an accumulator has 2 to 8 exponent bits (within f32's range)".into(),
            });
        }
        if !(1..=23).contains(&man_bits) {
            return Err(FormatError::InvalidParameter {
                format: name,
                param: "mantissa bits",
                value: i64::from(man_bits),
                reason: "an accumulator has 1 to 23 fraction bits (within f32's precision)".into(),
            });
        }
        Ok(AccumulatorFormat { exp_bits, man_bits })
    }

    /// Exponent bits.
    pub fn exp_bits(&self) -> u32 {
        self.exp_bits
    }

    /// Fraction bits.
    pub fn man_bits(&self) -> u32 {
        self.man_bits
    }

    /// The largest finite value, `(2 − 2^−m) · 2^emax`.
    pub fn max_value(&self) -> f64 {
        let emax = (1i32 << (self.exp_bits - 1)) - 1;
        (2.0 - pow2(-(self.man_bits as i32))) * pow2(emax)
    }

    /// `x` rounded to this format by `rounding` (the sign of zero is kept; every NaN becomes
    /// the canonical quiet NaN, so a sum's NaN does not depend on which operand the hardware
    /// or the compiler put first).
    pub fn round(&self, x: f64, rounding: AccumulatorRounding) -> f64 {
        if x.is_nan() {
            return f64::NAN;
        }
        if x == 0.0 {
            return x;
        }
        let bias = (1i32 << (self.exp_bits - 1)) - 1;
        let (emin, emax, m) = (1 - bias, bias, self.man_bits as i32);
        let max = self.max_value();
        let a = x.abs();
        if a.is_infinite() {
            return match rounding {
                AccumulatorRounding::NearestEven => x,
                AccumulatorRounding::TowardZero => max.copysign(x),
            };
        }
        // The exponent of |x| (f64 subnormals are far below every accumulator's range).
        let e = (((a.to_bits() >> 52) & 0x7FF) as i32 - 1023).max(emin);
        // The quantum at that exponent; |x| / quantum is exact (a power-of-two rescale).
        let q = (e - m).min(emax - m);
        // t < 2^(m+1) ≤ 2^24: adding and removing 2^52 rounds it to an integer, nearest even
        // (one IEEE addition, no libm call); truncation is the integer conversion.
        let t = a * pow2(-q);
        let r = match rounding {
            AccumulatorRounding::NearestEven => (t + MAGIC) - MAGIC,
            AccumulatorRounding::TowardZero => (t as i64) as f64,
        } * pow2(q);
        let r = if r > max {
            match rounding {
                AccumulatorRounding::NearestEven => f64::INFINITY,
                AccumulatorRounding::TowardZero => max,
            }
        } else {
            r
        };
        r.copysign(x)
    }
}

/// [`AccumulatorFormat::round`] without branches, its constants worked out once: the same
/// results (tested lane by lane against `dot`), in a form the compiler turns into vector code.
/// Infinities need no case of their own: `inf` scales and rounds to `inf`, above max, so inf
/// (nearest even) or max (truncation); zero scales to zero.
#[derive(Clone, Copy, Debug)]
struct LaneRound {
    emin: i64,
    /// `emax − m`: the largest quantum exponent.
    qmax: i64,
    m: i64,
    max: f64,
    /// What an overflow gives: inf (nearest even) or max (toward zero).
    over: f64,
    nearest: bool,
}

impl LaneRound {
    fn new(f: AccumulatorFormat, r: AccumulatorRounding) -> LaneRound {
        let bias = (1i64 << (f.exp_bits - 1)) - 1;
        let m = i64::from(f.man_bits);
        let nearest = r == AccumulatorRounding::NearestEven;
        LaneRound {
            emin: 1 - bias,
            qmax: bias - m,
            m,
            max: f.max_value(),
            over: if nearest {
                f64::INFINITY
            } else {
                f.max_value()
            },
            nearest,
        }
    }

    #[inline(always)]
    fn round<const NEAREST: bool>(&self, x: f64) -> f64 {
        let a = x.abs();
        let e = (((a.to_bits() >> 52) & 0x7FF) as i64 - 1023).max(self.emin);
        let q = (e - self.m).min(self.qmax);
        let down = f64::from_bits(((1023 - q) as u64) << 52);
        let up = f64::from_bits(((1023 + q) as u64) << 52);
        let t = a * down;
        // Truncation from the nearest integer: one less where that rounded up (exact: both are
        // integers below 2^53); no float-to-integer conversion, which vectorizes poorly.
        let near = (t + MAGIC) - MAGIC;
        let r = if NEAREST {
            near
        } else if near > t {
            near - 1.0
        } else {
            near
        } * up;
        let r = if r > self.max { self.over } else { r }.copysign(x);
        if x.is_nan() { f64::NAN } else { r }
    }
}

/// Dot products [`Accumulator::dot_rows`] computes together.
const LANES: usize = 16;

/// `x`, or the canonical quiet NaN if `x` is a NaN.
fn canonical(x: f32) -> f32 {
    if x.is_nan() { f32::NAN } else { x }
}

/// 2^52: below it, `(t + 2^52) − 2^52` is `t` rounded to an integer, ties to even.
const MAGIC: f64 = 4_503_599_627_370_496.0;

/// `2^k` for `−1022 ≤ k ≤ 1023`, from its bit pattern.
fn pow2(k: i32) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

impl fmt::Display for AccumulatorFormat {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(out, "e{}m{}", self.exp_bits, self.man_bits)
    }
}

impl FromStr for AccumulatorFormat {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<AccumulatorFormat> {
        let key = s.trim().to_ascii_lowercase();
        let (e, m) = match key.as_str() {
            "fp32" | "f32" | "float32" => (8, 23),
            "tf32" => (8, 10),
            "fp22" => (8, 13),
            "bf16" | "bfloat16" => (8, 7),
            "fp16" | "f16" | "float16" => (5, 10),
            _ => {
                let parsed = key.strip_prefix('e').and_then(|rest| {
                    let (e, m) = rest.split_once('m')?;
                    Some((e.parse::<u32>().ok()?, m.parse::<u32>().ok()?))
                });
                parsed.ok_or_else(|| FormatError::UnknownFormat {
                    name: s.to_string(),
                    reason: "an accumulator is fp32, tf32, fp22, bf16, fp16 or eXmY \
                             (2 ≤ X ≤ 8, 1 ≤ Y ≤ 23)"
                        .into(),
                })?
            }
        };
        AccumulatorFormat::new(e, m)
    }
}

impl Serialize for AccumulatorFormat {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccumulatorFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An accumulator: its format, its rounding and the FP32 promotion interval.
///
/// ```
/// use lowbit_formats::{Accumulator, AccumulatorFormat, AccumulatorRounding};
/// // BF16 accumulation (8 significant bits): 256 + 1 + 1 + … stays at 256.
/// let bf16 = Accumulator::new("bf16".parse()?, AccumulatorRounding::NearestEven, None)?;
/// let a = vec![1.0f32; 257];
/// let mut b = vec![1.0f32; 257];
/// b[0] = 256.0;
/// assert_eq!(bf16.dot(&a, &b), 256.0);
/// // Promoted to FP32 every 16 products: only the first chunk (256 + 15 ones) still loses its
/// // ones; the other 16 chunks add 241 exactly (the f32 answer is 512).
/// let chunked = Accumulator::new("bf16".parse()?, AccumulatorRounding::NearestEven, Some(16))?;
/// assert_eq!(chunked.dot(&a, &b), 497.0);
/// # Ok::<(), lowbit_formats::FormatError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accumulator {
    /// The format of the running sum.
    pub format: AccumulatorFormat,
    /// How products and sums are rounded.
    #[serde(default)]
    pub rounding: AccumulatorRounding,
    /// Products per chunk before the running sum is added into an FP32 total (`None`: the
    /// whole dot product in the accumulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<usize>,
}

impl Accumulator {
    /// An accumulator. Errors: a chunk of 0.
    pub fn new(
        format: AccumulatorFormat,
        rounding: AccumulatorRounding,
        chunk: Option<usize>,
    ) -> Result<Accumulator> {
        let acc = Accumulator {
            format,
            rounding,
            chunk,
        };
        acc.validate()?;
        Ok(acc)
    }

    /// Checks the fields (a deserialized value is checked here too). Errors: a chunk of 0.
    pub fn validate(&self) -> Result<()> {
        if self.chunk == Some(0) {
            return Err(FormatError::InvalidParameter {
                format: self.format.to_string(),
                param: "chunk",
                value: 0,
                reason: "the promotion interval must be at least 1 product".into(),
            });
        }
        Ok(())
    }

    /// `Σₖ a[k]·b[k]` with this accumulator (the module docs give the model), over the
    /// shorter of the two slices.
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        let (f, r) = (self.format, self.rounding);
        let n = a.len().min(b.len());
        let chunk = self.chunk.unwrap_or(n).max(1);
        let mut total = 0.0f32;
        for (ca, cb) in a[..n].chunks(chunk).zip(b[..n].chunks(chunk)) {
            let mut acc = 0.0f64;
            for (&x, &y) in ca.iter().zip(cb) {
                let p = f.round(f64::from(x) * f64::from(y), r);
                acc = f.round(acc + p, r);
            }
            total = if self.chunk.is_some() {
                canonical((f64::from(total) + acc) as f32)
            } else {
                acc as f32
            };
        }
        total
    }
}

impl Accumulator {
    /// [`dot`](Self::dot) of `a` with each of `L` vectors at once (the same bits, lane by
    /// lane): the `L` running sums are independent, so their rounding chains overlap, and the
    /// lanes' branch-free rounding (`LaneRound`) runs as vector code (AVX-512 where the CPU
    /// has it, chosen at run time).
    pub fn dot_lanes<const L: usize>(&self, a: &[f32], bs: [&[f32]; L]) -> [f32; L] {
        let c = LaneRound::new(self.format, self.rounding);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { self.dot_lanes_avx512(&c, a, bs) };
        }
        self.dot_lanes_with(&c, a, bs)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512dq,avx512vl")]
    fn dot_lanes_avx512<const L: usize>(
        &self,
        c: &LaneRound,
        a: &[f32],
        bs: [&[f32]; L],
    ) -> [f32; L] {
        self.dot_lanes_with(c, a, bs)
    }

    #[inline(always)]
    fn dot_lanes_with<const L: usize>(
        &self,
        c: &LaneRound,
        a: &[f32],
        bs: [&[f32]; L],
    ) -> [f32; L] {
        if c.nearest {
            self.lanes::<L, true>(c, a, bs)
        } else {
            self.lanes::<L, false>(c, a, bs)
        }
    }

    #[inline(always)]
    fn lanes<const L: usize, const NEAREST: bool>(
        &self,
        c: &LaneRound,
        a: &[f32],
        bs: [&[f32]; L],
    ) -> [f32; L] {
        let n = bs.iter().fold(a.len(), |n, b| n.min(b.len()));
        let chunk = self.chunk.unwrap_or(n).max(1);
        let mut total = [0.0f32; L];
        let mut start = 0;
        while start < n {
            let end = (start + chunk).min(n);
            let mut acc = [0.0f64; L];
            for k in start..end {
                let x = f64::from(a[k]);
                let mut p = [0.0f64; L];
                for (p, b) in p.iter_mut().zip(&bs) {
                    *p = f64::from(b[k]);
                }
                for (acc, p) in acc.iter_mut().zip(&p) {
                    let p = c.round::<NEAREST>(x * p);
                    *acc = c.round::<NEAREST>(*acc + p);
                }
            }
            for (t, &acc) in total.iter_mut().zip(&acc) {
                *t = if self.chunk.is_some() {
                    canonical((f64::from(*t) + acc) as f32)
                } else {
                    acc as f32
                };
            }
            start = end;
        }
        total
    }

    /// `out[j] = dot(a, rows[j])` for the rows of `b` (`out.len()` rows of `k` elements),
    /// sixteen at a time ([`dot_lanes`](Self::dot_lanes)).
    pub fn dot_rows(&self, a: &[f32], b: &[f32], k: usize, out: &mut [f32]) {
        let mut rows = b.chunks(k.max(1));
        let mut outs = out.chunks_mut(LANES);
        for o in &mut outs {
            match <&mut [f32; LANES]>::try_from(&mut *o) {
                Ok(o8) => {
                    let r: [&[f32]; LANES] = std::array::from_fn(|_| rows.next().unwrap_or(&[]));
                    *o8 = self.dot_lanes(a, r);
                }
                Err(_) => {
                    for v in o.iter_mut() {
                        *v = self.dot(a, rows.next().unwrap_or(&[]));
                    }
                }
            }
        }
    }
}

impl fmt::Display for Accumulator {
    /// E.g. `e8m13 toward_zero, fp32 every 128`.
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = match self.rounding {
            AccumulatorRounding::NearestEven => "nearest_even",
            AccumulatorRounding::TowardZero => "toward_zero",
        };
        write!(out, "{} {r}", self.format)?;
        if let Some(c) = self.chunk {
            write!(out, ", fp32 every {c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn fmt(s: &str) -> AccumulatorFormat {
        s.parse().unwrap()
    }

    /// SplitMix64 → f64 values over many binades (f32-representable when `f32_only`).
    fn values(n: usize, seed: u64, f32_only: bool) -> Vec<f64> {
        let mut z = seed;
        (0..n)
            .map(|_| {
                z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut v = z;
                v = (v ^ (v >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                v = (v ^ (v >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                v ^= v >> 31;
                let m = 1.0 + (v >> 12) as f64 / (1u64 << 52) as f64;
                let e = ((v >> 2) % 90) as i32 - 45;
                let x = if v & 1 == 1 { -m } else { m } * 2f64.powi(e);
                if f32_only { f64::from(x as f32) } else { x }
            })
            .collect()
    }

    #[test]
    fn fp16_rounding_equals_the_half_crate() {
        // `half::f16::from_f32` rounds to nearest even (subnormals, overflow to inf): an
        // independent implementation, on f32 inputs (its `from_f64` goes through f32 and so
        // rounds twice: 0.7785644674079477 is just above a tie that its f32 image sits on).
        let f16 = fmt("fp16");
        let mut xs = values(200_000, 1, true);
        xs.extend([
            65504.0,
            65519.99,
            65520.0,
            6.0e-8,
            2.98e-8,
            2.9802322387695312e-8,
            1e-9,
        ]);
        for x in xs.into_iter().map(|v| f64::from(v as f32)) {
            let want = half::f16::from_f32(x as f32).to_f64();
            let got = f16.round(x, AccumulatorRounding::NearestEven);
            assert_eq!(got.to_bits(), want.to_bits(), "x = {x:e}");
        }
    }

    #[test]
    fn fp32_and_bf16_rounding_equal_rust_and_half_casts() {
        let f32f = AccumulatorFormat::F32;
        for x in values(200_000, 2, false) {
            let want = f64::from(x as f32);
            assert_eq!(
                f32f.round(x, AccumulatorRounding::NearestEven),
                want,
                "x = {x:e}"
            );
        }
        // `half::bf16::from_f32` rounds f32 to nearest even: compare on f32 inputs.
        let bf16 = fmt("bf16");
        for x in values(200_000, 3, true) {
            let want = half::bf16::from_f32(x as f32).to_f64();
            assert_eq!(
                bf16.round(x, AccumulatorRounding::NearestEven),
                want,
                "x = {x:e}"
            );
        }
    }

    #[test]
    fn toward_zero_truncates_and_nearest_picks_the_closer_neighbour() {
        // Against the grid written out independently: below |x| the truncation t, above it
        // t + quantum(t); nearest is the closer of the two (the even one on ties).
        for name in ["e8m13", "e5m2", "e4m3", "e8m1", "e3m10"] {
            let f = fmt(name);
            let (m, emin) = (f.man_bits() as i32, 2 - (1i32 << (f.exp_bits() - 1)));
            let quantum = |v: f64| {
                let e = if v == 0.0 {
                    emin
                } else {
                    v.log2().floor() as i32
                };
                2f64.powi(e.max(emin) - m)
            };
            for x in values(20_000, 4, false) {
                let t = f.round(x, AccumulatorRounding::TowardZero);
                let n = f.round(x, AccumulatorRounding::NearestEven);
                if x.abs() >= f.max_value() {
                    assert_eq!(t.abs(), f.max_value(), "{name} {x:e}");
                    continue;
                }
                let (lo, hi) = (t.abs(), t.abs() + quantum(t.abs()));
                assert!(lo <= x.abs() && x.abs() < hi, "{name} {x:e}: {lo:e} {hi:e}");
                assert_eq!(
                    (lo / quantum(lo)).fract(),
                    0.0,
                    "{name}: {lo:e} on the grid"
                );
                let (dl, dh) = (x.abs() - lo, hi - x.abs());
                let want = if dl < dh {
                    lo
                } else if dh < dl {
                    hi
                } else if (lo / quantum(lo)) % 2.0 == 0.0 {
                    lo
                } else {
                    hi
                };
                let want = if want > f.max_value() {
                    f64::INFINITY
                } else {
                    want
                };
                assert_eq!(n.abs(), want, "{name} {x:e}");
                assert_eq!(n.is_sign_negative(), x.is_sign_negative());
            }
        }
        let e5m2 = fmt("e5m2");
        assert_eq!(e5m2.max_value(), 57344.0);
        assert_eq!(
            e5m2.round(61440.0, AccumulatorRounding::NearestEven),
            f64::INFINITY
        );
        assert_eq!(
            e5m2.round(61439.0, AccumulatorRounding::NearestEven),
            57344.0
        );
        assert_eq!(e5m2.round(1e9, AccumulatorRounding::TowardZero), 57344.0);
        assert_eq!(e5m2.round(-1e9, AccumulatorRounding::TowardZero), -57344.0);
        // Ties to even at 1.125 and 1.375 (quantum 0.25 above 1).
        assert_eq!(e5m2.round(1.125, AccumulatorRounding::NearestEven), 1.0);
        assert_eq!(e5m2.round(1.375, AccumulatorRounding::NearestEven), 1.5);
        assert_eq!(e5m2.round(1.375, AccumulatorRounding::TowardZero), 1.25);
        // Subnormals: e5m2's smallest is 2^-16.
        assert_eq!(
            e5m2.round(1.5 * 2f64.powi(-17), AccumulatorRounding::NearestEven),
            2f64.powi(-16)
        );
        assert_eq!(
            e5m2.round(2f64.powi(-18), AccumulatorRounding::NearestEven),
            0.0
        );
        assert!(
            e5m2.round(-2f64.powi(-18), AccumulatorRounding::NearestEven)
                .is_sign_negative()
        );
    }

    #[test]
    fn fp32_accumulator_is_the_plain_f32_loop() {
        let xs = values(4096, 5, true);
        let a: Vec<f32> = xs[..2048].iter().map(|&v| v as f32).collect();
        let b: Vec<f32> = xs[2048..].iter().map(|&v| v as f32).collect();
        let acc = Accumulator::new(
            AccumulatorFormat::F32,
            AccumulatorRounding::NearestEven,
            None,
        )
        .unwrap();
        let mut want = 0.0f32;
        for (x, y) in a.iter().zip(&b) {
            want += x * y; // Rust does not contract this into an FMA
        }
        assert_eq!(acc.dot(&a, &b).to_bits(), want.to_bits());
        // Chunks of 64 in f32 then an f32 total: the same loop, restarted per chunk.
        let chunked = Accumulator {
            chunk: Some(64),
            ..acc
        };
        let mut total = 0.0f32;
        for (ca, cb) in a.chunks(64).zip(b.chunks(64)) {
            let mut s = 0.0f32;
            for (x, y) in ca.iter().zip(cb) {
                s += x * y;
            }
            total += s;
        }
        assert_eq!(chunked.dot(&a, &b).to_bits(), total.to_bits());
    }

    #[test]
    fn lanes_equal_the_one_at_a_time_dot() {
        // 37 rows: two full groups of LANES through the vector path, and a remainder.
        let xs = values(1000 + 37 * 1000, 6, true);
        let a: Vec<f32> = xs[..1000].iter().map(|&v| v as f32).collect();
        let mut b: Vec<f32> = xs[1000..].iter().map(|&v| v as f32).collect();
        b[5] = 0.0;
        b[1007] = f32::INFINITY;
        b[2010] = f32::NAN;
        b[3020] = -0.0;
        b[20_003] = f32::NEG_INFINITY;
        b[33_100] = 3.0e38;
        for (name, r, chunk) in [
            ("bf16", AccumulatorRounding::NearestEven, None),
            ("e5m4", AccumulatorRounding::TowardZero, Some(16)),
            ("fp22", AccumulatorRounding::TowardZero, Some(128)),
            ("e3m2", AccumulatorRounding::NearestEven, Some(7)),
        ] {
            let acc = Accumulator::new(fmt(name), r, chunk).unwrap();
            for k in [1000, 999, 17, 1] {
                let rows = b.len() / k;
                let rows = rows.min(37);
                let mut out = vec![0.0f32; rows];
                acc.dot_rows(&a[..k], &b[..rows * k], k, &mut out);
                for (j, o) in out.iter().enumerate() {
                    let want = acc.dot(&a[..k], &b[j * k..(j + 1) * k]);
                    assert_eq!(o.to_bits(), want.to_bits(), "{name} k {k} row {j}");
                }
                // The portable lane code (what CPUs without AVX-512 run).
                if rows >= LANES {
                    let c = LaneRound::new(acc.format, acc.rounding);
                    let r: [&[f32]; LANES] = std::array::from_fn(|j| &b[j * k..(j + 1) * k]);
                    let got = acc.dot_lanes_with(&c, &a[..k], r);
                    for (j, o) in got.iter().enumerate() {
                        let want = acc.dot(&a[..k], &b[j * k..(j + 1) * k]);
                        assert_eq!(o.to_bits(), want.to_bits(), "{name} k {k} row {j} portable");
                    }
                }
            }
        }
    }

    #[test]
    fn names_and_errors() {
        for (name, e, m) in [
            ("fp32", 8, 23),
            ("TF32", 8, 10),
            ("fp22", 8, 13),
            ("bfloat16", 8, 7),
            ("f16", 5, 10),
            ("e4m3", 4, 3),
        ] {
            let f = fmt(name);
            assert_eq!((f.exp_bits(), f.man_bits()), (e, m), "{name}");
        }
        for bad in ["e9m3", "e8m24", "e1m3", "e8m0", "fp64", "x"] {
            let err = bad.parse::<AccumulatorFormat>().unwrap_err().to_string();
            assert!(
                err.contains(bad) || err.contains("accumulator"),
                "{bad}: {err}"
            );
        }
        assert!(Accumulator::new(fmt("fp22"), AccumulatorRounding::TowardZero, Some(0)).is_err());
        let a = Accumulator::new(fmt("fp22"), AccumulatorRounding::TowardZero, Some(128)).unwrap();
        assert_eq!(a.to_string(), "e8m13 toward_zero, fp32 every 128");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(
            json,
            r#"{"format":"e8m13","rounding":"toward_zero","chunk":128}"#
        );
        assert_eq!(serde_json::from_str::<Accumulator>(&json).unwrap(), a);
    }
}
