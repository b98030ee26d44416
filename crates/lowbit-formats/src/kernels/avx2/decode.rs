//! Table decoding on AVX2.

use std::arch::x86_64::*;

use super::blocks;

/// Decodes bytes through a 256-entry table, times `scale` if `SCALED`. Formats of ≤ 4 bits look
/// codes up in two 8-entry halves held in registers (two `vpermps` and a blend on the code's bit
/// 3, only the low 4 bits used); wider ones gather.
#[target_feature(enable = "avx2")]
pub(crate) fn decode_lut<const SCALED: bool>(
    lut: &[f32; 256],
    bits: u32,
    src: &[u8],
    dst: &mut [f32],
    scale: f32,
) {
    let vscale = _mm256_set1_ps(scale);
    if bits <= 4 {
        // SAFETY: 16 ≤ 256 entries.
        let (t0, t1) = unsafe {
            (
                _mm256_loadu_ps(lut.as_ptr()),
                _mm256_loadu_ps(lut.as_ptr().add(8)),
            )
        };
        blocks(src, dst, |s, d| {
            let idx = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(*s)));
            let high = _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx)); // bit 3 → sign
            let v = _mm256_blendv_ps(
                _mm256_permutevar8x32_ps(t0, idx),
                _mm256_permutevar8x32_ps(t1, idx),
                high,
            );
            let v = if SCALED { _mm256_mul_ps(v, vscale) } else { v };
            // SAFETY: `d` is an 8-element array.
            unsafe { _mm256_storeu_ps(d.as_mut_ptr(), v) };
        });
        return;
    }
    blocks(src, dst, |s, d| {
        let idx = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(*s)));
        // SAFETY: indices are bytes, so < 256 = lut.len(); `d` is an 8-element array.
        let v = unsafe { _mm256_i32gather_ps::<4>(lut.as_ptr(), idx) };
        let v = if SCALED { _mm256_mul_ps(v, vscale) } else { v };
        unsafe { _mm256_storeu_ps(d.as_mut_ptr(), v) };
    });
}
