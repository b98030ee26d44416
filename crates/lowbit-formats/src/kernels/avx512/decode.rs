//! Table decoding on AVX-512 without gathers.

use std::arch::x86_64::*;

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
