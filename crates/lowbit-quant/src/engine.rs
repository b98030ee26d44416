//! The fused per-block kernels: one pass per block computes its statistics, its scale and the
//! fake-quant (or the codes) of its elements; threads run over fixed chunks of blocks, so the
//! results never depend on the thread count.

use std::borrow::Cow;

use lowbit_formats::{Codec, Format, Rounding, stochastic_bits};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{QuantError, Result};
use crate::scale::{Param, affine_from_minmax, effective, nvfp4_tensor_scale, scale_from_amax};
use crate::spec::{Granularity, QuantSpec, ScaleKind, ScaleMode};

/// Elements per parallel work item (a multiple of every block size up to it).
const PAR_ELEMS: usize = 1 << 14;
/// Per-tensor reductions split into chunks of this many elements.
const REDUCE_CHUNK: usize = 1 << 16;

/// Frozen or computed scales of one tensor, in the layout of the spec's granularity.
///
/// `shape` is the tensor's shape with the group axis replaced: `[1]` per tensor, `[len]` per
/// channel, `ceil(len / size)` along the axis per block, `1` along the axis for whole-axis.
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

pub(crate) fn resolve_axis(axis: isize, shape: &[usize]) -> Result<usize> {
    let rank = shape.len() as isize;
    let a = if axis < 0 { axis + rank } else { axis };
    if a < 0 || a >= rank {
        return Err(QuantError::AxisOutOfRange {
            axis,
            rank: shape.len(),
            shape: shape.to_vec(),
        });
    }
    Ok(a as usize)
}

impl Plan {
    pub(crate) fn new(spec: &QuantSpec, shape: &[usize]) -> Result<Plan> {
        let n = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or(QuantError::LengthMismatch {
                op: "plan",
                what: "shape",
                expected: usize::MAX,
                got: usize::MAX,
            })?;
        let split = |axis: isize| -> Result<(usize, usize, usize, usize)> {
            let a = resolve_axis(axis, shape)?;
            Ok((
                a,
                shape[..a].iter().product(),
                shape[a],
                shape[a + 1..].iter().product(),
            ))
        };
        let plan = match spec.granularity() {
            Granularity::PerTensor => Plan {
                n,
                outer: 1,
                len: n,
                inner: 1,
                work: Work::Direct,
                per_tensor: true,
                per_channel: false,
                row_len: n,
                block: n,
                n_groups: 1,
                scale_shape: vec![1],
            },
            Granularity::PerChannel { axis } => {
                let (_, outer, len, inner) = split(axis)?;
                let work = if outer == 1 {
                    Work::Direct
                } else {
                    Work::SwapOuter
                };
                Plan {
                    n,
                    outer,
                    len,
                    inner,
                    work,
                    per_tensor: false,
                    per_channel: true,
                    row_len: outer * inner,
                    block: outer * inner,
                    n_groups: len,
                    scale_shape: vec![len],
                }
            }
            Granularity::PerBlock { axis, .. } | Granularity::WholeAxis { axis } => {
                let (a, outer, len, inner) = split(axis)?;
                let size = match spec.granularity() {
                    Granularity::PerBlock { size, .. } => size,
                    _ => len.max(1),
                };
                let nb = len.div_ceil(size);
                let mut scale_shape = shape.to_vec();
                scale_shape[a] = nb;
                Plan {
                    n,
                    outer,
                    len,
                    inner,
                    work: if inner == 1 {
                        Work::Direct
                    } else {
                        Work::SwapInner
                    },
                    per_tensor: false,
                    per_channel: false,
                    row_len: len,
                    block: size.min(len.max(1)),
                    n_groups: outer * inner * nb,
                    scale_shape,
                }
            }
        };
        Ok(plan)
    }

    /// Blocks per work row.
    pub(crate) fn blocks_per_row(&self) -> usize {
        if self.block == 0 {
            0
        } else {
            self.row_len.div_ceil(self.block)
        }
    }

    /// The tensor in work order.
    pub(crate) fn to_work<'a, T: Copy + Send + Sync>(&self, src: &'a [T]) -> Cow<'a, [T]> {
        match self.work {
            Work::Direct => Cow::Borrowed(src),
            Work::SwapOuter => Cow::Owned(swap_first2(src, self.outer, self.len, self.inner)),
            Work::SwapInner => Cow::Owned(swap_last2(src, self.outer, self.len, self.inner)),
        }
    }

    /// Writes a work-order buffer back in the tensor's order.
    pub(crate) fn scatter_work<T: Copy + Send + Sync>(&self, work: &[T], dst: &mut [T]) {
        let back = match self.work {
            Work::Direct => {
                dst.copy_from_slice(work);
                return;
            }
            Work::SwapOuter => swap_first2(work, self.len, self.outer, self.inner),
            Work::SwapInner => swap_last2(work, self.outer, self.inner, self.len),
        };
        dst.copy_from_slice(&back);
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

/// `(a, b, c) → (a, c, b)`.
pub(crate) fn swap_last2<T: Copy + Send + Sync>(src: &[T], a: usize, b: usize, c: usize) -> Vec<T> {
    let mut dst = src.to_vec();
    if b * c == 0 {
        return dst;
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
    debug_assert_eq!(dst.len(), a * b * c);
    dst
}

/// `(a, b, c) → (b, a, c)`.
pub(crate) fn swap_first2<T: Copy + Send + Sync>(
    src: &[T],
    a: usize,
    b: usize,
    c: usize,
) -> Vec<T> {
    let mut dst = src.to_vec();
    if c == 0 {
        return dst;
    }
    dst.par_chunks_mut(c).enumerate().for_each(|(k, d)| {
        let (j, i) = (k / a, k % a); // dst row (j, i) ← src row (i, j)
        let from = (i * b + j) * c;
        d.copy_from_slice(&src[from..from + c]);
    });
    dst
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

pub(crate) fn par_amax(xs: &[f32]) -> f32 {
    let m = xs
        .par_chunks(REDUCE_CHUNK)
        .map(|c| amax(c).to_bits())
        .reduce(|| 0, u32::max);
    f32::from_bits(m)
}

fn par_min_max(xs: &[f32]) -> (f32, f32) {
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
/// parallel over fixed chunks of blocks.
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

fn needs_prescale(eff: f32) -> bool {
    !eff.is_normal() || !(1.0 / eff).is_finite()
}

/// Symmetric fake-quant of one block: `Q(x · (1/s)) · s`.
fn fake_block(codec: &Codec, src: &[f32], dst: &mut [f32], eff: f32, first: u64) -> Result<()> {
    if eff.is_nan() {
        dst.fill(f32::NAN);
        return Ok(());
    }
    if needs_prescale(eff) && eff > 0.0 && eff.is_finite() {
        let tmp: Vec<f32> = src.iter().map(|x| x * PRESCALE).collect();
        codec.quantize_scaled_slice(&tmp, dst, eff * PRESCALE, first)?;
        dst.iter_mut().for_each(|d| *d *= 1.0 / PRESCALE);
        return Ok(());
    }
    Ok(codec.quantize_scaled_slice(src, dst, eff, first)?)
}

/// Symmetric codes of one block: `encode(x · (1/s))`.
fn encode_block(codec: &Codec, src: &[f32], dst: &mut [u8], eff: f32, first: u64) -> Result<()> {
    if needs_prescale(eff) && eff > 0.0 && eff.is_finite() {
        let tmp: Vec<f32> = src.iter().map(|x| x * PRESCALE).collect();
        return Ok(codec.encode_scaled_slice(&tmp, dst, eff * PRESCALE, first)?);
    }
    Ok(codec.encode_scaled_slice(src, dst, eff, first)?)
}

/// The integer an asymmetric element rounds to: `clamp(round(x · (1/s) + z))` (PyTorch
/// `fake_quantize_per_tensor_affine`).
#[inline]
fn affine_q(spec: &QuantSpec, x: f32, inv: f32, zero: f32, index: u64) -> f32 {
    let rounding = spec.conversion().rounding;
    let rand = match rounding {
        Rounding::Stochastic { seed } => stochastic_bits(seed, index),
        _ => 0,
    };
    match spec.format() {
        Format::Int(i) => i.round_value(x * inv + zero, rounding, rand),
        Format::Float(_) => f32::NAN, // rejected by validation
    }
}

fn affine_fake_block(spec: &QuantSpec, src: &[f32], dst: &mut [f32], p: Param, first: u64) {
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

/// The one driver behind every entry point: checks, lays out, runs the blocks, returns scales.
pub(crate) fn run(
    spec: &QuantSpec,
    src: &[f32],
    shape: &[usize],
    frozen: Option<&Scales>,
    out: Out<'_>,
    op: &'static str,
) -> Result<Scales> {
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
    // Group parameters in work order, and the NVFP4 tensor scale.
    let (mut params, tensor_scale) = match frozen {
        Some(sc) => {
            check_scales(spec, &plan, sc, op)?;
            let zeros = sc
                .zero_points
                .clone()
                .unwrap_or_else(|| vec![0.0; sc.values.len()]);
            let p: Vec<Param> = sc
                .values
                .iter()
                .zip(&zeros)
                .map(|(&scale, &zero)| Param { scale, zero })
                .collect();
            (
                plan.params_to_work_order(&p),
                sc.tensor_scale.unwrap_or(1.0),
            )
        }
        None => {
            let ts = if nvfp4 {
                nvfp4_tensor_scale(spec, par_amax(src))
            } else {
                1.0
            };
            (vec![Param::default(); plan.n_groups], ts)
        }
    };
    let dynamic = frozen.is_none();
    let codec = Codec::new(spec.format(), spec.conversion()).with_parallel(false);
    let asym = spec.is_asymmetric();

    if plan.per_tensor {
        if dynamic {
            params[0] = if asym {
                let (lo, hi) = par_min_max(src);
                affine_from_minmax(spec, lo, hi)
            } else {
                Param {
                    scale: scale_from_amax(spec, par_amax(src), tensor_scale),
                    zero: 0.0,
                }
            };
        }
        let p = params[0];
        let eff = effective(spec, p.scale, tensor_scale);
        let pcodec = codec.clone().with_parallel(true);
        match out {
            Out::Fake(dst) if asym => dst
                .par_chunks_mut(REDUCE_CHUNK)
                .zip(src.par_chunks(REDUCE_CHUNK))
                .enumerate()
                .for_each(|(k, (d, s))| {
                    affine_fake_block(spec, s, d, p, (k * REDUCE_CHUNK) as u64)
                }),
            Out::Codes(dst) if asym => dst
                .par_chunks_mut(REDUCE_CHUNK)
                .zip(src.par_chunks(REDUCE_CHUNK))
                .enumerate()
                .for_each(|(k, (d, s))| {
                    affine_encode_block(spec, s, d, p, (k * REDUCE_CHUNK) as u64)
                }),
            Out::Fake(dst) => fake_block(&pcodec, src, dst, eff, 0)?,
            Out::Codes(dst) => encode_block(&pcodec, src, dst, eff, 0)?,
            Out::None => {}
        }
        return Ok(make_scales(spec, &plan, &params, tensor_scale));
    }

    let work_src = plan.to_work(src);
    let stats = |s: &[f32], p: &mut Param| {
        if dynamic {
            *p = if asym {
                let (lo, hi) = min_max(s);
                affine_from_minmax(spec, lo, hi)
            } else {
                Param {
                    scale: scale_from_amax(spec, amax(s), tensor_scale),
                    zero: 0.0,
                }
            };
        }
    };
    let (row_len, block) = (plan.row_len, plan.block);
    match out {
        Out::Fake(dst) if !asym && plan.work == Work::Direct => {
            fake_direct_symmetric(
                spec,
                &codec,
                src,
                dst,
                &mut params,
                &plan,
                dynamic,
                tensor_scale,
            )?;
        }
        Out::Fake(dst) => {
            let f = |s: &[f32], d: &mut [f32], p: &mut Param, first: u64| -> Result<()> {
                stats(s, p);
                if asym {
                    affine_fake_block(spec, s, d, *p, first);
                    Ok(())
                } else {
                    fake_block(&codec, s, d, effective(spec, p.scale, tensor_scale), first)
                }
            };
            if plan.work == Work::Direct {
                for_each_block(&work_src, dst, &mut params, row_len, block, &f)?;
            } else {
                let mut tmp = vec![0.0f32; plan.n];
                for_each_block(&work_src, &mut tmp, &mut params, row_len, block, &f)?;
                plan.scatter_work(&tmp, dst);
            }
        }
        Out::Codes(dst) => {
            let f = |s: &[f32], d: &mut [u8], p: &mut Param, first: u64| -> Result<()> {
                stats(s, p);
                if asym {
                    affine_encode_block(spec, s, d, *p, first);
                    Ok(())
                } else {
                    encode_block(&codec, s, d, effective(spec, p.scale, tensor_scale), first)
                }
            };
            if plan.work == Work::Direct {
                for_each_block(&work_src, dst, &mut params, row_len, block, &f)?;
            } else {
                let mut tmp = vec![0u8; plan.n];
                for_each_block(&work_src, &mut tmp, &mut params, row_len, block, &f)?;
                plan.scatter_work(&tmp, dst);
            }
        }
        Out::None => {
            let mut none = vec![(); plan.n];
            let f = |s: &[f32], _: &mut [()], p: &mut Param, _: u64| -> Result<()> {
                stats(s, p);
                Ok(())
            };
            for_each_block(&work_src, &mut none, &mut params, row_len, block, &f)?;
        }
    }
    Ok(make_scales(spec, &plan, &params, tensor_scale))
}

/// The symmetric fake-quant of a tensor whose groups are consecutive runs of `plan.block`
/// elements within rows of `plan.row_len` (per channel with the channel axis first, blocks
/// along the last axis), as a few streaming passes per cache-sized chunk: the blocks' amax
/// (SIMD, `lowbit_formats::abs_max_blocks`), their scales (scalar, one per block), then one
/// fused SIMD call that fake-quantizes every block of the chunk with its own scale
/// (`Codec::quantize_blocks_scaled`). Chunks are whole rows (or whole blocks when rows are
/// multiples of the block), processed in parallel, so results never depend on the thread
/// count. Blocks whose scale is NaN or needs the 2^64 prescale take the per-block path.
#[allow(clippy::too_many_arguments)]
fn fake_direct_symmetric(
    spec: &QuantSpec,
    codec: &Codec,
    src: &[f32],
    dst: &mut [f32],
    params: &mut [Param],
    plan: &Plan,
    dynamic: bool,
    tensor_scale: f32,
) -> Result<()> {
    let (row_len, block) = (plan.row_len, plan.block);
    if src.is_empty() || block == 0 {
        return Ok(());
    }
    let per_row = row_len.div_ceil(block);
    // Elements and groups per work item: whole blocks when they tile the rows, else whole rows.
    let (chunk, groups) = if row_len.is_multiple_of(block) {
        let m = (PAR_ELEMS / block).max(1);
        (m * block, m)
    } else {
        let r = (PAR_ELEMS / row_len).max(1);
        (r * row_len, r * per_row)
    };
    src.par_chunks(chunk)
        .zip(dst.par_chunks_mut(chunk))
        .zip(params.par_chunks_mut(groups))
        .enumerate()
        .try_for_each(|(k, ((s, d), p))| -> Result<()> {
            let first = (k * chunk) as u64;
            let mut effs = Vec::with_capacity(p.len());
            let mut amaxes = vec![0f32; p.len()];
            if dynamic {
                if row_len.is_multiple_of(block) {
                    lowbit_formats::abs_max_blocks(s, block, &mut amaxes)?;
                } else {
                    for (r, am) in s.chunks(row_len).zip(amaxes.chunks_mut(per_row)) {
                        lowbit_formats::abs_max_blocks(r, block, am)?;
                    }
                }
                for (pb, &a) in p.iter_mut().zip(&amaxes) {
                    *pb = Param {
                        scale: scale_from_amax(spec, a, tensor_scale),
                        zero: 0.0,
                    };
                }
            }
            let mut slow = false;
            for pb in p.iter() {
                let eff = effective(spec, pb.scale, tensor_scale);
                slow |= eff.is_nan() || needs_prescale(eff);
                effs.push(eff);
            }
            let rows: Vec<(usize, usize)> = if row_len.is_multiple_of(block) {
                vec![(0, s.len())]
            } else {
                (0..s.len().div_ceil(row_len))
                    .map(|r| (r * row_len, ((r + 1) * row_len).min(s.len())))
                    .collect()
            };
            for (r, &(a, b)) in rows.iter().enumerate() {
                let g0 = if row_len.is_multiple_of(block) {
                    0
                } else {
                    r * per_row
                };
                let nb = (b - a).div_ceil(block);
                let (sr, dr, er) = (&s[a..b], &mut d[a..b], &effs[g0..g0 + nb]);
                if slow {
                    for (j, ((sb, db), &eff)) in sr
                        .chunks(block)
                        .zip(dr.chunks_mut(block))
                        .zip(er)
                        .enumerate()
                    {
                        fake_block(codec, sb, db, eff, first + (a + j * block) as u64)?;
                    }
                } else {
                    codec.quantize_blocks_scaled(sr, dr, block, er, first + a as u64)?;
                }
            }
            Ok(())
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
        run(self, src, shape, None, Out::Fake(dst), "fake_quantize").map(|_| ())
    }

    /// Like [`fake_quantize`](Self::fake_quantize), also returning the scales it used.
    pub fn fake_quantize_returning_scales(
        &self,
        src: &[f32],
        shape: &[usize],
        dst: &mut [f32],
    ) -> Result<Scales> {
        run(self, src, shape, None, Out::Fake(dst), "fake_quantize")
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
        )
        .map(|_| ())
    }

    /// The scales a dynamic quantization of `src` would use.
    pub fn compute_scales(&self, src: &[f32], shape: &[usize]) -> Result<Scales> {
        let dynamic = self.to_builder().mode(ScaleMode::Dynamic).build()?;
        run(&dynamic, src, shape, None, Out::None, "compute_scales")
    }

    /// One code per element (in the low bits of a byte), unpacked, with dynamic scales.
    pub(crate) fn encode_codes(
        &self,
        src: &[f32],
        shape: &[usize],
        frozen: Option<&Scales>,
    ) -> Result<(Vec<u8>, Scales)> {
        let mut codes = vec![0u8; src.len()];
        let scales = run(self, src, shape, frozen, Out::Codes(&mut codes), "quantize")?;
        Ok((codes, scales))
    }
}
