//! Bit packing of sub-byte codes.
//!
//! One layout for every width: element `i` occupies bits `[i·b, (i+1)·b)` of a little-endian
//! bit stream. So FP4/INT4 pack two per byte with element `2i` in the low nibble, INT2 four
//! per byte with element `4i + k` in bits `2k..2k+2`, and FP6 four values in three bytes
//! (element 0 in bits 0–5 of byte 0, element 1 in bits 6–11, …): the layouts of ml_dtypes'
//! packed int4 and of the OCP MX reference code. Byte-aligned widths (4, 2, 8) take fast paths;
//! the generic path serves the rest.

use crate::error::{FormatError, Result};

/// Bytes needed to pack `n` codes of `bits` bits. Saturates at `usize::MAX / 8` where
/// `n · bits` overflows (no buffer can be that long, so a length check against it fails, as
/// it should).
pub const fn packed_len(bits: u32, n: usize) -> usize {
    n.saturating_mul(bits as usize).div_ceil(8)
}

fn check(bits: u32) -> Result<()> {
    if (1..=8).contains(&bits) {
        Ok(())
    } else {
        Err(FormatError::PackWidth { bits })
    }
}

/// Packs `codes` (one per byte, in the low `bits` bits; higher bits are ignored) into `dst`,
/// which must be exactly [`packed_len`]`(bits, codes.len())` bytes. Unused trailing bits are 0.
pub fn pack(bits: u32, codes: &[u8], dst: &mut [u8]) -> Result<()> {
    check(bits)?;
    let want = packed_len(bits, codes.len());
    if dst.len() != want {
        return Err(FormatError::LengthMismatch {
            op: "pack",
            what: "dst",
            expected: want,
            got: dst.len(),
        });
    }
    let mask = ((1u16 << bits) - 1) as u8;
    match bits {
        8 => dst.copy_from_slice(codes),
        4 => {
            // Eight codes per u64: nibbles paired within each 16-bit lane, then the four low
            // bytes of the lanes gathered into 32 bits.
            let (words, rest) = codes.as_chunks::<8>();
            let (out, _) = dst.as_chunks_mut::<4>();
            for (d, w) in out.iter_mut().zip(words) {
                let x = u64::from_le_bytes(*w) & 0x0F0F_0F0F_0F0F_0F0F;
                let t = (x | (x >> 4)) & 0x00FF_00FF_00FF_00FF;
                let t = (t | (t >> 8)) & 0x0000_FFFF_0000_FFFF;
                *d = ((t | (t >> 16)) as u32).to_le_bytes();
            }
            let dst = &mut dst[4 * words.len()..];
            let (pairs, tail) = rest.as_chunks::<2>();
            for (d, p) in dst.iter_mut().zip(pairs) {
                *d = (p[0] & 0xF) | (p[1] << 4);
            }
            if let [last] = tail {
                dst[pairs.len()] = last & 0xF;
            }
        }
        2 => {
            let (quads, tail) = codes.as_chunks::<4>();
            for (d, q) in dst.iter_mut().zip(quads) {
                *d = (q[0] & 3) | ((q[1] & 3) << 2) | ((q[2] & 3) << 4) | (q[3] << 6);
            }
            if !tail.is_empty() {
                let mut b = 0u8;
                for (k, c) in tail.iter().enumerate() {
                    b |= (c & 3) << (2 * k);
                }
                dst[quads.len()] = b;
            }
        }
        _ => {
            dst.fill(0);
            let mut acc: u32 = 0;
            let mut nacc = 0u32;
            let mut out = 0usize;
            for &c in codes {
                acc |= ((c & mask) as u32) << nacc;
                nacc += bits;
                while nacc >= 8 {
                    dst[out] = acc as u8;
                    out += 1;
                    acc >>= 8;
                    nacc -= 8;
                }
            }
            if nacc > 0 {
                dst[out] = acc as u8;
            }
        }
    }
    Ok(())
}

/// Unpacks `dst.len()` codes of `bits` bits from `src`, which must be exactly
/// [`packed_len`]`(bits, dst.len())` bytes. Each code lands in the low bits of its byte.
pub fn unpack(bits: u32, src: &[u8], dst: &mut [u8]) -> Result<()> {
    check(bits)?;
    let want = packed_len(bits, dst.len());
    if src.len() != want {
        return Err(FormatError::LengthMismatch {
            op: "unpack",
            what: "src",
            expected: want,
            got: src.len(),
        });
    }
    let mask = ((1u16 << bits) - 1) as u8;
    match bits {
        8 => dst.copy_from_slice(src),
        4 => {
            let (pairs, tail) = dst.as_chunks_mut::<2>();
            let n = pairs.len();
            for (p, s) in pairs.iter_mut().zip(src) {
                *p = [s & 0xF, s >> 4];
            }
            if let [last] = tail {
                *last = src[n] & 0xF;
            }
        }
        _ => {
            let mut acc: u32 = 0;
            let mut nacc = 0u32;
            let mut bytes = src.iter();
            for d in dst.iter_mut() {
                while nacc < bits {
                    acc |= (*bytes.next().unwrap_or(&0) as u32) << nacc;
                    nacc += 8;
                }
                *d = acc as u8 & mask;
                acc >>= bits;
                nacc -= bits;
            }
        }
    }
    Ok(())
}

/// Packs codes into a new vector.
pub fn pack_to_vec(bits: u32, codes: &[u8]) -> Result<Vec<u8>> {
    let mut v = vec![0u8; packed_len(bits, codes.len())];
    pack(bits, codes, &mut v)?;
    Ok(v)
}

/// Unpacks `n` codes into a new vector.
pub fn unpack_to_vec(bits: u32, src: &[u8], n: usize) -> Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    unpack(bits, src, &mut v)?;
    Ok(v)
}
