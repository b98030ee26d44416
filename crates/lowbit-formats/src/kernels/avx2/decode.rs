//! Decoding byte codes on AVX2: register tables for formats of ≤ 4 bits, arithmetic with
//! patched codes ([`DecodeLane`]) for wider ones where it fits, else gathers.

use std::arch::x86_64::*;

use super::super::lane::{DecodeKind, DecodeLane, MAX_EXCEPTIONS, TOP_MAGNITUDES};
use super::blocks;

/// Decodes bytes through a 256-entry table, times `scale` if `SCALED`. Formats of ≤ 4 bits look
/// codes up in two 8-entry halves held in registers (two `vpermps` and a blend on the code's bit
/// 3, only the low 4 bits used); wider ones gather (callers use [`decode_arithmetic`] where
/// the format has a [`DecodeLane`]).
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

/// `DecodeLane::decode` on 8 codes at a time, times `scale` if `SCALED`: the arithmetic value
/// of each code (a minifloat's sign over `FloatLane::magnitude_value`, an integer's
/// sign-extended value), the top magnitudes from an 8-entry register table (`vpermps`), then
/// one compare and blend per patched code.
#[target_feature(enable = "avx2")]
pub(crate) fn decode_arithmetic<const SCALED: bool>(
    d: &DecodeLane,
    src: &[u8],
    dst: &mut [f32],
    scale: f32,
) {
    let vscale = _mm256_set1_ps(scale);
    let mask = _mm256_set1_epi32(d.code_mask as i32);
    let n = d.n_exceptions.min(MAX_EXCEPTIONS);
    let mut codes = [_mm256_setzero_si256(); MAX_EXCEPTIONS];
    let mut values = [_mm256_setzero_si256(); MAX_EXCEPTIONS];
    for (k, &(c, v)) in d.exceptions[..n].iter().enumerate() {
        codes[k] = _mm256_set1_epi32(c as i32);
        values[k] = _mm256_set1_epi32(v as i32);
    }
    let finish = |c: __m256i, mut v: __m256i, out: &mut [f32; 8]| {
        for k in 0..n {
            v = _mm256_blendv_epi8(v, values[k], _mm256_cmpeq_epi32(c, codes[k]));
        }
        let v = _mm256_castsi256_ps(v);
        let v = if SCALED { _mm256_mul_ps(v, vscale) } else { v };
        // SAFETY: `out` is an 8-element array.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    };
    let load = |s: &[u8; 8]| {
        let c = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(*s)));
        _mm256_and_si256(c, mask)
    };
    match d.kind {
        DecodeKind::Float {
            lane,
            mag_mask,
            sign_bit,
        } => {
            let zero = _mm256_setzero_si256();
            let (vmag, vsign) = (
                _mm256_set1_epi32(mag_mask as i32),
                _mm256_set1_epi32(sign_bit as i32),
            );
            let m = _mm_cvtsi32_si128(lane.m as i32);
            let mant_shift = _mm_cvtsi32_si128(lane.mant_shift as i32);
            let norm_add = _mm256_set1_epi32(lane.norm_add as i32);
            let sub_scale = _mm256_set1_ps(lane.sub_scale);
            let zero_mag_value = _mm256_set1_epi32(lane.zero_mag_value as i32);
            let top_from = _mm256_set1_epi32(d.top_from as i32);
            let below_top = _mm256_set1_epi32(d.top_from as i32 - 1);
            const _: () = assert!(TOP_MAGNITUDES == 8);
            // SAFETY: `top` holds 8 u32.
            let top = unsafe { _mm256_loadu_si256(d.top.as_ptr().cast()) };
            blocks(src, dst, |s, out| {
                let c = load(s);
                let mag = _mm256_and_si256(c, vmag);
                // magnitude_value: subnormal (exponent field 0) or normal.
                let e_zero = _mm256_cmpeq_epi32(_mm256_srl_epi32(mag, m), zero);
                let sub = _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(mag), sub_scale));
                let mag_zero = _mm256_cmpeq_epi32(mag, zero);
                let sub = _mm256_or_si256(sub, _mm256_and_si256(mag_zero, zero_mag_value));
                let norm = _mm256_add_epi32(_mm256_sll_epi32(mag, mant_shift), norm_add);
                let v = _mm256_blendv_epi8(norm, sub, e_zero);
                // The top magnitudes (inf, NaN) from their table, by the low 3 bits of
                // `mag − top_from`.
                let t = _mm256_permutevar8x32_epi32(top, _mm256_sub_epi32(mag, top_from));
                let v = _mm256_blendv_epi8(v, t, _mm256_cmpgt_epi32(mag, below_top));
                let neg = _mm256_cmpeq_epi32(_mm256_and_si256(c, vsign), vsign);
                let neg = _mm256_andnot_si256(_mm256_cmpeq_epi32(vsign, zero), neg);
                let v = _mm256_or_si256(v, _mm256_and_si256(neg, _mm256_set1_epi32(i32::MIN)));
                finish(c, v, out);
            });
        }
        DecodeKind::Int { bits, signed } => {
            let shift = _mm_cvtsi32_si128(if signed { 32 - bits as i32 } else { 0 });
            blocks(src, dst, |s, out| {
                let c = load(s);
                let v = _mm256_sra_epi32(_mm256_sll_epi32(c, shift), shift);
                finish(c, _mm256_castps_si256(_mm256_cvtepi32_ps(v)), out);
            });
        }
    }
}
