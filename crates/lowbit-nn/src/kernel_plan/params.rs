//! The kernels' parameter structs: `#[repr(C)]` mirrors of `LbFormat`, `LbScale`
//! (`kernels/codec.cuh`) and `LbGroups` (`kernels/fake_quant.cu`), built from a format,
//! conversion and spec, and their bytes as the C compiler lays them out.

use lowbit_formats::{Conversion, Encoding, Format, Overflow, Rounding};
use lowbit_quant::{E4m3Rounding, E8m0Rounding, GroupKind, Po2Rounding, QuantSpec, ScaleKind};

use crate::error::Result;

/// `LbFormat` in `kernels/codec.cuh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DevFormat {
    pub(super) is_int: i32,
    pub(super) exp_bits: i32,
    pub(super) man_bits: i32,
    pub(super) bias: i32,
    pub(super) encoding: i32,
    pub(super) int_bits: i32,
    pub(super) int_min: i32,
    pub(super) int_max: i32,
    pub(super) rounding: i32,
    pub(super) saturate: i32,
    pub(super) seed: u64,
    pub(super) fast: i32,
    pub(super) sh: u32,
    pub(super) m_zero: u32,
    pub(super) min_normal_bits: u32,
    pub(super) max_bits: u32,
    pub(super) magic: f32,
    pub(super) fnuz: i32,
    pub(super) ovf: [u32; 2],
    pub(super) inf: [u32; 2],
    pub(super) nan: [u32; 2],
}

/// `LbScale` in `kernels/codec.cuh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DevScale {
    pub(super) kind: i32,
    pub(super) rounding: i32,
    pub(super) emax: i32,
    pub(super) man_bits: i32,
    pub(super) max: f32,
    pub(super) unit: f32,
    pub(super) nvfp4_div: f32,
    pub(super) asym: i32,
}

/// `LbGroups` in `kernels/fake_quant.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DevGroups {
    pub(super) n: i64,
    pub(super) outer: i64,
    pub(super) len: i64,
    pub(super) inner: i64,
    pub(super) size: i64,
    pub(super) nb: i64,
    pub(super) n_groups: i64,
    pub(super) gran: i32,
    pub(super) pad: i32,
}

impl DevFormat {
    pub(super) fn new(format: Format, conv: Conversion) -> DevFormat {
        let (rounding, seed) = match conv.rounding {
            Rounding::NearestEven => (0, 0),
            Rounding::NearestAway => (1, 0),
            Rounding::TowardZero => (2, 0),
            Rounding::Stochastic { seed } => (3, seed),
        };
        let saturate = i32::from(conv.overflow == Overflow::Saturate);
        match format {
            Format::Float(m) => DevFormat {
                is_int: 0,
                exp_bits: m.exp_bits() as i32,
                man_bits: m.man_bits() as i32,
                bias: m.bias(),
                encoding: match m.encoding() {
                    Encoding::Ieee => 0,
                    Encoding::Fn => 1,
                    Encoding::Fnuz => 2,
                    Encoding::Finite => 3,
                    Encoding::Fnu => 4,
                },
                rounding,
                saturate,
                seed,
                ..DevFormat::fast_path(&m, conv)
            },
            Format::Int(i) => DevFormat {
                is_int: 1,
                int_bits: i.bits() as i32,
                int_min: i.min_value(),
                int_max: i.max_value(),
                rounding,
                saturate,
                seed,
                ..DevFormat::default()
            },
        }
    }
}

/// `f32` bits of `2^k`, `−149 ≤ k ≤ 127`.
fn pow2_bits(k: i32) -> u32 {
    if k >= -126 {
        ((k + 127) as u32) << 23
    } else {
        1u32 << (k + 149)
    }
}

impl DevFormat {
    /// The constants of lowbit-formats' lane fast path (`FloatLane::quantize_fast`), enabled
    /// under the same conditions: nearest-even, bias ≤ 127, not E8M0 style, the magic constant
    /// `2^(emin − m + 23)` a normal f32.
    fn fast_path(f: &lowbit_formats::MiniFloat, conv: Conversion) -> DevFormat {
        let m = f.man_bits();
        let emin = f.min_exponent();
        let magic_exp = emin - m as i32 + 23;
        let fast = conv.rounding == Rounding::NearestEven
            && f.bias() <= 127
            && f.encoding() != Encoding::Fnu
            && (-126..=127).contains(&magic_exp);
        if !fast {
            return DevFormat::default();
        }
        let special = |x: f32| {
            [
                f.decode(f.encode_with(x, conv, 0)).to_bits(),
                f.decode(f.encode_with(-x, conv, 0)).to_bits(),
            ]
        };
        DevFormat {
            fast: 1,
            sh: 23 - m,
            m_zero: u32::from(m == 0),
            min_normal_bits: pow2_bits(emin.max(-126)),
            max_bits: f.decode(f.max_magnitude_code()).to_bits(),
            magic: f32::from_bits(pow2_bits(magic_exp)),
            fnuz: i32::from(f.encoding() == Encoding::Fnuz),
            ovf: special(f32::MAX),
            inf: special(f32::INFINITY),
            nan: special(f32::NAN),
            ..DevFormat::default()
        }
    }
}

/// `E4_*` of `codec.cuh`.
fn e4m3_rounding(r: E4m3Rounding) -> i32 {
    match r {
        E4m3Rounding::Nearest => 0,
        E4m3Rounding::Up => 1,
    }
}

/// `SK_UNIT` of `codec.cuh`: no scale.
const SK_UNIT: i32 = 4;

impl DevScale {
    pub(super) fn new(spec: &QuantSpec) -> DevScale {
        let (kind, rounding) = match spec.scale() {
            ScaleKind::F32 => (0, 0),
            ScaleKind::PowerOfTwo { rounding } => (
                1,
                match rounding {
                    Po2Rounding::Floor => 0,
                    Po2Rounding::Ceil => 1,
                    Po2Rounding::Nearest => 2,
                },
            ),
            ScaleKind::E8M0 { rounding } => (
                2,
                match rounding {
                    E8m0Rounding::Floor => 0,
                    E8m0Rounding::Ceil => 1,
                    E8m0Rounding::Even => 2,
                    E8m0Rounding::RCeil => 3,
                },
            ),
            ScaleKind::Nvfp4 { block_rounding } => (3, e4m3_rounding(block_rounding)),
            ScaleKind::E4M3 { rounding } => (5, e4m3_rounding(rounding)),
        };
        DevScale {
            kind,
            rounding,
            emax: spec.element_emax(),
            man_bits: spec.element_man_bits() as i32,
            max: spec.element_max(),
            unit: spec.element_unit(),
            nvfp4_div: lowbit_quant::E4M3_MAX * spec.format().max_value(),
            asym: i32::from(spec.is_asymmetric()),
        }
    }

    /// The raw element cast: no scale at all.
    pub(super) fn unit() -> DevScale {
        DevScale {
            kind: SK_UNIT,
            ..DevScale::default()
        }
    }

    /// Whether this is the raw element cast ([`unit`](Self::unit)).
    pub(super) fn is_unit(&self) -> bool {
        self.kind == SK_UNIT
    }
}

impl DevGroups {
    /// The groups of `spec` on a tensor of shape `dims` (lowbit-quant's [`lowbit_quant::GroupLayout`], the
    /// layout the CPU engine uses), and the shape of its scales.
    pub(super) fn new(spec: &QuantSpec, dims: &[usize]) -> Result<(DevGroups, Vec<usize>)> {
        let l = spec.layout(dims)?;
        let gran = match l.kind {
            GroupKind::PerTensor => return Ok((DevGroups::per_tensor(l.n), l.scale_shape)),
            GroupKind::PerChannel => 1,
            GroupKind::Blocks => 2,
            GroupKind::Tiles => {
                // `plan` lowers tiles to blocks of the tile-major matrix before it gets here.
                return Err(crate::error::NnError::Kernel(format!(
                    "internal: {} reached the group descriptor",
                    spec.granularity()
                )));
            }
        };
        let g = DevGroups {
            n: l.n as i64,
            outer: l.outer as i64,
            len: l.len as i64,
            inner: l.inner as i64,
            size: l.block as i64,
            nb: l.blocks_per_axis as i64,
            n_groups: l.n_groups as i64,
            gran,
            pad: 0,
        };
        Ok((g, l.scale_shape))
    }

    pub(super) fn per_tensor(n: usize) -> DevGroups {
        DevGroups {
            n: n as i64,
            outer: 1,
            len: n as i64,
            inner: 1,
            size: n as i64,
            nb: 1,
            n_groups: 1,
            gran: 0,
            pad: 0,
        }
    }
}

/// Little-endian bytes of `#[repr(C)]` structs, laid out as the C compiler lays them out
/// (the host emulator copies them into the kernels' parameters).
trait LeBytes {
    fn put(&self, out: &mut Vec<u8>);
}
macro_rules! le_bytes {
    ($($t:ty),*) => {$(
        impl LeBytes for $t {
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
le_bytes!(i32, u32, f32, i64, u64);

impl DevFormat {
    pub(super) fn to_le_bytes(self) -> Vec<u8> {
        let mut b = Vec::with_capacity(std::mem::size_of::<Self>());
        for v in [
            self.is_int,
            self.exp_bits,
            self.man_bits,
            self.bias,
            self.encoding,
            self.int_bits,
            self.int_min,
            self.int_max,
            self.rounding,
            self.saturate,
        ] {
            v.put(&mut b);
        }
        self.seed.put(&mut b);
        self.fast.put(&mut b);
        for v in [self.sh, self.m_zero, self.min_normal_bits, self.max_bits] {
            v.put(&mut b);
        }
        self.magic.put(&mut b);
        self.fnuz.put(&mut b);
        for v in self.ovf.iter().chain(&self.inf).chain(&self.nan) {
            v.put(&mut b);
        }
        b.resize(std::mem::size_of::<Self>(), 0);
        b
    }
}

impl DevScale {
    pub(super) fn to_le_bytes(self) -> Vec<u8> {
        let mut b = Vec::with_capacity(std::mem::size_of::<Self>());
        for v in [self.kind, self.rounding, self.emax, self.man_bits] {
            v.put(&mut b);
        }
        for v in [self.max, self.unit, self.nvfp4_div] {
            v.put(&mut b);
        }
        self.asym.put(&mut b);
        b
    }
}

impl DevGroups {
    pub(super) fn to_le_bytes(self) -> Vec<u8> {
        let mut b = Vec::with_capacity(std::mem::size_of::<Self>());
        for v in [
            self.n,
            self.outer,
            self.len,
            self.inner,
            self.size,
            self.nb,
            self.n_groups,
        ] {
            v.put(&mut b);
        }
        self.gran.put(&mut b);
        self.pad.put(&mut b);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_bytes_have_the_c_layout() {
        assert_eq!(
            DevFormat::default().to_le_bytes().len(),
            std::mem::size_of::<DevFormat>()
        );
        assert_eq!(std::mem::size_of::<DevFormat>(), 104);
        assert_eq!(DevScale::default().to_le_bytes().len(), 32);
        assert_eq!(DevGroups::default().to_le_bytes().len(), 64);
        let f = DevFormat {
            seed: 0x0102_0304_0506_0708,
            nan: [7, 9],
            ..DevFormat::default()
        };
        let b = f.to_le_bytes();
        assert_eq!(&b[40..48], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&b[92..100], &[7, 0, 0, 0, 9, 0, 0, 0]);
    }
}
