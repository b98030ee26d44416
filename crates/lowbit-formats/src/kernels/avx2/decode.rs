//! Decoding byte codes on AVX2: register tables for formats of ≤ 4 bits, arithmetic with
//! patched codes ([`DecodeLane`]) for wider ones where it fits, else gathers.

use std::arch::x86_64::*;

use super::super::decode::{DecodeKind, DecodeLane, MAX_EXCEPTIONS, TOP_MAGNITUDES};
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
/// of each code (a minifloat's sign over its magnitude's value, an integer's sign-extended
/// value), the top magnitudes from an 8-entry register table (`vpermd`), then one compare and
/// blend per patched code.
#[target_feature(enable = "avx2")]
pub(crate) fn decode_arithmetic<const SCALED: bool>(
    d: &DecodeLane,
    src: &[u8],
    dst: &mut [f32],
    scale: f32,
) {
    let out = Finish::<SCALED>::new(d, scale);
    match d.kind {
        DecodeKind::Float { mag_mask, .. } if d.top_from <= mag_mask => {
            decode_float::<SCALED, true>(d, &out, src, dst)
        }
        DecodeKind::Float { .. } => decode_float::<SCALED, false>(d, &out, src, dst),
        DecodeKind::Int { bits, signed } => {
            let shift = _mm_cvtsi32_si128(if signed { 32 - bits as i32 } else { 0 });
            blocks(src, dst, |s, o| {
                let c = out.load(s);
                let v = _mm256_sra_epi32(_mm256_sll_epi32(c, shift), shift);
                out.store(c, _mm256_castps_si256(_mm256_cvtepi32_ps(v)), o);
            });
        }
    }
}

/// Loading codes, and the last steps of [`decode_arithmetic`]: the patched codes, the scale,
/// the store.
struct Finish<const SCALED: bool> {
    mask: __m256i,
    scale: __m256,
    n: usize,
    codes: [__m256i; MAX_EXCEPTIONS],
    values: [__m256i; MAX_EXCEPTIONS],
}

impl<const SCALED: bool> Finish<SCALED> {
    #[inline]
    #[target_feature(enable = "avx2")]
    fn new(d: &DecodeLane, scale: f32) -> Self {
        let mut f = Finish {
            mask: _mm256_set1_epi32(d.code_mask as i32),
            scale: _mm256_set1_ps(scale),
            n: d.n_exceptions.min(MAX_EXCEPTIONS),
            codes: [_mm256_setzero_si256(); MAX_EXCEPTIONS],
            values: [_mm256_setzero_si256(); MAX_EXCEPTIONS],
        };
        for (k, &(c, v)) in d.exceptions[..f.n].iter().enumerate() {
            f.codes[k] = _mm256_set1_epi32(c as i32);
            f.values[k] = _mm256_set1_epi32(v as i32);
        }
        f
    }

    /// 8 codes, only their format's bits.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn load(&self, s: &[u8; 8]) -> __m256i {
        let c = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(*s)));
        _mm256_and_si256(c, self.mask)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn store(&self, c: __m256i, mut v: __m256i, out: &mut [f32; 8]) {
        for k in 0..self.n {
            v = _mm256_blendv_epi8(v, self.values[k], _mm256_cmpeq_epi32(c, self.codes[k]));
        }
        let v = _mm256_castsi256_ps(v);
        let v = if SCALED {
            _mm256_mul_ps(v, self.scale)
        } else {
            v
        };
        // SAFETY: `out` is an 8-element array.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    }
}

/// The minifloat branch of [`decode_arithmetic`]; `TOP`: the format has top magnitudes.
#[inline]
#[target_feature(enable = "avx2")]
fn decode_float<const SCALED: bool, const TOP: bool>(
    d: &DecodeLane,
    out: &Finish<SCALED>,
    src: &[u8],
    dst: &mut [f32],
) {
    let DecodeKind::Float {
        lane,
        mag_mask,
        sign_bit,
    } = d.kind
    else {
        return;
    };
    let vmag = _mm256_set1_epi32(mag_mask as i32);
    let sign_shift = _mm_cvtsi32_si128(sign_bit.leading_zeros() as i32);
    let sign_mask = _mm256_set1_epi32(if sign_bit != 0 { i32::MIN } else { 0 });
    let min_normal = _mm256_set1_epi32(1 << lane.m);
    let mant_shift = _mm_cvtsi32_si128(lane.mant_shift as i32);
    let norm_add = _mm256_set1_epi32(lane.norm_add as i32);
    let sub_scale = _mm256_set1_ps(lane.sub_scale);
    let top_from = _mm256_set1_epi32(d.top_from as i32);
    let below_top = _mm256_set1_epi32(d.top_from as i32 - 1);
    const _: () = assert!(TOP_MAGNITUDES == 8);
    // SAFETY: `top` holds 8 u32.
    let top = unsafe { _mm256_loadu_si256(d.top.as_ptr().cast()) };
    blocks(src, dst, |s, o| {
        let c = out.load(s);
        let mag = _mm256_and_si256(c, vmag);
        // Subnormal (exponent field 0: mag < 2^m) or normal.
        let is_sub = _mm256_cmpgt_epi32(min_normal, mag);
        let sub = _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(mag), sub_scale));
        let norm = _mm256_add_epi32(_mm256_sll_epi32(mag, mant_shift), norm_add);
        let mut v = _mm256_blendv_epi8(norm, sub, is_sub);
        if TOP {
            // The top magnitudes (inf, NaN) from their table, by the low 3 bits of
            // `mag − top_from`.
            let t = _mm256_permutevar8x32_epi32(top, _mm256_sub_epi32(mag, top_from));
            v = _mm256_blendv_epi8(v, t, _mm256_cmpgt_epi32(mag, below_top));
        }
        // The code's sign bit moved to bit 31 (masked off for unsigned formats).
        let sign = _mm256_and_si256(_mm256_sll_epi32(c, sign_shift), sign_mask);
        out.store(c, _mm256_or_si256(v, sign), o);
    });
}
