//! AVX2 twins of the lane algorithm, 8 lanes at a time. Each function mirrors its namesake in
//! `lane.rs` step for step. AVX2 has no masked loads for every type we need, so the tail is
//! copied into a zero-padded 8-element buffer and goes through the same vector code.
//!
//! All integer comparisons are signed: every compared quantity is below 2³¹.

use std::arch::x86_64::*;

use super::lane::{AWAY, FloatLane, IntLane, RNE, Special};

mod decode;
mod fused;

pub(crate) use decode::{decode_arithmetic, decode_lut};
pub(crate) use fused::{quantize_float_blocks_fused, quantize_int_blocks_fused};

/// Broadcast constants of a [`FloatLane`].
pub(super) struct Consts {
    pub(super) abs_mask: __m256i,
    pub(super) implicit: __m256i,
    pub(super) frac_mask: __m256i,
    pub(super) zero: __m256i,
    pub(super) one: __m256i,
    pub(super) tb_off: __m256i,
    pub(super) mant_shift: __m256i,
    pub(super) twenty_five: __m256i,
    pub(super) m: __m256i,
    pub(super) max_mag: __m256i,
    pub(super) norm_add: __m256i,
    pub(super) sub_scale: __m256,
    pub(super) zero_mag_value: __m256i,
    pub(super) inf_bits: __m256i,
}

#[target_feature(enable = "avx2")]
pub(super) fn consts(p: &FloatLane) -> Consts {
    Consts {
        abs_mask: _mm256_set1_epi32(0x7FFF_FFFF),
        implicit: _mm256_set1_epi32(0x80_0000),
        frac_mask: _mm256_set1_epi32(0x7F_FFFF),
        zero: _mm256_setzero_si256(),
        one: _mm256_set1_epi32(1),
        tb_off: _mm256_set1_epi32(p.tb_off),
        mant_shift: _mm256_set1_epi32(p.mant_shift as i32),
        twenty_five: _mm256_set1_epi32(25),
        m: _mm256_set1_epi32(p.m as i32),
        max_mag: _mm256_set1_epi32(p.max_mag as i32),
        norm_add: _mm256_set1_epi32(p.norm_add as i32),
        sub_scale: _mm256_set1_ps(p.sub_scale),
        zero_mag_value: _mm256_set1_epi32(p.zero_mag_value as i32),
        inf_bits: _mm256_set1_epi32(0x7F80_0000),
    }
}

#[inline]
#[target_feature(enable = "avx2")]
fn select(mask: __m256i, if_false: __m256i, if_true: __m256i) -> __m256i {
    _mm256_blendv_epi8(if_false, if_true, mask)
}

#[inline]
#[target_feature(enable = "avx2")]
fn magnitude<const ROUND: u8>(c: &Consts, a: __m256i) -> __m256i {
    let e = _mm256_srli_epi32::<23>(a);
    let is_normal = _mm256_andnot_si256(_mm256_cmpeq_epi32(e, c.zero), _mm256_set1_epi32(-1));
    let frac = _mm256_and_si256(a, c.frac_mask);
    let mant = _mm256_or_si256(frac, _mm256_and_si256(is_normal, c.implicit));
    let tb = _mm256_add_epi32(_mm256_max_epi32(e, c.one), c.tb_off);
    let denormal = _mm256_max_epi32(_mm256_sub_epi32(c.zero, tb), c.zero);
    let sh = _mm256_min_epi32(_mm256_add_epi32(c.mant_shift, denormal), c.twenty_five);
    let r = match ROUND {
        RNE => {
            let lsb = _mm256_and_si256(_mm256_srlv_epi32(mant, sh), c.one);
            let half_m1 =
                _mm256_sub_epi32(_mm256_sllv_epi32(c.one, _mm256_sub_epi32(sh, c.one)), c.one);
            _mm256_srlv_epi32(_mm256_add_epi32(_mm256_add_epi32(mant, lsb), half_m1), sh)
        }
        AWAY => {
            let half = _mm256_sllv_epi32(c.one, _mm256_sub_epi32(sh, c.one));
            _mm256_srlv_epi32(_mm256_add_epi32(mant, half), sh)
        }
        _ => _mm256_srlv_epi32(mant, sh),
    };
    let exp_part = _mm256_sllv_epi32(_mm256_max_epi32(tb, c.zero), c.m);
    _mm256_add_epi32(r, exp_part)
}

#[inline]
#[target_feature(enable = "avx2")]
fn by_sign(neg: __m256i, s: [u32; 2]) -> __m256i {
    select(
        neg,
        _mm256_set1_epi32(s[0] as i32),
        _mm256_set1_epi32(s[1] as i32),
    )
}

#[inline]
#[target_feature(enable = "avx2")]
fn fix_specials(
    p: &FloatLane,
    c: &Consts,
    out: __m256i,
    a: __m256i,
    neg: __m256i,
    packed: __m256i,
    pick: impl Fn(&Special) -> [u32; 2],
) -> __m256i {
    let ovf = _mm256_cmpgt_epi32(packed, c.max_mag);
    let mut out = select(ovf, out, by_sign(neg, pick(&p.ovf)));
    if p.unsigned {
        out = select(neg, out, by_sign(neg, pick(&p.neg)));
    }
    out = select(
        _mm256_cmpeq_epi32(a, c.zero),
        out,
        by_sign(neg, pick(&p.zero)),
    );
    out = select(
        _mm256_cmpeq_epi32(a, c.inf_bits),
        out,
        by_sign(neg, pick(&p.inf)),
    );
    select(
        _mm256_cmpgt_epi32(a, c.inf_bits),
        out,
        by_sign(neg, pick(&p.nan)),
    )
}

#[inline]
#[target_feature(enable = "avx2")]
fn quantize_vec<const ROUND: u8>(p: &FloatLane, c: &Consts, x: __m256) -> __m256 {
    let a = _mm256_and_si256(_mm256_castps_si256(x), c.abs_mask);
    value_of(p, c, x, magnitude::<ROUND>(c, a))
}

/// `FloatLane::value_of`: the fake-quantized values of `x` whose rounded magnitude codes are
/// `packed`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn value_of(p: &FloatLane, c: &Consts, x: __m256, packed: __m256i) -> __m256 {
    let b = _mm256_castps_si256(x);
    let a = _mm256_and_si256(b, c.abs_mask);
    let neg = _mm256_cmpgt_epi32(c.zero, b);
    let e_zero = _mm256_cmpeq_epi32(_mm256_srlv_epi32(packed, c.m), c.zero);
    let sub = _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(packed), c.sub_scale));
    let packed_zero = _mm256_cmpeq_epi32(packed, c.zero);
    let sub = _mm256_or_si256(sub, _mm256_and_si256(packed_zero, c.zero_mag_value));
    let norm = _mm256_add_epi32(_mm256_sllv_epi32(packed, c.mant_shift), c.norm_add);
    let mut out = select(e_zero, norm, sub);
    let mut sign_lanes = neg;
    if p.fnuz {
        sign_lanes = _mm256_andnot_si256(packed_zero, sign_lanes);
    }
    if !p.unsigned {
        out = _mm256_or_si256(
            out,
            _mm256_and_si256(sign_lanes, _mm256_set1_epi32(i32::MIN)),
        );
    }
    _mm256_castsi256_ps(fix_specials(p, c, out, a, neg, packed, |s| s.value))
}

#[inline]
#[target_feature(enable = "avx2")]
fn encode_vec<const ROUND: u8>(p: &FloatLane, c: &Consts, x: __m256) -> __m256i {
    let a = _mm256_and_si256(_mm256_castps_si256(x), c.abs_mask);
    code_of(p, c, x, magnitude::<ROUND>(c, a))
}

/// `FloatLane::code_of`: the codes of `x` whose rounded magnitude codes are `packed`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn code_of(p: &FloatLane, c: &Consts, x: __m256, packed: __m256i) -> __m256i {
    let b = _mm256_castps_si256(x);
    let a = _mm256_and_si256(b, c.abs_mask);
    let neg = _mm256_cmpgt_epi32(c.zero, b);
    let mut sign_lanes = neg;
    if p.fnuz {
        sign_lanes = _mm256_andnot_si256(_mm256_cmpeq_epi32(packed, c.zero), sign_lanes);
    }
    let out = _mm256_or_si256(
        packed,
        _mm256_and_si256(sign_lanes, _mm256_set1_epi32(p.code_sign as i32)),
    );
    fix_specials(p, c, out, a, neg, packed, |s| s.code)
}

/// Narrows 8 codes (each < 256) to 8 bytes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn narrow_u8(v: __m256i) -> [u8; 8] {
    let w = _mm256_packus_epi32(v, v); // per 128-bit half: c0..c3 c0..c3 | c4..c7 c4..c7 (u16)
    let b = _mm256_packus_epi16(w, w); // per half: bytes c0..c3 repeated | c4..c7 repeated
    let lo = _mm256_castsi256_si128(b);
    let hi = _mm256_extracti128_si256::<1>(b);
    let both = _mm_unpacklo_epi32(lo, hi);
    (_mm_cvtsi128_si64(both) as u64).to_le_bytes()
}

/// Runs `f` over full 8-element blocks of `src`/`dst`, and over the zero-padded tail.
#[inline(always)]
pub(super) fn blocks<T: Copy + Default, U: Copy + Default>(
    src: &[T],
    dst: &mut [U],
    mut f: impl FnMut(&[T; 8], &mut [U; 8]),
) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    let (s_full, s_tail) = src.as_chunks::<8>();
    let (d_full, d_tail) = dst.as_chunks_mut::<8>();
    for (s, d) in s_full.iter().zip(d_full.iter_mut()) {
        f(s, d);
    }
    if !s_tail.is_empty() {
        let mut s = [T::default(); 8];
        let mut d = [U::default(); 8];
        s[..s_tail.len()].copy_from_slice(s_tail);
        f(&s, &mut d);
        d_tail.copy_from_slice(&d[..d_tail.len()]);
    }
}

/// Constants of the nearest-even fast path (`FloatLane::quantize_fast`).
pub(super) struct Fast {
    pub(super) shift: __m128i,
    pub(super) one: __m256i,
    pub(super) force_lsb: __m256i,
    pub(super) half_m1: __m256i,
    pub(super) keep: __m256i,
    pub(super) min_normal: __m256i,
    pub(super) max_bits: __m256i,
    /// `max_bits + 1`, for the unsigned comparison of [`above_max`].
    pub(super) max_bits_p1: __m256i,
    pub(super) magic: __m256,
    pub(super) abs_mask: __m256i,
    pub(super) zero: __m256i,
    pub(super) inf_bits: __m256i,
    /// For encoding: `p.rebias`, the bits of `magic`, `p.max_mag + 1` (for [`above`]),
    /// `p.code_sign`.
    pub(super) rebias: __m256i,
    pub(super) magic_bits: __m256i,
    pub(super) max_mag_p1: __m256i,
    pub(super) code_sign: __m256i,
}

#[target_feature(enable = "avx2")]
pub(super) fn fast_consts(p: &FloatLane) -> Fast {
    let s = p.mant_shift;
    Fast {
        shift: _mm_cvtsi32_si128(s as i32),
        one: _mm256_set1_epi32(1),
        force_lsb: _mm256_set1_epi32((p.m == 0) as i32),
        half_m1: _mm256_set1_epi32((1i32 << (s - 1)) - 1),
        keep: _mm256_set1_epi32(!((1i32 << s) - 1)),
        min_normal: _mm256_set1_epi32(p.min_normal_bits as i32),
        max_bits: _mm256_set1_epi32(p.max_bits as i32),
        max_bits_p1: _mm256_set1_epi32(p.max_bits.wrapping_add(1) as i32),
        magic: _mm256_set1_ps(p.magic),
        abs_mask: _mm256_set1_epi32(0x7FFF_FFFF),
        zero: _mm256_setzero_si256(),
        inf_bits: _mm256_set1_epi32(0x7F80_0000),
        rebias: _mm256_set1_epi32(p.rebias as i32),
        magic_bits: _mm256_set1_epi32(p.magic.to_bits() as i32),
        max_mag_p1: _mm256_set1_epi32(p.max_mag.wrapping_add(1) as i32),
        code_sign: _mm256_set1_epi32(p.code_sign as i32),
    }
}

/// Lanes where `v > limit − 1` as unsigned numbers, given `limit_p1 = limit` (i.e. `v ≥
/// limit_p1`): AVX2 has no unsigned compare.
#[inline]
#[target_feature(enable = "avx2")]
fn above(v: __m256i, limit_p1: __m256i) -> __m256i {
    _mm256_cmpeq_epi32(_mm256_max_epu32(v, limit_p1), v)
}

/// `FloatLane::nearest_even_carry` on 8 lanes: `a` plus the nearest-even
/// rounding increment at bit `23 − m`, the fast paths' shared first step.
#[inline]
#[target_feature(enable = "avx2")]
fn nearest_even_carry(f: &Fast, a: __m256i) -> __m256i {
    let lsb = _mm256_or_si256(
        _mm256_and_si256(_mm256_srl_epi32(a, f.shift), f.one),
        f.force_lsb,
    );
    _mm256_add_epi32(_mm256_add_epi32(a, lsb), f.half_m1)
}

/// The nearest-even magnitude codes of the magnitudes `a` (the twin of avx512.rs's).
#[inline]
#[target_feature(enable = "avx2")]
fn rounded_code(f: &Fast, a: __m256i) -> __m256i {
    let normal = _mm256_sub_epi32(
        _mm256_srl_epi32(nearest_even_carry(f, a), f.shift),
        f.rebias,
    );
    let sum = _mm256_add_ps(_mm256_castsi256_ps(a), f.magic);
    let sub = _mm256_sub_epi32(_mm256_castps_si256(sum), f.magic_bits);
    select(_mm256_cmpgt_epi32(f.min_normal, a), normal, sub)
}

/// `FloatLane::encode_fast` on 8 lanes, branch-free (the twin of avx512.rs's).
#[inline]
#[target_feature(enable = "avx2")]
fn encode_fast_vec(p: &FloatLane, f: &Fast, x: __m256) -> __m256i {
    let b = _mm256_castps_si256(x);
    let a = _mm256_and_si256(b, f.abs_mask);
    let neg = _mm256_cmpgt_epi32(f.zero, b);
    let mag = rounded_code(f, a);
    let mut sign_lanes = neg;
    if p.fnuz {
        sign_lanes = _mm256_andnot_si256(_mm256_cmpeq_epi32(mag, f.zero), sign_lanes);
    }
    let mut code = _mm256_or_si256(mag, _mm256_and_si256(sign_lanes, f.code_sign));
    code = select(above(mag, f.max_mag_p1), code, by_sign(neg, p.ovf.code));
    code = select(
        _mm256_cmpeq_epi32(a, f.inf_bits),
        code,
        by_sign(neg, p.inf.code),
    );
    select(
        _mm256_cmpgt_epi32(a, f.inf_bits),
        code,
        by_sign(neg, p.nan.code),
    )
}

/// [`encode_fast_vec`] for formats with `p.sym` set: the special codes blended in as
/// magnitudes, the sign bit ORed in last (the twin of avx512.rs's).
#[inline]
#[target_feature(enable = "avx2")]
fn encode_fast_sym_vec(p: &FloatLane, f: &Fast, x: __m256) -> __m256i {
    let b = _mm256_castps_si256(x);
    let a = _mm256_and_si256(b, f.abs_mask);
    let mut mag = rounded_code(f, a);
    mag = select(
        above(mag, f.max_mag_p1),
        mag,
        _mm256_set1_epi32(p.ovf.code[0] as i32),
    );
    if !p.inf_is_ovf {
        mag = select(
            _mm256_cmpeq_epi32(a, f.inf_bits),
            mag,
            _mm256_set1_epi32(p.inf.code[0] as i32),
        );
    }
    if !p.nan_is_ovf {
        mag = select(
            _mm256_cmpgt_epi32(a, f.inf_bits),
            mag,
            _mm256_set1_epi32(p.nan.code[0] as i32),
        );
    }
    let neg = _mm256_cmpgt_epi32(f.zero, b);
    _mm256_or_si256(mag, _mm256_and_si256(neg, f.code_sign))
}

/// Runs `op` (8 `f32` → 8 codes, each at most 0xff) over `src` and stores the codes to `dst`
/// (as many as the shorter has): 32 at a time with two rounds of unsigned-saturating packs,
/// one lane permutation and one 32-byte store; the tail 8 at a time through [`blocks`].
#[target_feature(enable = "avx2")]
fn map_codes(src: &[f32], dst: &mut [u8], op: impl Fn(__m256) -> __m256i) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    let (s_full, s_tail) = src.as_chunks::<32>();
    let (d_full, d_tail) = dst.as_chunks_mut::<32>();
    // After the packs, 128-bit half h holds the dwords [v0_h, v1_h, v2_h, v3_h] (v_k's
    // elements 4h..4h+3, as bytes); dword 2k + h must come from 4h + k.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (s, d) in s_full.iter().zip(d_full.iter_mut()) {
        // SAFETY: `s` holds 32 f32 and `d` 32 bytes.
        unsafe {
            let v0 = op(_mm256_loadu_ps(s.as_ptr()));
            let v1 = op(_mm256_loadu_ps(s.as_ptr().add(8)));
            let v2 = op(_mm256_loadu_ps(s.as_ptr().add(16)));
            let v3 = op(_mm256_loadu_ps(s.as_ptr().add(24)));
            let w01 = _mm256_packus_epi32(v0, v1);
            let w23 = _mm256_packus_epi32(v2, v3);
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w01, w23), order);
            _mm256_storeu_si256(d.as_mut_ptr() as *mut __m256i, bytes);
        }
    }
    blocks(s_tail, d_tail, |s, d| {
        // SAFETY: `s` is an 8-element array.
        let x = unsafe { _mm256_loadu_ps(s.as_ptr()) };
        *d = narrow_u8(op(x));
    });
}

/// `FloatLane::quantize_fast` on 8 lanes, branch-free.
#[inline]
#[target_feature(enable = "avx2")]
fn quantize_fast_vec(p: &FloatLane, f: &Fast, x: __m256) -> __m256 {
    let a = _mm256_and_si256(_mm256_castps_si256(x), f.abs_mask);
    finish_fast(p, f, x, rounded_magnitude(f, a))
}

/// The rest of `FloatLane::quantize_fast` after the rounding: the sign and the special results
/// put on the rounded magnitudes `r` (`f32` patterns) of `x`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn finish_fast(p: &FloatLane, f: &Fast, x: __m256, r: __m256i) -> __m256 {
    let b = _mm256_castps_si256(x);
    let a = _mm256_and_si256(b, f.abs_mask);
    let neg = _mm256_cmpgt_epi32(f.zero, b);
    let sign = _mm256_andnot_si256(f.abs_mask, b);
    let sign = if p.fnuz {
        _mm256_andnot_si256(_mm256_cmpeq_epi32(r, f.zero), sign)
    } else {
        sign
    };
    let mut out = _mm256_or_si256(r, sign);
    // `r` can exceed 2^31 for NaN inputs (signed compare sees it negative): NaN is blended last.
    out = select(
        _mm256_cmpgt_epi32(r, f.max_bits),
        out,
        by_sign(neg, p.ovf.value),
    );
    out = select(
        _mm256_cmpeq_epi32(a, f.inf_bits),
        out,
        by_sign(neg, p.inf.value),
    );
    out = select(
        _mm256_cmpgt_epi32(a, f.inf_bits),
        out,
        by_sign(neg, p.nan.value),
    );
    _mm256_castsi256_ps(out)
}

/// The nearest-even rounding of the magnitudes `a` (sign cleared) onto the format's grid, as
/// f32 bit patterns: normal values by integer rounding of the mantissa, subnormal ones by the
/// magic-number add; the special cases (overflow, inf, NaN) are the callers'.
#[inline]
#[target_feature(enable = "avx2")]
fn rounded_magnitude(f: &Fast, a: __m256i) -> __m256i {
    let normal = _mm256_and_si256(nearest_even_carry(f, a), f.keep);
    let ax = _mm256_castsi256_ps(a);
    let sub = _mm256_castps_si256(_mm256_sub_ps(_mm256_add_ps(ax, f.magic), f.magic));
    let is_sub = _mm256_cmpgt_epi32(f.min_normal, a);
    select(is_sub, normal, sub)
}

/// Lanes where `r > f.max_bits` as unsigned numbers (the rounded pattern of a NaN can reach
/// 2^31, which a signed comparison would see as negative).
#[inline]
#[target_feature(enable = "avx2")]
fn above_max(f: &Fast, r: __m256i) -> __m256i {
    _mm256_cmpeq_epi32(_mm256_max_epu32(r, f.max_bits_p1), r)
}

/// [`quantize_fast_vec`] for formats with `p.sym` set: the special results are blended in as
/// magnitudes (skipping the blends that repeat the overflow one) and the sign is put back with
/// one OR at the end — the same bits with fewer instructions (the twin of avx512.rs's).
#[inline]
#[target_feature(enable = "avx2")]
fn quantize_fast_sym_vec(p: &FloatLane, f: &Fast, x: __m256) -> __m256 {
    let a = _mm256_and_si256(_mm256_castps_si256(x), f.abs_mask);
    finish_fast_sym(p, f, x, rounded_magnitude(f, a))
}

/// The rest of [`quantize_fast_sym_vec`] after the rounding, on the rounded magnitudes `r`
/// of `x`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn finish_fast_sym(p: &FloatLane, f: &Fast, x: __m256, mut r: __m256i) -> __m256 {
    let b = _mm256_castps_si256(x);
    let a = _mm256_and_si256(b, f.abs_mask);
    // Overflow, and inf and NaN (their rounded patterns lie above the largest value too).
    r = select(above_max(f, r), r, _mm256_set1_epi32(p.ovf.value[0] as i32));
    if !p.inf_is_ovf {
        r = select(
            _mm256_cmpeq_epi32(a, f.inf_bits),
            r,
            _mm256_set1_epi32(p.inf.value[0] as i32),
        );
    }
    if !p.nan_is_ovf {
        r = select(
            _mm256_cmpgt_epi32(a, f.inf_bits),
            r,
            _mm256_set1_epi32(p.nan.value[0] as i32),
        );
    }
    _mm256_castsi256_ps(_mm256_or_si256(r, _mm256_andnot_si256(f.abs_mask, b)))
}

/// [`quantize_fast_sym_vec`] for finite inputs only (`p.sym_finite`): no inf or NaN case, so
/// only the overflow results need to be sign-symmetric. The fused block kernel uses it for
/// the groups whose scaled maxima are finite.
#[inline]
#[target_feature(enable = "avx2")]
fn quantize_fast_finite_vec(p: &FloatLane, f: &Fast, x: __m256) -> __m256 {
    let b = _mm256_castps_si256(x);
    let a = _mm256_and_si256(b, f.abs_mask);
    let r = rounded_magnitude(f, a);
    let r = select(above_max(f, r), r, _mm256_set1_epi32(p.ovf.value[0] as i32));
    _mm256_castsi256_ps(_mm256_or_si256(r, _mm256_andnot_si256(f.abs_mask, b)))
}

/// Fake-quantizes `src` into `dst`; with `SCALED`, `dst = q(src·inv)·scale`.
#[target_feature(enable = "avx2")]
pub(crate) fn quantize_float<const ROUND: u8, const SCALED: bool>(
    p: &FloatLane,
    src: &[f32],
    dst: &mut [f32],
    inv: f32,
    scale: f32,
) {
    let (c, f) = (consts(p), fast_consts(p));
    quantize_run::<ROUND, SCALED>(p, &c, &f, src, dst, inv, scale);
}

#[inline]
#[target_feature(enable = "avx2")]
fn quantize_run<const ROUND: u8, const SCALED: bool>(
    p: &FloatLane,
    c: &Consts,
    f: &Fast,
    src: &[f32],
    dst: &mut [f32],
    inv: f32,
    scale: f32,
) {
    let (vinv, vscale) = (_mm256_set1_ps(inv), _mm256_set1_ps(scale));
    let pre = |x| if SCALED { _mm256_mul_ps(x, vinv) } else { x };
    let post = |q| if SCALED { _mm256_mul_ps(q, vscale) } else { q };
    // The fast or the general path is chosen here, once, so that each loop holds one small
    // closure the compiler inlines (one holding both was left out of line, a call per vector).
    if ROUND == RNE && p.fast && p.sym {
        blocks(src, dst, |s, d| {
            // SAFETY: `s` and `d` are 8-element arrays.
            let x = unsafe { _mm256_loadu_ps(s.as_ptr()) };
            let q = post(quantize_fast_sym_vec(p, f, pre(x)));
            unsafe { _mm256_storeu_ps(d.as_mut_ptr(), q) };
        });
    } else if ROUND == RNE && p.fast {
        blocks(src, dst, |s, d| {
            // SAFETY: `s` and `d` are 8-element arrays.
            let x = unsafe { _mm256_loadu_ps(s.as_ptr()) };
            let q = post(quantize_fast_vec(p, f, pre(x)));
            unsafe { _mm256_storeu_ps(d.as_mut_ptr(), q) };
        });
    } else {
        blocks(src, dst, |s, d| {
            // SAFETY: `s` and `d` are 8-element arrays.
            let x = unsafe { _mm256_loadu_ps(s.as_ptr()) };
            let q = post(quantize_vec::<ROUND>(p, c, pre(x)));
            unsafe { _mm256_storeu_ps(d.as_mut_ptr(), q) };
        });
    }
}

/// Fake-quantizes consecutive blocks of `block` elements, block `k` with scale `scales[k]`.
#[target_feature(enable = "avx2")]
pub(crate) fn quantize_float_blocks<const ROUND: u8>(
    p: &FloatLane,
    src: &[f32],
    dst: &mut [f32],
    block: usize,
    scales: &[f32],
) {
    let (c, f) = (consts(p), fast_consts(p));
    for ((s, d), &scale) in src.chunks(block).zip(dst.chunks_mut(block)).zip(scales) {
        quantize_run::<ROUND, true>(p, &c, &f, s, d, 1.0 / scale, scale);
    }
}

/// Per-block maximum of `|x|` on the bit patterns (NaN wins over inf wins over numbers).
#[target_feature(enable = "avx2")]
pub(crate) fn abs_max_blocks(src: &[f32], block: usize, out: &mut [f32]) {
    let abs = _mm256_set1_epi32(0x7FFF_FFFF);
    for (s, o) in src.chunks(block).zip(out.iter_mut()) {
        let (full, tail) = s.as_chunks::<8>();
        let mut acc = _mm256_setzero_si256();
        for v in full {
            // SAFETY: `v` is an 8-element array.
            let v = unsafe { _mm256_loadu_si256(v.as_ptr() as *const __m256i) };
            acc = _mm256_max_epu32(acc, _mm256_and_si256(v, abs));
        }
        let mut lanes = [0u32; 8];
        // SAFETY: `lanes` holds 8 u32.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc) };
        let mut m = lanes.into_iter().max().unwrap_or(0);
        for x in tail {
            m = m.max(x.to_bits() & 0x7FFF_FFFF);
        }
        *o = f32::from_bits(m);
    }
}

/// Encodes `src` to one code per byte; with `SCALED`, encodes `src·inv`.
#[target_feature(enable = "avx2")]
pub(crate) fn encode_float<const ROUND: u8, const SCALED: bool>(
    p: &FloatLane,
    src: &[f32],
    dst: &mut [u8],
    inv: f32,
) {
    let vinv = _mm256_set1_ps(inv);
    let pre = |x| if SCALED { _mm256_mul_ps(x, vinv) } else { x };
    if ROUND == RNE && p.fast_encode && p.sym {
        let f = fast_consts(p);
        map_codes(src, dst, |x| encode_fast_sym_vec(p, &f, pre(x)));
    } else if ROUND == RNE && p.fast_encode {
        let f = fast_consts(p);
        map_codes(src, dst, |x| encode_fast_vec(p, &f, pre(x)));
    } else {
        let c = consts(p);
        map_codes(src, dst, |x| encode_vec::<ROUND>(p, &c, pre(x)));
    }
}

#[inline]
#[target_feature(enable = "avx2")]
fn round_int<const ROUND: u8>(x: __m256) -> __m256 {
    match ROUND {
        RNE => _mm256_round_ps::<0x08>(x),
        AWAY => {
            let t = _mm256_round_ps::<0x0B>(x);
            let d = _mm256_sub_ps(x, t);
            let abs_d = _mm256_and_ps(d, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF)));
            let up = _mm256_cmp_ps::<_CMP_GE_OQ>(abs_d, _mm256_set1_ps(0.5));
            let sign = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN)));
            let step = _mm256_or_ps(sign, _mm256_set1_ps(1.0));
            _mm256_add_ps(t, _mm256_and_ps(up, step))
        }
        _ => _mm256_round_ps::<0x0B>(x),
    }
}

#[inline]
#[target_feature(enable = "avx2")]
fn quantize_int_vec<const ROUND: u8>(p: &IntLane, x: __m256) -> __m256 {
    let r = round_int::<ROUND>(x);
    let r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(p.lo)), _mm256_set1_ps(p.hi));
    let r = _mm256_add_ps(r, _mm256_setzero_ps());
    let not_nan = _mm256_cmp_ps::<_CMP_ORD_Q>(x, x);
    _mm256_and_ps(r, not_nan)
}

/// Integer twin of [`quantize_float`].
#[target_feature(enable = "avx2")]
pub(crate) fn quantize_int<const ROUND: u8, const SCALED: bool>(
    p: &IntLane,
    src: &[f32],
    dst: &mut [f32],
    inv: f32,
    scale: f32,
) {
    let (vinv, vscale) = (_mm256_set1_ps(inv), _mm256_set1_ps(scale));
    blocks(src, dst, |s, d| {
        // SAFETY: `s` and `d` are 8-element arrays.
        let x = unsafe { _mm256_loadu_ps(s.as_ptr()) };
        let x = if SCALED { _mm256_mul_ps(x, vinv) } else { x };
        let q = quantize_int_vec::<ROUND>(p, x);
        let q = if SCALED { _mm256_mul_ps(q, vscale) } else { q };
        unsafe { _mm256_storeu_ps(d.as_mut_ptr(), q) };
    });
}

/// Integer twin of [`encode_float`].
#[target_feature(enable = "avx2")]
pub(crate) fn encode_int<const ROUND: u8, const SCALED: bool>(
    p: &IntLane,
    src: &[f32],
    dst: &mut [u8],
    inv: f32,
) {
    let vinv = _mm256_set1_ps(inv);
    let vmask = _mm256_set1_epi32(p.mask as i32);
    map_codes(src, dst, |x| {
        let x = if SCALED { _mm256_mul_ps(x, vinv) } else { x };
        let q = quantize_int_vec::<ROUND>(p, x);
        _mm256_and_si256(_mm256_cvttps_epi32(q), vmask)
    });
}
