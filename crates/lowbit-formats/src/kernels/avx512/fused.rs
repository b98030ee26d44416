//! The fused block kernels on AVX-512: per group of blocks, the maxima, the caller's scale rule
//! and the outputs in one pass over memory (`Codec::quantize_blocks_fused`).

use std::arch::x86_64::*;

use super::super::lane::{FloatLane, IntLane, RNE};
use super::{
    abs_max_vec, consts, fast_consts, first_lanes, fold_abs, map_f32, quantize_fast_finite_vec,
    quantize_fast_sym_vec, quantize_fast_vec, quantize_int_vec, quantize_vec,
};

/// Fused block fake-quant of a float format: [`fused_blocks`] with the lane quantizer (the
/// fast path or the general one, chosen once). `DIV`: the elements are divided by their
/// block's scale, `q(x / s) · s`, instead of multiplied by its reciprocal.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) fn quantize_float_blocks_fused<const ROUND: u8, const DIV: bool>(
    p: &FloatLane,
    src: &[f32],
    dst: &mut [f32],
    block: usize,
    stream: bool,
    scales_of: &mut impl FnMut(usize, &[f32], &mut [f32]),
) {
    let (c, f) = (consts(p), fast_consts(p));
    // `qf`: the quantizer for groups whose inputs are known to be finite.
    let qf = |x| quantize_fast_finite_vec(p, &f, x);
    if ROUND == RNE && p.fast && p.sym {
        let q = |x| quantize_fast_sym_vec(p, &f, x);
        fused_blocks::<DIV>(src, dst, block, stream, q, qf, scales_of);
    } else if ROUND == RNE && p.fast && p.sym_finite {
        let q = |x| quantize_fast_vec(p, &f, x);
        fused_blocks::<DIV>(src, dst, block, stream, q, qf, scales_of);
    } else if ROUND == RNE && p.fast {
        let q = |x| quantize_fast_vec(p, &f, x);
        fused_blocks::<DIV>(src, dst, block, stream, q, q, scales_of);
    } else {
        let q = |x| quantize_vec::<ROUND>(p, &c, x);
        fused_blocks::<DIV>(src, dst, block, stream, q, q, scales_of);
    }
}

/// Fused block fake-quant of an integer format: [`fused_blocks`] with the lane quantizer.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) fn quantize_int_blocks_fused<const ROUND: u8>(
    p: &IntLane,
    src: &[f32],
    dst: &mut [f32],
    block: usize,
    stream: bool,
    scales_of: &mut impl FnMut(usize, &[f32], &mut [f32]),
) {
    let q = |x| quantize_int_vec::<ROUND>(p, x);
    fused_blocks::<false>(src, dst, block, stream, q, q, scales_of);
}

/// Blocks per group of the fused kernel: one `scales_of` call and one vector of
/// reciprocals per group.
const GROUP: usize = 16;
/// How far ahead of the group being read the fused kernel prefetches, in elements (8 KiB).
/// Without it one thread took 1.5x as long on MXFP8 (9.2 ms against 6.2 ms for 16M f32, plain
/// stores): each group's loads waited for memory, with no arithmetic left to overlap them.
const PREFETCH: usize = 2048;

/// One pass over blocks of `block` elements (the last may be shorter), [`GROUP`] blocks at a
/// time: each block's maximum `|x|` (bit patterns), then `scales_of(k0, amax, scales)` for
/// the group's blocks `k0..`, then `dst = q(src · (1/s)) · s` block by block, re-reading the
/// group from L1. The same operations as [`abs_max_blocks`](super::abs_max_blocks) followed by
/// [`quantize_float_blocks`](super::quantize_float_blocks): the reciprocals `1/s` are IEEE divisions either way, 16 at a time
/// here. `qf` is the quantizer for groups whose scaled elements are known to be finite (it
/// must agree with `q` on them; it may skip the inf and NaN cases). `DIV`: `q(src / s) · s`,
/// one IEEE division per element.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
fn fused_blocks<const DIV: bool>(
    src: &[f32],
    dst: &mut [f32],
    block: usize,
    stream: bool,
    q: impl Fn(__m512) -> __m512,
    qf: impl Fn(__m512) -> __m512,
    scales_of: &mut impl FnMut(usize, &[f32], &mut [f32]),
) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    // Whole groups of 16 blocks of 16·V elements: the maxima by a transposing reduction.
    let done = match block {
        16 => fused_groups::<1, DIV>(src, dst, stream, &q, &qf, scales_of),
        32 => fused_groups::<2, DIV>(src, dst, stream, &q, &qf, scales_of),
        48 => fused_groups::<3, DIV>(src, dst, stream, &q, &qf, scales_of),
        64 => fused_groups::<4, DIV>(src, dst, stream, &q, &qf, scales_of),
        _ => 0,
    };
    // The rest (any block size): groups of up to 16 blocks and 8192 elements (or one longer
    // block), re-read from cache.
    let per = (8192 / block).clamp(1, GROUP) * block;
    let (mut amax, mut scale, mut inv) = ([0.0f32; GROUP], [0.0f32; GROUP], [0.0f32; GROUP]);
    let start = done * block;
    let groups = src[start..].chunks(per).zip(dst[start..].chunks_mut(per));
    for (gi, (s, d)) in groups.enumerate() {
        let g = s.len().div_ceil(block);
        for (a, sb) in amax.iter_mut().zip(s.chunks(block)) {
            *a = f32::from_bits(_mm512_reduce_max_epu32(abs_max_vec(sb)));
        }
        scales_of(done + gi * (per / block), &amax[..g], &mut scale[..g]);
        let _ = reciprocals(&scale, &mut inv);
        let blocks = s.chunks(block).zip(d.chunks_mut(block));
        for ((sb, db), (&sc, &iv)) in blocks.zip(scale.iter().zip(&inv)) {
            let (vinv, vscale) = (_mm512_set1_ps(iv), _mm512_set1_ps(sc));
            map_f32(sb, db, stream, |x| {
                _mm512_mul_ps(q(apply::<DIV>(x, vinv, vscale)), vscale)
            });
        }
    }
    if stream {
        _mm_sfence();
    }
}

/// `x · inv` or, with `DIV`, `x / scale`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn apply<const DIV: bool>(x: __m512, inv: __m512, scale: __m512) -> __m512 {
    if DIV {
        _mm512_div_ps(x, scale)
    } else {
        _mm512_mul_ps(x, inv)
    }
}

/// The outputs of one group of [`fused_groups`]: block `j` of 16·V elements from `sp`,
/// `q(x · inv[j]) · scale[j]` (with `DIV`, `q(x / scale[j]) · scale[j]`), as output vectors
/// `first ..` of `out`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn emit_group<const V: usize, const DIV: bool>(
    sp: *const f32,
    scale: &[f32; GROUP],
    inv: &[f32; GROUP],
    first: usize,
    out: &mut Writer,
    q: &impl Fn(__m512) -> __m512,
) {
    for j in 0..GROUP {
        let (vinv, vscale) = (_mm512_set1_ps(inv[j]), _mm512_set1_ps(scale[j]));
        for v in 0..V {
            // SAFETY: the caller's group holds GROUP·16·V elements from `sp`.
            let x = unsafe { _mm512_loadu_ps(sp.add(16 * (j * V + v))) };
            out.put(
                first + j * V + v,
                _mm512_mul_ps(q(apply::<DIV>(x, vinv, vscale)), vscale),
            );
        }
    }
}

/// `inv[j] = 1 / scale[j]`, 16 IEEE divisions at once (equal to the scalar ones); returns them
/// as a vector too.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn reciprocals(scale: &[f32; GROUP], inv: &mut [f32; GROUP]) -> __m512 {
    // SAFETY: `scale` and `inv` hold 16 f32.
    let s = unsafe { _mm512_loadu_ps(scale.as_ptr()) };
    let r = _mm512_div_ps(_mm512_set1_ps(1.0), s);
    unsafe { _mm512_storeu_ps(inv.as_mut_ptr(), r) };
    r
}

/// Lane `j` = the maximum of the 16 lanes of `a[j]` (unsigned), by a transposing tree:
/// 15 pairwise steps of two shuffles and one max instead of 16 separate reductions.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn reduce_max_16(a: &[__m512i; 16]) -> __m512i {
    // Step 1: 128-bit quarters. [x0 x1 y0 y1] vs [x2 x3 y2 y3].
    let q = |x: __m512i, y: __m512i| {
        _mm512_max_epu32(
            _mm512_shuffle_i64x2::<0b01_00_01_00>(x, y),
            _mm512_shuffle_i64x2::<0b11_10_11_10>(x, y),
        )
    };
    // Step 2: quarters again. [x0 x2 y0 y2] vs [x1 x3 y1 y3]: one quarter per block.
    let h = |x: __m512i, y: __m512i| {
        _mm512_max_epu32(
            _mm512_shuffle_i64x2::<0b10_00_10_00>(x, y),
            _mm512_shuffle_i64x2::<0b11_01_11_01>(x, y),
        )
    };
    // Step 3: 64-bit halves of each quarter.
    let u = |x: __m512i, y: __m512i| {
        _mm512_max_epu32(_mm512_unpacklo_epi64(x, y), _mm512_unpackhi_epi64(x, y))
    };
    // Step 4: 32-bit lanes, even vs odd.
    let w = |x: __m512i, y: __m512i| {
        let (x, y) = (_mm512_castsi512_ps(x), _mm512_castsi512_ps(y));
        _mm512_max_epu32(
            _mm512_castps_si512(_mm512_shuffle_ps::<0b10_00_10_00>(x, y)),
            _mm512_castps_si512(_mm512_shuffle_ps::<0b11_01_11_01>(x, y)),
        )
    };
    let p0 = h(q(a[0], a[1]), q(a[2], a[3])); // quarters: blocks 0 1 2 3
    let p1 = h(q(a[4], a[5]), q(a[6], a[7])); // 4 5 6 7
    let p2 = h(q(a[8], a[9]), q(a[10], a[11]));
    let p3 = h(q(a[12], a[13]), q(a[14], a[15]));
    // Quarter i, lane j of the result: block 4j + i.
    let r = w(u(p0, p1), u(p2, p3));
    let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_permutexvar_epi32(idx, r)
}

/// The scales of one group of [`fused_groups`]: `scale[j]` and `inv[j] = 1/scale[j]` for its
/// 16 blocks, and whether every scaled maximum is finite.
#[derive(Clone, Copy)]
struct GroupScale {
    scale: [f32; GROUP],
    inv: [f32; GROUP],
    finite: bool,
}

/// The first half of a group of [`fused_groups`] (16 blocks of 16·V elements from `sp`, the
/// first being block `k0`): the blocks' maxima, `scales_of`, the reciprocals.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn group_scales<const V: usize, const DIV: bool>(
    sp: *const f32,
    k0: usize,
    scales_of: &mut impl FnMut(usize, &[f32], &mut [f32]),
) -> GroupScale {
    let mut acc = [_mm512_setzero_si512(); GROUP];
    for (j, a) in acc.iter_mut().enumerate() {
        for v in 0..V {
            // SAFETY: the caller's group holds GROUP·16·V elements from `sp`.
            let x = unsafe { _mm512_loadu_si512(sp.add(16 * (j * V + v)) as *const __m512i) };
            *a = fold_abs(*a, x);
        }
    }
    let m = reduce_max_16(&acc);
    let mut amax = [0.0f32; GROUP];
    // SAFETY: `amax` holds 16 f32.
    unsafe { _mm512_storeu_si512(amax.as_mut_ptr() as *mut __m512i, m) };
    let mut g = GroupScale {
        scale: [0.0; GROUP],
        inv: [0.0; GROUP],
        finite: false,
    };
    scales_of(k0, &amax, &mut g.scale);
    let vinv = reciprocals(&g.scale, &mut g.inv);
    // SAFETY: `g.scale` holds 16 f32.
    let vscale = unsafe { _mm512_loadu_ps(g.scale.as_ptr()) };
    // When every scaled maximum is finite, so is every scaled element (|x| ≤ amax and the
    // product or quotient is monotonic), and no element is inf or NaN.
    let scaled = _mm512_and_si512(
        _mm512_castps_si512(apply::<DIV>(_mm512_castsi512_ps(m), vinv, vscale)),
        _mm512_set1_epi32(0x7FFF_FFFF),
    );
    g.finite = _mm512_cmplt_epu32_mask(scaled, _mm512_set1_epi32(0x7F80_0000)) == 0xFFFF;
    g
}

/// The whole groups of [`GROUP`] blocks of `16·V` elements of [`fused_blocks`]; returns how
/// many blocks it did. Software-pipelined: the scales of group `g + 1` are worked out before
/// the outputs of group `g`, so that the latency of the scale rule (divisions) overlaps the
/// outputs' arithmetic.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn fused_groups<const V: usize, const DIV: bool>(
    src: &[f32],
    dst: &mut [f32],
    stream: bool,
    q: &impl Fn(__m512) -> __m512,
    qf: &impl Fn(__m512) -> __m512,
    scales_of: &mut impl FnMut(usize, &[f32], &mut [f32]),
) -> usize {
    let per = GROUP * 16 * V;
    let ng = src.len() / per;
    if ng == 0 {
        return 0;
    }
    // SAFETY (group pointers): group g's elements g·per .. (g + 1)·per lie in `src` for g < ng.
    let at = |g: usize| unsafe { src.as_ptr().add(g * per) };
    let mut out = Writer::new(&mut dst[..ng * per], stream);
    let mut next = group_scales::<V, DIV>(at(0), 0, scales_of);
    for g in 0..ng {
        let sp = at(g);
        let cur = next;
        if g + 1 < ng {
            let np = at(g + 1);
            for l in 0..per / 16 {
                // A prefetch of an address past the end is harmless (no fault, no effect).
                _mm_prefetch::<_MM_HINT_T0>(np.wrapping_add(PREFETCH + 16 * l) as *const i8);
            }
            next = group_scales::<V, DIV>(np, (g + 1) * GROUP, scales_of);
        }
        let first = g * GROUP * V;
        if cur.finite {
            emit_group::<V, DIV>(sp, &cur.scale, &cur.inv, first, &mut out, qf);
        } else {
            emit_group::<V, DIV>(sp, &cur.scale, &cur.inv, first, &mut out, q);
        }
    }
    out.finish(ng * GROUP * V);
    ng * GROUP
}

/// Writes consecutive output vectors to a destination: plain stores, or non-temporal stores
/// of whole 64-byte lines (no read-for-ownership of the destination, for outputs that leave
/// the caches). When the destination is not 64-byte aligned, vector `v` is split across two
/// lines: each aligned line is made of the end of one vector and the start of the next (one
/// two-source permute), and only the first and last partial lines take masked plain stores.
struct Writer {
    dst: *mut f32,
    n: usize,
    stream: bool,
    /// How far (elements) the destination lies past the previous 64-byte boundary.
    r: usize,
    /// `(16 − r) % 16`: elements from the destination to the next 64-byte boundary, and the
    /// permute's shift.
    h: usize,
    idx: __m512i,
    prev: __m512,
}

impl Writer {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn new(dst: &mut [f32], stream: bool) -> Writer {
        let h = (64 - dst.as_ptr() as usize % 64) % 64 / 4;
        Writer {
            dst: dst.as_mut_ptr(),
            n: dst.len(),
            stream,
            r: (16 - h) % 16,
            h,
            idx: _mm512_add_epi32(
                _mm512_set1_epi32(h as i32),
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            ),
            prev: _mm512_setzero_ps(),
        }
    }

    /// Vector `v`: the outputs of elements `16v .. 16v + 16` (those below `n`). Vectors must
    /// come in order, from 0.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn put(&mut self, v: usize, y: __m512) {
        let o = 16 * v;
        // SAFETY (every store): the lanes written lie in `o − r .. min(o + 16 − r, n)` or
        // `o .. min(o + 16, n)`, inside `dst` (`o − r ≥ 0` when `v ≥ 1`, as `r < 16`); streamed
        // lines start at a 64-byte boundary (`dst + h` is one, and `o − r = h + 16(v − 1)`).
        unsafe {
            if !self.stream || self.h == 0 {
                let k = self.n - o;
                if k < 16 {
                    _mm512_mask_storeu_ps(self.dst.add(o), first_lanes(k), y);
                } else if self.stream {
                    _mm512_stream_ps(self.dst.add(o), y);
                } else {
                    _mm512_storeu_ps(self.dst.add(o), y);
                }
            } else if v == 0 {
                _mm512_mask_storeu_ps(self.dst, first_lanes(self.h.min(self.n)), y);
                self.prev = y;
            } else {
                let at = o - self.r;
                let line = _mm512_permutex2var_ps(self.prev, self.idx, y);
                let k = self.n - at;
                if k < 16 {
                    _mm512_mask_storeu_ps(self.dst.add(at), first_lanes(k), line);
                } else {
                    _mm512_stream_ps(self.dst.add(at), line);
                }
                self.prev = y;
            }
        }
    }

    /// After the last of `count` vectors: the elements still held back (streaming, unaligned).
    /// The caller fences (`sfence`) once after its last streaming write.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn finish(&mut self, count: usize) {
        if self.stream && self.h != 0 && count > 0 {
            let at = 16 * count - self.r;
            if at < self.n {
                let z = _mm512_permutex2var_ps(self.prev, self.idx, _mm512_setzero_ps());
                // SAFETY: elements `at .. n` (fewer than 16) of `dst`.
                unsafe { _mm512_mask_storeu_ps(self.dst.add(at), first_lanes(self.n - at), z) };
            }
        }
    }
}
