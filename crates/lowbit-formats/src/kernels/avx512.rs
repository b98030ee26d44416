//! AVX-512 (F + BW + VL) twins of the lane algorithm, 16 lanes at a time. Each function mirrors
//! its namesake in `lane.rs` step for step; the tail goes through the same vector code with
//! masked loads and stores. The fused block kernels are in `avx512/fused.rs`, table decoding in
//! `avx512/decode.rs`.

use std::arch::x86_64::*;

use super::lane::{AWAY, FloatLane, IntLane, RNE, Special};

mod decode;
mod fused;

pub(crate) use decode::{decode_arithmetic, decode_lut};
pub(crate) use fused::{quantize_float_blocks_fused, quantize_int_blocks_fused};

/// Broadcast constants of a [`FloatLane`].
pub(super) struct Consts {
    pub(super) abs_mask: __m512i,
    pub(super) implicit: __m512i,
    pub(super) zero: __m512i,
    pub(super) one: __m512i,
    pub(super) tb_off: __m512i,
    pub(super) mant_shift: __m512i,
    pub(super) twenty_five: __m512i,
    pub(super) m: __m512i,
    pub(super) max_mag: __m512i,
    pub(super) norm_add: __m512i,
    pub(super) sub_scale: __m512,
    pub(super) zero_mag_value: __m512i,
    pub(super) inf_bits: __m512i,
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) fn consts(p: &FloatLane) -> Consts {
    Consts {
        abs_mask: _mm512_set1_epi32(0x7FFF_FFFF),
        implicit: _mm512_set1_epi32(0x80_0000),
        zero: _mm512_setzero_si512(),
        one: _mm512_set1_epi32(1),
        tb_off: _mm512_set1_epi32(p.tb_off),
        mant_shift: _mm512_set1_epi32(p.mant_shift as i32),
        twenty_five: _mm512_set1_epi32(25),
        m: _mm512_set1_epi32(p.m as i32),
        max_mag: _mm512_set1_epi32(p.max_mag as i32),
        norm_add: _mm512_set1_epi32(p.norm_add as i32),
        sub_scale: _mm512_set1_ps(p.sub_scale),
        zero_mag_value: _mm512_set1_epi32(p.zero_mag_value as i32),
        inf_bits: _mm512_set1_epi32(0x7F80_0000),
    }
}

/// Per-lane magnitude code (`FloatLane::magnitude`) of the absolute bits `a`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn magnitude<const ROUND: u8>(c: &Consts, a: __m512i) -> __m512i {
    let e = _mm512_srli_epi32::<23>(a);
    let is_normal = _mm512_cmpneq_epi32_mask(e, c.zero);
    let frac = _mm512_andnot_si512(_mm512_set1_epi32(!0x7F_FFFF), a);
    let mant = _mm512_mask_or_epi32(frac, is_normal, frac, c.implicit);
    let tb = _mm512_add_epi32(_mm512_max_epu32(e, c.one), c.tb_off);
    let denormal = _mm512_max_epi32(_mm512_sub_epi32(c.zero, tb), c.zero);
    let sh = _mm512_min_epu32(_mm512_add_epi32(c.mant_shift, denormal), c.twenty_five);
    let r = match ROUND {
        RNE => {
            let lsb = _mm512_and_si512(_mm512_srlv_epi32(mant, sh), c.one);
            let half_m1 =
                _mm512_sub_epi32(_mm512_sllv_epi32(c.one, _mm512_sub_epi32(sh, c.one)), c.one);
            _mm512_srlv_epi32(_mm512_add_epi32(_mm512_add_epi32(mant, lsb), half_m1), sh)
        }
        AWAY => {
            let half = _mm512_sllv_epi32(c.one, _mm512_sub_epi32(sh, c.one));
            _mm512_srlv_epi32(_mm512_add_epi32(mant, half), sh)
        }
        _ => _mm512_srlv_epi32(mant, sh),
    };
    let exp_part = _mm512_sllv_epi32(_mm512_max_epi32(tb, c.zero), c.m);
    _mm512_add_epi32(r, exp_part)
}

/// Picks `s.value` (or `s.code`) per lane by sign.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn by_sign(neg: __mmask16, s: [u32; 2]) -> __m512i {
    _mm512_mask_blend_epi32(
        neg,
        _mm512_set1_epi32(s[0] as i32),
        _mm512_set1_epi32(s[1] as i32),
    )
}

/// Blends the special-class results over `out` in the reference's order of precedence.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn fix_specials(
    p: &FloatLane,
    c: &Consts,
    out: __m512i,
    a: __m512i,
    neg: __mmask16,
    packed: __m512i,
    pick: impl Fn(&Special) -> [u32; 2],
) -> __m512i {
    let ovf = _mm512_cmpgt_epu32_mask(packed, c.max_mag);
    let mut out = _mm512_mask_mov_epi32(out, ovf, by_sign(neg, pick(&p.ovf)));
    if p.unsigned {
        out = _mm512_mask_mov_epi32(out, neg, by_sign(neg, pick(&p.neg)));
    }
    let is_zero = _mm512_cmpeq_epi32_mask(a, c.zero);
    out = _mm512_mask_mov_epi32(out, is_zero, by_sign(neg, pick(&p.zero)));
    let is_inf = _mm512_cmpeq_epi32_mask(a, c.inf_bits);
    out = _mm512_mask_mov_epi32(out, is_inf, by_sign(neg, pick(&p.inf)));
    let is_nan = _mm512_cmpgt_epu32_mask(a, c.inf_bits);
    _mm512_mask_mov_epi32(out, is_nan, by_sign(neg, pick(&p.nan)))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn quantize_vec<const ROUND: u8>(p: &FloatLane, c: &Consts, x: __m512) -> __m512 {
    let a = _mm512_and_si512(_mm512_castps_si512(x), c.abs_mask);
    value_of(p, c, x, magnitude::<ROUND>(c, a))
}

/// `FloatLane::value_of`: the fake-quantized values of `x` whose rounded magnitude codes are
/// `packed`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) fn value_of(p: &FloatLane, c: &Consts, x: __m512, packed: __m512i) -> __m512 {
    let b = _mm512_castps_si512(x);
    let a = _mm512_and_si512(b, c.abs_mask);
    let neg = _mm512_cmplt_epi32_mask(b, c.zero);
    // magnitude_value
    let e_zero = _mm512_cmpeq_epi32_mask(_mm512_srlv_epi32(packed, c.m), c.zero);
    let sub = _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(packed), c.sub_scale));
    let packed_zero = _mm512_cmpeq_epi32_mask(packed, c.zero);
    let sub = _mm512_mask_or_epi32(sub, packed_zero, sub, c.zero_mag_value);
    let norm = _mm512_add_epi32(_mm512_sllv_epi32(packed, c.mant_shift), c.norm_add);
    let mut out = _mm512_mask_blend_epi32(e_zero, norm, sub);
    // sign
    let mut sign_lanes = neg;
    if p.fnuz {
        sign_lanes &= !packed_zero;
    }
    if !p.unsigned {
        out = _mm512_mask_or_epi32(out, sign_lanes, out, _mm512_set1_epi32(i32::MIN));
    }
    _mm512_castsi512_ps(fix_specials(p, c, out, a, neg, packed, |s| s.value))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn encode_vec<const ROUND: u8>(p: &FloatLane, c: &Consts, x: __m512) -> __m512i {
    let a = _mm512_and_si512(_mm512_castps_si512(x), c.abs_mask);
    code_of(p, c, x, magnitude::<ROUND>(c, a))
}

/// `FloatLane::code_of`: the codes of `x` whose rounded magnitude codes are `packed`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) fn code_of(p: &FloatLane, c: &Consts, x: __m512, packed: __m512i) -> __m512i {
    let b = _mm512_castps_si512(x);
    let a = _mm512_and_si512(b, c.abs_mask);
    let neg = _mm512_cmplt_epi32_mask(b, c.zero);
    let mut sign_lanes = neg;
    if p.fnuz {
        sign_lanes &= !_mm512_cmpeq_epi32_mask(packed, c.zero);
    }
    let out = _mm512_mask_or_epi32(
        packed,
        sign_lanes,
        packed,
        _mm512_set1_epi32(p.code_sign as i32),
    );
    fix_specials(p, c, out, a, neg, packed, |s| s.code)
}

/// Constants of the nearest-even fast path (`FloatLane::quantize_fast`).
pub(super) struct Fast {
    pub(super) shift: __m128i,
    pub(super) one: __m512i,
    pub(super) force_lsb: __m512i,
    pub(super) half_m1: __m512i,
    pub(super) keep: __m512i,
    pub(super) min_normal: __m512i,
    pub(super) max_bits: __m512i,
    pub(super) magic: __m512,
    pub(super) abs_mask: __m512i,
    pub(super) zero: __m512i,
    pub(super) inf_bits: __m512i,
    /// For encoding: `p.rebias`, the bits of `magic`, `p.max_mag`, `p.code_sign`.
    pub(super) rebias: __m512i,
    pub(super) magic_bits: __m512i,
    pub(super) max_mag: __m512i,
    pub(super) code_sign: __m512i,
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) fn fast_consts(p: &FloatLane) -> Fast {
    let s = p.mant_shift;
    Fast {
        shift: _mm_cvtsi32_si128(s as i32),
        one: _mm512_set1_epi32(1),
        force_lsb: _mm512_set1_epi32((p.m == 0) as i32),
        half_m1: _mm512_set1_epi32((1i32 << (s - 1)) - 1),
        keep: _mm512_set1_epi32(!((1i32 << s) - 1)),
        min_normal: _mm512_set1_epi32(p.min_normal_bits as i32),
        max_bits: _mm512_set1_epi32(p.max_bits as i32),
        magic: _mm512_set1_ps(p.magic),
        abs_mask: _mm512_set1_epi32(0x7FFF_FFFF),
        zero: _mm512_setzero_si512(),
        inf_bits: _mm512_set1_epi32(0x7F80_0000),
        rebias: _mm512_set1_epi32(p.rebias as i32),
        magic_bits: _mm512_set1_epi32(p.magic.to_bits() as i32),
        max_mag: _mm512_set1_epi32(p.max_mag as i32),
        code_sign: _mm512_set1_epi32(p.code_sign as i32),
    }
}

/// `FloatLane::nearest_even_carry` on 16 lanes: `a` plus the nearest-even
/// rounding increment at bit `23 − m`, the fast paths' shared first step.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn nearest_even_carry(f: &Fast, a: __m512i) -> __m512i {
    let lsb = _mm512_or_si512(
        _mm512_and_si512(_mm512_srl_epi32(a, f.shift), f.one),
        f.force_lsb,
    );
    _mm512_add_epi32(_mm512_add_epi32(a, lsb), f.half_m1)
}

/// The nearest-even magnitude codes of the magnitudes `a` (sign cleared), possibly above the
/// largest one (`FloatLane::encode_fast`'s `mag`): normal values from the rounded pattern
/// shifted and rebiased, subnormal ones from the magic-number sum's low bits.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn rounded_code(f: &Fast, a: __m512i) -> __m512i {
    let normal = _mm512_sub_epi32(
        _mm512_srl_epi32(nearest_even_carry(f, a), f.shift),
        f.rebias,
    );
    let sum = _mm512_add_ps(_mm512_castsi512_ps(a), f.magic);
    let sub = _mm512_sub_epi32(_mm512_castps_si512(sum), f.magic_bits);
    _mm512_mask_blend_epi32(_mm512_cmplt_epu32_mask(a, f.min_normal), normal, sub)
}

/// `FloatLane::encode_fast` on 16 lanes, branch-free.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn encode_fast_vec(p: &FloatLane, f: &Fast, x: __m512) -> __m512i {
    let b = _mm512_castps_si512(x);
    let a = _mm512_and_si512(b, f.abs_mask);
    let neg = _mm512_cmplt_epi32_mask(b, f.zero);
    let mag = rounded_code(f, a);
    let mut sign_lanes = neg;
    if p.fnuz {
        sign_lanes &= _mm512_cmpneq_epi32_mask(mag, f.zero);
    }
    let mut code = _mm512_mask_or_epi32(mag, sign_lanes, mag, f.code_sign);
    code = _mm512_mask_mov_epi32(
        code,
        _mm512_cmpgt_epu32_mask(mag, f.max_mag),
        by_sign(neg, p.ovf.code),
    );
    code = _mm512_mask_mov_epi32(
        code,
        _mm512_cmpeq_epi32_mask(a, f.inf_bits),
        by_sign(neg, p.inf.code),
    );
    _mm512_mask_mov_epi32(
        code,
        _mm512_cmpgt_epu32_mask(a, f.inf_bits),
        by_sign(neg, p.nan.code),
    )
}

/// [`encode_fast_vec`] for formats with `p.sym` set: the overflow, inf and NaN codes are
/// blended in as magnitudes (skipping blends that repeat the overflow one) and the sign bit is
/// ORed in last, as in [`quantize_fast_sym_vec`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn encode_fast_sym_vec(p: &FloatLane, f: &Fast, x: __m512) -> __m512i {
    let b = _mm512_castps_si512(x);
    let a = _mm512_and_si512(b, f.abs_mask);
    let mut mag = rounded_code(f, a);
    mag = _mm512_mask_mov_epi32(
        mag,
        _mm512_cmpgt_epu32_mask(mag, f.max_mag),
        _mm512_set1_epi32(p.ovf.code[0] as i32),
    );
    if !p.inf_is_ovf {
        mag = _mm512_mask_mov_epi32(
            mag,
            _mm512_cmpeq_epi32_mask(a, f.inf_bits),
            _mm512_set1_epi32(p.inf.code[0] as i32),
        );
    }
    if !p.nan_is_ovf {
        mag = _mm512_mask_mov_epi32(
            mag,
            _mm512_cmpgt_epu32_mask(a, f.inf_bits),
            _mm512_set1_epi32(p.nan.code[0] as i32),
        );
    }
    _mm512_mask_or_epi32(mag, _mm512_cmplt_epi32_mask(b, f.zero), mag, f.code_sign)
}

/// `FloatLane::quantize_fast` on 16 lanes, branch-free.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn quantize_fast_vec(p: &FloatLane, f: &Fast, x: __m512) -> __m512 {
    let a = _mm512_and_si512(_mm512_castps_si512(x), f.abs_mask);
    finish_fast(p, f, x, rounded_magnitude(f, a))
}

/// The rest of `FloatLane::quantize_fast` after the rounding: the sign and the special results
/// put on the rounded magnitudes `r` (`f32` patterns) of `x`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) fn finish_fast(p: &FloatLane, f: &Fast, x: __m512, r: __m512i) -> __m512 {
    let b = _mm512_castps_si512(x);
    let a = _mm512_and_si512(b, f.abs_mask);
    let neg = _mm512_cmplt_epi32_mask(b, f.zero);
    let sign = _mm512_andnot_si512(f.abs_mask, b);
    let sign = if p.fnuz {
        _mm512_maskz_mov_epi32(_mm512_cmpneq_epi32_mask(r, f.zero), sign)
    } else {
        sign
    };
    let mut out = _mm512_or_si512(r, sign);
    out = _mm512_mask_mov_epi32(
        out,
        _mm512_cmpgt_epu32_mask(r, f.max_bits),
        by_sign(neg, p.ovf.value),
    );
    out = _mm512_mask_mov_epi32(
        out,
        _mm512_cmpeq_epi32_mask(a, f.inf_bits),
        by_sign(neg, p.inf.value),
    );
    out = _mm512_mask_mov_epi32(
        out,
        _mm512_cmpgt_epu32_mask(a, f.inf_bits),
        by_sign(neg, p.nan.value),
    );
    _mm512_castsi512_ps(out)
}

/// The nearest-even rounding of the magnitudes `a` (sign cleared) onto the format's grid, as
/// f32 bit patterns: normal values by integer rounding of the mantissa, subnormal ones by the
/// magic-number add; the special cases (overflow, inf, NaN) are the callers'.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn rounded_magnitude(f: &Fast, a: __m512i) -> __m512i {
    let normal = _mm512_and_si512(nearest_even_carry(f, a), f.keep);
    let ax = _mm512_castsi512_ps(a);
    let sub = _mm512_castps_si512(_mm512_sub_ps(_mm512_add_ps(ax, f.magic), f.magic));
    let is_sub = _mm512_cmplt_epu32_mask(a, f.min_normal);
    _mm512_mask_blend_epi32(is_sub, normal, sub)
}

/// [`quantize_fast_vec`] for formats with `p.sym` set: the special results are blended in as
/// magnitudes (skipping the blends that repeat the overflow one) and the sign is put back with
/// one OR at the end — the same bits with about a third fewer instructions.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn quantize_fast_sym_vec(p: &FloatLane, f: &Fast, x: __m512) -> __m512 {
    let a = _mm512_and_si512(_mm512_castps_si512(x), f.abs_mask);
    finish_fast_sym(p, f, x, rounded_magnitude(f, a))
}

/// The rest of [`quantize_fast_sym_vec`] after the rounding, on the rounded magnitudes `r`
/// of `x`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) fn finish_fast_sym(p: &FloatLane, f: &Fast, x: __m512, mut r: __m512i) -> __m512 {
    let b = _mm512_castps_si512(x);
    let a = _mm512_and_si512(b, f.abs_mask);
    // Overflow, and inf and NaN (their rounded patterns lie above the largest value too).
    r = _mm512_mask_mov_epi32(
        r,
        _mm512_cmpgt_epu32_mask(r, f.max_bits),
        _mm512_set1_epi32(p.ovf.value[0] as i32),
    );
    if !p.inf_is_ovf {
        r = _mm512_mask_mov_epi32(
            r,
            _mm512_cmpeq_epi32_mask(a, f.inf_bits),
            _mm512_set1_epi32(p.inf.value[0] as i32),
        );
    }
    if !p.nan_is_ovf {
        r = _mm512_mask_mov_epi32(
            r,
            _mm512_cmpgt_epu32_mask(a, f.inf_bits),
            _mm512_set1_epi32(p.nan.value[0] as i32),
        );
    }
    _mm512_castsi512_ps(_mm512_or_si512(r, _mm512_andnot_si512(f.abs_mask, b)))
}

/// [`quantize_fast_sym_vec`] for finite inputs only (`p.sym_finite`): no inf or NaN case, so
/// only the overflow results need to be sign-symmetric. The fused block kernel uses it for
/// the groups whose scaled maxima are finite.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn quantize_fast_finite_vec(p: &FloatLane, f: &Fast, x: __m512) -> __m512 {
    let b = _mm512_castps_si512(x);
    let a = _mm512_and_si512(b, f.abs_mask);
    let r = rounded_magnitude(f, a);
    let r = _mm512_mask_mov_epi32(
        r,
        _mm512_cmpgt_epu32_mask(r, f.max_bits),
        _mm512_set1_epi32(p.ovf.value[0] as i32),
    );
    _mm512_castsi512_ps(_mm512_or_si512(r, _mm512_andnot_si512(f.abs_mask, b)))
}

/// Fake-quantizes `src` into `dst` (equal lengths); with `SCALED`, `dst = q(src·inv)·scale`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) fn quantize_float<const ROUND: u8, const SCALED: bool>(
    p: &FloatLane,
    src: &[f32],
    dst: &mut [f32],
    inv: f32,
    scale: f32,
    stream: bool,
) {
    let (c, f) = (consts(p), fast_consts(p));
    quantize_run::<ROUND, SCALED>(p, &c, &f, src, dst, inv, scale, stream);
    if stream {
        _mm_sfence();
    }
}

/// [`quantize_float`]'s loop. The choice between the fast path and the general one is made
/// here, once, so that each loop holds one small closure that the compiler inlines (a closure
/// holding both was left out of line, one call per vector).
#[inline]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn quantize_run<const ROUND: u8, const SCALED: bool>(
    p: &FloatLane,
    c: &Consts,
    f: &Fast,
    src: &[f32],
    dst: &mut [f32],
    inv: f32,
    scale: f32,
    stream: bool,
) {
    let (vinv, vscale) = (_mm512_set1_ps(inv), _mm512_set1_ps(scale));
    let pre = |x| if SCALED { _mm512_mul_ps(x, vinv) } else { x };
    let post = |q| if SCALED { _mm512_mul_ps(q, vscale) } else { q };
    if ROUND == RNE && p.fast && p.sym {
        map_f32(src, dst, stream, |x| {
            post(quantize_fast_sym_vec(p, f, pre(x)))
        });
    } else if ROUND == RNE && p.fast {
        map_f32(src, dst, stream, |x| post(quantize_fast_vec(p, f, pre(x))));
    } else {
        map_f32(src, dst, stream, |x| {
            post(quantize_vec::<ROUND>(p, c, pre(x)))
        });
    }
}

/// A mask of the first `k ≤ 16` lanes.
#[inline]
fn first_lanes(k: usize) -> __mmask16 {
    ((1u32 << k.min(16)) - 1) as __mmask16
}

/// Applies `op` to `src` 16 lanes at a time into `dst`, through one call site of `op` (so it
/// is inlined once): full vectors with plain loads, and the partial vectors at either end from
/// zero-padded copies, written with masked stores. With `stream`, the head runs up to the
/// destination's first 64-byte boundary, so every full vector is one aligned line written
/// with a non-temporal store (no read-for-ownership of the destination; for outputs that leave
/// the caches); when the source has the destination's alignment (two buffers from the same
/// allocator), the loads are aligned too.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn map_f32(src: &[f32], dst: &mut [f32], stream: bool, op: impl Fn(__m512) -> __m512) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    let head = if stream {
        ((64 - dst.as_ptr() as usize % 64) % 64 / 4).min(n)
    } else {
        0
    };
    let body = (n - head) / 16;
    let tail = n - head - 16 * body;
    let (mut hbuf, mut tbuf) = ([0.0f32; 16], [0.0f32; 16]);
    hbuf[..head].copy_from_slice(&src[..head]);
    tbuf[..tail].copy_from_slice(&src[n - tail..]);
    let h = (head > 0) as usize;
    let count = h + body + (tail > 0) as usize;
    let dp = dst.as_mut_ptr();
    for i in 0..count {
        // Vector i: the head, a full vector of the body, or the tail.
        let (from, at, k) = if i < h {
            (hbuf.as_ptr(), 0, head)
        } else if i - h < body {
            let at = head + 16 * (i - h);
            // SAFETY: at + 16 ≤ head + 16·body ≤ n.
            (unsafe { src.as_ptr().add(at) }, at, 16)
        } else {
            (tbuf.as_ptr(), n - tail, tail)
        };
        // SAFETY: `from` points at 16 readable f32; the store writes the `k` elements
        // `at .. at + k ≤ n` of `dst`, and a streamed one starts at a 64-byte boundary
        // (`dst + head` is one).
        unsafe {
            let y = op(_mm512_loadu_ps(from));
            if k < 16 {
                _mm512_mask_storeu_ps(dp.add(at), first_lanes(k), y);
            } else if stream {
                _mm512_stream_ps(dp.add(at), y);
            } else {
                _mm512_storeu_ps(dp.add(at), y);
            }
        }
    }
}

/// Fake-quantizes consecutive blocks of `block` elements, block `k` with scale `scales[k]`
/// (`dst = q(src·(1/s))·s`); the last block may be shorter.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) fn quantize_float_blocks<const ROUND: u8>(
    p: &FloatLane,
    src: &[f32],
    dst: &mut [f32],
    block: usize,
    scales: &[f32],
    stream: bool,
) {
    let (c, f) = (consts(p), fast_consts(p));
    for ((s, d), &scale) in src.chunks(block).zip(dst.chunks_mut(block)).zip(scales) {
        quantize_run::<ROUND, true>(p, &c, &f, s, d, 1.0 / scale, scale, stream);
    }
    if stream {
        _mm_sfence();
    }
}

/// `acc` with the lanes of `|x|` (bit patterns) folded in by unsigned max.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn fold_abs(acc: __m512i, x: __m512i) -> __m512i {
    _mm512_max_epu32(acc, _mm512_and_si512(x, _mm512_set1_epi32(0x7FFF_FFFF)))
}

/// The maximum of `|x|` over `s` on bit patterns, as a lane vector (reduce it once).
///
/// Full vectors use plain loads; only the tail is masked. (A masked load in every iteration
/// ran the pass about 4x slower on a Zen 5 host: 8.8 ms against 2.2 ms for 64 MiB.)
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn abs_max_vec(s: &[f32]) -> __m512i {
    let (full, tail) = s.as_chunks::<16>();
    let mut acc = _mm512_setzero_si512();
    for v in full {
        // SAFETY: `v` is 16 f32.
        acc = fold_abs(acc, unsafe {
            _mm512_loadu_si512(v.as_ptr() as *const __m512i)
        });
    }
    if !tail.is_empty() {
        let mask: __mmask16 = (1u16 << tail.len()) - 1;
        // SAFETY: masked to the `tail.len() < 16` valid elements.
        let v = unsafe { _mm512_maskz_loadu_epi32(mask, tail.as_ptr() as *const i32) };
        acc = fold_abs(acc, v);
    }
    acc
}

/// Per-block maximum of `|x|` on the bit patterns (NaN wins over inf wins over numbers).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) fn abs_max_blocks(src: &[f32], block: usize, out: &mut [f32]) {
    for (s, o) in src.chunks(block).zip(out.iter_mut()) {
        *o = f32::from_bits(_mm512_reduce_max_epu32(abs_max_vec(s)));
    }
}

/// Encodes `src` to one code per byte (codes of at most 8 bits); with `SCALED`, encodes `src·inv`;
/// with `stream`, non-temporal stores.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) fn encode_float<const ROUND: u8, const SCALED: bool>(
    p: &FloatLane,
    src: &[f32],
    dst: &mut [u8],
    inv: f32,
    stream: bool,
) {
    let vinv = _mm512_set1_ps(inv);
    let pre = |x| if SCALED { _mm512_mul_ps(x, vinv) } else { x };
    if ROUND == RNE && p.fast_encode && p.sym {
        let f = fast_consts(p);
        map_codes(src, dst, stream, |x| encode_fast_sym_vec(p, &f, pre(x)));
    } else if ROUND == RNE && p.fast_encode {
        let f = fast_consts(p);
        map_codes(src, dst, stream, |x| encode_fast_vec(p, &f, pre(x)));
    } else {
        let c = consts(p);
        map_codes(src, dst, stream, |x| encode_vec::<ROUND>(p, &c, pre(x)));
    }
}

/// Runs `op` (16 `f32` → 16 codes in the low byte of each lane, each at most 0xff) over `src`
/// and stores the codes to `dst` (as many as the shorter has): 64 at a time with two rounds of
/// unsigned-saturating packs, one lane permutation and one 64-byte store; the tail 16 at a
/// time with masked loads and stores.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn map_codes(src: &[f32], dst: &mut [u8], stream: bool, op: impl Fn(__m512) -> __m512i) {
    let n = src.len().min(dst.len());
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    // After the packs, 128-bit lane i holds the dwords [v0_i, v1_i, v2_i, v3_i] (v_k's
    // elements 4i..4i+3, as bytes); dword 4k + i must come from 4i + k.
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    // Up to 16 codes through masked loads and stores (the head and the tail).
    let masked = |i: usize, k: usize| {
        let mask = first_lanes(k);
        // SAFETY: callers pass k ≤ n − i, so the masked lanes are in both slices.
        unsafe {
            let codes = op(_mm512_maskz_loadu_ps(mask, sp.add(i)));
            _mm512_mask_cvtepi32_storeu_epi8(dp.add(i) as *mut i8, mask, codes);
        }
    };
    let mut i = 0;
    if stream {
        // Head: until the destination is 64-byte aligned, so that every 64-byte store below
        // is one aligned non-temporal line.
        while i < n && !(dp as usize + i).is_multiple_of(64) {
            let k = (n - i).min(16).min(64 - (dp as usize + i) % 64);
            masked(i, k);
            i += k;
        }
    }
    while i + 64 <= n {
        // SAFETY: i + 64 ≤ n ≤ both lengths; with `stream`, dp + i is 64-byte aligned.
        unsafe {
            let v0 = op(_mm512_loadu_ps(sp.add(i)));
            let v1 = op(_mm512_loadu_ps(sp.add(i + 16)));
            let v2 = op(_mm512_loadu_ps(sp.add(i + 32)));
            let v3 = op(_mm512_loadu_ps(sp.add(i + 48)));
            let w01 = _mm512_packus_epi32(v0, v1);
            let w23 = _mm512_packus_epi32(v2, v3);
            let bytes = _mm512_permutexvar_epi32(order, _mm512_packus_epi16(w01, w23));
            if stream {
                _mm512_stream_si512(dp.add(i) as *mut __m512i, bytes);
            } else {
                _mm512_storeu_si512(dp.add(i) as *mut __m512i, bytes);
            }
        }
        i += 64;
    }
    while i < n {
        masked(i, (n - i).min(16));
        i += 16;
    }
    if stream {
        _mm_sfence();
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn round_int<const ROUND: u8>(x: __m512) -> __m512 {
    match ROUND {
        RNE => _mm512_roundscale_ps::<0x08>(x),
        AWAY => {
            let t = _mm512_roundscale_ps::<0x0B>(x);
            let d = _mm512_sub_ps(x, t);
            let abs_d = _mm512_castsi512_ps(_mm512_and_si512(
                _mm512_castps_si512(d),
                _mm512_set1_epi32(0x7FFF_FFFF),
            ));
            let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(abs_d, _mm512_set1_ps(0.5));
            let sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN));
            let step = _mm512_castsi512_ps(_mm512_or_si512(
                sign,
                _mm512_castps_si512(_mm512_set1_ps(1.0)),
            ));
            _mm512_mask_add_ps(t, up, t, step)
        }
        _ => _mm512_roundscale_ps::<0x0B>(x),
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn quantize_int_vec<const ROUND: u8>(p: &IntLane, x: __m512) -> __m512 {
    let r = round_int::<ROUND>(x);
    let r = _mm512_min_ps(_mm512_max_ps(r, _mm512_set1_ps(p.lo)), _mm512_set1_ps(p.hi));
    let r = _mm512_add_ps(r, _mm512_setzero_ps());
    let is_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    _mm512_mask_mov_ps(r, is_nan, _mm512_setzero_ps())
}

/// Integer twin of [`quantize_float`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) fn quantize_int<const ROUND: u8, const SCALED: bool>(
    p: &IntLane,
    src: &[f32],
    dst: &mut [f32],
    inv: f32,
    scale: f32,
    stream: bool,
) {
    let (vinv, vscale) = (_mm512_set1_ps(inv), _mm512_set1_ps(scale));
    map_f32(src, dst, stream, |x| {
        let x = if SCALED { _mm512_mul_ps(x, vinv) } else { x };
        let q = quantize_int_vec::<ROUND>(p, x);
        if SCALED { _mm512_mul_ps(q, vscale) } else { q }
    });
    if stream {
        _mm_sfence();
    }
}

/// Integer twin of [`encode_float`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) fn encode_int<const ROUND: u8, const SCALED: bool>(
    p: &IntLane,
    src: &[f32],
    dst: &mut [u8],
    inv: f32,
    stream: bool,
) {
    let vinv = _mm512_set1_ps(inv);
    let vmask = _mm512_set1_epi32(p.mask as i32);
    map_codes(src, dst, stream, |x| {
        let x = if SCALED { _mm512_mul_ps(x, vinv) } else { x };
        let q = quantize_int_vec::<ROUND>(p, x);
        _mm512_and_si512(_mm512_cvttps_epi32(q), vmask)
    });
}
