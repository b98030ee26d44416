//! Decoding byte codes on AVX-512 without gathers: arithmetic with patched codes
//! ([`DecodeLane`]) where a format has it, else the table held in registers.

use std::arch::x86_64::*;

use super::super::decode::{DecodeKind, DecodeLane, MAX_EXCEPTIONS, TOP_MAGNITUDES};
use super::first_lanes;

/// Decodes bytes through a 256-entry table (`lut[c]` = decode of `c`), times `scale` if `SCALED`,
/// without gathers (microcoded and slow on some CPUs: AMD Zen 5 ran the gather loop at 0.17×
/// memcpy): the table is held in registers as 32-entry halves and looked up with lane
/// permutations, `vpermps` for formats of ≤ 4 bits, else one `vpermi2ps` per 32 entries
/// (the code's low 5 bits) and a tree of blends on bits 5, 6, 7 of the code. Only the `bits`
/// low bits of a code are used, as `lut` (periodic in them) would give.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) fn decode_lut<const SCALED: bool>(
    lut: &[f32; 256],
    bits: u32,
    src: &[u8],
    dst: &mut [f32],
    scale: f32,
) {
    match bits {
        0..=4 => decode_permute::<SCALED, 0>(lut, src, dst, scale),
        5 => decode_permute::<SCALED, 1>(lut, src, dst, scale),
        6 => decode_permute::<SCALED, 2>(lut, src, dst, scale),
        7 => decode_permute::<SCALED, 4>(lut, src, dst, scale),
        _ => decode_permute::<SCALED, 8>(lut, src, dst, scale),
    }
}

/// [`decode_lut`] with `T` 32-entry tables (0: one 16-entry table).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn decode_permute<const SCALED: bool, const T: usize>(
    lut: &[f32; 256],
    src: &[u8],
    dst: &mut [f32],
    scale: f32,
) {
    let (mut lo, mut hi) = ([_mm512_setzero_ps(); 8], [_mm512_setzero_ps(); 8]);
    for k in 0..T.max(1) {
        // SAFETY: 32k + 32 ≤ 256 for k < 8.
        unsafe {
            lo[k] = _mm512_loadu_ps(lut.as_ptr().add(32 * k));
            hi[k] = _mm512_loadu_ps(lut.as_ptr().add(32 * k + 16));
        }
    }
    let vscale = _mm512_set1_ps(scale);
    let look = |idx: __m512i| -> __m512 {
        let v = if T == 0 {
            _mm512_permutexvar_ps(idx, lo[0])
        } else {
            let mut v = [_mm512_setzero_ps(); 8];
            for k in 0..T {
                v[k] = _mm512_permutex2var_ps(lo[k], idx, hi[k]);
            }
            // Level by level, the table pair (2k, 2k + 1) becomes table k, chosen by the next
            // bit of the code.
            let (mut n, mut bit) = (T, 5);
            while n > 1 {
                let m = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(1 << bit));
                for k in 0..n / 2 {
                    v[k] = _mm512_mask_blend_ps(m, v[2 * k], v[2 * k + 1]);
                }
                n /= 2;
                bit += 1;
            }
            v[0]
        };
        if SCALED { _mm512_mul_ps(v, vscale) } else { v }
    };
    decode_with(src, dst, look);
}

/// Runs `look` (16 codes, zero-extended to 32-bit lanes → 16 values) over `src` into `dst`
/// (the shorter length): 64 codes per iteration from one 64-byte load, the tail 16 at a time
/// with masked loads and stores.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn decode_with(src: &[u8], dst: &mut [f32], look: impl Fn(__m512i) -> __m512) {
    let n = src.len().min(dst.len());
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 64 <= n {
        // SAFETY: i + 64 ≤ n ≤ both lengths.
        unsafe {
            let bytes = _mm512_loadu_si512(sp.add(i) as *const __m512i);
            let q0 = _mm512_cvtepu8_epi32(_mm512_castsi512_si128(bytes));
            let q1 = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32::<1>(bytes));
            let q2 = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32::<2>(bytes));
            let q3 = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32::<3>(bytes));
            _mm512_storeu_ps(dp.add(i), look(q0));
            _mm512_storeu_ps(dp.add(i + 16), look(q1));
            _mm512_storeu_ps(dp.add(i + 32), look(q2));
            _mm512_storeu_ps(dp.add(i + 48), look(q3));
        }
        i += 64;
    }
    while i < n {
        let mask = first_lanes(n - i);
        // SAFETY: masked to the `min(n − i, 16)` valid elements.
        unsafe {
            let bytes = _mm_maskz_loadu_epi8(mask, sp.add(i) as *const i8);
            _mm512_mask_storeu_ps(dp.add(i), mask, look(_mm512_cvtepu8_epi32(bytes)));
        }
        i += 16;
    }
}

/// `DecodeLane::decode` on 16 codes at a time, times `scale` if `SCALED`: the arithmetic value
/// of each code (a minifloat's sign over its magnitude's value, an integer's sign-extended
/// value), the top magnitudes from a register table (`vpermd`), then one compare and masked
/// move per patched code. Fewer instructions than [`decode_lut`]'s permutation tree.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) fn decode_arithmetic<const SCALED: bool>(
    d: &DecodeLane,
    src: &[u8],
    dst: &mut [f32],
    scale: f32,
) {
    match d.kind {
        DecodeKind::Float { mag_mask, .. } if d.top_from <= mag_mask => {
            decode_float::<SCALED, true>(d, src, dst, scale)
        }
        DecodeKind::Float { .. } => decode_float::<SCALED, false>(d, src, dst, scale),
        DecodeKind::Int { bits, signed } => {
            let mask = _mm512_set1_epi32(d.code_mask as i32);
            let shift = _mm_cvtsi32_si128(if signed { 32 - bits as i32 } else { 0 });
            let patch = Patches::<SCALED>::new(d, scale);
            decode_with(src, dst, |idx| {
                let c = _mm512_and_si512(idx, mask);
                let v = _mm512_sra_epi32(_mm512_sll_epi32(c, shift), shift);
                patch.apply(c, _mm512_castps_si512(_mm512_cvtepi32_ps(v)))
            });
        }
    }
}

/// The last steps of [`decode_arithmetic`]: the patched codes and the scale.
struct Patches<const SCALED: bool> {
    scale: __m512,
    n: usize,
    codes: [__m512i; MAX_EXCEPTIONS],
    values: [__m512i; MAX_EXCEPTIONS],
}

impl<const SCALED: bool> Patches<SCALED> {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn new(d: &DecodeLane, scale: f32) -> Self {
        let mut p = Patches {
            scale: _mm512_set1_ps(scale),
            n: d.n_exceptions.min(MAX_EXCEPTIONS),
            codes: [_mm512_setzero_si512(); MAX_EXCEPTIONS],
            values: [_mm512_setzero_si512(); MAX_EXCEPTIONS],
        };
        for (k, &(c, v)) in d.exceptions[..p.n].iter().enumerate() {
            p.codes[k] = _mm512_set1_epi32(c as i32);
            p.values[k] = _mm512_set1_epi32(v as i32);
        }
        p
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn apply(&self, c: __m512i, mut v: __m512i) -> __m512 {
        for k in 0..self.n {
            v = _mm512_mask_mov_epi32(v, _mm512_cmpeq_epi32_mask(c, self.codes[k]), self.values[k]);
        }
        let v = _mm512_castsi512_ps(v);
        if SCALED {
            _mm512_mul_ps(v, self.scale)
        } else {
            v
        }
    }
}

/// The minifloat branch of [`decode_arithmetic`]; `TOP`: the format has top magnitudes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn decode_float<const SCALED: bool, const TOP: bool>(
    d: &DecodeLane,
    src: &[u8],
    dst: &mut [f32],
    scale: f32,
) {
    let DecodeKind::Float {
        lane,
        mag_mask,
        sign_bit,
    } = d.kind
    else {
        return;
    };
    let patch = Patches::<SCALED>::new(d, scale);
    let mask = _mm512_set1_epi32(d.code_mask as i32);
    let vmag = _mm512_set1_epi32(mag_mask as i32);
    let sign_shift = _mm_cvtsi32_si128(sign_bit.leading_zeros() as i32);
    let sign_mask = _mm512_set1_epi32(if sign_bit != 0 { i32::MIN } else { 0 });
    let min_normal = _mm512_set1_epi32(1 << lane.m);
    let mant_shift = _mm_cvtsi32_si128(lane.mant_shift as i32);
    let norm_add = _mm512_set1_epi32(lane.norm_add as i32);
    let sub_scale = _mm512_set1_ps(lane.sub_scale);
    let top_from = _mm512_set1_epi32(d.top_from as i32);
    const _: () = assert!(TOP_MAGNITUDES <= 16);
    let mut table = [0u32; 16];
    table[..TOP_MAGNITUDES].copy_from_slice(&d.top);
    // SAFETY: `table` holds 16 u32.
    let top = unsafe { _mm512_loadu_si512(table.as_ptr().cast()) };
    decode_with(src, dst, |idx| {
        let c = _mm512_and_si512(idx, mask);
        let mag = _mm512_and_si512(c, vmag);
        // Subnormal (exponent field 0: mag < 2^m) or normal.
        let is_sub = _mm512_cmplt_epi32_mask(mag, min_normal);
        let sub = _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(mag), sub_scale));
        let norm = _mm512_add_epi32(_mm512_sll_epi32(mag, mant_shift), norm_add);
        let mut v = _mm512_mask_blend_epi32(is_sub, norm, sub);
        if TOP {
            // The top magnitudes (inf, NaN) from their table, by the low 4 bits of
            // `mag − top_from`.
            let t = _mm512_permutexvar_epi32(_mm512_sub_epi32(mag, top_from), top);
            v = _mm512_mask_mov_epi32(v, _mm512_cmpge_epi32_mask(mag, top_from), t);
        }
        // The code's sign bit moved to bit 31 (masked off for unsigned formats).
        let sign = _mm512_and_si512(_mm512_sll_epi32(c, sign_shift), sign_mask);
        patch.apply(c, _mm512_or_si512(v, sign))
    });
}
