//! Stochastic rounding on AVX-512 (F/BW/VL/DQ), 16 lanes at a time.

use std::arch::x86_64::*;

use super::super::avx512::{
    Consts, Fast, code_of, consts, fast_consts, finish_fast, finish_fast_sym, value_of,
};
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
    // f32 subnormals (which round to 0) as 0: no subnormal operands below.
    let abs = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7FFF_FFFF));
    let tiny = _mm512_cmplt_epu32_mask(abs, _mm512_set1_epi32(0x80_0000));
    let xz = _mm512_mask_mov_ps(x, tiny, _mm512_setzero_ps());
    let fl = _mm512_roundscale_ps::<0x09>(xz);
    let frac = _mm512_sub_ps(xz, fl);
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

/// Constants of the stochastic fast path (`FloatLane::quantize_stochastic_fast`).
struct SrFast {
    /// `32 − (23 − m)`: `!rand` shifted right by it is the rounding increment.
    shift: __m128i,
    step: __m512,
    inv_step: __m512,
}

impl SrFast {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    fn new(p: &FloatLane) -> SrFast {
        SrFast {
            shift: _mm_cvtsi32_si128(32 - p.mant_shift as i32),
            step: _mm512_set1_ps(p.sr_step),
            inv_step: _mm512_set1_ps(p.sr_inv_step),
        }
    }
}

/// The rounding of `FloatLane::quantize_stochastic_fast` on 16 lanes: the rounded magnitudes
/// (`f32` patterns) of the magnitudes `a`, normal ones by the increment `!rand >> (32 − s)`,
/// subnormal ones by `(⌊y⌋ + up) · q` with `y = a / q`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
fn rounded_magnitude_fast(f: &Fast, sf: &SrFast, a: __m512i, rand: __m512i) -> __m512i {
    let inc = _mm512_srl_epi32(_mm512_xor_si512(rand, _mm512_set1_epi32(-1)), sf.shift);
    let normal = _mm512_and_si512(_mm512_add_epi32(a, inc), f.keep);
    // f32 subnormals (which round to 0) as 0: no subnormal operands below.
    let a_sub = _mm512_maskz_mov_epi32(_mm512_cmpge_epu32_mask(a, _mm512_set1_epi32(0x80_0000)), a);
    let y = _mm512_mul_ps(_mm512_castsi512_ps(a_sub), sf.inv_step);
    let k = _mm512_roundscale_ps::<0x09>(y);
    let up = _mm512_cmplt_epu32_mask(rand, fraction_word(_mm512_sub_ps(y, k)));
    let k = _mm512_mask_add_ps(k, up, k, _mm512_set1_ps(1.0));
    let sub = _mm512_castps_si512(_mm512_mul_ps(k, sf.step));
    _mm512_mask_blend_epi32(_mm512_cmplt_epu32_mask(a, f.min_normal), normal, sub)
}

/// `FloatLane::quantize_stochastic_fast` on 16 lanes; `SYM`: the sign-symmetric finish
/// (`p.sym`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
fn quantize_float_fast<const SYM: bool>(
    p: &FloatLane,
    f: &Fast,
    sf: &SrFast,
    x: __m512,
    rand: __m512i,
) -> __m512 {
    let a = _mm512_and_si512(_mm512_castps_si512(x), f.abs_mask);
    let r = rounded_magnitude_fast(f, sf, a, rand);
    if SYM {
        finish_fast_sym(p, f, x, r)
    } else {
        finish_fast(p, f, x, r)
    }
}

/// Binds `$q` to the per-vector stochastic quantizer of `$sr` (`|x, rand| -> values`: the
/// fast path, sign-symmetric or not, the general float path, or the integer one) and
/// evaluates `$body` with it: the choice is made once, outside the loops in `$body`, so each
/// loop holds one small closure the compiler inlines.
macro_rules! with_quantizer {
    ($sr:expr, |$q:ident| $body:expr) => {
        match &$sr.lane {
            Lane::Float(p) if p.sr_fast && p.sym => {
                let (f, sf) = (fast_consts(p), SrFast::new(p));
                let $q = |x, rand| quantize_float_fast::<true>(p, &f, &sf, x, rand);
                $body
            }
            Lane::Float(p) if p.sr_fast => {
                let (f, sf) = (fast_consts(p), SrFast::new(p));
                let $q = |x, rand| quantize_float_fast::<false>(p, &f, &sf, x, rand);
                $body
            }
            Lane::Float(p) => {
                let c = consts(p);
                let $q = |x, rand| quantize_float(p, &c, x, rand);
                $body
            }
            Lane::Int(p) => {
                let $q = |x, rand| quantize_int(p, x, rand);
                $body
            }
        }
    };
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
    with_quantizer!(sr, |q| map(src, dst, first, &words, |x, rand, d| {
        // SAFETY: `d` holds 16 f32.
        unsafe { _mm512_storeu_ps(d.as_mut_ptr(), post(q(pre(x), rand))) };
    }))
}

/// Fake-quantizes consecutive blocks of `block` elements, block `k` with scale `scales[k]`
/// (`dst = q(src · (1/s)) · s`, the reciprocal once per block), element `i` with the word of
/// index `first + i`: the generator and constants set up once for all blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(super) fn quantize_blocks(
    sr: &StochasticLane,
    src: &[f32],
    dst: &mut [f32],
    block: usize,
    scales: &[f32],
    first: u64,
) {
    let words = Words::new(sr.seed);
    with_quantizer!(sr, |q| {
        let blocks = src.chunks(block).zip(dst.chunks_mut(block)).zip(scales);
        for (k, ((s, d), &scale)) in blocks.enumerate() {
            let (vinv, vscale) = (_mm512_set1_ps(1.0 / scale), _mm512_set1_ps(scale));
            let at = first.wrapping_add((k * block) as u64);
            map(s, d, at, &words, |x, rand, d| {
                let y = _mm512_mul_ps(q(_mm512_mul_ps(x, vinv), rand), vscale);
                // SAFETY: `d` holds 16 f32.
                unsafe { _mm512_storeu_ps(d.as_mut_ptr(), y) };
            });
        }
    })
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
        let qv = with_quantizer!(sr, |q| q(xv, rv));
        let cv = match &sr.lane {
            Lane::Float(p) => encode_float(p, &consts(p), xv, rv),
            Lane::Int(p) => encode_int(p, xv, rv),
        };
        _mm512_storeu_ps(q.as_mut_ptr(), qv);
        _mm512_storeu_si512(c.as_mut_ptr().cast(), cv);
        _mm512_storeu_si512(w.as_mut_ptr().cast(), Words::new(sr.seed).at(index));
    }
    (q, c, w)
}
