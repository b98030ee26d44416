//! Stochastic rounding on the lane kernels: the lane algorithm with one more input per
//! element, its random word [`stochastic_bits`]`(seed, index)`, generated in registers.
//!
//! Element `i` of a call numbered from `first` gets the word of index `first + i` on every
//! level (scalar lane, AVX2, AVX-512), so the result does not depend on the level, the thread
//! count or the split. The SIMD generator is SplitMix64's finaliser on 64-bit lanes
//! (AVX-512DQ's `vpmullq`; AVX2 builds the 64 × 64-bit products from 32 × 32 → 64-bit ones,
//! `vpmuludq`); each vector then keeps the high half of its lanes.
//! The rounding itself is [`FloatLane::magnitude_stochastic`](super::lane::FloatLane) and
//! [`IntLane::quantize_stochastic`](super::lane::IntLane), mirrored line by line below.

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
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::avx512::{Consts, code_of, consts, value_of};
    use super::super::lane::{FloatLane, IntLane, Lane, StochasticLane};
    use crate::rounding::{SPLITMIX_GAMMA, SPLITMIX_MUL1, SPLITMIX_MUL2};

    /// The generator: the words of 16 consecutive indices at a time.
    struct Words {
        seed: u64,
        /// `j · γ` for the lanes j = 0..8 and 8..16.
        steps: [__m512i; 2],
        mul1: __m512i,
        mul2: __m512i,
        /// Picks the high 32-bit half of each 64-bit lane of two vectors, in order.
        high_halves: __m512i,
    }

    impl Words {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
        fn new(seed: u64) -> Words {
            let step = |j: u64| j.wrapping_mul(SPLITMIX_GAMMA) as i64;
            Words {
                seed,
                steps: [
                    _mm512_setr_epi64(
                        step(0),
                        step(1),
                        step(2),
                        step(3),
                        step(4),
                        step(5),
                        step(6),
                        step(7),
                    ),
                    _mm512_setr_epi64(
                        step(8),
                        step(9),
                        step(10),
                        step(11),
                        step(12),
                        step(13),
                        step(14),
                        step(15),
                    ),
                ],
                mul1: _mm512_set1_epi64(SPLITMIX_MUL1 as i64),
                mul2: _mm512_set1_epi64(SPLITMIX_MUL2 as i64),
                high_halves: _mm512_setr_epi32(
                    1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
                ),
            }
        }

        /// SplitMix64's finaliser on 8 lanes.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
        fn mix(&self, z: __m512i) -> __m512i {
            let z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64::<30>(z)), self.mul1);
            let z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64::<27>(z)), self.mul2);
            _mm512_xor_si512(z, _mm512_srli_epi64::<31>(z))
        }

        /// `stochastic_bits(seed, index + j)` for lanes j = 0..16.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
        fn at(&self, index: u64) -> __m512i {
            // z = seed + (index + j + 1)·γ
            let base = self
                .seed
                .wrapping_add(index.wrapping_add(1).wrapping_mul(SPLITMIX_GAMMA));
            let base = _mm512_set1_epi64(base as i64);
            let z0 = self.mix(_mm512_add_epi64(base, self.steps[0]));
            let z1 = self.mix(_mm512_add_epi64(base, self.steps[1]));
            _mm512_permutex2var_epi32(z0, self.high_halves, z1)
        }
    }

    /// `FloatLane::magnitude_stochastic` on 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    fn magnitude(c: &Consts, a: __m512i, rand: __m512i) -> __m512i {
        let e = _mm512_srli_epi32::<23>(a);
        let is_normal = _mm512_cmpneq_epi32_mask(e, c.zero);
        let frac = _mm512_andnot_si512(_mm512_set1_epi32(!0x7F_FFFF), a);
        let mant = _mm512_mask_or_epi32(frac, is_normal, frac, c.implicit);
        let tb = _mm512_add_epi32(_mm512_max_epu32(e, c.one), c.tb_off);
        let denormal = _mm512_max_epi32(_mm512_sub_epi32(c.zero, tb), c.zero);
        let sh = _mm512_add_epi32(c.mant_shift, denormal);
        let kept = _mm512_srlv_epi32(mant, sh);
        let dropped = _mm512_and_si512(mant, _mm512_sub_epi32(_mm512_sllv_epi32(c.one, sh), c.one));
        let thirty_two = _mm512_set1_epi32(32);
        let frac32 = _mm512_or_si512(
            _mm512_sllv_epi32(dropped, _mm512_sub_epi32(thirty_two, sh)),
            _mm512_srlv_epi32(dropped, _mm512_sub_epi32(sh, thirty_two)),
        );
        let up = _mm512_cmplt_epu32_mask(rand, frac32);
        let r = _mm512_mask_add_epi32(kept, up, kept, c.one);
        _mm512_add_epi32(r, _mm512_sllv_epi32(_mm512_max_epi32(tb, c.zero), c.m))
    }

    /// `lane::fraction_word` on 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    fn fraction_word(f: __m512) -> __m512i {
        let b = _mm512_castps_si512(f);
        let e = _mm512_srli_epi32::<23>(b);
        let frac = _mm512_and_si512(b, _mm512_set1_epi32(0x7F_FFFF));
        let is_normal = _mm512_cmpneq_epi32_mask(e, _mm512_setzero_si512());
        let m = _mm512_mask_or_epi32(frac, is_normal, frac, _mm512_set1_epi32(0x80_0000));
        let k = _mm512_set1_epi32(118);
        _mm512_or_si512(
            _mm512_sllv_epi32(m, _mm512_sub_epi32(e, k)),
            _mm512_srlv_epi32(m, _mm512_sub_epi32(k, e)),
        )
    }

    /// `IntLane::quantize_stochastic` on 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    fn quantize_int(p: &IntLane, x: __m512, rand: __m512i) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        let fl = _mm512_roundscale_ps::<0x09>(x);
        let frac = _mm512_sub_ps(x, fl);
        let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, one)
            | _mm512_cmplt_epu32_mask(rand, fraction_word(frac));
        let r = _mm512_mask_add_ps(fl, up, fl, one);
        let r = _mm512_min_ps(_mm512_max_ps(r, _mm512_set1_ps(p.lo)), _mm512_set1_ps(p.hi));
        let r = _mm512_add_ps(r, _mm512_setzero_ps());
        let is_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        _mm512_mask_mov_ps(r, is_nan, _mm512_setzero_ps())
    }

    /// The fake-quantized values of 16 lanes with their random words.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    fn quantize_float(p: &FloatLane, c: &Consts, x: __m512, rand: __m512i) -> __m512 {
        let a = _mm512_and_si512(_mm512_castps_si512(x), c.abs_mask);
        value_of(p, c, x, magnitude(c, a, rand))
    }

    /// The codes of 16 lanes with their random words.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    fn encode_float(p: &FloatLane, c: &Consts, x: __m512, rand: __m512i) -> __m512i {
        let a = _mm512_and_si512(_mm512_castps_si512(x), c.abs_mask);
        code_of(p, c, x, magnitude(c, a, rand))
    }

    /// The integer codes of 16 lanes with their random words.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    fn encode_int(p: &IntLane, x: __m512, rand: __m512i) -> __m512i {
        let q = quantize_int(p, x, rand);
        _mm512_and_si512(_mm512_cvttps_epi32(q), _mm512_set1_epi32(p.mask as i32))
    }

    /// Runs `op(x, words)` over `src` 16 lanes at a time into `dst` (the shorter length), the
    /// partial last vector through zero-padded copies.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    fn map<T: Copy + Default>(
        src: &[f32],
        dst: &mut [T],
        first: u64,
        words: &Words,
        op: impl Fn(__m512, __m512i, &mut [T; 16]),
    ) {
        let n = src.len().min(dst.len());
        let (s_full, s_tail) = src[..n].as_chunks::<16>();
        let (d_full, d_tail) = dst[..n].as_chunks_mut::<16>();
        let mut at = first;
        for (s, d) in s_full.iter().zip(d_full.iter_mut()) {
            // SAFETY: `s` holds 16 f32.
            op(unsafe { _mm512_loadu_ps(s.as_ptr()) }, words.at(at), d);
            at = at.wrapping_add(16);
        }
        if !s_tail.is_empty() {
            let mut s = [0.0f32; 16];
            let mut d = [T::default(); 16];
            s[..s_tail.len()].copy_from_slice(s_tail);
            // SAFETY: `s` holds 16 f32.
            op(unsafe { _mm512_loadu_ps(s.as_ptr()) }, words.at(at), &mut d);
            d_tail.copy_from_slice(&d[..d_tail.len()]);
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) fn quantize<const SCALED: bool>(
        sr: &StochasticLane,
        src: &[f32],
        dst: &mut [f32],
        inv: f32,
        scale: f32,
        first: u64,
    ) {
        let words = Words::new(sr.seed);
        let (vinv, vscale) = (_mm512_set1_ps(inv), _mm512_set1_ps(scale));
        let pre = |x| if SCALED { _mm512_mul_ps(x, vinv) } else { x };
        let post = |q| if SCALED { _mm512_mul_ps(q, vscale) } else { q };
        // SAFETY (stores): `d` holds 16 f32.
        match &sr.lane {
            Lane::Float(p) => {
                let c = consts(p);
                map(src, dst, first, &words, |x, rand, d| {
                    let q = post(quantize_float(p, &c, pre(x), rand));
                    unsafe { _mm512_storeu_ps(d.as_mut_ptr(), q) };
                });
            }
            Lane::Int(p) => map(src, dst, first, &words, |x, rand, d| {
                let q = post(quantize_int(p, pre(x), rand));
                unsafe { _mm512_storeu_ps(d.as_mut_ptr(), q) };
            }),
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) fn encode<const SCALED: bool>(
        sr: &StochasticLane,
        src: &[f32],
        dst: &mut [u8],
        inv: f32,
        first: u64,
    ) {
        let words = Words::new(sr.seed);
        let vinv = _mm512_set1_ps(inv);
        let pre = |x| if SCALED { _mm512_mul_ps(x, vinv) } else { x };
        // SAFETY (stores): `d` holds 16 bytes; codes of ≤ 8-bit formats fit a byte.
        let store = |d: &mut [u8; 16], codes| unsafe {
            _mm_storeu_si128(d.as_mut_ptr() as *mut __m128i, _mm512_cvtepi32_epi8(codes))
        };
        match &sr.lane {
            Lane::Float(p) => {
                let c = consts(p);
                map(src, dst, first, &words, |x, rand, d| {
                    store(d, encode_float(p, &c, pre(x), rand))
                });
            }
            Lane::Int(p) => map(src, dst, first, &words, |x, rand, d| {
                store(d, encode_int(p, pre(x), rand))
            }),
        }
    }

    /// Test hook: the values and codes of 16 inputs under the given random words, through
    /// the kernels' per-vector functions, and the generator's words for `index`.
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) fn probe(
        sr: &StochasticLane,
        x: [f32; 16],
        rand: [u32; 16],
        index: u64,
    ) -> ([f32; 16], [u32; 16], [u32; 16]) {
        let (mut q, mut c, mut w) = ([0.0f32; 16], [0u32; 16], [0u32; 16]);
        // SAFETY: 16-lane arrays.
        unsafe {
            let (xv, rv) = (
                _mm512_loadu_ps(x.as_ptr()),
                _mm512_loadu_si512(rand.as_ptr().cast()),
            );
            let (qv, cv) = match &sr.lane {
                Lane::Float(p) => {
                    let k = consts(p);
                    (quantize_float(p, &k, xv, rv), encode_float(p, &k, xv, rv))
                }
                Lane::Int(p) => (quantize_int(p, xv, rv), encode_int(p, xv, rv)),
            };
            _mm512_storeu_ps(q.as_mut_ptr(), qv);
            _mm512_storeu_si512(c.as_mut_ptr().cast(), cv);
            _mm512_storeu_si512(w.as_mut_ptr().cast(), Words::new(sr.seed).at(index));
        }
        (q, c, w)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::avx2::{Consts, blocks, code_of, consts, narrow_u8, value_of};
    use super::super::lane::{FloatLane, IntLane, Lane, StochasticLane};
    use crate::rounding::{SPLITMIX_GAMMA, SPLITMIX_MUL1, SPLITMIX_MUL2};

    /// A 64-bit constant as the two 32-bit halves `vpmuludq` multiplies by.
    #[derive(Clone, Copy)]
    struct Halves {
        lo: __m256i,
        hi: __m256i,
    }

    #[target_feature(enable = "avx2")]
    fn halves(c: u64) -> Halves {
        Halves {
            lo: _mm256_set1_epi64x((c & 0xFFFF_FFFF) as i64),
            hi: _mm256_set1_epi64x((c >> 32) as i64),
        }
    }

    /// `x · c` modulo 2⁶⁴ per 64-bit lane: `x_lo·c_lo + ((x_hi·c_lo + x_lo·c_hi) << 32)`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn mul64(x: __m256i, c: Halves) -> __m256i {
        let lo = _mm256_mul_epu32(x, c.lo);
        let cross = _mm256_add_epi64(
            _mm256_mul_epu32(_mm256_srli_epi64::<32>(x), c.lo),
            _mm256_mul_epu32(x, c.hi),
        );
        _mm256_add_epi64(lo, _mm256_slli_epi64::<32>(cross))
    }

    /// The generator: the words of 8 consecutive indices at a time.
    struct Words {
        seed: u64,
        /// `j · γ` for the lanes j = 0..4 and 4..8.
        steps: [__m256i; 2],
        mul1: Halves,
        mul2: Halves,
    }

    impl Words {
        #[target_feature(enable = "avx2")]
        fn new(seed: u64) -> Words {
            let step = |j: u64| j.wrapping_mul(SPLITMIX_GAMMA) as i64;
            Words {
                seed,
                steps: [
                    _mm256_setr_epi64x(step(0), step(1), step(2), step(3)),
                    _mm256_setr_epi64x(step(4), step(5), step(6), step(7)),
                ],
                mul1: halves(SPLITMIX_MUL1),
                mul2: halves(SPLITMIX_MUL2),
            }
        }

        /// SplitMix64's finaliser on 4 lanes.
        #[inline]
        #[target_feature(enable = "avx2")]
        fn mix(&self, z: __m256i) -> __m256i {
            let z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64::<30>(z)), self.mul1);
            let z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64::<27>(z)), self.mul2);
            _mm256_xor_si256(z, _mm256_srli_epi64::<31>(z))
        }

        /// `stochastic_bits(seed, index + j)` for lanes j = 0..8.
        #[inline]
        #[target_feature(enable = "avx2")]
        fn at(&self, index: u64) -> __m256i {
            let base = self
                .seed
                .wrapping_add(index.wrapping_add(1).wrapping_mul(SPLITMIX_GAMMA));
            let base = _mm256_set1_epi64x(base as i64);
            let z0 = _mm256_castsi256_ps(self.mix(_mm256_add_epi64(base, self.steps[0])));
            let z1 = _mm256_castsi256_ps(self.mix(_mm256_add_epi64(base, self.steps[1])));
            // Per 128-bit half: the high dwords [z0 2h, z0 2h+1, z1 2h, z1 2h+1]; the 64-bit
            // permutation puts lanes 0, 1 (z0) before 4, 5 (z1): words 0..4, then 4..8.
            let odd = _mm256_castps_si256(_mm256_shuffle_ps::<0b11_01_11_01>(z0, z1));
            _mm256_permute4x64_epi64::<0b11_01_10_00>(odd)
        }
    }

    /// `rand < x` on unsigned 32-bit lanes (AVX2 compares signed: flip both sign bits).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn below_unsigned(rand: __m256i, x: __m256i) -> __m256i {
        let flip = _mm256_set1_epi32(i32::MIN);
        _mm256_cmpgt_epi32(_mm256_xor_si256(x, flip), _mm256_xor_si256(rand, flip))
    }

    /// `FloatLane::magnitude_stochastic` on 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn magnitude(c: &Consts, a: __m256i, rand: __m256i) -> __m256i {
        let e = _mm256_srli_epi32::<23>(a);
        let is_normal = _mm256_andnot_si256(_mm256_cmpeq_epi32(e, c.zero), _mm256_set1_epi32(-1));
        let frac = _mm256_and_si256(a, c.frac_mask);
        let mant = _mm256_or_si256(frac, _mm256_and_si256(is_normal, c.implicit));
        let tb = _mm256_add_epi32(_mm256_max_epi32(e, c.one), c.tb_off);
        let denormal = _mm256_max_epi32(_mm256_sub_epi32(c.zero, tb), c.zero);
        let sh = _mm256_add_epi32(c.mant_shift, denormal);
        let kept = _mm256_srlv_epi32(mant, sh);
        let dropped = _mm256_and_si256(mant, _mm256_sub_epi32(_mm256_sllv_epi32(c.one, sh), c.one));
        let thirty_two = _mm256_set1_epi32(32);
        let frac32 = _mm256_or_si256(
            _mm256_sllv_epi32(dropped, _mm256_sub_epi32(thirty_two, sh)),
            _mm256_srlv_epi32(dropped, _mm256_sub_epi32(sh, thirty_two)),
        );
        // `up` is all ones (−1) where rounding up: subtracting it adds one.
        let r = _mm256_sub_epi32(kept, below_unsigned(rand, frac32));
        _mm256_add_epi32(r, _mm256_sllv_epi32(_mm256_max_epi32(tb, c.zero), c.m))
    }

    /// `lane::fraction_word` on 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn fraction_word(f: __m256) -> __m256i {
        let b = _mm256_castps_si256(f);
        let e = _mm256_srli_epi32::<23>(b);
        let frac = _mm256_and_si256(b, _mm256_set1_epi32(0x7F_FFFF));
        let is_sub = _mm256_cmpeq_epi32(e, _mm256_setzero_si256());
        let m = _mm256_or_si256(
            frac,
            _mm256_andnot_si256(is_sub, _mm256_set1_epi32(0x80_0000)),
        );
        let k = _mm256_set1_epi32(118);
        _mm256_or_si256(
            _mm256_sllv_epi32(m, _mm256_sub_epi32(e, k)),
            _mm256_srlv_epi32(m, _mm256_sub_epi32(k, e)),
        )
    }

    /// `IntLane::quantize_stochastic` on 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn quantize_int(p: &IntLane, x: __m256, rand: __m256i) -> __m256 {
        let one = _mm256_set1_ps(1.0);
        let fl = _mm256_round_ps::<0x09>(x);
        let frac = _mm256_sub_ps(x, fl);
        let up = _mm256_or_ps(
            _mm256_cmp_ps::<_CMP_GE_OQ>(frac, one),
            _mm256_castsi256_ps(below_unsigned(rand, fraction_word(frac))),
        );
        let r = _mm256_add_ps(fl, _mm256_and_ps(up, one));
        let r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(p.lo)), _mm256_set1_ps(p.hi));
        let r = _mm256_add_ps(r, _mm256_setzero_ps());
        _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(x, x))
    }

    /// The fake-quantized values of 8 lanes with their random words.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn quantize_float(p: &FloatLane, c: &Consts, x: __m256, rand: __m256i) -> __m256 {
        let a = _mm256_and_si256(_mm256_castps_si256(x), c.abs_mask);
        value_of(p, c, x, magnitude(c, a, rand))
    }

    /// The codes of 8 lanes with their random words.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn encode_float(p: &FloatLane, c: &Consts, x: __m256, rand: __m256i) -> __m256i {
        let a = _mm256_and_si256(_mm256_castps_si256(x), c.abs_mask);
        code_of(p, c, x, magnitude(c, a, rand))
    }

    /// The integer codes of 8 lanes with their random words.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn encode_int(p: &IntLane, x: __m256, rand: __m256i) -> __m256i {
        let q = quantize_int(p, x, rand);
        _mm256_and_si256(_mm256_cvttps_epi32(q), _mm256_set1_epi32(p.mask as i32))
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn quantize<const SCALED: bool>(
        sr: &StochasticLane,
        src: &[f32],
        dst: &mut [f32],
        inv: f32,
        scale: f32,
        first: u64,
    ) {
        let words = Words::new(sr.seed);
        let (vinv, vscale) = (_mm256_set1_ps(inv), _mm256_set1_ps(scale));
        let pre = |x| if SCALED { _mm256_mul_ps(x, vinv) } else { x };
        let post = |q| if SCALED { _mm256_mul_ps(q, vscale) } else { q };
        // `blocks` visits the 8-element blocks in order, the padded tail last.
        let mut at = first;
        // SAFETY (loads and stores): `s` and `d` are 8-element arrays.
        match &sr.lane {
            Lane::Float(p) => {
                let c = consts(p);
                blocks(src, dst, |s, d| {
                    let x = pre(unsafe { _mm256_loadu_ps(s.as_ptr()) });
                    let q = post(quantize_float(p, &c, x, words.at(at)));
                    unsafe { _mm256_storeu_ps(d.as_mut_ptr(), q) };
                    at = at.wrapping_add(8);
                });
            }
            Lane::Int(p) => blocks(src, dst, |s, d| {
                let x = pre(unsafe { _mm256_loadu_ps(s.as_ptr()) });
                let q = post(quantize_int(p, x, words.at(at)));
                unsafe { _mm256_storeu_ps(d.as_mut_ptr(), q) };
                at = at.wrapping_add(8);
            }),
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn encode<const SCALED: bool>(
        sr: &StochasticLane,
        src: &[f32],
        dst: &mut [u8],
        inv: f32,
        first: u64,
    ) {
        let words = Words::new(sr.seed);
        let vinv = _mm256_set1_ps(inv);
        let pre = |x| if SCALED { _mm256_mul_ps(x, vinv) } else { x };
        let mut at = first;
        // SAFETY (loads): `s` is an 8-element array.
        match &sr.lane {
            Lane::Float(p) => {
                let c = consts(p);
                blocks(src, dst, |s, d| {
                    let x = pre(unsafe { _mm256_loadu_ps(s.as_ptr()) });
                    *d = narrow_u8(encode_float(p, &c, x, words.at(at)));
                    at = at.wrapping_add(8);
                });
            }
            Lane::Int(p) => blocks(src, dst, |s, d| {
                let x = pre(unsafe { _mm256_loadu_ps(s.as_ptr()) });
                *d = narrow_u8(encode_int(p, x, words.at(at)));
                at = at.wrapping_add(8);
            }),
        }
    }

    /// Test hook: the values and codes of 8 inputs under the given random words, through the
    /// kernels' per-vector functions, and the generator's words for `index`.
    #[cfg(test)]
    #[target_feature(enable = "avx2")]
    pub(super) fn probe(
        sr: &StochasticLane,
        x: [f32; 8],
        rand: [u32; 8],
        index: u64,
    ) -> ([f32; 8], [u32; 8], [u32; 8]) {
        let (mut q, mut c, mut w) = ([0.0f32; 8], [0u32; 8], [0u32; 8]);
        // SAFETY: 8-lane arrays.
        unsafe {
            let xv = _mm256_loadu_ps(x.as_ptr());
            let rv = _mm256_loadu_si256(rand.as_ptr().cast());
            let (qv, cv) = match &sr.lane {
                Lane::Float(p) => {
                    let k = consts(p);
                    (quantize_float(p, &k, xv, rv), encode_float(p, &k, xv, rv))
                }
                Lane::Int(p) => (quantize_int(p, xv, rv), encode_int(p, xv, rv)),
            };
            _mm256_storeu_ps(q.as_mut_ptr(), qv);
            _mm256_storeu_si256(c.as_mut_ptr().cast(), cv);
            _mm256_storeu_si256(w.as_mut_ptr().cast(), Words::new(sr.seed).at(index));
        }
        (q, c, w)
    }
}

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
