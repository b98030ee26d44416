//! Stochastic rounding on the lane kernels: the lane algorithm with one more input per
//! element, its random word [`stochastic_bits`]`(seed, index)`, generated in registers.
//!
//! Element `i` of a call numbered from `first` gets the word of index `first + i` on every
//! level (scalar lane, AVX2, AVX-512), so the result does not depend on the level, the thread
//! count or the split. The SIMD generator is SplitMix64's finaliser on 64-bit lanes
//! (AVX-512DQ's `vpmullq`; AVX2 builds the 64 × 64-bit products from 32 × 32 → 64-bit ones,
//! `vpmuludq`); each vector then keeps the high half of its lanes.
//! The rounding itself is `FloatLane::quantize_stochastic_fast` (most minifloats),
//! `FloatLane::magnitude_stochastic` (the others) and `IntLane::quantize_stochastic`
//! ([`lane`](super::lane)), mirrored line by line in `stochastic/avx512.rs` and
//! `stochastic/avx2.rs`. Encoding takes the general minifloat rule.

use super::Isa;
use super::lane::StochasticLane;
use crate::rounding::stochastic_bits;

/// Fake-quantizes `src` into `dst` (the shorter length), element `i` rounded with the word of
/// index `first + i`; with `SCALED`, `dst = q(src · inv) · scale`.
///
/// # Safety
/// The CPU must have `isa` (a level that passed [`Isa::require`]).
pub(crate) unsafe fn quantize<const SCALED: bool>(
    isa: Isa,
    sr: &StochasticLane,
    src: &[f32],
    dst: &mut [f32],
    inv: f32,
    scale: f32,
    first: u64,
) {
    match isa {
        // SAFETY: the caller guarantees the level.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::quantize::<SCALED>(sr, src, dst, inv, scale, first) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::quantize::<SCALED>(sr, src, dst, inv, scale, first) },
        _ => {
            for (i, (d, &s)) in dst.iter_mut().zip(src).enumerate() {
                let rand = stochastic_bits(sr.seed, first.wrapping_add(i as u64));
                *d = if SCALED {
                    sr.quantize(s * inv, rand) * scale
                } else {
                    sr.quantize(s, rand)
                };
            }
        }
    }
}

/// Fake-quantizes consecutive blocks of `block` elements, block `k` with scale `scales[k]`
/// (`dst = q(src · (1/s)) · s`, the reciprocal once per block in `f32`), element `i` rounded
/// with the word of index `first + i`. The last block may be shorter; `scales` has one scale
/// per block (extra blocks or scales are ignored).
///
/// # Safety
/// The CPU must have `isa` (a level that passed [`Isa::require`]).
pub(crate) unsafe fn quantize_blocks(
    isa: Isa,
    sr: &StochasticLane,
    src: &[f32],
    dst: &mut [f32],
    block: usize,
    scales: &[f32],
    first: u64,
) {
    let block = block.max(1);
    match isa {
        // SAFETY: the caller guarantees the level.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::quantize_blocks(sr, src, dst, block, scales, first) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::quantize_blocks(sr, src, dst, block, scales, first) },
        _ => {
            let chunks = src.chunks(block).zip(dst.chunks_mut(block)).zip(scales);
            for (k, ((s, d), &scale)) in chunks.enumerate() {
                let inv = 1.0 / scale;
                let at = first.wrapping_add((k * block) as u64);
                for (i, (d, &x)) in d.iter_mut().zip(s).enumerate() {
                    let rand = stochastic_bits(sr.seed, at.wrapping_add(i as u64));
                    *d = sr.quantize(x * inv, rand) * scale;
                }
            }
        }
    }
}

/// Encodes `src` (times `inv` with `SCALED`) into one code per byte (formats of ≤ 8 bits),
/// element `i` rounded with the word of index `first + i`.
///
/// # Safety
/// The CPU must have `isa` (a level that passed [`Isa::require`]).
pub(crate) unsafe fn encode<const SCALED: bool>(
    isa: Isa,
    sr: &StochasticLane,
    src: &[f32],
    dst: &mut [u8],
    inv: f32,
    first: u64,
) {
    match isa {
        // SAFETY: the caller guarantees the level.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::encode::<SCALED>(sr, src, dst, inv, first) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::encode::<SCALED>(sr, src, dst, inv, first) },
        _ => {
            for (i, (d, &s)) in dst.iter_mut().zip(src).enumerate() {
                let rand = stochastic_bits(sr.seed, first.wrapping_add(i as u64));
                *d = sr.encode(if SCALED { s * inv } else { s }, rand) as u8;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests {
    //! The kernels' per-vector functions, fed chosen random words, against the reference at
    //! each input's rounding threshold (found by bisection on the reference alone) and around
    //! it; the SIMD generator against `stochastic_bits`. The slice entry points are compared
    //! with the reference in `tests/kernels.rs`.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::format::Format;
    use crate::rounding::{Conversion, Overflow, Rounding};

    const SEED: u64 = 0x5EED;

    fn formats() -> Vec<Format> {
        [
            "e4m3fn",
            "e4m3",
            "e5m2",
            "e4m3fnuz",
            "e5m2fnuz",
            "e2m3",
            "e3m2",
            "e2m1",
            "e3m0",
            "e3m4",
            "e5m10",
            "e8m7",
            "e8m1_b127",
            "e1m0",
            "e3m3_b-2",
            "e6m1_fn",
            "int8",
            "int8_full",
            "int4",
            "int2",
            "uint8",
            "uint4",
            "int16",
        ]
        .iter()
        .map(|n| n.parse().unwrap_or_else(|e| panic!("{n}: {e}")))
        .collect()
    }

    /// Every binade of `f32` (all 255 exponents, subnormals included) with a few mantissas,
    /// both signs, and ±0, ±inf, NaN.
    fn inputs() -> Vec<f32> {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 41) as u32 & 0x7F_FFFF
        };
        let mut v = vec![0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
        for e in 0..=254u32 {
            for mant in [0, 1, 0x40_0000, 0x7F_FFFF, next(), next()] {
                let bits = e << 23 | mant;
                v.push(f32::from_bits(bits));
                v.push(f32::from_bits(bits | 0x8000_0000));
            }
        }
        v
    }

    /// The number of random words that round `x` away from its rounded-down result: the
    /// reference rounds up for `rand < t`, and `rand = u32::MAX` never rounds up.
    fn threshold(f: &Format, conv: Conversion, x: f32) -> u64 {
        let down = f.encode_with(x, conv, u32::MAX);
        if f.encode_with(x, conv, 0) == down {
            return 0;
        }
        let (mut lo, mut hi) = (0u64, u32::MAX as u64); // encode(lo) ≠ down = encode(hi)
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if f.encode_with(x, conv, mid as u32) == down {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    /// `(x, rand)` pairs: each input with the words at, just below and just above its
    /// threshold, and the extremes.
    fn cases(f: &Format, conv: Conversion) -> Vec<(f32, u32)> {
        let mut v = Vec::new();
        for x in inputs() {
            let t = threshold(f, conv, x);
            let mut words = vec![0, 1, u32::MAX - 1, u32::MAX];
            for r in [t.wrapping_sub(1), t, t + 1] {
                if r <= u32::MAX as u64 {
                    words.push(r as u32);
                }
            }
            v.extend(words.into_iter().map(|r| (x, r)));
        }
        v
    }

    fn check(f: &Format, conv: Conversion, x: f32, rand: u32, q: f32, code: u32, level: &str) {
        let (want_q, want_c) = (f.quantize_with(x, conv, rand), f.encode_with(x, conv, rand));
        assert_eq!(
            (q.to_bits(), code),
            (want_q.to_bits(), want_c),
            "{f} {conv:?} {level}: x = {:#010x}, rand = {rand:#010x}",
            x.to_bits()
        );
    }

    #[test]
    fn every_level_rounds_at_the_reference_threshold() {
        for f in formats() {
            for overflow in [Overflow::Reference, Overflow::Saturate] {
                let conv = Conversion::new(Rounding::Stochastic { seed: SEED }, overflow);
                let Some(sr) = StochasticLane::new(&f, conv) else {
                    panic!("{f}: no stochastic lane");
                };
                let cases = cases(&f, conv);
                for &(x, r) in &cases {
                    check(&f, conv, x, r, sr.quantize(x, r), sr.encode(x, r), "lane");
                }
                #[cfg(target_arch = "x86_64")]
                {
                    if Isa::Avx2.is_available() {
                        for chunk in cases.chunks(8) {
                            let (mut x, mut r) = ([0.0f32; 8], [0u32; 8]);
                            for (k, &(xk, rk)) in chunk.iter().enumerate() {
                                (x[k], r[k]) = (xk, rk);
                            }
                            // SAFETY: the CPU has AVX2.
                            let (q, c, _) = unsafe { avx2::probe(&sr, x, r, 0) };
                            for k in 0..chunk.len() {
                                check(&f, conv, x[k], r[k], q[k], c[k], "avx2");
                            }
                        }
                    }
                    if Isa::Avx512.is_available() {
                        for chunk in cases.chunks(16) {
                            let (mut x, mut r) = ([0.0f32; 16], [0u32; 16]);
                            for (k, &(xk, rk)) in chunk.iter().enumerate() {
                                (x[k], r[k]) = (xk, rk);
                            }
                            // SAFETY: the CPU has AVX-512 F/BW/VL/DQ.
                            let (q, c, _) = unsafe { avx512::probe(&sr, x, r, 0) };
                            for k in 0..chunk.len() {
                                check(&f, conv, x[k], r[k], q[k], c[k], "avx512");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn simd_generator_equals_stochastic_bits() {
        let f = Format::E4M3FN;
        for seed in [0, SEED, u64::MAX] {
            let conv = Conversion::new(Rounding::Stochastic { seed }, Overflow::Saturate);
            let Some(sr) = StochasticLane::new(&f, conv) else {
                panic!("no stochastic lane");
            };
            for index in [0, 5, 1 << 40, u64::MAX - 3, u64::MAX] {
                let want = |j: u64| stochastic_bits(seed, index.wrapping_add(j));
                #[cfg(target_arch = "x86_64")]
                {
                    if Isa::Avx2.is_available() {
                        // SAFETY: the CPU has AVX2.
                        let (_, _, w) = unsafe { avx2::probe(&sr, [0.0; 8], [0; 8], index) };
                        for (j, &w) in w.iter().enumerate() {
                            assert_eq!(w, want(j as u64), "avx2 seed {seed} index {index}+{j}");
                        }
                    }
                    if Isa::Avx512.is_available() {
                        // SAFETY: the CPU has AVX-512 F/BW/VL/DQ.
                        let (_, _, w) = unsafe { avx512::probe(&sr, [0.0; 16], [0; 16], index) };
                        for (j, &w) in w.iter().enumerate() {
                            assert_eq!(w, want(j as u64), "avx512 seed {seed} index {index}+{j}");
                        }
                    }
                }
                let _ = (&sr, want(0));
            }
        }
    }
}
