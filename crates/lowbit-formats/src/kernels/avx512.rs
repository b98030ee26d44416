//! AVX-512 (F + BW + VL) twins of the lane algorithm, 16 lanes at a time. Each function mirrors
//! its namesake in `lane.rs` step for step; the tail goes through the same vector code with
//! masked loads and stores.

use std::arch::x86_64::*;

use super::lane::{AWAY, FloatLane, IntLane, RNE, Special};

/// Broadcast constants of a [`FloatLane`].
struct Consts {
    abs_mask: __m512i,
    implicit: __m512i,
    zero: __m512i,
    one: __m512i,
    tb_off: __m512i,
    mant_shift: __m512i,
    twenty_five: __m512i,
    m: __m512i,
    max_mag: __m512i,
    norm_add: __m512i,
    sub_scale: __m512,
    zero_mag_value: __m512i,
    inf_bits: __m512i,
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn consts(p: &FloatLane) -> Consts {
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
    let b = _mm512_castps_si512(x);
    let a = _mm512_and_si512(b, c.abs_mask);
    let neg = _mm512_cmplt_epi32_mask(b, c.zero);
    let packed = magnitude::<ROUND>(c, a);
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
    let b = _mm512_castps_si512(x);
    let a = _mm512_and_si512(b, c.abs_mask);
    let neg = _mm512_cmplt_epi32_mask(b, c.zero);
    let packed = magnitude::<ROUND>(c, a);
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
struct Fast {
    shift: __m128i,
    one: __m512i,
    force_lsb: __m512i,
    half_m1: __m512i,
    keep: __m512i,
    min_normal: __m512i,
    max_bits: __m512i,
    magic: __m512,
    abs_mask: __m512i,
    zero: __m512i,
    inf_bits: __m512i,
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn fast_consts(p: &FloatLane) -> Fast {
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
    }
}

/// `FloatLane::quantize_fast` on 16 lanes, branch-free.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn quantize_fast_vec(p: &FloatLane, f: &Fast, x: __m512) -> __m512 {
    let b = _mm512_castps_si512(x);
    let a = _mm512_and_si512(b, f.abs_mask);
    let neg = _mm512_cmplt_epi32_mask(b, f.zero);
    let sign = _mm512_andnot_si512(f.abs_mask, b);
    let lsb = _mm512_or_si512(
        _mm512_and_si512(_mm512_srl_epi32(a, f.shift), f.one),
        f.force_lsb,
    );
    let normal = _mm512_and_si512(
        _mm512_add_epi32(_mm512_add_epi32(a, lsb), f.half_m1),
        f.keep,
    );
    let ax = _mm512_castsi512_ps(a);
    let sub = _mm512_castps_si512(_mm512_sub_ps(_mm512_add_ps(ax, f.magic), f.magic));
    let is_sub = _mm512_cmplt_epu32_mask(a, f.min_normal);
    let r = _mm512_mask_blend_epi32(is_sub, normal, sub);
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

/// One vector of fake-quant: the fast path when it applies, else the general one.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn quantize_one<const ROUND: u8>(p: &FloatLane, c: &Consts, f: &Fast, x: __m512) -> __m512 {
    if ROUND == RNE && p.fast {
        quantize_fast_vec(p, f, x)
    } else {
        quantize_vec::<ROUND>(p, c, x)
    }
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
    map_f32(src, dst, stream, |x| {
        let x = if SCALED { _mm512_mul_ps(x, vinv) } else { x };
        let q = quantize_one::<ROUND>(p, c, f, x);
        if SCALED { _mm512_mul_ps(q, vscale) } else { q }
    });
}

/// Applies `op` to `src` 16 lanes at a time into `dst`: full vectors, then one masked tail.
/// With `stream`, `dst` is written with non-temporal stores after peeling to a 64-byte
/// boundary (no read-for-ownership of the destination; for outputs that leave the caches).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn map_f32(src: &[f32], dst: &mut [f32], stream: bool, op: impl Fn(__m512) -> __m512) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    let masked = |i: usize, k: usize, dst: &mut [f32]| {
        let mask: __mmask16 = if k >= 16 { !0 } else { (1u16 << k) - 1 };
        // SAFETY: only the `k ≤ n − i` lanes of the mask are read and written.
        let x = unsafe { _mm512_maskz_loadu_ps(mask, src.as_ptr().add(i)) };
        unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr().add(i), mask, op(x)) };
    };
    if stream && n >= 16 {
        let misalign = (dst.as_ptr() as usize % 64) / 4;
        if misalign != 0 {
            let k = (16 - misalign).min(n);
            masked(0, k, dst);
            i = k;
        }
        while i + 16 <= n {
            // SAFETY: i + 16 ≤ n; `dst + i` is 64-byte aligned (peeled above).
            let x = unsafe { _mm512_loadu_ps(src.as_ptr().add(i)) };
            unsafe { _mm512_stream_ps(dst.as_mut_ptr().add(i), op(x)) };
            i += 16;
        }
        // No fence here: the caller fences once after its last streaming call (a fence per
        // MX block of 32 elements made the block kernel 10x slower).
    }
    while i + 16 <= n {
        // SAFETY: i + 16 ≤ n ≤ src.len(), dst.len().
        let x = unsafe { _mm512_loadu_ps(src.as_ptr().add(i)) };
        unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(i), op(x)) };
        i += 16;
    }
    if i < n {
        masked(i, n - i, dst);
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

/// Per-block maximum of `|x|` on the bit patterns (NaN wins over inf wins over numbers).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) fn abs_max_blocks(src: &[f32], block: usize, out: &mut [f32]) {
    let abs = _mm512_set1_epi32(0x7FFF_FFFF);
    for (s, o) in src.chunks(block).zip(out.iter_mut()) {
        let mut acc = _mm512_setzero_si512();
        let n = s.len();
        let mut i = 0;
        while i < n {
            let k = (n - i).min(16);
            let mask: __mmask16 = if k == 16 { !0 } else { (1u16 << k) - 1 };
            // SAFETY: masked to the `k` valid elements.
            let v = unsafe { _mm512_maskz_loadu_epi32(mask, s.as_ptr().add(i) as *const i32) };
            acc = _mm512_max_epu32(acc, _mm512_and_si512(v, abs));
            i += 16;
        }
        *o = f32::from_bits(_mm512_reduce_max_epu32(acc));
    }
}

/// Encodes `src` to one code per byte (codes of at most 8 bits); with `SCALED`, encodes `src·inv`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) fn encode_float<const ROUND: u8, const SCALED: bool>(
    p: &FloatLane,
    src: &[f32],
    dst: &mut [u8],
    inv: f32,
) {
    let c = consts(p);
    let vinv = _mm512_set1_ps(inv);
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i < n {
        let k = (n - i).min(16);
        let mask: __mmask16 = if k == 16 { !0 } else { (1u16 << k) - 1 };
        // SAFETY: masked to the `k` valid elements.
        let x = unsafe { _mm512_maskz_loadu_ps(mask, src.as_ptr().add(i)) };
        let x = if SCALED { _mm512_mul_ps(x, vinv) } else { x };
        let codes = encode_vec::<ROUND>(p, &c, x);
        unsafe {
            _mm512_mask_cvtepi32_storeu_epi8(dst.as_mut_ptr().add(i) as *mut i8, mask, codes)
        };
        i += 16;
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
) {
    let vinv = _mm512_set1_ps(inv);
    let vmask = _mm512_set1_epi32(p.mask as i32);
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i < n {
        let k = (n - i).min(16);
        let mask: __mmask16 = if k == 16 { !0 } else { (1u16 << k) - 1 };
        // SAFETY: masked to the `k` valid elements.
        let x = unsafe { _mm512_maskz_loadu_ps(mask, src.as_ptr().add(i)) };
        let x = if SCALED { _mm512_mul_ps(x, vinv) } else { x };
        let q = quantize_int_vec::<ROUND>(p, x);
        let codes = _mm512_and_si512(_mm512_cvttps_epi32(q), vmask);
        unsafe {
            _mm512_mask_cvtepi32_storeu_epi8(dst.as_mut_ptr().add(i) as *mut i8, mask, codes)
        };
        i += 16;
    }
}

/// Decodes bytes through a 256-entry table (`lut[c]` = decode of `c`), times `scale` if `SCALED`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) fn decode_lut<const SCALED: bool>(
    lut: &[f32; 256],
    src: &[u8],
    dst: &mut [f32],
    scale: f32,
) {
    let vscale = _mm512_set1_ps(scale);
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i < n {
        let k = (n - i).min(16);
        let mask: __mmask16 = if k == 16 { !0 } else { (1u16 << k) - 1 };
        // SAFETY: masked to the `k` valid bytes; gather indices are bytes, so < 256 = lut.len().
        let bytes = unsafe { _mm_maskz_loadu_epi8(mask, src.as_ptr().add(i) as *const i8) };
        let idx = _mm512_cvtepu8_epi32(bytes);
        let v = unsafe { _mm512_i32gather_ps::<4>(idx, lut.as_ptr()) };
        let v = if SCALED { _mm512_mul_ps(v, vscale) } else { v };
        unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr().add(i), mask, v) };
        i += 16;
    }
}
