//! [`Codec`]: a format plus a conversion, prepared for slices, on the best (or a forced)
//! instruction set, split across threads for large inputs.

use std::sync::OnceLock;

use rayon::prelude::*;

use crate::error::{FormatError, Result};
use crate::format::Format;
use crate::kernels::Isa;
use crate::kernels::decode::DecodeLane;
use crate::kernels::lane::{AWAY, Lane, RNE, StochasticLane, ZERO};
use crate::rounding::{Conversion, Rounding, stochastic_bits};

/// Elements per parallel work item. Fixed, so the split never depends on the thread count
/// (and stochastic rounding indexes elements globally anyway).
const CHUNK: usize = 1 << 15;
/// Slices shorter than this stay on the calling thread.
const PARALLEL_MIN: usize = 1 << 17;
/// Outputs at least this long (elements: 16 MiB of f32, 4 MiB of byte codes) are written with
/// non-temporal stores where the kernel supports it: they would not stay in cache anyway, and
/// streaming saves the read-for-ownership of the destination (memcpy does the same).
const STREAM_MIN: usize = 1 << 22;

/// A prepared converter: a [`Format`], a [`Conversion`], an instruction-set level and a
/// threading choice.
///
/// ```
/// use lowbit_formats::{Codec, Conversion, Format, Isa};
/// let codec = Codec::new(Format::E4M3FN, Conversion::SATURATE);
/// let x = [0.3f32, 1000.0, -0.0, f32::NAN];
/// let mut q = [0.0f32; 4];
/// codec.quantize_slice(&x, &mut q)?;
/// assert_eq!(q[..3], [0.3125, 448.0, -0.0]);
/// // Every level gives the same bits; force one to compare or benchmark.
/// let scalar = codec.clone().with_isa(Isa::Scalar)?;
/// let mut q2 = [0.0f32; 4];
/// scalar.quantize_slice(&x, &mut q2)?;
/// assert_eq!(q.map(f32::to_bits), q2.map(f32::to_bits));
/// # Ok::<(), lowbit_formats::FormatError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Codec {
    format: Format,
    conv: Conversion,
    isa: Isa,
    parallel: bool,
    streaming: bool,
    lane: Option<Lane>,
    /// Stochastic rounding on the lane kernels (`lane` is then `None`).
    stochastic: Option<StochasticLane>,
    /// The byte-code decoder, built on the first decode (quantizing and encoding codecs,
    /// one per fake-quant call, never need it).
    decoder: OnceLock<Decoder>,
}

/// How a codec decodes byte codes.
#[derive(Clone, Debug)]
struct Decoder {
    /// `lut[c]` = the value of code `c` (its low `bits` bits).
    lut: Box<[f32; 256]>,
    /// Arithmetic decoding on the SIMD levels (formats of 5 to 8 bits), instead of gathers
    /// (AVX2) or a permutation tree (AVX-512) over `lut`.
    lane: Option<DecodeLane>,
}

impl Decoder {
    fn new(format: &Format) -> Decoder {
        let mut lut = Box::new([0.0f32; 256]);
        for (c, v) in lut.iter_mut().enumerate() {
            *v = format.decode(c as u32);
        }
        let lane = (format.bits() > 4)
            .then(|| DecodeLane::new(format, &lut))
            .flatten();
        Decoder { lut, lane }
    }
}

macro_rules! simd_dispatch {
    ($module:ident :: $kernel:ident, $round:expr, $scaled:expr, ($($arg:expr),*)) => {
        // SAFETY (for the callers of this macro): a Codec only holds an Isa that passed
        // `Isa::require`, so the CPU has the target features of `$module`.
        match ($round, $scaled) {
            (RNE, false) => unsafe { crate::kernels::$module::$kernel::<RNE, false>($($arg),*) },
            (RNE, true) => unsafe { crate::kernels::$module::$kernel::<RNE, true>($($arg),*) },
            (AWAY, false) => unsafe { crate::kernels::$module::$kernel::<AWAY, false>($($arg),*) },
            (AWAY, true) => unsafe { crate::kernels::$module::$kernel::<AWAY, true>($($arg),*) },
            (_, false) => unsafe { crate::kernels::$module::$kernel::<ZERO, false>($($arg),*) },
            (_, true) => unsafe { crate::kernels::$module::$kernel::<ZERO, true>($($arg),*) },
        }
    };
}

impl Codec {
    /// A codec on the best instruction set of this CPU, threaded for large slices.
    pub fn new(format: Format, conv: Conversion) -> Codec {
        Codec {
            format,
            conv,
            isa: Isa::detect(),
            parallel: true,
            streaming: false,
            lane: Lane::new(&format, conv),
            stochastic: StochasticLane::new(&format, conv),
            decoder: OnceLock::new(),
        }
    }

    /// Forces an instruction-set level (errors if this CPU lacks it).
    pub fn with_isa(mut self, isa: Isa) -> Result<Codec> {
        self.isa = isa.require()?;
        Ok(self)
    }

    /// Writes the outputs of [`quantize_blocks_scaled`](Self::quantize_blocks_scaled) and
    /// [`quantize_blocks_fused`](Self::quantize_blocks_fused) with non-temporal stores
    /// (AVX-512), bypassing the caches: for callers that process a large tensor chunk by chunk
    /// and will not read the result soon. (`quantize_slice` and
    /// `quantize_scaled_slice` stream on their own from 16 MiB of output.) Off by default.
    pub fn with_streaming(mut self, streaming: bool) -> Codec {
        self.streaming = streaming;
        self
    }

    /// Allows (`true`, the default) or forbids splitting large slices across rayon's threads.
    pub fn with_parallel(mut self, parallel: bool) -> Codec {
        self.parallel = parallel;
        self
    }

    /// The format.
    pub fn format(&self) -> Format {
        self.format
    }
    /// The conversion.
    pub fn conversion(&self) -> Conversion {
        self.conv
    }
    /// The instruction-set level in use.
    pub fn isa(&self) -> Isa {
        self.isa
    }
    /// Whether this conversion runs on the SIMD lane kernels; `false` means the scalar
    /// reference runs (a minifloat with bias > 127, or E8M0 under a rule other than
    /// nearest-even).
    pub fn is_vectorized(&self) -> bool {
        self.lane.is_some() || self.stochastic.is_some()
    }

    /// The random word of element `index` (0 for the deterministic rules).
    #[inline]
    fn rand(&self, index: u64) -> u32 {
        match self.conv.rounding {
            Rounding::Stochastic { seed } => stochastic_bits(seed, index),
            _ => 0,
        }
    }

    fn split<T: Sync, U: Send>(
        &self,
        op: &'static str,
        src: &[T],
        dst: &mut [U],
        first: u64,
        f: impl Fn(&[T], &mut [U], u64) + Sync,
    ) -> Result<()> {
        if src.len() != dst.len() {
            return Err(FormatError::LengthMismatch {
                op,
                what: "dst",
                expected: src.len(),
                got: dst.len(),
            });
        }
        if self.parallel && src.len() >= PARALLEL_MIN {
            src.par_chunks(CHUNK)
                .zip(dst.par_chunks_mut(CHUNK))
                .enumerate()
                .for_each(|(k, (s, d))| f(s, d, first + (k * CHUNK) as u64));
        } else {
            f(src, dst, first);
        }
        Ok(())
    }

    /// Fake-quantizes: `dst[i] = decode(encode(src[i]))`. Stochastic rounding numbers the
    /// elements from 0.
    pub fn quantize_slice(&self, src: &[f32], dst: &mut [f32]) -> Result<()> {
        self.split("quantize_slice", src, dst, 0, |s, d, first| {
            self.quantize_chunk::<false>(s, d, 1.0, 1.0, first, src.len() >= STREAM_MIN)
        })
    }

    /// Fake-quantizes with a scale: `dst[i] = q(src[i] · (1/scale)) · scale`, the reciprocal
    /// computed once in `f32` (PyTorch's `fake_quantize` convention). Stochastic rounding
    /// numbers the elements from `first_index`.
    pub fn quantize_scaled_slice(
        &self,
        src: &[f32],
        dst: &mut [f32],
        scale: f32,
        first_index: u64,
    ) -> Result<()> {
        let inv = 1.0 / scale;
        self.split(
            "quantize_scaled_slice",
            src,
            dst,
            first_index,
            |s, d, first| {
                self.quantize_chunk::<true>(s, d, inv, scale, first, src.len() >= STREAM_MIN)
            },
        )
    }

    fn quantize_chunk<const SCALED: bool>(
        &self,
        src: &[f32],
        dst: &mut [f32],
        inv: f32,
        scale: f32,
        first: u64,
        stream: bool,
    ) {
        match (&self.lane, self.isa) {
            #[cfg(target_arch = "x86_64")]
            (Some(Lane::Float(p)), Isa::Avx512) => simd_dispatch!(
                avx512::quantize_float,
                p.rounding,
                SCALED,
                (p, src, dst, inv, scale, stream)
            ),
            #[cfg(target_arch = "x86_64")]
            (Some(Lane::Int(p)), Isa::Avx512) => simd_dispatch!(
                avx512::quantize_int,
                p.rounding,
                SCALED,
                (p, src, dst, inv, scale, stream)
            ),
            #[cfg(target_arch = "x86_64")]
            (Some(Lane::Float(p)), Isa::Avx2) => simd_dispatch!(
                avx2::quantize_float,
                p.rounding,
                SCALED,
                (p, src, dst, inv, scale)
            ),
            #[cfg(target_arch = "x86_64")]
            (Some(Lane::Int(p)), Isa::Avx2) => simd_dispatch!(
                avx2::quantize_int,
                p.rounding,
                SCALED,
                (p, src, dst, inv, scale)
            ),
            (Some(lane), _) => {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = if SCALED {
                        lane.quantize(s * inv) * scale
                    } else {
                        lane.quantize(s)
                    };
                }
            }
            // SAFETY: the Codec's Isa passed `Isa::require`.
            (None, isa) if let Some(sr) = &self.stochastic => unsafe {
                crate::kernels::stochastic::quantize::<SCALED>(isa, sr, src, dst, inv, scale, first)
            },
            (None, _) => {
                for (i, (d, &s)) in dst.iter_mut().zip(src).enumerate() {
                    let x = if SCALED { s * inv } else { s };
                    let q = self
                        .format
                        .quantize_with(x, self.conv, self.rand(first + i as u64));
                    *d = if SCALED { q * scale } else { q };
                }
            }
        }
    }

    /// Fake-quantizes consecutive blocks of `block` elements, block `k` with its own scale
    /// `scales[k]`: `dst[i] = q(src[i] · (1/s)) · s` with `s = scales[i / block]` (the reciprocal
    /// computed once per block in `f32`), the fused kernel of MX/NVFP4/grouped quantizers. The
    /// last block may be shorter; `scales.len()` must be `ceil(src.len() / block)`. Stochastic
    /// rounding numbers the elements from `first_index`.
    pub fn quantize_blocks_scaled(
        &self,
        src: &[f32],
        dst: &mut [f32],
        block: usize,
        scales: &[f32],
        first_index: u64,
    ) -> Result<()> {
        if block == 0 {
            return Err(FormatError::LengthMismatch {
                op: "quantize_blocks_scaled",
                what: "block",
                expected: 1,
                got: 0,
            });
        }
        let nblocks = src.len().div_ceil(block);
        if scales.len() != nblocks {
            return Err(FormatError::LengthMismatch {
                op: "quantize_blocks_scaled",
                what: "scales",
                expected: nblocks,
                got: scales.len(),
            });
        }
        if src.len() != dst.len() {
            return Err(FormatError::LengthMismatch {
                op: "quantize_blocks_scaled",
                what: "dst",
                expected: src.len(),
                got: dst.len(),
            });
        }
        let per = block * (CHUNK / block).max(1);
        let run = |s: &[f32], d: &mut [f32], sc: &[f32], first: u64| {
            self.quantize_blocks_chunk(s, d, block, sc, first)
        };
        if self.parallel && src.len() >= PARALLEL_MIN {
            src.par_chunks(per)
                .zip(dst.par_chunks_mut(per))
                .zip(scales.par_chunks(per / block))
                .enumerate()
                .for_each(|(k, ((s, d), sc))| run(s, d, sc, first_index + (k * per) as u64));
        } else {
            run(src, dst, scales, first_index);
        }
        Ok(())
    }

    /// Fake-quantizes consecutive blocks of `block` elements with scales taken from the blocks
    /// themselves, in one pass over memory. The blocks go by in groups (up to 16 blocks, and
    /// at most about 32 KiB, so a group stays in L1): their maxima of `|x|` (computed as
    /// [`abs_max_blocks`] does: on bit patterns, NaN above inf above numbers) are handed to
    /// `scales_of(k0, amax, scales)`, which writes the scale `s` of blocks `k0, k0 + 1, …`
    /// into `scales` (as long as `amax`), and each block is written as
    /// `dst[i] = q(src[i] · (1/s)) · s` — bit for bit what [`abs_max_blocks`], the same scales
    /// and [`quantize_blocks_scaled`](Self::quantize_blocks_scaled) give, with the group
    /// re-read from L1 instead of memory.
    ///
    /// Runs on the calling thread, calling `scales_of` for the groups in order (callers split
    /// large tensors across threads themselves); non-temporal stores with
    /// [`with_streaming`](Self::with_streaming). Stochastic rounding numbers the elements from
    /// `first_index`.
    pub fn quantize_blocks_fused(
        &self,
        src: &[f32],
        dst: &mut [f32],
        block: usize,
        first_index: u64,
        scales_of: impl FnMut(usize, &[f32], &mut [f32]),
    ) -> Result<()> {
        self.blocks_fused::<false>(
            "quantize_blocks_fused",
            src,
            dst,
            block,
            first_index,
            scales_of,
        )
    }

    /// [`quantize_blocks_fused`](Self::quantize_blocks_fused) with the elements divided by
    /// their block's scale: `dst[i] = q(src[i] / s) · s`, one IEEE division per element
    /// (torchao's NVFP4 convention) instead of the product with the reciprocal. One pass over
    /// memory on AVX-512 (non-stochastic float formats); elsewhere groups of blocks: their
    /// maxima, `scales_of`, the quotients into a buffer, the unscaled quantizer, the products.
    /// Bit for bit the same on every level.
    pub fn quantize_blocks_fused_div(
        &self,
        src: &[f32],
        dst: &mut [f32],
        block: usize,
        first_index: u64,
        scales_of: impl FnMut(usize, &[f32], &mut [f32]),
    ) -> Result<()> {
        self.blocks_fused::<true>(
            "quantize_blocks_fused_div",
            src,
            dst,
            block,
            first_index,
            scales_of,
        )
    }

    /// [`quantize_blocks_fused`](Self::quantize_blocks_fused) (`DIV` false) and
    /// [`quantize_blocks_fused_div`](Self::quantize_blocks_fused_div) (`DIV` true).
    fn blocks_fused<const DIV: bool>(
        &self,
        op: &'static str,
        src: &[f32],
        dst: &mut [f32],
        block: usize,
        first_index: u64,
        mut scales_of: impl FnMut(usize, &[f32], &mut [f32]),
    ) -> Result<()> {
        if block == 0 {
            return Err(FormatError::LengthMismatch {
                op,
                what: "block",
                expected: 1,
                got: 0,
            });
        }
        if src.len() != dst.len() {
            return Err(FormatError::LengthMismatch {
                op,
                what: "dst",
                expected: src.len(),
                got: dst.len(),
            });
        }
        let f = &mut scales_of;
        let stream = self.streaming;
        match (&self.lane, self.isa) {
            // SAFETY: the Codec's Isa passed `Isa::require`.
            #[cfg(target_arch = "x86_64")]
            (Some(Lane::Float(p)), Isa::Avx512) => match p.rounding {
                RNE => unsafe {
                    crate::kernels::avx512::quantize_float_blocks_fused::<RNE, DIV>(
                        p, src, dst, block, stream, f,
                    )
                },
                AWAY => unsafe {
                    crate::kernels::avx512::quantize_float_blocks_fused::<AWAY, DIV>(
                        p, src, dst, block, stream, f,
                    )
                },
                _ => unsafe {
                    crate::kernels::avx512::quantize_float_blocks_fused::<ZERO, DIV>(
                        p, src, dst, block, stream, f,
                    )
                },
            },
            _ if DIV => {
                // Groups of blocks: maxima, scales, the quotients into a buffer, the unscaled
                // quantizer, the products.
                const GROUP: usize = 16;
                let per = (8192 / block).clamp(1, GROUP) * block;
                let (mut amax, mut scale) = ([0.0f32; GROUP], [0.0f32; GROUP]);
                let mut buf = [0.0f32; 8192];
                for (gi, (s, d)) in src.chunks(per).zip(dst.chunks_mut(per)).enumerate() {
                    let g = s.len().div_ceil(block);
                    let (amax, scale) = (&mut amax[..g], &mut scale[..g]);
                    abs_max_blocks_on(self.isa, s, block, amax)?;
                    f(gi * (per / block), amax, scale);
                    let at = first_index + (gi * per) as u64;
                    if s.len() <= buf.len() {
                        let t = &mut buf[..s.len()];
                        for ((tb, sb), &e) in t.chunks_mut(block).zip(s.chunks(block)).zip(&*scale)
                        {
                            tb.iter_mut().zip(sb).for_each(|(t, x)| *t = x / e);
                        }
                        self.quantize_chunk::<false>(t, d, 1.0, 1.0, at, false);
                        for (db, &e) in d.chunks_mut(block).zip(&*scale) {
                            db.iter_mut().for_each(|v| *v *= e);
                        }
                    } else {
                        // One block longer than the buffer, in pieces.
                        let e = scale[0];
                        for (k, (sp, dp)) in
                            s.chunks(buf.len()).zip(d.chunks_mut(buf.len())).enumerate()
                        {
                            let t = &mut buf[..sp.len()];
                            t.iter_mut().zip(sp).for_each(|(t, x)| *t = x / e);
                            let at = at + (k * 8192) as u64;
                            self.quantize_chunk::<false>(t, dp, 1.0, 1.0, at, false);
                            dp.iter_mut().for_each(|v| *v *= e);
                        }
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            (Some(Lane::Int(p)), Isa::Avx512) => match p.rounding {
                RNE => unsafe {
                    crate::kernels::avx512::quantize_int_blocks_fused::<RNE>(
                        p, src, dst, block, stream, f,
                    )
                },
                AWAY => unsafe {
                    crate::kernels::avx512::quantize_int_blocks_fused::<AWAY>(
                        p, src, dst, block, stream, f,
                    )
                },
                _ => unsafe {
                    crate::kernels::avx512::quantize_int_blocks_fused::<ZERO>(
                        p, src, dst, block, stream, f,
                    )
                },
            },
            // SAFETY: the Codec's Isa passed `Isa::require`.
            #[cfg(target_arch = "x86_64")]
            (Some(Lane::Float(p)), Isa::Avx2) => match p.rounding {
                RNE => unsafe {
                    crate::kernels::avx2::quantize_float_blocks_fused::<RNE>(p, src, dst, block, f)
                },
                AWAY => unsafe {
                    crate::kernels::avx2::quantize_float_blocks_fused::<AWAY>(p, src, dst, block, f)
                },
                _ => unsafe {
                    crate::kernels::avx2::quantize_float_blocks_fused::<ZERO>(p, src, dst, block, f)
                },
            },
            #[cfg(target_arch = "x86_64")]
            (Some(Lane::Int(p)), Isa::Avx2) => match p.rounding {
                RNE => unsafe {
                    crate::kernels::avx2::quantize_int_blocks_fused::<RNE>(p, src, dst, block, f)
                },
                AWAY => unsafe {
                    crate::kernels::avx2::quantize_int_blocks_fused::<AWAY>(p, src, dst, block, f)
                },
                _ => unsafe {
                    crate::kernels::avx2::quantize_int_blocks_fused::<ZERO>(p, src, dst, block, f)
                },
            },
            _ => {
                // Groups of blocks on this level's kernels: the maxima of a group in one call,
                // its scales, then its outputs in one call (the group is re-read from cache).
                const GROUP: usize = 16;
                let per = (8192 / block).clamp(1, GROUP) * block;
                let (mut amax, mut scale) = ([0.0f32; GROUP], [0.0f32; GROUP]);
                let groups = src.chunks(per).zip(dst.chunks_mut(per));
                for (gi, (s, d)) in groups.enumerate() {
                    let g = s.len().div_ceil(block);
                    let (amax, scale) = (&mut amax[..g], &mut scale[..g]);
                    abs_max_blocks_on(self.isa, s, block, amax)?;
                    f(gi * (per / block), amax, scale);
                    let at = first_index + (gi * per) as u64;
                    self.quantize_blocks_chunk(s, d, block, scale, at);
                }
            }
        }
        Ok(())
    }

    fn quantize_blocks_chunk(
        &self,
        src: &[f32],
        dst: &mut [f32],
        block: usize,
        scales: &[f32],
        first: u64,
    ) {
        match (&self.lane, self.isa) {
            // SAFETY: the Codec's Isa passed `Isa::require`.
            #[cfg(target_arch = "x86_64")]
            (Some(Lane::Float(p)), Isa::Avx512) => match p.rounding {
                RNE => unsafe {
                    crate::kernels::avx512::quantize_float_blocks::<RNE>(
                        p,
                        src,
                        dst,
                        block,
                        scales,
                        self.streaming,
                    )
                },
                AWAY => unsafe {
                    crate::kernels::avx512::quantize_float_blocks::<AWAY>(
                        p,
                        src,
                        dst,
                        block,
                        scales,
                        self.streaming,
                    )
                },
                _ => unsafe {
                    crate::kernels::avx512::quantize_float_blocks::<ZERO>(
                        p,
                        src,
                        dst,
                        block,
                        scales,
                        self.streaming,
                    )
                },
            },
            #[cfg(target_arch = "x86_64")]
            (Some(Lane::Float(p)), Isa::Avx2) => match p.rounding {
                RNE => unsafe {
                    crate::kernels::avx2::quantize_float_blocks::<RNE>(p, src, dst, block, scales)
                },
                AWAY => unsafe {
                    crate::kernels::avx2::quantize_float_blocks::<AWAY>(p, src, dst, block, scales)
                },
                _ => unsafe {
                    crate::kernels::avx2::quantize_float_blocks::<ZERO>(p, src, dst, block, scales)
                },
            },
            // SAFETY: the Codec's Isa passed `Isa::require`.
            (None, isa) if let Some(sr) = &self.stochastic => unsafe {
                crate::kernels::stochastic::quantize_blocks(isa, sr, src, dst, block, scales, first)
            },
            _ => {
                for (k, ((s, d), &scale)) in src
                    .chunks(block)
                    .zip(dst.chunks_mut(block))
                    .zip(scales)
                    .enumerate()
                {
                    self.quantize_chunk::<true>(
                        s,
                        d,
                        1.0 / scale,
                        scale,
                        first + (k * block) as u64,
                        false,
                    );
                }
            }
        }
    }

    fn check_byte_codes(&self, op: &'static str) -> Result<()> {
        if self.format.bits() > 8 {
            return Err(FormatError::CodeTooWide {
                format: self.format.to_string(),
                bits: self.format.bits(),
                container: "u8",
                hint: if op.starts_with("encode") {
                    "encode_slice_u16 or encode_slice_u32"
                } else {
                    "decode_slice_u16 or decode_slice_u32"
                },
            });
        }
        Ok(())
    }

    /// Encodes formats of at most 8 bits, one code per byte in the low bits (the way ml_dtypes
    /// stores them). Pack sub-byte codes with [`crate::pack`].
    pub fn encode_slice(&self, src: &[f32], dst: &mut [u8]) -> Result<()> {
        self.check_byte_codes("encode_slice")?;
        self.split("encode_slice", src, dst, 0, |s, d, first| {
            self.encode_chunk::<false>(s, d, 1.0, first, src.len() >= STREAM_MIN)
        })
    }

    /// Encodes `src[i] · (1/scale)` (the codes of a scaled tensor); stochastic rounding numbers
    /// the elements from `first_index`.
    pub fn encode_scaled_slice(
        &self,
        src: &[f32],
        dst: &mut [u8],
        scale: f32,
        first_index: u64,
    ) -> Result<()> {
        self.check_byte_codes("encode_scaled_slice")?;
        let inv = 1.0 / scale;
        self.split(
            "encode_scaled_slice",
            src,
            dst,
            first_index,
            |s, d, first| self.encode_chunk::<true>(s, d, inv, first, src.len() >= STREAM_MIN),
        )
    }

    /// `stream`: non-temporal stores (AVX-512), for slices of [`STREAM_MIN`] elements or more.
    fn encode_chunk<const SCALED: bool>(
        &self,
        src: &[f32],
        dst: &mut [u8],
        inv: f32,
        first: u64,
        stream: bool,
    ) {
        match (&self.lane, self.isa) {
            #[cfg(target_arch = "x86_64")]
            (Some(Lane::Float(p)), Isa::Avx512) => {
                simd_dispatch!(
                    avx512::encode_float,
                    p.rounding,
                    SCALED,
                    (p, src, dst, inv, stream)
                )
            }
            #[cfg(target_arch = "x86_64")]
            (Some(Lane::Int(p)), Isa::Avx512) => {
                simd_dispatch!(
                    avx512::encode_int,
                    p.rounding,
                    SCALED,
                    (p, src, dst, inv, stream)
                )
            }
            #[cfg(target_arch = "x86_64")]
            (Some(Lane::Float(p)), Isa::Avx2) => {
                simd_dispatch!(avx2::encode_float, p.rounding, SCALED, (p, src, dst, inv))
            }
            #[cfg(target_arch = "x86_64")]
            (Some(Lane::Int(p)), Isa::Avx2) => {
                simd_dispatch!(avx2::encode_int, p.rounding, SCALED, (p, src, dst, inv))
            }
            (Some(lane), _) => {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = lane.encode(if SCALED { s * inv } else { s }) as u8;
                }
            }
            // SAFETY: the Codec's Isa passed `Isa::require`.
            (None, isa) if let Some(sr) = &self.stochastic => unsafe {
                crate::kernels::stochastic::encode::<SCALED>(isa, sr, src, dst, inv, first)
            },
            (None, _) => {
                for (i, (d, &s)) in dst.iter_mut().zip(src).enumerate() {
                    let x = if SCALED { s * inv } else { s };
                    *d = self
                        .format
                        .encode_with(x, self.conv, self.rand(first + i as u64))
                        as u8;
                }
            }
        }
    }

    /// Decodes one-byte codes (bits above the format's width are ignored).
    pub fn decode_slice(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        self.check_byte_codes("decode_slice")?;
        let dec = self.decoder();
        self.split("decode_slice", src, dst, 0, |s, d, _| {
            self.decode_chunk::<false>(dec, s, d, 1.0)
        })
    }

    /// Decodes one-byte codes and multiplies by `scale` (dequantization).
    pub fn decode_scaled_slice(&self, src: &[u8], dst: &mut [f32], scale: f32) -> Result<()> {
        self.check_byte_codes("decode_scaled_slice")?;
        let dec = self.decoder();
        self.split("decode_scaled_slice", src, dst, 0, |s, d, _| {
            self.decode_chunk::<true>(dec, s, d, scale)
        })
    }

    /// The decoder (built on first use); only for formats of ≤ 8 bits (`check_byte_codes`).
    fn decoder(&self) -> &Decoder {
        self.decoder.get_or_init(|| Decoder::new(&self.format))
    }

    fn decode_chunk<const SCALED: bool>(
        &self,
        dec: &Decoder,
        src: &[u8],
        dst: &mut [f32],
        scale: f32,
    ) {
        let lut = &*dec.lut;
        match self.isa {
            // SAFETY: the Codec's Isa passed `Isa::require`.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => match &dec.lane {
                Some(d) => unsafe {
                    crate::kernels::avx512::decode_arithmetic::<SCALED>(d, src, dst, scale)
                },
                None => unsafe {
                    crate::kernels::avx512::decode_lut::<SCALED>(
                        lut,
                        self.format.bits(),
                        src,
                        dst,
                        scale,
                    )
                },
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => match &dec.lane {
                Some(d) => unsafe {
                    crate::kernels::avx2::decode_arithmetic::<SCALED>(d, src, dst, scale)
                },
                None => unsafe {
                    crate::kernels::avx2::decode_lut::<SCALED>(
                        lut,
                        self.format.bits(),
                        src,
                        dst,
                        scale,
                    )
                },
            },
            _ => {
                for (d, &c) in dst.iter_mut().zip(src) {
                    *d = if SCALED {
                        lut[c as usize] * scale
                    } else {
                        lut[c as usize]
                    };
                }
            }
        }
    }

    /// Encodes formats of up to 16 bits, one code per `u16`.
    pub fn encode_slice_u16(&self, src: &[f32], dst: &mut [u16]) -> Result<()> {
        if self.format.bits() > 16 {
            return Err(FormatError::CodeTooWide {
                format: self.format.to_string(),
                bits: self.format.bits(),
                container: "u16",
                hint: "encode_slice_u32",
            });
        }
        self.split("encode_slice_u16", src, dst, 0, |s, d, first| {
            for (i, (d, &x)) in d.iter_mut().zip(s).enumerate() {
                *d = self.encode_one(x, first + i as u64) as u16;
            }
        })
    }

    /// Decodes codes of up to 16 bits.
    pub fn decode_slice_u16(&self, src: &[u16], dst: &mut [f32]) -> Result<()> {
        self.split("decode_slice_u16", src, dst, 0, |s, d, _| {
            for (d, &c) in d.iter_mut().zip(s) {
                *d = self.format.decode(c as u32);
            }
        })
    }

    /// Encodes any format, one code per `u32`.
    pub fn encode_slice_u32(&self, src: &[f32], dst: &mut [u32]) -> Result<()> {
        self.split("encode_slice_u32", src, dst, 0, |s, d, first| {
            for (i, (d, &x)) in d.iter_mut().zip(s).enumerate() {
                *d = self.encode_one(x, first + i as u64);
            }
        })
    }

    /// Decodes codes of any width.
    pub fn decode_slice_u32(&self, src: &[u32], dst: &mut [f32]) -> Result<()> {
        self.split("decode_slice_u32", src, dst, 0, |s, d, _| {
            for (d, &c) in d.iter_mut().zip(s) {
                *d = self.format.decode(c);
            }
        })
    }

    #[inline]
    fn encode_one(&self, x: f32, index: u64) -> u32 {
        match (&self.lane, &self.stochastic) {
            (Some(lane), _) => lane.encode(x),
            (None, Some(sr)) => sr.encode(x, self.rand(index)),
            (None, None) => self.format.encode_with(x, self.conv, self.rand(index)),
        }
    }
}

impl Format {
    /// A [`Codec`] for this format under `conv`, on the best instruction set.
    pub fn codec(&self, conv: Conversion) -> Codec {
        Codec::new(*self, conv)
    }

    /// Encodes `src` with the default conversion into one code per byte (formats ≤ 8 bits).
    pub fn encode_slice(&self, src: &[f32], dst: &mut [u8]) -> Result<()> {
        self.codec(Conversion::REFERENCE).encode_slice(src, dst)
    }

    /// Decodes one-byte codes (formats ≤ 8 bits).
    pub fn decode_slice(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        self.codec(Conversion::REFERENCE).decode_slice(src, dst)
    }

    /// Fake-quantizes `src` into `dst` with the default conversion.
    pub fn quantize_slice(&self, src: &[f32], dst: &mut [f32]) -> Result<()> {
        self.codec(Conversion::REFERENCE).quantize_slice(src, dst)
    }

    /// Encodes into `u16` codes (formats ≤ 16 bits).
    pub fn encode_slice_u16(&self, src: &[f32], dst: &mut [u16]) -> Result<()> {
        self.codec(Conversion::REFERENCE).encode_slice_u16(src, dst)
    }

    /// Decodes `u16` codes.
    pub fn decode_slice_u16(&self, src: &[u16], dst: &mut [f32]) -> Result<()> {
        self.codec(Conversion::REFERENCE).decode_slice_u16(src, dst)
    }
}

/// The maximum of `|x|` of every block of `block` elements of `src` (the last block may be
/// shorter), into `out` (`ceil(src.len() / block)` values), on the best instruction set.
///
/// Computed on bit patterns: a block holding a NaN reports NaN, one holding an infinity (and
/// no NaN) reports inf — what block-scale rules (OCP MX: inf/NaN in a block → NaN scale) need.
pub fn abs_max_blocks(src: &[f32], block: usize, out: &mut [f32]) -> Result<()> {
    abs_max_blocks_on(Isa::detect(), src, block, out)
}

/// [`abs_max_blocks`] on a forced instruction set.
pub fn abs_max_blocks_on(isa: Isa, src: &[f32], block: usize, out: &mut [f32]) -> Result<()> {
    let isa = isa.require()?;
    if block == 0 {
        return Err(FormatError::LengthMismatch {
            op: "abs_max_blocks",
            what: "block",
            expected: 1,
            got: 0,
        });
    }
    let n = src.len().div_ceil(block);
    if out.len() != n {
        return Err(FormatError::LengthMismatch {
            op: "abs_max_blocks",
            what: "out",
            expected: n,
            got: out.len(),
        });
    }
    match isa {
        // SAFETY: `require` checked the CPU has the level.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { crate::kernels::avx512::abs_max_blocks(src, block, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { crate::kernels::avx2::abs_max_blocks(src, block, out) },
        _ => crate::kernels::lane::abs_max_blocks(src, block, out),
    }
    Ok(())
}
