//! The fused per-block kernels: one pass per block computes its statistics, its scale and the
//! fake-quant (or the codes) of its elements; threads run over fixed chunks of blocks, so the
//! results never depend on the thread count.

use std::borrow::Cow;

use lowbit_formats::{
    Codec, Format, Isa, Rounding, abs_max_blocks, round_integer, stochastic_bits,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{QuantError, Result};
use crate::layout::{GroupKind, TileGrid};
use crate::scale::{Param, ScaleRule, affine_from_minmax, effective, nvfp4_tensor_scale};
use crate::spec::{QuantSpec, ScaleKind, ScaleMode};

/// Elements per parallel work item (a multiple of every block size up to it).
const PAR_ELEMS: usize = 1 << 14;
/// Per-tensor reductions split into chunks of this many elements.
const REDUCE_CHUNK: usize = 1 << 16;

/// Frozen or computed scales of one tensor, in the layout of the spec's granularity.
///
/// `shape` is the tensor's shape with the group axis replaced: `[1]` per tensor, `[len]` per
/// channel, `ceil(len / size)` along the axis per block, `1` along the axis for whole-axis,
/// the last two axes `[⌈M / rows⌉, ⌈N / cols⌉]` per tile.
/// `values` holds the stored scales (E8M0 values `2^e` or NaN, decoded E4M3 block scales for
/// NVFP4, powers of two, or f32), row-major in `shape`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scales {
    /// The shape of the scale tensor.
    pub shape: Vec<usize>,
    /// The stored scales, row-major (NaN is written as JSON `null`).
    #[serde(with = "nan_vec")]
    pub values: Vec<f32>,
    /// Integer zero points (asymmetric specs), same layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_points: Option<Vec<f32>>,
    /// NVFP4's f32 tensor scale (first level).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nan_opt")]
    pub tensor_scale: Option<f32>,
}

impl Scales {
    /// The scale the elements of group `i` are divided by: stored scale × implied element unit
    /// (MXINT8), or × tensor scale (NVFP4).
    pub fn effective(&self, spec: &QuantSpec, i: usize) -> Option<f32> {
        let s = *self.values.get(i)?;
        Some(effective(spec, s, self.tensor_scale.unwrap_or(1.0)))
    }
}

mod nan_vec {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| if x.is_nan() { None } else { Some(*x) }))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        let v: Vec<Option<f32>> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|x| x.unwrap_or(f32::NAN)).collect())
    }
}

mod nan_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<f32>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(x) if x.is_nan() => s.serialize_str("nan"),
            Some(x) => s.serialize_some(x),
            None => s.serialize_none(),
        }
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f32),
        Str(serde::de::IgnoredAny),
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
        Ok(Option::<Repr>::deserialize(d)?.map(|r| match r {
            Repr::Num(x) => x,
            Repr::Str(_) => f32::NAN,
        }))
    }
}

/// How the tensor is rearranged so that every group is a run of contiguous elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Work {
    /// Groups are already contiguous.
    Direct,
    /// `(outer, len, inner) → (len, outer, inner)`: a channel's elements become one row.
    SwapOuter,
    /// `(outer, len, inner) → (outer, inner, len)`: the block axis becomes the last one.
    SwapInner,
    /// Tile-major order ([`TileGrid`]): every tile becomes a run of `rows · cols` elements,
    /// the positions of an edge tile's missing elements filled with zeros (neutral for every
    /// statistic the scales use: `max |x|`, and min/max, which include 0 anyway). The work
    /// buffer is then longer than the tensor.
    Tiles(TileGrid),
}

/// The resolved layout of a spec on a shape.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub n: usize,
    pub outer: usize,
    pub len: usize,
    pub inner: usize,
    pub work: Work,
    pub per_tensor: bool,
    pub per_channel: bool,
    /// Row length of the work layout and block length within a row (last block may be shorter).
    pub row_len: usize,
    pub block: usize,
    pub n_groups: usize,
    pub scale_shape: Vec<usize>,
}

impl Plan {
    pub(crate) fn new(spec: &QuantSpec, shape: &[usize]) -> Result<Plan> {
        let l = spec.layout(shape)?;
        let (work, row_len) = match l.kind {
            GroupKind::PerTensor => (Work::Direct, l.n),
            GroupKind::PerChannel if l.outer == 1 => (Work::Direct, l.outer * l.inner),
            GroupKind::PerChannel => (Work::SwapOuter, l.outer * l.inner),
            GroupKind::Blocks if l.inner == 1 => (Work::Direct, l.len),
            GroupKind::Blocks => (Work::SwapInner, l.len),
            GroupKind::Tiles => match l.tiles {
                Some(g) => (Work::Tiles(g), g.tile_len()),
                None => {
                    return Err(QuantError::Calibration {
                        reason: "internal: a tile layout without its grid".into(),
                    });
                }
            },
        };
        Ok(Plan {
            n: l.n,
            outer: l.outer,
            len: l.len,
            inner: l.inner,
            work,
            per_tensor: l.kind == GroupKind::PerTensor,
            per_channel: l.kind == GroupKind::PerChannel,
            row_len,
            block: l.block,
            n_groups: l.n_groups,
            scale_shape: l.scale_shape,
        })
    }

    /// Blocks per work row.
    pub(crate) fn blocks_per_row(&self) -> usize {
        if self.block == 0 {
            0
        } else {
            self.row_len.div_ceil(self.block)
        }
    }

    /// Whether work order is the tensor's own order (no transposition in or out).
    pub(crate) fn is_direct(&self) -> bool {
        matches!(self.work, Work::Direct)
    }

    /// The tile grid of a [`Work::Tiles`] plan.
    pub(crate) fn tiles(&self) -> Option<TileGrid> {
        match self.work {
            Work::Tiles(g) => Some(g),
            _ => None,
        }
    }

    /// Elements of the work layout: `n`, or every tile at full size for tiles.
    pub(crate) fn work_len(&self) -> usize {
        match self.work {
            Work::Tiles(g) => self.n_groups * g.tile_len(),
            _ => self.n,
        }
    }

    /// The tensor in work order (tiles: missing elements of edge tiles as `T::default()`).
    pub(crate) fn to_work<'a, T: Copy + Default + Send + Sync>(
        &self,
        src: &'a [T],
    ) -> Cow<'a, [T]> {
        match self.work {
            Work::Direct => Cow::Borrowed(src),
            Work::SwapOuter => Cow::Owned(swap_first2(src, self.outer, self.len, self.inner)),
            Work::SwapInner => Cow::Owned(swap_last2(src, self.outer, self.len, self.inner)),
            Work::Tiles(g) => {
                let mut work = vec![T::default(); self.work_len()];
                tiles_gather(g, src, &mut work);
                Cow::Owned(work)
            }
        }
    }

    /// Writes a work-order buffer back in the tensor's order.
    pub(crate) fn scatter_work<T: Copy + Send + Sync>(&self, work: &[T], dst: &mut [T]) {
        match self.work {
            Work::Direct => dst.copy_from_slice(work),
            Work::SwapOuter => swap_first2_into(work, dst, self.len, self.outer, self.inner),
            Work::SwapInner => swap_last2_into(work, dst, self.outer, self.inner, self.len),
            Work::Tiles(g) => tiles_scatter(g, work, dst),
        }
    }

    /// Group parameters in work order → scale layout order.
    pub(crate) fn params_to_scale_order<T: Copy + Send + Sync>(&self, p: &[T]) -> Vec<T> {
        match self.work {
            Work::SwapInner => swap_last2(p, self.outer, self.inner, self.blocks_per_row()),
            _ => p.to_vec(),
        }
    }

    /// Scale layout order → work order.
    pub(crate) fn params_to_work_order<T: Copy + Send + Sync>(&self, p: &[T]) -> Vec<T> {
        match self.work {
            Work::SwapInner => swap_last2(p, self.outer, self.blocks_per_row(), self.inner),
            _ => p.to_vec(),
        }
    }
}

/// `dst.copy_from_slice(src)` for the short runs of tile rows: 8 elements at a time as
/// fixed-size moves (a `memcpy` call per 16-element row segment cost more than the copy).
#[inline(always)]
fn copy_run<T: Copy>(dst: &mut [T], src: &[T]) {
    if src.len() >= 256 {
        dst.copy_from_slice(src);
        return;
    }
    let mut d8 = dst.chunks_exact_mut(8);
    let mut s8 = src.chunks_exact(8);
    for (d, s) in (&mut d8).zip(&mut s8) {
        d.copy_from_slice(s);
    }
    for (d, s) in d8.into_remainder().iter_mut().zip(s8.remainder()) {
        *d = *s;
    }
}

/// One band of a tile layout (`rows` matrix rows, fewer at a matrix's bottom edge, row-major
/// in `band`) into its tile-major work row `work` (`grid_cols` full-size tiles); positions
/// of missing elements are left as they are. Row by row, so the reads run in order (tile by
/// tile was slower: 128 × 128 tiles 5.7 → 6.9 ms on 16M f32).
fn band_gather<T: Copy>(g: TileGrid, band: &[T], work: &mut [T]) {
    for (r, row) in band.chunks(g.n).enumerate() {
        for (tc, seg) in row.chunks(g.cols).enumerate() {
            let at = tc * g.tile_len() + r * g.cols;
            copy_run(&mut work[at..at + seg.len()], seg);
        }
    }
}

/// The inverse of [`band_gather`].
fn band_scatter<T: Copy>(g: TileGrid, work: &[T], band: &mut [T]) {
    for (r, row) in band.chunks_mut(g.n).enumerate() {
        for (tc, seg) in row.chunks_mut(g.cols).enumerate() {
            let at = tc * g.tile_len() + r * g.cols;
            copy_run(seg, &work[at..at + seg.len()]);
        }
    }
}

/// The bands of a tile layout in a row-major tensor: `(band index, its rows)`, in order. A
/// band is `rows` matrix rows (fewer at the bottom edge of each matrix); band `k` has work
/// row `k` (and groups `k · grid_cols ..`).
fn bands<T>(g: TileGrid, tensor: &mut [T]) -> Vec<(usize, &mut [T])> {
    let mut out = Vec::new();
    if g.n == 0 || g.m == 0 {
        return out;
    }
    for matrix in tensor.chunks_mut(g.m * g.n) {
        for band in matrix.chunks_mut(g.rows * g.n) {
            out.push((out.len(), band));
        }
    }
    out
}

/// The tensor (row-major) into a tile-major work buffer with full-size tiles ([`Work::Tiles`]);
/// the positions of an edge tile's missing elements are left as they are. Bands of `rows`
/// matrix rows run in parallel.
fn tiles_gather<T: Copy + Send + Sync>(g: TileGrid, src: &[T], work: &mut [T]) {
    let band_work = g.grid_cols * g.tile_len();
    if band_work == 0 || g.n == 0 || g.m == 0 {
        return;
    }
    let src_bands: Vec<&[T]> = src
        .chunks(g.m * g.n)
        .flat_map(|m| m.chunks(g.rows * g.n))
        .collect();
    work.par_chunks_mut(band_work)
        .zip(src_bands.into_par_iter())
        .for_each(|(w, s)| band_gather(g, s, w));
}

/// The inverse of [`tiles_gather`].
fn tiles_scatter<T: Copy + Send + Sync>(g: TileGrid, work: &[T], dst: &mut [T]) {
    let band_work = g.grid_cols * g.tile_len();
    if band_work == 0 {
        return;
    }
    bands(g, dst)
        .into_par_iter()
        .for_each(|(k, d)| band_scatter(g, &work[k * band_work..][..band_work], d));
}

/// Each tile's own elements, tile after tile (row by row inside a tile, no padding), and the
/// range of every tile in that buffer.
pub(crate) fn tiles_compact(g: TileGrid, src: &[f32]) -> (Vec<f32>, Vec<(usize, usize)>) {
    let matrices = src.len().checked_div(g.m * g.n).unwrap_or(0);
    let mut out = Vec::with_capacity(src.len());
    let mut ranges = Vec::with_capacity(matrices * g.grid_rows * g.grid_cols);
    for b in 0..matrices {
        for tr in 0..g.grid_rows {
            let i0 = tr * g.rows;
            let band_rows = g.rows.min(g.m - i0);
            for tc in 0..g.grid_cols {
                let c0 = tc * g.cols;
                let width = g.cols.min(g.n - c0);
                let start = out.len();
                for r in 0..band_rows {
                    let at = (b * g.m + i0 + r) * g.n + c0;
                    out.extend_from_slice(&src[at..at + width]);
                }
                ranges.push((start, out.len()));
            }
        }
    }
    (out, ranges)
}

/// `(a, b, c) → (a, c, b)`.
pub(crate) fn swap_last2<T: Copy + Send + Sync>(src: &[T], a: usize, b: usize, c: usize) -> Vec<T> {
    let mut dst = src.to_vec();
    swap_last2_into(src, &mut dst, a, b, c);
    dst
}

/// `(a, b, c) → (a, c, b)` into `dst` (same length as `src`).
fn swap_last2_into<T: Copy + Send + Sync>(src: &[T], dst: &mut [T], a: usize, b: usize, c: usize) {
    debug_assert_eq!(src.len(), a * b * c);
    if b * c == 0 {
        return;
    }
    dst.par_chunks_mut(b * c)
        .zip(src.par_chunks(b * c))
        .for_each(|(d, s)| {
            for i in 0..b {
                for j in 0..c {
                    d[j * b + i] = s[i * c + j];
                }
            }
        });
}

/// `(a, b, c) → (b, a, c)`.
pub(crate) fn swap_first2<T: Copy + Send + Sync>(
    src: &[T],
    a: usize,
    b: usize,
    c: usize,
) -> Vec<T> {
    let mut dst = src.to_vec();
    swap_first2_into(src, &mut dst, a, b, c);
    dst
}

/// `(a, b, c) → (b, a, c)` into `dst` (same length as `src`).
fn swap_first2_into<T: Copy + Send + Sync>(src: &[T], dst: &mut [T], a: usize, b: usize, c: usize) {
    if c == 0 {
        return;
    }
    dst.par_chunks_mut(c).enumerate().for_each(|(k, d)| {
        let (j, i) = (k / a, k % a); // dst row (j, i) ← src row (i, j)
        let from = (i * b + j) * c;
        d.copy_from_slice(&src[from..from + c]);
    });
}

/// `max |x|` with NaN propagation (on bit patterns: a NaN's magnitude is above inf's).
#[inline]
pub(crate) fn amax(xs: &[f32]) -> f32 {
    let m = xs
        .iter()
        .fold(0u32, |m, x| m.max(x.to_bits() & 0x7FFF_FFFF));
    f32::from_bits(m)
}

/// `(min, max)`, NaN if any element is NaN.
pub(crate) fn min_max(xs: &[f32]) -> (f32, f32) {
    let mut nan = false;
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &x in xs {
        nan |= x.is_nan();
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if nan { (f32::NAN, f32::NAN) } else { (lo, hi) }
}

/// `max |x|` of a whole slice with the SIMD block kernel of lowbit-formats (same NaN > inf >
/// numbers order as [`amax`]), threaded over fixed chunks.
pub(crate) fn par_amax(xs: &[f32]) -> f32 {
    if xs.len() < REDUCE_CHUNK {
        return simd_amax(xs);
    }
    let m = xs
        .par_chunks(REDUCE_CHUNK)
        .map(|c| simd_amax(c).to_bits())
        .reduce(|| 0, u32::max);
    f32::from_bits(m)
}

/// `max |x|` of one slice on the calling thread (SIMD).
pub(crate) fn simd_amax(xs: &[f32]) -> f32 {
    let mut out = [0.0f32];
    if xs.is_empty() || abs_max_blocks(xs, xs.len(), &mut out).is_err() {
        return amax(xs);
    }
    out[0]
}

pub(crate) fn par_min_max(xs: &[f32]) -> (f32, f32) {
    xs.par_chunks(REDUCE_CHUNK).map(min_max).reduce(
        || (f32::INFINITY, f32::NEG_INFINITY),
        |a, b| {
            if a.0.is_nan() || b.0.is_nan() {
                (f32::NAN, f32::NAN)
            } else {
                (a.0.min(b.0), a.1.max(b.1))
            }
        },
    )
}

/// A per-block kernel: `(block source, block destination, group parameters, first index)`.
pub(crate) type BlockFn<'a, S, T> =
    dyn Fn(&[S], &mut [T], &mut Param, u64) -> Result<()> + Sync + 'a;

/// Runs `f(block_src, block_dst, param, first_index)` on every block of the work layout, in
/// parallel over fixed chunks of blocks (dequantization).
pub(crate) fn for_each_block<S: Sync, T: Send>(
    src: &[S],
    dst: &mut [T],
    params: &mut [Param],
    row_len: usize,
    block: usize,
    f: &BlockFn<'_, S, T>,
) -> Result<()> {
    if src.is_empty() || block == 0 {
        return Ok(());
    }
    if row_len.is_multiple_of(block) {
        let m = (PAR_ELEMS / block).max(1);
        let chunk = m * block;
        src.par_chunks(chunk)
            .zip(dst.par_chunks_mut(chunk))
            .zip(params.par_chunks_mut(m))
            .enumerate()
            .try_for_each(|(k, ((s, d), p))| {
                for (j, ((sb, db), pb)) in s
                    .chunks(block)
                    .zip(d.chunks_mut(block))
                    .zip(p.iter_mut())
                    .enumerate()
                {
                    f(sb, db, pb, (k * chunk + j * block) as u64)?;
                }
                Ok(())
            })
    } else {
        let nb = row_len.div_ceil(block);
        src.par_chunks(row_len)
            .zip(dst.par_chunks_mut(row_len))
            .zip(params.par_chunks_mut(nb))
            .enumerate()
            .with_min_len((PAR_ELEMS / row_len).max(1))
            .try_for_each(|(r, ((s, d), p))| {
                for (j, ((sb, db), pb)) in s
                    .chunks(block)
                    .zip(d.chunks_mut(block))
                    .zip(p.iter_mut())
                    .enumerate()
                {
                    f(sb, db, pb, (r * row_len + j * block) as u64)?;
                }
                Ok(())
            })
    }
}

/// A scale whose reciprocal does not fit f32 (subnormal scales) is applied to inputs pre-scaled
/// by 2^64 (exact), with the scale times 2^64.
const PRESCALE: f32 = 18_446_744_073_709_551_616.0; // 2^64
/// Pre-scaled blocks up to this length go through a stack buffer (no allocation).
const PRESCALE_STACK: usize = 1024;

fn needs_prescale(eff: f32) -> bool {
    !eff.is_normal() || !(1.0 / eff).is_finite()
}

/// Whether a symmetric block with effective scale `eff` leaves the plain `x · (1/s)` path: a
/// NaN scale (the block becomes NaN) or a positive finite scale that needs the 2^64 prescale.
///
/// That is `eff.is_nan() || (needs_prescale(eff) && eff > 0 && eff.is_finite())`, on the bit
/// pattern: a positive normal `eff ≥ 2⁻¹²⁶` has `1/eff ≤ 2¹²⁶`, finite, so among positive
/// finite scales exactly the subnormals need the prescale (tested against the formula).
#[inline]
fn is_special(eff: f32) -> bool {
    let b = eff.to_bits();
    // `|`, not `||`: no branch, so that loops over blocks vectorize.
    ((b & 0x7FFF_FFFF) > 0x7F80_0000) | (b.wrapping_sub(1) < 0x007F_FFFF)
}

/// Symmetric fake-quant of one block: `Q(x · (1/s)) · s`.
///
/// The reference per-block path; the streaming kernels use it for the blocks [`is_special`]
/// selects and must agree with it bit for bit elsewhere.
pub(crate) fn fake_block(
    codec: &Codec,
    src: &[f32],
    dst: &mut [f32],
    eff: f32,
    first: u64,
) -> Result<()> {
    if eff.is_nan() {
        dst.fill(f32::NAN);
        return Ok(());
    }
    if needs_prescale(eff) && eff > 0.0 && eff.is_finite() {
        let big = eff * PRESCALE;
        if src.len() <= PRESCALE_STACK {
            let mut buf = [0.0f32; PRESCALE_STACK];
            let tmp = &mut buf[..src.len()];
            tmp.iter_mut().zip(src).for_each(|(t, x)| *t = x * PRESCALE);
            codec.quantize_scaled_slice(tmp, dst, big, first)?;
        } else {
            let tmp: Vec<f32> = src.iter().map(|x| x * PRESCALE).collect();
            codec.quantize_scaled_slice(&tmp, dst, big, first)?;
        }
        dst.iter_mut().for_each(|d| *d *= 1.0 / PRESCALE);
        return Ok(());
    }
    Ok(codec.quantize_scaled_slice(src, dst, eff, first)?)
}

/// Symmetric codes of one block: `encode(x · (1/s))`.
fn encode_block(codec: &Codec, src: &[f32], dst: &mut [u8], eff: f32, first: u64) -> Result<()> {
    if needs_prescale(eff) && eff > 0.0 && eff.is_finite() {
        let big = eff * PRESCALE;
        if src.len() <= PRESCALE_STACK {
            let mut buf = [0.0f32; PRESCALE_STACK];
            let tmp = &mut buf[..src.len()];
            tmp.iter_mut().zip(src).for_each(|(t, x)| *t = x * PRESCALE);
            return Ok(codec.encode_scaled_slice(tmp, dst, big, first)?);
        }
        let tmp: Vec<f32> = src.iter().map(|x| x * PRESCALE).collect();
        return Ok(codec.encode_scaled_slice(&tmp, dst, big, first)?);
    }
    Ok(codec.encode_scaled_slice(src, dst, eff, first)?)
}

/// The integer an asymmetric element rounds to: `clamp(round(x · (1/s)) + z)`, the zero point
/// added after rounding as PyTorch's `fake_quantize_per_tensor_affine` does (adding it first,
/// `round(x · (1/s) + z)`, moves values one ulp from a tie onto it; tested against torch's
/// output). A NaN element gives 0.
#[inline]
fn affine_q(spec: &QuantSpec, x: f32, inv: f32, zero: f32, index: u64) -> f32 {
    let rounding = spec.conversion().rounding;
    let rand = match rounding {
        Rounding::Stochastic { seed } => stochastic_bits(seed, index),
        _ => 0,
    };
    match spec.format() {
        Format::Int(i) => {
            let q = round_integer(x * inv, rounding, rand) + zero;
            if q.is_nan() { 0.0 } else { i.clamp(q) }
        }
        Format::Float(_) => f32::NAN, // rejected by validation
    }
}

pub(crate) fn affine_fake_block(
    spec: &QuantSpec,
    src: &[f32],
    dst: &mut [f32],
    p: Param,
    first: u64,
) {
    let inv = 1.0 / p.scale;
    for (i, (d, &x)) in dst.iter_mut().zip(src).enumerate() {
        *d = (affine_q(spec, x, inv, p.zero, first + i as u64) - p.zero) * p.scale;
    }
}

fn affine_encode_block(spec: &QuantSpec, src: &[f32], dst: &mut [u8], p: Param, first: u64) {
    let inv = 1.0 / p.scale;
    let mask = spec.format().code_mask();
    for (i, (d, &x)) in dst.iter_mut().zip(src).enumerate() {
        *d = ((affine_q(spec, x, inv, p.zero, first + i as u64) as i32 as u32) & mask) as u8;
    }
}

/// Where the results go.
pub(crate) enum Out<'a> {
    Fake(&'a mut [f32]),
    Codes(&'a mut [u8]),
    /// Scales only.
    None,
}

/// Outputs at least this long (elements, 16 MiB of f32) take non-temporal stores.
const STREAM_MIN: usize = 1 << 22;
/// Blocks per step of the streaming kernel: its scales live in stack buffers of this length.
const STEP_BLOCKS: usize = 512;
/// Blocks at least this long run one at a time, with threads inside the block (parallel amax,
/// parallel codec), like a per-tensor scale.
const BIG_BLOCK: usize = 1 << 17;

/// Everything the streaming kernels need, shared by the threads.
struct Kern {
    spec: QuantSpec,
    /// The spec's scale rule, constants prepared.
    rule: ScaleRule,
    /// Single-threaded codec (the threads run over chunks of blocks).
    codec: Codec,
    /// Threaded codec (big blocks).
    pcodec: Codec,
    tensor_scale: f32,
    dynamic: bool,
    asym: bool,
    /// Whether the blocks' parameters are kept (returned, or frozen ones read).
    keep: bool,
    /// Elements are divided by their scale ([`divides`]) instead of multiplied by its
    /// reciprocal.
    divide: bool,
}

/// Whether a spec's elements are divided by their effective scale, `Q(x / s) · s`, as torchao
/// computes NVFP4 (`data_hp / total_scale`) and its one-level E4M3 form; every other scale
/// kind multiplies by the reciprocal, `Q(x · (1/s)) · s` (PyTorch's `fake_quantize`). The
/// two differ only where `x · (1/s)` is one ulp off `x / s` on a rounding boundary of the
/// element format (tested against torchao's golden data, ties included).
pub(crate) fn divides(spec: &QuantSpec) -> bool {
    matches!(
        spec.scale(),
        ScaleKind::Nvfp4 { .. } | ScaleKind::E4M3 { .. }
    )
}

/// Elements per stack buffer of the division path's codes.
const DIV_BUF: usize = 8192;

/// [`fake_block`] by division ([`divides`]): `Q(x / s) · s`, the codec's division kernel with
/// one scale for the whole block; a NaN scale makes the block NaN.
pub(crate) fn fake_block_div(
    codec: &Codec,
    src: &[f32],
    dst: &mut [f32],
    eff: f32,
    first: u64,
) -> Result<()> {
    if eff.is_nan() {
        dst.fill(f32::NAN);
        return Ok(());
    }
    if src.is_empty() {
        return Ok(());
    }
    Ok(codec.quantize_blocks_fused_div(src, dst, src.len(), first, |_, _, sc| sc.fill(eff))?)
}

/// The codes of symmetric blocks by division ([`divides`]): `encode(x / s)` for consecutive
/// blocks of `block` elements with parameters `p`, the quotients through a stack buffer.
fn encode_blocks_div(
    codec: &Codec,
    effective: impl Fn(Param) -> f32,
    s: &[f32],
    d: &mut [u8],
    p: &[Param],
    block: usize,
    first: u64,
) -> Result<()> {
    let mut buf = [0.0f32; DIV_BUF];
    if block > DIV_BUF {
        for (j, ((sb, db), &pj)) in s.chunks(block).zip(d.chunks_mut(block)).zip(p).enumerate() {
            let e = effective(pj);
            for (c, (sc, dc)) in sb.chunks(DIV_BUF).zip(db.chunks_mut(DIV_BUF)).enumerate() {
                let t = &mut buf[..sc.len()];
                t.iter_mut().zip(sc).for_each(|(t, x)| *t = x / e);
                let at = first + (j * block + c * DIV_BUF) as u64;
                codec.encode_scaled_slice(t, dc, 1.0, at)?;
            }
        }
        return Ok(());
    }
    let per = DIV_BUF / block;
    for (c, ((sc, dc), pc)) in s
        .chunks(per * block)
        .zip(d.chunks_mut(per * block))
        .zip(p.chunks(per))
        .enumerate()
    {
        let t = &mut buf[..sc.len()];
        for ((tb, sb), &pj) in t.chunks_mut(block).zip(sc.chunks(block)).zip(pc) {
            let e = effective(pj);
            tb.iter_mut().zip(sb).for_each(|(t, x)| *t = x / e);
        }
        // Scale 1: `x · 1` is exact, so these are the codes of the quotients.
        codec.encode_scaled_slice(t, dc, 1.0, first + (c * per * block) as u64)?;
    }
    Ok(())
}

impl Kern {
    /// The parameters of consecutive blocks of `s` (dynamic specs): one SIMD amax pass over
    /// the blocks (symmetric) or a min/max per block (asymmetric), then the scale rule per block.
    fn step_params(&self, s: &[f32], block: usize, p: &mut [Param]) -> Result<()> {
        let spec = &self.spec;
        if self.asym {
            for (pj, sb) in p.iter_mut().zip(s.chunks(block)) {
                let (lo, hi) = min_max(sb);
                *pj = affine_from_minmax(spec, lo, hi);
            }
        } else {
            let mut am = [0.0f32; STEP_BLOCKS];
            let am = &mut am[..p.len()];
            abs_max_blocks(s, block, am)?;
            let mut sc = [0.0f32; STEP_BLOCKS];
            let sc = &mut sc[..p.len()];
            self.rule.scales(am, self.tensor_scale, sc);
            for (pj, &scale) in p.iter_mut().zip(sc.iter()) {
                *pj = Param { scale, zero: 0.0 };
            }
        }
        Ok(())
    }

    /// The parameter of one big block, with threads inside.
    fn big_param(&self, s: &[f32]) -> Param {
        if self.asym {
            let (lo, hi) = par_min_max(s);
            affine_from_minmax(&self.spec, lo, hi)
        } else {
            Param {
                scale: self.rule.scale(par_amax(s), self.tensor_scale),
                zero: 0.0,
            }
        }
    }

    #[inline]
    fn effective(&self, p: Param) -> f32 {
        self.rule.effective(p.scale, self.tensor_scale)
    }

    /// One thread's share: consecutive blocks of `block` elements (the last may be shorter)
    /// whose first element has global index `first`, in steps of [`STEP_BLOCKS`] blocks:
    /// statistics and scales of the step, then its outputs (fake-quant computes the scales of a
    /// dynamic symmetric spec inside its one pass). `params` holds the blocks' parameters when
    /// they are kept (dynamic) or frozen (static); `None` when neither.
    fn segment<T: Sink>(
        &self,
        src: &[f32],
        dst: &mut [T],
        mut params: Option<&mut [Param]>,
        block: usize,
        first: u64,
    ) -> Result<()> {
        let step = STEP_BLOCKS * block;
        let mut buf = [Param::default(); STEP_BLOCKS];
        let fused = T::FUSED && !self.asym;
        for (k, (s, d)) in src.chunks(step).zip(dst.chunks_mut(step)).enumerate() {
            let nb = s.len().div_ceil(block);
            let b0 = k * STEP_BLOCKS;
            let p = &mut buf[..nb];
            if !self.dynamic {
                if let Some(ps) = params.as_deref() {
                    p.copy_from_slice(&ps[b0..b0 + nb]);
                }
            } else if !fused {
                self.step_params(s, block, p)?;
            }
            T::blocks(self, s, d, p, block, first + (k * step) as u64)?;
            if self.dynamic
                && let Some(ps) = params.as_deref_mut()
            {
                ps[b0..b0 + nb].copy_from_slice(p);
            }
        }
        Ok(())
    }

    /// Consecutive blocks of `block` elements (all full but the last) from global index
    /// `first`: fixed chunks of whole blocks in parallel, or big blocks one at a time.
    fn sequence<T: Sink>(
        &self,
        src: &[f32],
        dst: &mut [T],
        params: Option<&mut [Param]>,
        block: usize,
        first: u64,
    ) -> Result<()> {
        if block >= BIG_BLOCK {
            let mut params = params;
            for (j, (s, d)) in src.chunks(block).zip(dst.chunks_mut(block)).enumerate() {
                let mut p = match params.as_deref() {
                    Some(ps) if !self.dynamic => ps[j],
                    _ => Param::default(),
                };
                if self.dynamic {
                    p = self.big_param(s);
                    if let Some(ps) = params.as_deref_mut() {
                        ps[j] = p;
                    }
                }
                T::big(self, s, d, p, first + (j * block) as u64)?;
            }
            return Ok(());
        }
        let m = (PAR_ELEMS / block).max(1);
        let chunk = m * block;
        if src.len() <= chunk {
            return self.segment(src, dst, params, block, first);
        }
        let body = |k: usize, s: &[f32], d: &mut [T], p: Option<&mut [Param]>| {
            self.segment(s, d, p, block, first + (k * chunk) as u64)
        };
        match params {
            Some(ps) => src
                .par_chunks(chunk)
                .zip(dst.par_chunks_mut(chunk))
                .zip(ps.par_chunks_mut(m))
                .enumerate()
                .try_for_each(|(k, ((s, d), p))| body(k, s, d, Some(p))),
            None => src
                .par_chunks(chunk)
                .zip(dst.par_chunks_mut(chunk))
                .enumerate()
                .try_for_each(|(k, (s, d))| body(k, s, d, None)),
        }
    }

    /// 2-D tiles, band by band (`rows` matrix rows, in parallel): a band is gathered into
    /// its tile-major work row (zeros where edge tiles have no element), its tiles run as
    /// blocks of `rows · cols` numbered from the band's position in the whole work layout,
    /// and the outputs are scattered back. No buffer of the whole tensor's size.
    fn tiles<T: Sink>(
        &self,
        g: TileGrid,
        src: &[f32],
        dst: &mut [T],
        params: &mut [Param],
    ) -> Result<()> {
        // (An empty tensor first: its grid may be wide enough to overflow the band length.)
        if src.is_empty() {
            return Ok(());
        }
        let (tile, band_work) = (g.tile_len(), g.grid_cols * g.tile_len());
        if band_work == 0 {
            return Ok(());
        }
        let keep = !params.is_empty();
        let mut jobs: Vec<(usize, &mut [T], &mut [Param])> = Vec::new();
        let mut rest = params;
        for (k, d) in bands(g, dst) {
            let (p, tail) = rest.split_at_mut(if keep { g.grid_cols } else { 0 });
            rest = tail;
            jobs.push((k, d, p));
        }
        let band_src = g.rows * g.n;
        let per_matrix = g.grid_rows;
        jobs.into_par_iter().try_for_each(|(k, d, p)| {
            let (b, tr) = (k / per_matrix, k % per_matrix);
            let at = b * g.m * g.n + tr * band_src;
            let s = &src[at..at + d.len()];
            let mut w = vec![0.0f32; band_work];
            band_gather(g, s, &mut w);
            let mut o = vec![T::default(); band_work];
            let p = keep.then_some(p);
            self.sequence(&w, &mut o, p, tile, (k * band_work) as u64)?;
            band_scatter(g, &o, d);
            Ok(())
        })
    }

    /// The whole work layout: rows of `row_len` elements cut into blocks of `block` (the last
    /// block of a row may be shorter). `params` is empty when the scales are not kept.
    fn drive<T: Sink>(
        &self,
        src: &[f32],
        dst: &mut [T],
        params: &mut [Param],
        row_len: usize,
        block: usize,
    ) -> Result<()> {
        if src.is_empty() || block == 0 || row_len == 0 {
            return Ok(());
        }
        let keep = !params.is_empty();
        if row_len.is_multiple_of(block) {
            // All blocks are full: the tensor is one sequence of blocks.
            return self.sequence(src, dst, keep.then_some(params), block, 0);
        }
        let nb = row_len.div_ceil(block);
        if row_len >= PAR_ELEMS {
            // Long rows: one after the other, each split across the threads.
            for (r, (s, d)) in src.chunks(row_len).zip(dst.chunks_mut(row_len)).enumerate() {
                let p = keep.then(|| &mut params[r * nb..(r + 1) * nb]);
                self.sequence(s, d, p, block, (r * row_len) as u64)?;
            }
            return Ok(());
        }
        let rows_per = (PAR_ELEMS / row_len).max(1);
        let body = |r: usize, s: &[f32], d: &mut [T], p: Option<&mut [Param]>| {
            self.segment(s, d, p, block, (r * row_len) as u64)
        };
        if keep {
            src.par_chunks(row_len)
                .zip(dst.par_chunks_mut(row_len))
                .zip(params.par_chunks_mut(nb))
                .enumerate()
                .with_min_len(rows_per)
                .try_for_each(|(r, ((s, d), p))| body(r, s, d, Some(p)))
        } else {
            src.par_chunks(row_len)
                .zip(dst.par_chunks_mut(row_len))
                .enumerate()
                .with_min_len(rows_per)
                .try_for_each(|(r, (s, d))| body(r, s, d, None))
        }
    }
}

/// The per-group work of the fused fake-quant kernel: the stored scales of a group of blocks
/// from their maxima (dynamic) or the frozen ones, the effective scales the kernel applies,
/// and which blocks are special. Plain Rust written to vectorize, compiled twice: for the
/// baseline target and with AVX-512 enabled (chosen at run time with the codec's level).
#[derive(Clone, Copy)]
struct GroupScales {
    rule: ScaleRule,
    tensor_scale: f32,
    factor: f32,
    dynamic: bool,
    keep: bool,
}

impl GroupScales {
    /// Fills `scale` (the scales the kernel applies: the effective scale, or 1 for a special
    /// block), `effs` (the effective scales) and `p` (when the parameters are kept or frozen);
    /// returns whether any block is special.
    #[inline(always)]
    fn body(&self, amax: &[f32], scale: &mut [f32], p: &mut [Param], effs: &mut [f32]) -> bool {
        if !self.dynamic {
            for (sc, pj) in scale.iter_mut().zip(&*p) {
                *sc = pj.scale;
            }
        } else {
            self.rule.scales(amax, self.tensor_scale, scale);
            if self.keep {
                for (pj, &sc) in p.iter_mut().zip(&*scale) {
                    *pj = Param {
                        scale: sc,
                        zero: 0.0,
                    };
                }
            }
        }
        let mut any = 0u32;
        for (sc, e) in scale.iter_mut().zip(effs) {
            let eff = *sc * self.factor;
            *e = eff;
            let sp = is_special(eff);
            any |= sp as u32;
            *sc = if sp { 1.0 } else { eff };
        }
        any != 0
    }

    /// [`GroupScales::body`], with the usual group of 16 blocks as fixed-size arrays (so the
    /// compiled loops need no length or overlap checks).
    #[inline(always)]
    fn dispatch(&self, amax: &[f32], scale: &mut [f32], p: &mut [Param], effs: &mut [f32]) -> bool {
        match (
            <&[f32; 16]>::try_from(amax),
            <&mut [f32; 16]>::try_from(&mut *scale),
            <&mut [Param; 16]>::try_from(&mut *p),
            <&mut [f32; 16]>::try_from(&mut *effs),
        ) {
            (Ok(a), Ok(s), Ok(pp), Ok(e)) => self.body(a, s, pp, e),
            _ => self.body(amax, scale, p, effs),
        }
    }

    fn run(&self, amax: &[f32], scale: &mut [f32], p: &mut [Param], effs: &mut [f32]) -> bool {
        self.dispatch(amax, scale, p, effs)
    }

    /// [`GroupScales::run`] compiled for AVX-512 (16 blocks per vector).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn run_avx512(
        &self,
        amax: &[f32],
        scale: &mut [f32],
        p: &mut [Param],
        effs: &mut [f32],
    ) -> bool {
        self.dispatch(amax, scale, p, effs)
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn run_avx512(
        &self,
        amax: &[f32],
        scale: &mut [f32],
        p: &mut [Param],
        effs: &mut [f32],
    ) -> bool {
        self.dispatch(amax, scale, p, effs)
    }
}

/// An output of the streaming kernels: fake-quant values (`f32`), codes (`u8`) or nothing.
trait Sink: Copy + Default + Send + Sync {
    /// Whether [`Sink::blocks`] computes the parameters of a dynamic symmetric spec itself, in
    /// its one pass over the data (otherwise they are computed before it is called).
    const FUSED: bool = false;
    /// Outputs of consecutive blocks (last may be shorter) with their parameters (filled in
    /// here when [`Sink::FUSED`] and the spec is dynamic and symmetric).
    fn blocks(
        k: &Kern,
        s: &[f32],
        d: &mut [Self],
        p: &mut [Param],
        block: usize,
        first: u64,
    ) -> Result<()>;
    /// Outputs of one big block, with threads inside.
    fn big(k: &Kern, s: &[f32], d: &mut [Self], p: Param, first: u64) -> Result<()>;
}

impl Sink for f32 {
    const FUSED: bool = true;

    fn blocks(
        k: &Kern,
        s: &[f32],
        d: &mut [f32],
        p: &mut [Param],
        block: usize,
        first: u64,
    ) -> Result<()> {
        if k.asym {
            for (j, ((sb, db), &pj)) in s
                .chunks(block)
                .zip(d.chunks_mut(block))
                .zip(&*p)
                .enumerate()
            {
                affine_fake_block(&k.spec, sb, db, pj, first + (j * block) as u64);
            }
            return Ok(());
        }
        // One fused pass over the step: each block's max |x|, its scale (dynamic) and its
        // outputs. The rare special blocks (NaN scale, 2^64 prescale) get a neutral scale
        // there and are redone by the reference path.
        let mut effs = [0.0f32; STEP_BLOCKS];
        let effs = &mut effs[..p.len()];
        let mut special = false;
        let g = GroupScales {
            rule: k.rule,
            tensor_scale: k.tensor_scale,
            // `effective` is `stored × factor` for every kind (IEEE products commute).
            factor: k.rule.effective_factor(k.tensor_scale),
            dynamic: k.dynamic,
            keep: k.keep,
        };
        let wide = k.codec.isa() == Isa::Avx512;
        let scales_of = |j0: usize, amax: &[f32], scale: &mut [f32]| {
            let n = amax.len();
            let (p, effs) = (&mut p[j0..j0 + n], &mut effs[j0..j0 + n]);
            special |= if wide {
                // SAFETY: the codec runs on AVX-512, so this CPU has it.
                unsafe { g.run_avx512(amax, scale, p, effs) }
            } else {
                g.run(amax, scale, p, effs)
            };
        };
        if k.divide {
            k.codec
                .quantize_blocks_fused_div(s, d, block, first, scales_of)?;
        } else {
            k.codec
                .quantize_blocks_fused(s, d, block, first, scales_of)?;
        }
        if special {
            for (j, ((sb, db), &eff)) in s
                .chunks(block)
                .zip(d.chunks_mut(block))
                .zip(&*effs)
                .enumerate()
            {
                if is_special(eff) {
                    let at = first + (j * block) as u64;
                    if k.divide {
                        fake_block_div(&k.codec, sb, db, eff, at)?;
                    } else {
                        fake_block(&k.codec, sb, db, eff, at)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn big(k: &Kern, s: &[f32], d: &mut [f32], p: Param, first: u64) -> Result<()> {
        if k.asym {
            d.par_chunks_mut(REDUCE_CHUNK)
                .zip(s.par_chunks(REDUCE_CHUNK))
                .enumerate()
                .for_each(|(c, (d, s))| {
                    affine_fake_block(&k.spec, s, d, p, first + (c * REDUCE_CHUNK) as u64)
                });
            return Ok(());
        }
        if k.divide {
            let eff = k.effective(p);
            return d
                .par_chunks_mut(REDUCE_CHUNK)
                .zip(s.par_chunks(REDUCE_CHUNK))
                .enumerate()
                .try_for_each(|(c, (d, s))| {
                    fake_block_div(&k.codec, s, d, eff, first + (c * REDUCE_CHUNK) as u64)
                });
        }
        fake_block(&k.pcodec, s, d, k.effective(p), first)
    }
}

impl Sink for u8 {
    fn blocks(
        k: &Kern,
        s: &[f32],
        d: &mut [u8],
        p: &mut [Param],
        block: usize,
        first: u64,
    ) -> Result<()> {
        if k.divide {
            return encode_blocks_div(&k.codec, |p| k.effective(p), s, d, p, block, first);
        }
        for (j, ((sb, db), &pj)) in s
            .chunks(block)
            .zip(d.chunks_mut(block))
            .zip(&*p)
            .enumerate()
        {
            let at = first + (j * block) as u64;
            if k.asym {
                affine_encode_block(&k.spec, sb, db, pj, at);
            } else {
                encode_block(&k.codec, sb, db, k.effective(pj), at)?;
            }
        }
        Ok(())
    }

    fn big(k: &Kern, s: &[f32], d: &mut [u8], p: Param, first: u64) -> Result<()> {
        if k.asym {
            d.par_chunks_mut(REDUCE_CHUNK)
                .zip(s.par_chunks(REDUCE_CHUNK))
                .enumerate()
                .for_each(|(c, (d, s))| {
                    affine_encode_block(&k.spec, s, d, p, first + (c * REDUCE_CHUNK) as u64)
                });
            return Ok(());
        }
        if k.divide {
            let p = [p];
            return d
                .par_chunks_mut(REDUCE_CHUNK)
                .zip(s.par_chunks(REDUCE_CHUNK))
                .enumerate()
                .try_for_each(|(c, (d, s))| {
                    let at = first + (c * REDUCE_CHUNK) as u64;
                    encode_blocks_div(&k.codec, |p| k.effective(p), s, d, &p, s.len(), at)
                });
        }
        encode_block(&k.pcodec, s, d, k.effective(p), first)
    }
}

impl Sink for () {
    fn blocks(_: &Kern, _: &[f32], _: &mut [()], _: &mut [Param], _: usize, _: u64) -> Result<()> {
        Ok(())
    }
    fn big(_: &Kern, _: &[f32], _: &mut [()], _: Param, _: u64) -> Result<()> {
        Ok(())
    }
}

/// The one driver behind every entry point: checks, lays out, runs the blocks, returns the
/// scales (`None` when `keep_scales` is false and the spec is dynamic: fake-quant only).
pub(crate) fn run(
    spec: &QuantSpec,
    src: &[f32],
    shape: &[usize],
    frozen: Option<&Scales>,
    out: Out<'_>,
    op: &'static str,
    keep_scales: bool,
) -> Result<Option<Scales>> {
    let plan = Plan::new(spec, shape)?;
    if src.len() != plan.n {
        return Err(QuantError::LengthMismatch {
            op,
            what: "src (product of shape)",
            expected: plan.n,
            got: src.len(),
        });
    }
    let out_len = match &out {
        Out::Fake(d) => Some(d.len()),
        Out::Codes(d) => Some(d.len()),
        Out::None => None,
    };
    if let Some(got) = out_len
        && got != plan.n
    {
        return Err(QuantError::LengthMismatch {
            op,
            what: "dst",
            expected: plan.n,
            got,
        });
    }
    if frozen.is_none() && spec.mode() == ScaleMode::Static {
        return Err(QuantError::StaticNeedsScales { op });
    }
    let nvfp4 = matches!(spec.scale(), ScaleKind::Nvfp4 { .. });
    let keep = keep_scales || frozen.is_some();
    // Group parameters in work order (empty when not kept), and the NVFP4 tensor scale.
    let (mut params, tensor_scale) = match frozen {
        Some(sc) => {
            check_scales(spec, &plan, sc, op)?;
            let p: Vec<Param> = match &sc.zero_points {
                Some(z) => sc
                    .values
                    .iter()
                    .zip(z)
                    .map(|(&scale, &zero)| Param { scale, zero })
                    .collect(),
                None => sc
                    .values
                    .iter()
                    .map(|&scale| Param { scale, zero: 0.0 })
                    .collect(),
            };
            let p = match plan.work {
                Work::SwapInner => plan.params_to_work_order(&p),
                _ => p,
            };
            (p, sc.tensor_scale.unwrap_or(1.0))
        }
        None => {
            let ts = if nvfp4 {
                nvfp4_tensor_scale(spec, par_amax(src))
            } else {
                1.0
            };
            let p = if keep {
                vec![Param::default(); plan.n_groups]
            } else {
                Vec::new()
            };
            (p, ts)
        }
    };
    // Large outputs are written with non-temporal stores (whole aligned lines, no
    // read-for-ownership; mxfp8 on 16M f32, one thread: 4.9 ms against 6.8 ms plain), as
    // lowbit-formats does for its slices; smaller ones stay in cache for whoever reads them.
    let codec = Codec::new(spec.format(), spec.conversion())
        .with_parallel(false)
        // (Not for tiles: their outputs go to a band buffer that is read right back.)
        .with_streaming(plan.n >= STREAM_MIN && plan.tiles().is_none());
    let kern = Kern {
        spec: *spec,
        rule: ScaleRule::new(spec),
        pcodec: codec.clone().with_parallel(true),
        codec,
        tensor_scale,
        dynamic: frozen.is_none(),
        asym: spec.is_asymmetric(),
        keep,
        divide: divides(spec),
    };
    if let Some(g) = plan.tiles() {
        match out {
            Out::Fake(dst) => kern.tiles(g, src, dst, &mut params)?,
            Out::Codes(dst) => kern.tiles(g, src, dst, &mut params)?,
            Out::None => kern.tiles(g, src, &mut vec![(); plan.n], &mut params)?,
        }
        return Ok(keep.then(|| make_scales(spec, &plan, &params, tensor_scale)));
    }
    let (row_len, block) = if plan.per_tensor {
        (plan.n, plan.n)
    } else {
        (plan.row_len, plan.block)
    };
    let work_src = plan.to_work(src);
    match out {
        Out::Fake(dst) => {
            if plan.work == Work::Direct {
                kern.drive(&work_src, dst, &mut params, row_len, block)?;
            } else {
                let mut tmp = vec![0.0f32; plan.work_len()];
                kern.drive(&work_src, &mut tmp, &mut params, row_len, block)?;
                plan.scatter_work(&tmp, dst);
            }
        }
        Out::Codes(dst) => {
            if plan.work == Work::Direct {
                kern.drive(&work_src, dst, &mut params, row_len, block)?;
            } else {
                let mut tmp = vec![0u8; plan.work_len()];
                kern.drive(&work_src, &mut tmp, &mut params, row_len, block)?;
                plan.scatter_work(&tmp, dst);
            }
        }
        Out::None => {
            let mut none = vec![(); plan.work_len()];
            kern.drive(&work_src, &mut none, &mut params, row_len, block)?;
        }
    }
    if plan.per_tensor && plan.n == 0 && kern.dynamic && keep {
        // An empty tensor still gets the scale of an all-zero group.
        params[0] = kern.big_param(src);
    }
    Ok(keep.then(|| make_scales(spec, &plan, &params, tensor_scale)))
}

/// The scales a run that keeps them returned.
fn scales_of(s: Option<Scales>) -> Result<Scales> {
    s.ok_or(QuantError::Calibration {
        reason: "internal: the scales were not kept".into(),
    })
}

pub(crate) fn make_scales(
    spec: &QuantSpec,
    plan: &Plan,
    work_params: &[Param],
    tensor_scale: f32,
) -> Scales {
    let p = plan.params_to_scale_order(work_params);
    Scales {
        shape: plan.scale_shape.clone(),
        values: p.iter().map(|p| p.scale).collect(),
        zero_points: spec
            .is_asymmetric()
            .then(|| p.iter().map(|p| p.zero).collect()),
        tensor_scale: matches!(spec.scale(), ScaleKind::Nvfp4 { .. }).then_some(tensor_scale),
    }
}

fn check_scales(spec: &QuantSpec, plan: &Plan, sc: &Scales, op: &'static str) -> Result<()> {
    let n: usize = sc.shape.iter().product();
    if sc.shape != plan.scale_shape || sc.values.len() != n {
        return Err(QuantError::ScaleShape {
            op,
            expected: plan.scale_shape.clone(),
            got: sc.shape.clone(),
        });
    }
    if spec.is_asymmetric() && sc.zero_points.as_ref().map(Vec::len) != Some(n) {
        return Err(QuantError::LengthMismatch {
            op,
            what: "zero points",
            expected: n,
            got: sc.zero_points.as_ref().map_or(0, Vec::len),
        });
    }
    if matches!(spec.scale(), ScaleKind::Nvfp4 { .. }) && sc.tensor_scale.is_none() {
        return Err(QuantError::Calibration {
            reason: format!("{op}: nvfp4 scales need a tensor scale"),
        });
    }
    Ok(())
}

impl QuantSpec {
    /// Fake-quantizes `src` (a tensor of `shape`, row-major) into `dst` with scales computed from
    /// `src` itself (a dynamic spec): `dst = Q(src · (1/s)) · s` group by group.
    ///
    /// Errors when the shape does not match the lengths, the axis is out of range, or the spec
    /// is static.
    pub fn fake_quantize(&self, src: &[f32], shape: &[usize], dst: &mut [f32]) -> Result<()> {
        run(
            self,
            src,
            shape,
            None,
            Out::Fake(dst),
            "fake_quantize",
            false,
        )
        .map(|_| ())
    }

    /// Like [`fake_quantize`](Self::fake_quantize), also returning the scales it used.
    pub fn fake_quantize_returning_scales(
        &self,
        src: &[f32],
        shape: &[usize],
        dst: &mut [f32],
    ) -> Result<Scales> {
        scales_of(run(
            self,
            src,
            shape,
            None,
            Out::Fake(dst),
            "fake_quantize",
            true,
        )?)
    }

    /// Fake-quantizes with frozen `scales` (from [`compute_scales`](Self::compute_scales) or a
    /// [`crate::Calibrator`]); works for static and dynamic specs.
    pub fn fake_quantize_with_scales(
        &self,
        src: &[f32],
        shape: &[usize],
        scales: &Scales,
        dst: &mut [f32],
    ) -> Result<()> {
        run(
            self,
            src,
            shape,
            Some(scales),
            Out::Fake(dst),
            "fake_quantize_with_scales",
            false,
        )
        .map(|_| ())
    }

    /// The scales a dynamic quantization of `src` would use.
    pub fn compute_scales(&self, src: &[f32], shape: &[usize]) -> Result<Scales> {
        let dynamic = self.to_builder().mode(ScaleMode::Dynamic).build()?;
        scales_of(run(
            &dynamic,
            src,
            shape,
            None,
            Out::None,
            "compute_scales",
            true,
        )?)
    }

    /// One code per element (in the low bits of a byte), unpacked, with dynamic scales.
    pub(crate) fn encode_codes(
        &self,
        src: &[f32],
        shape: &[usize],
        frozen: Option<&Scales>,
    ) -> Result<(Vec<u8>, Scales)> {
        let mut codes = vec![0u8; src.len()];
        let scales = run(
            self,
            src,
            shape,
            frozen,
            Out::Codes(&mut codes),
            "quantize",
            true,
        )?;
        Ok((codes, scales_of(scales)?))
    }
}

#[cfg(test)]
mod tests {
    //! The streaming kernels against the per-block reference they replaced (one scalar amax,
    //! one scale and one codec call per block, in work order): scales, fake-quant and codes
    //! bit for bit, dynamic and frozen, on every layout path (uniform blocks, partial blocks
    //! in short and long rows, big blocks with threads inside, per tensor, per channel on
    //! either axis) with NaN/inf/zero blocks and tiny/huge blocks that take the 2^64 prescale.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use lowbit_formats::{Overflow, Rounding};

    use super::*;
    use crate::scale::scale_from_amax;
    use crate::spec::{E4m3Rounding, E8m0Rounding};

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut z = seed;
        let mut x: Vec<f32> = (0..n)
            .map(|_| {
                z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut v = z;
                v = (v ^ (v >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                v = (v ^ (v >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                v ^= v >> 31;
                let u = (v >> 40) as f32 / (1u64 << 24) as f32;
                let e = ((v >> 8) % 16) as i32 - 8;
                (u * 2.0 - 1.0) * 2f32.powi(e)
            })
            .collect();
        // Specials every few thousand elements, at offsets that land in different blocks.
        let mut at = 37usize;
        let mut k = 0;
        while at + 200 < n {
            match k % 7 {
                0 => x[at] = f32::NAN,
                1 => x[at] = f32::NEG_INFINITY,
                2 => x[at..at + 160].fill(0.0),
                // Scales below f32's normal range (the 2^64 prescale), huge, tiny but normal.
                3 => x[at..at + 160].iter_mut().for_each(|v| *v *= 1e-38),
                4 => x[at..at + 160].iter_mut().for_each(|v| *v *= 1e36),
                5 => x[at..at + 160].iter_mut().for_each(|v| *v *= 1e-30),
                _ => x[at] = -0.0,
            }
            at += 2111 + 97 * k;
            k += 1;
        }
        x
    }

    /// The pre-streaming driver: serial, one block at a time.
    fn reference(spec: &QuantSpec, src: &[f32], shape: &[usize]) -> (Vec<f32>, Vec<u8>, Scales) {
        let plan = Plan::new(spec, shape).unwrap();
        let ts = if matches!(spec.scale(), ScaleKind::Nvfp4 { .. }) {
            nvfp4_tensor_scale(spec, amax(src))
        } else {
            1.0
        };
        let codec = Codec::new(spec.format(), spec.conversion()).with_parallel(false);
        let (row_len, block) = if plan.per_tensor {
            (plan.n, plan.n)
        } else {
            (plan.row_len, plan.block)
        };
        let work = plan.to_work(src);
        let nb = row_len.div_ceil(block);
        let mut params = vec![Param::default(); plan.n_groups];
        let mut fake = vec![0.0f32; plan.work_len()];
        let mut codes = vec![0u8; plan.work_len()];
        let wide = spec.format().bits() > 8;
        for r in 0..plan.work_len() / row_len {
            for j in 0..nb {
                let a = r * row_len + j * block;
                let b = (a + block).min((r + 1) * row_len);
                let s = &work[a..b];
                let p = if spec.is_asymmetric() {
                    let (lo, hi) = min_max(s);
                    affine_from_minmax(spec, lo, hi)
                } else {
                    Param {
                        scale: scale_from_amax(spec, amax(s), ts),
                        zero: 0.0,
                    }
                };
                params[r * nb + j] = p;
                if spec.is_asymmetric() {
                    affine_fake_block(spec, s, &mut fake[a..b], p, a as u64);
                    affine_encode_block(spec, s, &mut codes[a..b], p, a as u64);
                } else {
                    let eff = effective(spec, p.scale, ts);
                    if divides(spec) {
                        // torchao: `Q(x / s) · s`, one division per element.
                        let y: Vec<f32> = s.iter().map(|x| x / eff).collect();
                        codec
                            .quantize_scaled_slice(&y, &mut fake[a..b], 1.0, a as u64)
                            .unwrap();
                        fake[a..b]
                            .iter_mut()
                            .for_each(|v| *v = if eff.is_nan() { f32::NAN } else { *v * eff });
                        if !wide {
                            codec
                                .encode_scaled_slice(&y, &mut codes[a..b], 1.0, a as u64)
                                .unwrap();
                        }
                    } else {
                        fake_block(&codec, s, &mut fake[a..b], eff, a as u64).unwrap();
                        if !wide {
                            encode_block(&codec, s, &mut codes[a..b], eff, a as u64).unwrap();
                        }
                    }
                }
            }
        }
        let mut f = vec![0.0f32; plan.n];
        plan.scatter_work(&fake, &mut f);
        let mut c = vec![0u8; plan.n];
        plan.scatter_work(&codes, &mut c);
        (f, c, make_scales(spec, &plan, &params, ts))
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Equal scales, NaN included (bit patterns).
    fn same_scales(a: &Scales, b: &Scales, ctx: &str) {
        assert_eq!(a.shape, b.shape, "{ctx}");
        assert_eq!(bits(&a.values), bits(&b.values), "{ctx}: scales");
        let z = |s: &Scales| s.zero_points.as_deref().map(bits);
        assert_eq!(z(a), z(b), "{ctx}: zero points");
        let t = |s: &Scales| s.tensor_scale.map(f32::to_bits);
        assert_eq!(t(a), t(b), "{ctx}: tensor scale");
    }

    /// [`check_on`] with the planted NaN/inf, then with them replaced (a per-tensor scale or
    /// an NVFP4 tensor scale would otherwise be NaN everywhere).
    fn check(spec: &QuantSpec, shape: &[usize], seed: u64) {
        let n: usize = shape.iter().product();
        let mut x = data(n, seed);
        check_on(spec, shape, &x);
        x.iter_mut()
            .filter(|v| !v.is_finite())
            .for_each(|v| *v = 0.75);
        check_on(spec, shape, &x);
    }

    fn check_on(spec: &QuantSpec, shape: &[usize], x: &[f32]) {
        let n = x.len();
        let (want, want_codes, want_scales) = reference(spec, x, shape);
        let specials = (0..want_scales.values.len())
            .map(|i| want_scales.effective(spec, i).unwrap())
            .filter(|&e| !e.is_nan() && is_special(e))
            .count();
        SPECIAL.fetch_add(specials, std::sync::atomic::Ordering::Relaxed);
        let mut got = vec![0.0f32; n];
        let scales = spec
            .fake_quantize_returning_scales(x, shape, &mut got)
            .unwrap();
        let ctx = format!("{spec} {shape:?}");
        same_scales(&scales, &want_scales, &ctx);
        assert_eq!(bits(&got), bits(&want), "{ctx}: fake-quant");
        let mut plain = vec![0.0f32; n];
        spec.fake_quantize(x, shape, &mut plain).unwrap();
        assert_eq!(bits(&plain), bits(&want), "{ctx}: without scales");
        let mut frozen = vec![0.0f32; n];
        spec.fake_quantize_with_scales(x, shape, &want_scales, &mut frozen)
            .unwrap();
        assert_eq!(bits(&frozen), bits(&want), "{ctx}: frozen");
        same_scales(&spec.compute_scales(x, shape).unwrap(), &want_scales, &ctx);
        if spec.format().bits() <= 8 {
            let (codes, sc) = spec.encode_codes(x, shape, None).unwrap();
            assert_eq!(codes, want_codes, "{ctx}: codes");
            same_scales(&sc, &want_scales, &ctx);
        }
    }

    /// Blocks the tests sent down the 2^64 prescale path.
    static SPECIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn specs() -> Vec<QuantSpec> {
        let mut v: Vec<QuantSpec> = QuantSpec::presets().map(|(_, s)| s).collect();
        let p = |s: &str| s.parse::<QuantSpec>().unwrap().to_builder();
        v.push(
            p("int8")
                .asymmetric(true)
                .narrow_range(false)
                .build()
                .unwrap(),
        );
        for r in [E8m0Rounding::Ceil, E8m0Rounding::Even, E8m0Rounding::RCeil] {
            v.push(
                p("mxfp8_e4m3")
                    .scale(ScaleKind::E8M0 { rounding: r })
                    .build()
                    .unwrap(),
            );
        }
        v.push(
            p("nvfp4")
                .scale(ScaleKind::Nvfp4 {
                    block_rounding: E4m3Rounding::Up,
                })
                .build()
                .unwrap(),
        );
        // Tiles with edge tiles on most shapes, and the stochastic positions of their padding.
        v.push(p("mxfp4").per_tile(3, 40).build().unwrap());
        v.push(
            p("fp8_e4m3")
                .per_tile(5, 7)
                .rounding(Rounding::Stochastic { seed: 3 })
                .build()
                .unwrap(),
        );
        v.push(p("int8").per_tile(2, 300).asymmetric(true).build().unwrap());
        v.push(
            p("mxfp4")
                .rounding(Rounding::Stochastic { seed: 7 })
                .overflow(Overflow::Saturate)
                .build()
                .unwrap(),
        );
        v
    }

    #[test]
    fn streaming_kernels_equal_the_per_block_reference() {
        for spec in specs() {
            // Uniform blocks, partial blocks in short rows, partial blocks in long rows
            // (row ≥ PAR_ELEMS), a 3-D tensor.
            for shape in [
                vec![64usize, 256],
                vec![37, 100],
                vec![2, 20_000],
                vec![3, 5, 70],
            ] {
                check(&spec, &shape, shape.iter().product::<usize>() as u64);
            }
        }
        assert!(SPECIAL.load(std::sync::atomic::Ordering::Relaxed) > 100);
    }

    #[test]
    fn streaming_kernels_on_other_axes_and_big_blocks() {
        let p = |s: &str| s.parse::<QuantSpec>().unwrap().to_builder();
        let mut cases: Vec<(QuantSpec, Vec<usize>)> = vec![
            // Per tensor: one big block (threads inside) and one small block.
            (p("fp8_e4m3").build().unwrap(), vec![BIG_BLOCK + 77]),
            (p("fp8_e4m3").build().unwrap(), vec![33, 3]),
            // Per channel along the first axis with big channels, and along other axes.
            (p("int8").build().unwrap(), vec![2, BIG_BLOCK + 5]),
            (p("int8").per_channel(1).build().unwrap(), vec![7, 3, 50]),
            (p("int8").per_channel(-1).build().unwrap(), vec![40, 6]),
            // Blocks along a non-last axis (SwapInner), a big block size.
            (
                p("mxfp8_e4m3").per_block(0, 32).build().unwrap(),
                vec![100, 6],
            ),
            (
                p("fp8_e4m3").per_block(-1, BIG_BLOCK).build().unwrap(),
                vec![2, BIG_BLOCK + 9],
            ),
        ];
        cases.push((
            p("int8")
                .asymmetric(true)
                .narrow_range(false)
                .rounding(Rounding::Stochastic { seed: 3 })
                .build()
                .unwrap(),
            vec![BIG_BLOCK + 11],
        ));
        for (spec, shape) in cases {
            check(&spec, &shape, 99);
        }
    }

    #[test]
    fn streaming_outputs_equal_the_per_block_reference() {
        // ≥ STREAM_MIN elements: the block kernels write with non-temporal stores; the
        // destination is offset by one element so every line is split across two vectors.
        let shape = [1024usize, (STREAM_MIN / 1024) + 48];
        let n: usize = shape.iter().product();
        let mut finite = data(n, 17);
        finite
            .iter_mut()
            .filter(|v| !v.is_finite())
            .for_each(|v| *v = -0.75);
        let p = |s: &str| s.parse::<QuantSpec>().unwrap();
        let specs = [p("mxfp8_e4m3"), p("mxfp4"), p("nvfp4"), p("int8")];
        for (spec, x) in specs
            .iter()
            .flat_map(|s| [(s, data(n, 17)), (s, finite.clone())])
        {
            let (want, _, want_scales) = reference(spec, &x, &shape);
            let mut buf = vec![0.0f32; n + 1];
            let scales = spec
                .fake_quantize_returning_scales(&x, &shape, &mut buf[1..])
                .unwrap();
            let ctx = format!("{spec} {shape:?}");
            same_scales(&scales, &want_scales, &ctx);
            assert_eq!(bits(&buf[1..]), bits(&want), "{ctx}: fake-quant");
            assert_eq!(buf[0], 0.0, "{ctx}: wrote before the destination");
        }
    }

    #[test]
    fn is_special_equals_its_formula() {
        let formula = |e: f32| e.is_nan() || (needs_prescale(e) && e > 0.0 && e.is_finite());
        let mut bits: Vec<u32> = (0..=u32::MAX).step_by(4099).collect();
        for b in [
            0u32,
            1,
            0x7F_FFFF,
            0x80_0000,
            0x80_0001,
            0x7F7F_FFFF,
            0x7F80_0000,
        ] {
            for s in [0, 0x8000_0000] {
                bits.extend([b | s, (b | s).wrapping_add(1), (b | s).wrapping_sub(1)]);
            }
        }
        bits.extend([
            0x7F80_0001,
            0x7FC0_0000,
            0xFFFF_FFFF,
            0x0040_0000,
            0x0080_0000 - 2,
        ]);
        for b in bits {
            let e = f32::from_bits(b);
            assert_eq!(is_special(e), formula(e), "{b:#010x}");
        }
    }

    #[test]
    fn per_tensor_amax_matches_the_scalar_order() {
        let mut x = data(300_000, 5);
        x.iter_mut().for_each(|v| {
            if !v.is_finite() {
                *v = 1.0
            }
        });
        assert_eq!(par_amax(&x).to_bits(), amax(&x).to_bits());
        x[250_000] = f32::INFINITY;
        assert_eq!(par_amax(&x), f32::INFINITY);
        x[3] = f32::NAN;
        assert!(par_amax(&x).is_nan());
        assert_eq!(par_amax(&[]), 0.0);
        // An empty per-tensor input keeps the all-zero scale rule.
        let spec: QuantSpec = "fp8_e4m3".parse().unwrap();
        assert_eq!(spec.compute_scales(&[], &[0]).unwrap().values, [1.0]);
        let mut none: [f32; 0] = [];
        let sc = spec
            .fake_quantize_returning_scales(&[], &[0, 4], &mut none)
            .unwrap();
        assert_eq!(sc.values, [1.0]);
        assert_eq!(simd_amax(&[-0.0, 0.0]).to_bits(), 0);
    }
}
