//! How a value that falls between two representable numbers is rounded, and what happens to
//! values beyond the largest one.

use serde::{Deserialize, Serialize};

/// Rounding rule applied when a value is not exactly representable.
///
/// All rules act on the exact value (one rounding straight from `f32`, never through an
/// intermediate format), and are defined on the bit pattern, not by `log2`/`floor` arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Rounding {
    /// Round to nearest, ties to even (IEEE 754 default, ml_dtypes `astype`, hardware casts).
    #[default]
    NearestEven,
    /// Round to nearest, ties away from zero (C `round`, some MX reference code).
    NearestAway,
    /// Round toward zero (truncate the dropped bits; ml_dtypes `kTruncate`).
    TowardZero,
    /// Stochastic rounding: round up with probability equal to the dropped fraction of the step,
    /// resolved to 2⁻³². The random bits for element `i` come from [`stochastic_bits`]`(seed, i)`,
    /// a counter-based generator, so the result does not depend on the thread count or on how a
    /// slice is split.
    Stochastic {
        /// The seed of the counter-based generator.
        seed: u64,
    },
}

/// What happens to finite values beyond the largest finite value of a format, and to ±inf.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// The format's own rule, as ml_dtypes applies it: to ±inf where the format has infinities
    /// (E5M2, E4M3), to NaN where it has NaN but no infinity (E4M3FN, the FNUZ types, E8M0),
    /// to ±max where it has neither (FP6, FP4, INTn).
    #[default]
    Reference,
    /// Clamp to ±max (what quantizers do; PTX `cvt.satfinite`): finite values beyond the range
    /// and ±inf become ±max; NaN stays NaN. For E8M0, zero and negative inputs become the
    /// smallest value 2⁻¹²⁷ (ml_dtypes' saturating cast) instead of NaN.
    Saturate,
}

/// A complete conversion rule: rounding plus overflow policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Conversion {
    /// Rounding rule.
    pub rounding: Rounding,
    /// Overflow policy.
    pub overflow: Overflow,
}

impl Conversion {
    /// ml_dtypes `astype` semantics: nearest-even, the format's own overflow rule.
    pub const REFERENCE: Conversion = Conversion {
        rounding: Rounding::NearestEven,
        overflow: Overflow::Reference,
    };
    /// Nearest-even with saturation to ±max: the usual quantizer cast.
    pub const SATURATE: Conversion = Conversion {
        rounding: Rounding::NearestEven,
        overflow: Overflow::Saturate,
    };

    /// A conversion with the given rounding and overflow policy.
    pub const fn new(rounding: Rounding, overflow: Overflow) -> Self {
        Conversion { rounding, overflow }
    }
}

/// The 32 random bits used to stochastically round element `index` under `seed`.
///
/// A counter-based generator (SplitMix64's finaliser applied to `seed` and `index`), so element
/// `i` always gets the same bits whatever the thread count, the chunking or the device. CUDA
/// kernels mirror this function.
#[inline]
pub const fn stochastic_bits(seed: u64, index: u64) -> u32 {
    let z = seed
        .wrapping_add(index.wrapping_mul(SPLITMIX_GAMMA))
        .wrapping_add(SPLITMIX_GAMMA);
    (splitmix64_finish(z) >> 32) as u32
}

/// SplitMix64's finaliser (the output function applied to its state).
#[inline]
const fn splitmix64_finish(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(SPLITMIX_MUL1);
    z = (z ^ (z >> 27)).wrapping_mul(SPLITMIX_MUL2);
    z ^ (z >> 31)
}

/// The seed of training step `step` for a spec written with `seed`: `seed` itself for step 0,
/// else `seed` XOR SplitMix64's full 64-bit output for `step`.
///
/// Training loops that quantize with stochastic rounding at every step use it so that each
/// step draws fresh words (a fixed seed would give every element the same threshold at every
/// step: a fixed dither, not noise), while a run stays reproducible. The seeds of different
/// steps are unrelated 64-bit numbers, so their streams `seed' + (i + 1)·γ` do not overlap
/// for any practical tensor size.
///
/// ```
/// use lowbit_formats::stochastic_step_seed;
/// assert_eq!(stochastic_step_seed(7, 0), 7);
/// assert_ne!(stochastic_step_seed(7, 1), stochastic_step_seed(7, 2));
/// ```
#[inline]
pub const fn stochastic_step_seed(seed: u64, step: u64) -> u64 {
    if step == 0 {
        return seed;
    }
    seed ^ splitmix64_finish(step.wrapping_mul(SPLITMIX_GAMMA))
}

/// SplitMix64's increment (the golden ratio in 64 bits) and its finaliser's two multipliers,
/// shared with the SIMD generator of `kernels/stochastic.rs`.
pub(crate) const SPLITMIX_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
pub(crate) const SPLITMIX_MUL1: u64 = 0xBF58_476D_1CE4_E5B9;
pub(crate) const SPLITMIX_MUL2: u64 = 0x94D0_49BB_1331_11EB;

/// Rounds the integer `mant` right by `shift` bits under `rounding`; `rand` is used only by
/// [`Rounding::Stochastic`].
///
/// This is the single rounding primitive of every codec:
/// - nearest-even adds `L + 0b0111…1` (L = the lowest kept bit) before shifting, so a carry
///   into the kept bits happens exactly when the dropped bits are above half, or equal to half
///   with L = 1 (the trick half and ml_dtypes use);
/// - nearest-away adds `0b1000…0` (exactly half);
/// - toward-zero adds nothing;
/// - stochastic compares the dropped fraction, as a 32-bit fixed-point number, with `rand`.
///
/// `shift` may be up to 63; `mant` must be below 2^25.
#[inline]
pub const fn round_shift(mant: u64, shift: u32, rounding: Rounding, rand: u32) -> u64 {
    if shift == 0 {
        return mant;
    }
    let shift = if shift > 56 { 56 } else { shift };
    match rounding {
        Rounding::NearestEven => {
            let bias = ((mant >> shift) & 1) + (1u64 << (shift - 1)) - 1;
            (mant + bias) >> shift
        }
        Rounding::NearestAway => (mant + (1u64 << (shift - 1))) >> shift,
        Rounding::TowardZero => mant >> shift,
        Rounding::Stochastic { .. } => {
            let dropped = mant & ((1u64 << shift) - 1);
            let frac32 = (dropped << 32) >> shift;
            (mant >> shift) + ((rand as u64) < frac32) as u64
        }
    }
}
