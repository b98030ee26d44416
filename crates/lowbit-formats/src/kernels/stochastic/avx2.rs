//! Stochastic rounding on AVX2, 8 lanes at a time.

use std::arch::x86_64::*;

use super::super::avx2::{
    Consts, Fast, blocks, code_of, consts, fast_consts, finish_fast, finish_fast_sym, narrow_u8,
    value_of,
};
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
    // f32 subnormals (which round to 0) as 0: no subnormal operands below.
    let abs = _mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7FFF_FFFF));
    let normal_in = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7F_FFFF));
    let xz = _mm256_and_ps(x, _mm256_castsi256_ps(normal_in));
    let fl = _mm256_round_ps::<0x09>(xz);
    let frac = _mm256_sub_ps(xz, fl);
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

/// Constants of the stochastic fast path (`FloatLane::quantize_stochastic_fast`).
struct SrFast {
    /// `32 − (23 − m)`: `!rand` shifted right by it is the rounding increment.
    shift: __m128i,
    step: __m256,
    inv_step: __m256,
}

impl SrFast {
    #[target_feature(enable = "avx2")]
    fn new(p: &FloatLane) -> SrFast {
        SrFast {
            shift: _mm_cvtsi32_si128(32 - p.mant_shift as i32),
            step: _mm256_set1_ps(p.sr_step),
            inv_step: _mm256_set1_ps(p.sr_inv_step),
        }
    }
}

/// The rounding of `FloatLane::quantize_stochastic_fast` on 8 lanes: the rounded magnitudes
/// (`f32` patterns) of the magnitudes `a`, normal ones by the increment `!rand >> (32 − s)`,
/// subnormal ones by `(⌊y⌋ + up) · q` with `y = a / q`.
#[inline]
#[target_feature(enable = "avx2")]
fn rounded_magnitude_fast(f: &Fast, sf: &SrFast, a: __m256i, rand: __m256i) -> __m256i {
    let inc = _mm256_srl_epi32(_mm256_xor_si256(rand, _mm256_set1_epi32(-1)), sf.shift);
    let normal = _mm256_and_si256(_mm256_add_epi32(a, inc), f.keep);
    // f32 subnormals (which round to 0) as 0: no subnormal operands below.
    let normal_in = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7F_FFFF));
    let a_sub = _mm256_and_si256(a, normal_in);
    let y = _mm256_mul_ps(_mm256_castsi256_ps(a_sub), sf.inv_step);
    let k = _mm256_round_ps::<0x09>(y);
    let up = below_unsigned(rand, fraction_word(_mm256_sub_ps(y, k)));
    let k = _mm256_add_ps(
        k,
        _mm256_and_ps(_mm256_castsi256_ps(up), _mm256_set1_ps(1.0)),
    );
    let sub = _mm256_castps_si256(_mm256_mul_ps(k, sf.step));
    _mm256_blendv_epi8(normal, sub, _mm256_cmpgt_epi32(f.min_normal, a))
}

/// `FloatLane::quantize_stochastic_fast` on 8 lanes; `SYM`: the sign-symmetric finish
/// (`p.sym`).
#[inline]
#[target_feature(enable = "avx2")]
fn quantize_float_fast<const SYM: bool>(
    p: &FloatLane,
    f: &Fast,
    sf: &SrFast,
    x: __m256,
    rand: __m256i,
) -> __m256 {
    let a = _mm256_and_si256(_mm256_castps_si256(x), f.abs_mask);
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
    with_quantizer!(sr, |q| blocks(src, dst, |s, d| {
        // SAFETY: `s` and `d` are 8-element arrays.
        let x = pre(unsafe { _mm256_loadu_ps(s.as_ptr()) });
        unsafe { _mm256_storeu_ps(d.as_mut_ptr(), post(q(x, words.at(at)))) };
        at = at.wrapping_add(8);
    }))
}

/// Fake-quantizes consecutive blocks of `block` elements, block `k` with scale `scales[k]`
/// (`dst = q(src · (1/s)) · s`, the reciprocal once per block), element `i` with the word of
/// index `first + i`: the generator and constants set up once for all blocks.
#[target_feature(enable = "avx2")]
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
        let chunks = src.chunks(block).zip(dst.chunks_mut(block)).zip(scales);
        for (k, ((sb, db), &scale)) in chunks.enumerate() {
            let (vinv, vscale) = (_mm256_set1_ps(1.0 / scale), _mm256_set1_ps(scale));
            let mut at = first.wrapping_add((k * block) as u64);
            blocks(sb, db, |s, d| {
                // SAFETY: `s` and `d` are 8-element arrays.
                let x = _mm256_mul_ps(unsafe { _mm256_loadu_ps(s.as_ptr()) }, vinv);
                let y = _mm256_mul_ps(q(x, words.at(at)), vscale);
                unsafe { _mm256_storeu_ps(d.as_mut_ptr(), y) };
                at = at.wrapping_add(8);
            });
        }
    })
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
        let qv = with_quantizer!(sr, |q| q(xv, rv));
        let cv = match &sr.lane {
            Lane::Float(p) => encode_float(p, &consts(p), xv, rv),
            Lane::Int(p) => encode_int(p, xv, rv),
        };
        _mm256_storeu_ps(q.as_mut_ptr(), qv);
        _mm256_storeu_si256(c.as_mut_ptr().cast(), cv);
        _mm256_storeu_si256(w.as_mut_ptr().cast(), Words::new(sr.seed).at(index));
    }
    (q, c, w)
}
