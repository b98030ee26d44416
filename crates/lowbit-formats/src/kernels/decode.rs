//! Byte codes decoded by arithmetic ([`DecodeLane`]): the scalar twin of the SIMD decoders in
//! `avx2/decode.rs` and `avx512/decode.rs`.

use crate::format::Format;
use crate::rounding::Conversion;

use super::lane::FloatLane;

/// Most magnitudes at the top of a minifloat's range a [`DecodeLane`] takes from its small
/// table (one 8-entry register lookup), and most single codes it patches after that (a compare
/// and a blend each per vector).
pub(crate) const TOP_MAGNITUDES: usize = 8;
pub(crate) const MAX_EXCEPTIONS: usize = 4;

/// Byte codes decoded by arithmetic instead of a table lookup (for SIMD levels where a
/// 256-entry lookup means gathers): a minifloat's sign bit over the value of its magnitude
/// bits (as [`FloatLane::magnitude_value`], but code 0 always 0), an integer's sign-extended
/// value. The arithmetic is wrong only for special codes, which come from the table: the
/// magnitudes from `top_from` up (inf and NaN of IEEE-style formats, `S.1111.111` NaN, E8M0's
/// NaN), at most [`TOP_MAGNITUDES`], as magnitudes with the code's sign put on; then at most
/// [`MAX_EXCEPTIONS`] single codes (FNUZ's NaN at the negative-zero code, E8M0's 2⁻¹²⁷ at
/// code 0). Built from the
/// table and checked against it on every code, so it is `None` rather than wrong when a format
/// does not fit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DecodeLane {
    /// `(1 << bits) − 1`: only these bits of a code are read.
    pub code_mask: u32,
    pub kind: DecodeKind,
    /// The first magnitude taken from `top` (above the largest magnitude: none).
    pub top_from: u32,
    /// `f32` bits of magnitudes `top_from ..` (positive codes).
    pub top: [u32; TOP_MAGNITUDES],
    /// `(code, f32 bits)` of the codes patched last; the first `n_exceptions` count.
    pub exceptions: [(u32, u32); MAX_EXCEPTIONS],
    pub n_exceptions: usize,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum DecodeKind {
    /// Sign bit `sign_bit` (0 if unsigned) over the magnitude bits `mag_mask`.
    Float {
        lane: FloatLane,
        mag_mask: u32,
        sign_bit: u32,
    },
    /// Two's complement (`signed`) or unsigned integers of `bits` bits.
    Int { bits: u32, signed: bool },
}

impl DecodeLane {
    /// The arithmetic decoder of a format of at most 8 bits whose table is `lut`, or `None`
    /// (bias > 127, or more special codes than fit).
    pub fn new(format: &Format, lut: &[f32; 256]) -> Option<DecodeLane> {
        let bits = format.bits();
        if bits > 8 {
            return None;
        }
        let kind = match format {
            Format::Float(f) => DecodeKind::Float {
                lane: FloatLane::new(f, Conversion::REFERENCE)?,
                mag_mask: f.magnitude_mask(),
                sign_bit: if f.is_signed() { f.sign_bit() } else { 0 },
            },
            Format::Int(i) => DecodeKind::Int {
                bits,
                signed: i.is_signed(),
            },
        };
        let code_mask = (1u32 << bits) - 1;
        let mut d = DecodeLane {
            code_mask,
            kind,
            top_from: code_mask + 1,
            top: [0; TOP_MAGNITUDES],
            exceptions: [(0, 0); MAX_EXCEPTIONS],
            n_exceptions: 0,
        };
        let want = |c: u32| lut[c as usize].to_bits();
        if let DecodeKind::Float { mag_mask, .. } = kind {
            // The top range: from the smallest positive code the arithmetic gets wrong.
            if let Some(first) = (0..=mag_mask).find(|&c| d.arithmetic(c) != want(c))
                && mag_mask - first < TOP_MAGNITUDES as u32
            {
                d.top_from = first;
                for (k, t) in d.top.iter_mut().enumerate() {
                    *t = want((first + k as u32).min(mag_mask));
                }
            }
        }
        for code in 0..=code_mask {
            if d.patched(code) != want(code) {
                *d.exceptions.get_mut(d.n_exceptions)? = (code, want(code));
                d.n_exceptions += 1;
            }
        }
        Some(d)
    }

    /// The `f32` bits the arithmetic gives for `code` (masked), before any table value.
    #[inline(always)]
    pub fn arithmetic(&self, code: u32) -> u32 {
        match self.kind {
            DecodeKind::Float {
                lane,
                mag_mask,
                sign_bit,
            } => {
                let sign = if code & sign_bit != 0 { 0x8000_0000 } else { 0 };
                let mag = code & mag_mask;
                let value = if mag >> lane.m == 0 {
                    (mag as f32 * lane.sub_scale).to_bits()
                } else {
                    (mag << lane.mant_shift).wrapping_add(lane.norm_add)
                };
                value | sign
            }
            DecodeKind::Int { bits, signed } => {
                let v = if signed {
                    ((code << (32 - bits)) as i32) >> (32 - bits)
                } else {
                    code as i32
                };
                (v as f32).to_bits()
            }
        }
    }

    /// [`arithmetic`](Self::arithmetic) with the top magnitudes from their table (the sign
    /// put on), before the single-code exceptions.
    #[inline(always)]
    fn patched(&self, code: u32) -> u32 {
        let v = self.arithmetic(code);
        match self.kind {
            DecodeKind::Float {
                mag_mask, sign_bit, ..
            } if code & mag_mask >= self.top_from => {
                let sign = if code & sign_bit != 0 { 0x8000_0000 } else { 0 };
                self.top[((code & mag_mask) - self.top_from) as usize % TOP_MAGNITUDES] | sign
            }
            _ => v,
        }
    }

    /// Decodes one code (bits above the format's width ignored): the scalar twin of the SIMD
    /// decoders, checked against the format's own decode in this module's tests.
    #[cfg(test)]
    pub fn decode(&self, code: u32) -> f32 {
        let c = code & self.code_mask;
        let mut v = self.patched(c);
        for &(e, bits) in &self.exceptions[..self.n_exceptions] {
            if c == e {
                v = bits;
            }
        }
        f32::from_bits(v)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn decode_lane_equals_format_decode_on_every_byte() {
        let with = [
            "e4m3fn",
            "e5m2",
            "e4m3fnuz",
            "e5m2fnuz",
            "e2m3",
            "e3m2",
            "e8m0",
            "e4m3_b11_fnuz",
            "e2m2",
            "e1m0",
            "int8",
            "int8_full",
            "int5",
            "uint8",
            "uint6",
        ];
        // 32 inf/NaN codes (IEEE-style with 3 exponent bits and 4 mantissa bits) or a bias
        // above 127: the table stays.
        let without = ["e3m4", "e8m3_b140"];
        for name in with.iter().chain(&without) {
            let f: Format = name.parse().unwrap();
            let mut lut = [0.0f32; 256];
            for (c, v) in lut.iter_mut().enumerate() {
                *v = f.decode(c as u32);
            }
            let d = DecodeLane::new(&f, &lut);
            assert_eq!(
                d.is_some(),
                with.contains(name),
                "{name}: arithmetic decoder or not"
            );
            if let Some(d) = d {
                for code in 0..=255u32 {
                    assert_eq!(
                        d.decode(code).to_bits(),
                        f.decode(code).to_bits(),
                        "{name}: code {code:#04x}"
                    );
                }
            }
        }
    }
}
