//! Matmuls whose running sums are kept in an [`Accumulator`] format (FP16, BF16, FP22, … with
//! optional FP32 promotion every `chunk` products): the `accumulator` setting of a config,
//! taken by `linear`, `matmul` and `conv2d` layers.
//!
//! The forward value is lowbit-formats' [`Accumulator::dot`] for every output element (each
//! product rounded once to the accumulator, each addition rounded once, in order along the
//! reduction axis); the backward pass is the plain matmul's (a straight-through estimator: the
//! accumulator's rounding is treated as identity). It runs on the CPU (tensors on another device
//! are moved there and back), one output row per rayon task.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use lowbit_formats::Accumulator;
use rayon::prelude::*;

use crate::error::Result;
use crate::fake_quant::{cpu_f32, to_storage};

/// Candle op: `a [B, M, K] · b [B, K, N]` with every dot product in `acc`.
#[derive(Clone, Copy, Debug)]
pub struct AccumulatedMatmul {
    /// The accumulator.
    pub acc: Accumulator,
}

impl CustomOp2 for AccumulatedMatmul {
    fn name(&self) -> &'static str {
        "accumulated-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (&[ba, m, k], &[bb, k2, n]) = (l1.dims(), l2.dims()) else {
            candle_core::bail!(
                "accumulated matmul takes [B, M, K] and [B, K, N], got {:?} and {:?}",
                l1.dims(),
                l2.dims()
            )
        };
        if ba != bb || k != k2 {
            candle_core::bail!(
                "accumulated matmul: shapes {:?} and {:?} do not multiply",
                l1.dims(),
                l2.dims()
            );
        }
        let a = cpu_f32(s1, l1)?;
        let b = cpu_f32(s2, l2)?;
        // bᵀ per batch, so that both operands of a dot product are contiguous rows.
        let mut bt = vec![0f32; b.len()];
        for (src, dst) in b.chunks(k * n).zip(bt.chunks_mut(k * n)) {
            for (i, row) in src.chunks(n).enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    dst[j * k + i] = v;
                }
            }
        }
        let mut out = vec![0f32; ba * m * n];
        if k > 0 {
            out.par_chunks_mut(n.max(1))
                .enumerate()
                .for_each(|(row, o)| {
                    let (batch, i) = (row / m, row % m);
                    let x = &a[(batch * m + i) * k..][..k];
                    let cols = &bt[batch * n * k..][..n * k];
                    self.acc.dot_rows(x, cols, k, o);
                });
        }
        Ok((to_storage(out, s1.dtype()), Shape::from((ba, m, n))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let da = grad.matmul(&b.t()?)?;
        let db = a.t()?.matmul(grad)?;
        Ok((Some(da), Some(db)))
    }
}

/// `a · b` (batch dimensions broadcast as `Tensor::broadcast_matmul` does) with every dot
/// product in `acc`.
pub fn matmul_accumulated(a: &Tensor, b: &Tensor, acc: Accumulator) -> Result<Tensor> {
    let (ra, rb) = (a.rank(), b.rank());
    if ra < 2 || rb < 2 {
        return Err(crate::error::NnError::Kernel(format!(
            "accumulated matmul needs operands of rank ≥ 2, got {:?} and {:?}",
            a.dims(),
            b.dims()
        )));
    }
    let (m, k) = (a.dims()[ra - 2], a.dims()[ra - 1]);
    let n = b.dims()[rb - 1];
    let batch = broadcast_batch(&a.dims()[..ra - 2], &b.dims()[..rb - 2]).ok_or_else(|| {
        crate::error::NnError::Kernel(format!(
            "accumulated matmul: batch dimensions of {:?} and {:?} do not broadcast",
            a.dims(),
            b.dims()
        ))
    })?;
    let bsz: usize = batch.iter().product();
    let shape = |tail: [usize; 2]| [batch.as_slice(), &tail].concat();
    let a3 = a.broadcast_as(shape([m, k]))?.reshape((bsz, m, k))?;
    let b3 = b.broadcast_as(shape([k, n]))?.reshape((bsz, k, n))?;
    let dev = a.device().clone();
    let op = AccumulatedMatmul { acc };
    let y = if dev.is_cpu() {
        a3.apply_op2(&b3, op)?
    } else {
        let cpu = candle_core::Device::Cpu;
        a3.to_device(&cpu)?
            .apply_op2(&b3.to_device(&cpu)?, op)?
            .to_device(&dev)?
    };
    Ok(y.reshape(shape([m, n]))?)
}

/// `x · wᵀ` for `x [.., K]` and `w [N, K]` (a linear layer without its bias).
pub fn linear_accumulated(x: &Tensor, w: &Tensor, acc: Accumulator) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = dims.last().copied().unwrap_or(1);
    let rows = x.elem_count() / k.max(1);
    let y = matmul_accumulated(&x.reshape((rows, k))?, &w.t()?, acc)?;
    let mut out = dims;
    if let Some(last) = out.last_mut() {
        *last = w.dims()[0];
    }
    Ok(y.reshape(out)?)
}

/// NumPy broadcasting of two batch shapes.
fn broadcast_batch(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = (i + a.len()).checked_sub(r).map_or(1, |j| a[j]);
            let db = (i + b.len()).checked_sub(r).map_or(1, |j| b[j]);
            match (da, db) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// A 2-D convolution (NCHW input, `[c_out, c_in / groups, kh, kw]` weight, candle's padding,
/// stride, dilation and groups) with every output's dot product in `acc`, the reduction in the
/// weight's own order (input channel, kernel row, kernel column; padding as `+0` terms). The
/// bias is not included. The result tracks no gradient: [`straight_through`] gives it the
/// plain convolution's.
pub fn conv2d_accumulated(
    x: &Tensor,
    w: &Tensor,
    cfg: &candle_nn::Conv2dConfig,
    acc: Accumulator,
) -> Result<Tensor> {
    let err = |m: String| crate::error::NnError::Kernel(format!("accumulated conv2d: {m}"));
    let (n, c, h, wd) = x.dims4()?;
    let (co, cg, kh, kw) = w.dims4()?;
    let groups = cfg.groups.max(1);
    if c != cg * groups || co % groups != 0 {
        return Err(err(format!(
            "input {:?} and weight {:?} do not fit {groups} groups",
            x.dims(),
            w.dims()
        )));
    }
    if kh == 0 || kw == 0 {
        return Err(err(format!("weight {:?} has an empty kernel", w.dims())));
    }
    let (p, s, d) = (cfg.padding, cfg.stride.max(1), cfg.dilation.max(1));
    let span = |len: usize, k: usize| {
        (len + 2 * p)
            .checked_sub(d * (k - 1) + 1)
            .map(|v| v / s + 1)
    };
    let (Some(oh), Some(ow)) = (span(h, kh), span(wd, kw)) else {
        return Err(err(format!(
            "kernel {kh}x{kw} (dilation {d}) does not fit input {h}x{wd} with padding {p}"
        )));
    };
    let xv = x
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let wv = w
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let k = cg * kh * kw;
    let co_g = co / groups;
    let pixels = oh * ow;
    let mut out = vec![0f32; n * co * pixels];
    // One task per (image, output channel): its patches are gathered per (image, group) once.
    out.par_chunks_mut((co_g * pixels).max(1))
        .enumerate()
        .for_each(|(task, o)| {
            let (img, g) = (task / groups, task % groups);
            let mut cols = vec![0f32; pixels * k];
            for (pix, col) in cols.chunks_mut(k).enumerate() {
                let (oy, ox) = (pix / ow, pix % ow);
                for ci in 0..cg {
                    let plane = &xv[((img * c) + g * cg + ci) * h * wd..][..h * wd];
                    for ky in 0..kh {
                        let iy = (oy * s + ky * d) as isize - p as isize;
                        for kx in 0..kw {
                            let ix = (ox * s + kx * d) as isize - p as isize;
                            let inside =
                                (0..h as isize).contains(&iy) && (0..wd as isize).contains(&ix);
                            col[(ci * kh + ky) * kw + kx] = if inside {
                                plane[iy as usize * wd + ix as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
            for (j, orow) in o.chunks_mut(pixels).enumerate() {
                let wrow = &wv[(g * co_g + j) * k..][..k];
                acc.dot_rows(wrow, &cols, k, orow);
            }
        });
    Ok(
        Tensor::from_vec(out, (n, co, oh, ow), &candle_core::Device::Cpu)?
            .to_dtype(x.dtype())?
            .to_device(x.device())?,
    )
}

/// `sim` as the value, `plain`'s gradient: `sim + (plain − plain)` with the second `plain`
/// detached, the straight-through estimator of a simulated op (`plain` is the op in f32). The
/// value is `sim` itself wherever `plain` is finite (`x − x = +0`; a `−0` of `sim` becomes
/// `+0`).
pub fn straight_through(sim: &Tensor, plain: &Tensor) -> Result<Tensor> {
    Ok((sim.detach() + (plain - plain.detach())?)?)
}
