//! The fused block kernels on AVX2: per group of blocks, the maxima, the caller's scale rule
//! and the outputs in one pass over memory (`Codec::quantize_blocks_fused`).

use std::arch::x86_64::*;

use super::super::lane::{FloatLane, IntLane, RNE};
use super::{
    abs_max_blocks, blocks, consts, fast_consts, quantize_fast_finite_vec, quantize_fast_sym_vec,
    quantize_fast_vec, quantize_int_vec, quantize_vec,
};

/// Blocks per group of the fused kernel: one `scales_of` call and two vector divisions for
/// the reciprocals per group.
const GROUP: usize = 16;
/// How far ahead of the group being read the fused kernel prefetches, in elements (8 KiB).
const PREFETCH: usize = 2048;

/// Fused block fake-quant of a float format: [`fused_blocks`] with the lane quantizer (the
/// fast path or the general one, chosen once).
#[target_feature(enable = "avx2")]
pub(crate) fn quantize_float_blocks_fused<const ROUND: u8>(
    p: &FloatLane,
    src: &[f32],
    dst: &mut [f32],
    block: usize,
    scales_of: &mut impl FnMut(usize, &[f32], &mut [f32]),
) {
    let (c, f) = (consts(p), fast_consts(p));
    // `qf`: the quantizer for groups whose inputs are known to be finite.
    let qf = |x| quantize_fast_finite_vec(p, &f, x);
    if ROUND == RNE && p.fast && p.sym {
        let q = |x| quantize_fast_sym_vec(p, &f, x);
        fused_blocks(src, dst, block, q, qf, scales_of);
    } else if ROUND == RNE && p.fast && p.sym_finite {
        let q = |x| quantize_fast_vec(p, &f, x);
        fused_blocks(src, dst, block, q, qf, scales_of);
    } else if ROUND == RNE && p.fast {
        let q = |x| quantize_fast_vec(p, &f, x);
        fused_blocks(src, dst, block, q, q, scales_of);
    } else {
        let q = |x| quantize_vec::<ROUND>(p, &c, x);
        fused_blocks(src, dst, block, q, q, scales_of);
    }
}

/// Fused block fake-quant of an integer format: [`fused_blocks`] with the lane quantizer.
#[target_feature(enable = "avx2")]
pub(crate) fn quantize_int_blocks_fused<const ROUND: u8>(
    p: &IntLane,
    src: &[f32],
    dst: &mut [f32],
    block: usize,
    scales_of: &mut impl FnMut(usize, &[f32], &mut [f32]),
) {
    let q = |x| quantize_int_vec::<ROUND>(p, x);
    fused_blocks(src, dst, block, q, q, scales_of);
}

/// `db = q(sb · vinv) · vscale` over whole vectors (`sb.len()` a multiple of 8).
#[inline]
#[target_feature(enable = "avx2")]
fn scaled_run(
    sb: &[f32],
    db: &mut [f32],
    vinv: __m256,
    vscale: __m256,
    q: &impl Fn(__m256) -> __m256,
) {
    for (s8, d8) in sb.chunks_exact(8).zip(db.chunks_exact_mut(8)) {
        // SAFETY: `s8` and `d8` hold 8 f32.
        let x = unsafe { _mm256_loadu_ps(s8.as_ptr()) };
        let y = _mm256_mul_ps(q(_mm256_mul_ps(x, vinv)), vscale);
        unsafe { _mm256_storeu_ps(d8.as_mut_ptr(), y) };
    }
}

/// The maximum of the 8 lanes (unsigned).
#[inline]
#[target_feature(enable = "avx2")]
fn hmax_epu32(v: __m256i) -> u32 {
    let m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
    let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
    _mm_cvtsi128_si32(m) as u32
}

/// One pass over blocks of `block` elements (the last may be shorter), [`GROUP`] blocks at a
/// time: each block's maximum `|x|` (bit patterns, as [`abs_max_blocks`]), then
/// `scales_of(k0, amax, scales)` for the group's blocks `k0..`, then
/// `dst = q(src · (1/s)) · s` block by block, re-reading the group from L1 — the same
/// operations, in the same order per element, as [`abs_max_blocks`] followed by
/// [`quantize_float_blocks`](super::quantize_float_blocks) (the reciprocals are IEEE divisions either way, 8 at a time
/// here). Blocks of whole vectors (a multiple of 8 elements, up to 512) take a path without
/// tails; other sizes and the last partial group go through the generic one.
/// `qf` is the quantizer for groups whose scaled elements are known to be finite (it must
/// agree with `q` on them; it may skip the inf and NaN cases).
#[inline]
#[target_feature(enable = "avx2")]
fn fused_blocks(
    src: &[f32],
    dst: &mut [f32],
    block: usize,
    q: impl Fn(__m256) -> __m256,
    qf: impl Fn(__m256) -> __m256,
    scales_of: &mut impl FnMut(usize, &[f32], &mut [f32]),
) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    let abs = _mm256_set1_epi32(0x7FFF_FFFF);
    let (mut amax, mut scale, mut inv) = ([0.0f32; GROUP], [0.0f32; GROUP], [0.0f32; GROUP]);
    let mut done = 0;
    if block.is_multiple_of(8) && block <= 512 {
        let per = GROUP * block;
        let ng = n / per;
        let vecs = block / 8;
        for g in 0..ng {
            let s = &src[g * per..(g + 1) * per];
            let d = &mut dst[g * per..(g + 1) * per];
            for l in (0..per).step_by(16) {
                // A prefetch of an address past the end is harmless (no fault, no effect).
                _mm_prefetch::<_MM_HINT_T0>(
                    s.as_ptr().wrapping_add(per + PREFETCH + l) as *const i8
                );
            }
            for (a, sb) in amax.iter_mut().zip(s.chunks_exact(block)) {
                let mut acc = _mm256_setzero_si256();
                for v in 0..vecs {
                    // SAFETY: `sb` holds `block` = 8·vecs elements.
                    let x = unsafe { _mm256_loadu_si256(sb.as_ptr().add(8 * v) as *const __m256i) };
                    acc = _mm256_max_epu32(acc, _mm256_and_si256(x, abs));
                }
                *a = f32::from_bits(hmax_epu32(acc));
            }
            scales_of(g * GROUP, &amax, &mut scale);
            // The reciprocals, and whether every scaled maximum is finite (then so is every
            // scaled element: |x| ≤ amax and the product is monotonic).
            let mut finite = true;
            for k in (0..GROUP).step_by(8) {
                // SAFETY: `scale`, `inv` and `amax` hold GROUP = 16 f32.
                let sv = unsafe { _mm256_loadu_ps(scale.as_ptr().add(k)) };
                let r = _mm256_div_ps(_mm256_set1_ps(1.0), sv);
                unsafe { _mm256_storeu_ps(inv.as_mut_ptr().add(k), r) };
                let m = unsafe { _mm256_loadu_ps(amax.as_ptr().add(k)) };
                let scaled = _mm256_and_si256(_mm256_castps_si256(_mm256_mul_ps(m, r)), abs);
                let ok = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x7F80_0000), scaled);
                finite &= _mm256_movemask_ps(_mm256_castsi256_ps(ok)) == 0xFF;
            }
            let pairs = s.chunks_exact(block).zip(d.chunks_exact_mut(block));
            for ((sb, db), (&sc, &iv)) in pairs.zip(scale.iter().zip(&inv)) {
                let (vinv, vscale) = (_mm256_set1_ps(iv), _mm256_set1_ps(sc));
                if finite {
                    scaled_run(sb, db, vinv, vscale, &qf);
                } else {
                    scaled_run(sb, db, vinv, vscale, &q);
                }
            }
        }
        done = ng * GROUP;
    }
    // The rest (any block size): groups of up to 16 blocks and 8192 elements (or one longer
    // block), re-read from cache.
    let per = (8192 / block).clamp(1, GROUP) * block;
    let start = done * block;
    let groups = src[start..].chunks(per).zip(dst[start..].chunks_mut(per));
    for (gi, (s, d)) in groups.enumerate() {
        let g = s.len().div_ceil(block);
        abs_max_blocks(s, block, &mut amax[..g]);
        scales_of(done + gi * (per / block), &amax[..g], &mut scale[..g]);
        let pairs = s.chunks(block).zip(d.chunks_mut(block));
        for ((sb, db), &sc) in pairs.zip(&scale[..g]) {
            let (vinv, vscale) = (_mm256_set1_ps(1.0 / sc), _mm256_set1_ps(sc));
            blocks(sb, db, |s8, d8| {
                // SAFETY: `s8` and `d8` are 8-element arrays.
                let x = unsafe { _mm256_loadu_ps(s8.as_ptr()) };
                let y = _mm256_mul_ps(q(_mm256_mul_ps(x, vinv)), vscale);
                unsafe { _mm256_storeu_ps(d8.as_mut_ptr(), y) };
            });
        }
    }
}
