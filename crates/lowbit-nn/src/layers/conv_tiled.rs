//! Dense 2-D convolution on the CPU: the path [`QConv2d`](super::QConv2d) takes when
//! `groups == 1`, the kernel is not 1×1, and input and weight are both F32 or both F64 on the
//! CPU.
//!
//! Candle 0.11 computes such a convolution with its tiled im2col (`conv2d_tiled`): per image it
//! first copies the input to NHWC (on one thread), then per tile of 512 output pixels fills a
//! `[k, tile]` column matrix element by element, with a bounds test per element, and multiplies
//! the `[c_out, k]` weight by it with gemm. The gemm is the cheap part; the copies took about a
//! third of the Fashion-MNIST ResNet's CPU time. [`TiledConv2d`] is a candle [`CustomOp2`] that
//! does the same tiles and the same gemm calls, but reads the NCHW input directly: per input
//! channel it zero-pads the few rows the tile reads once, then fills each column-matrix row
//! with one short copy per output row (no per-element test); it reuses its buffers per
//! thread, runs the (image, tile) pairs in parallel and writes each result row to the NCHW
//! output with one copy.
//!
//! **The same bits as candle.** Row `(ky·kw + kx)·c_in + ci` of a tile's column matrix is input
//! channel `ci` at tap `(ky, kx)` (candle's `k_flat` order: kernel row, kernel column, input
//! channel), its columns the tile's output pixels in row-major order, padding as `+0`; the
//! weight is flattened in that order; and the product is the same call of gemm 0.19 that
//! candle's `MatMul((1, c_out, tile, k))` makes on contiguous operands (`m = c_out`,
//! `n = tile`, `k = c_in·kh·kw`, unit column strides, row strides `k`, `tile` and `tile`,
//! `alpha = 0`, `beta = 1`, the same `Parallelism`; lowbit-nn's `gemm` dependency is the
//! crate candle-core links). gemm's arithmetic depends only on those arguments (and on the
//! CPU's features, detected once per process), so every output — signed zeros included —
//! equals candle's; `tests/conv_tiled.rs` checks it bit for bit over kernels 3, 5 and 7,
//! strides, padding, dilation, channel counts and tile boundaries (and would catch a candle
//! that changed its tiling). Where candle's matmul is not gemm (its `mkl` or `accelerate`
//! features) the op is not taken.
//!
//! The backward uses candle's own formulas (those of its `Conv2D` backprop): the input
//! gradient is candle's `conv_transpose2d` of the output gradient, and the weight gradient the
//! convolution of the transposed input with the transposed output gradient (computed by this
//! op where it applies, otherwise by candle's `conv2d` — the same bits either way), so the
//! gradients equal candle's. Two differences: candle takes the transposed convolution's
//! output padding from the height alone, and so fails on inputs whose width needs another one
//! (e.g. 11×10 at stride 2) — here each axis gets its own; and the input gradient is skipped
//! (`None`) when the input tracks no gradient (a constant input, e.g. the images).

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::conv_common::{Geom, check_grad_shape, cpu_floats, on_floats};

/// The op's name in messages.
const OP: &str = "conv2d";

/// Output pixels per tile: candle's `TILE_SIZE` in `conv2d_tiled`.
const TILE: usize = 512;

/// Dense 2-D convolution, `x [n, c_in, h, w] ⊛ weight [c_out, c_in, kh, kw] →
/// [n, c_out, oh, ow]`: candle's `conv2d` with `groups = 1`, the same bits, faster. Apply it
/// with [`TiledConv2d::forward`]; check the case with [`TiledConv2d::supports`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TiledConv2d {
    /// Zero padding on each of the four sides.
    pub padding: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Dilation (both axes).
    pub dilation: usize,
}

impl TiledConv2d {
    /// The op for candle's convolution config (its `groups` is checked by
    /// [`TiledConv2d::supports`]; `cudnn_fwd_algo` does not apply on the CPU).
    pub fn from_config(cfg: &candle_nn::Conv2dConfig) -> TiledConv2d {
        TiledConv2d {
            padding: cfg.padding,
            stride: cfg.stride,
            dilation: cfg.dilation,
        }
    }

    /// Whether `x.conv2d(w, …)` with `cfg` goes to this op: `cfg.groups == 1`, `x` and `w` of
    /// rank 4 on the CPU with the same dtype F32 or F64, a kernel other than 1×1 (candle
    /// computes 1×1 kernels another way), and candle's matmul being gemm (no `mkl` or
    /// `accelerate`). The sizes are not checked here: [`TiledConv2d::forward`] returns an
    /// error for inconsistent ones (where candle's `conv2d` would underflow on an input smaller
    /// than the kernel).
    pub fn supports(x: &Tensor, w: &Tensor, cfg: &candle_nn::Conv2dConfig) -> bool {
        let (Ok(_), Ok((_, _, kh, kw))) = (x.dims4(), w.dims4()) else {
            return false;
        };
        cfg.groups == 1
            && !(kh == 1 && kw == 1)
            && cpu_floats(x, w)
            && !candle_core::utils::has_mkl()
            && !candle_core::utils::has_accelerate()
    }

    /// Convolves `x` with `w` (both made contiguous first). Records the op for backprop when
    /// either tracks gradients.
    ///
    /// # Errors
    /// Shapes that are not a convolution (ranks, input channels that differ, a kernel larger
    /// than the padded input, a zero stride, dilation, kernel or channel count), dtypes other
    /// than F32/F64 or differing, a non-CPU device.
    pub fn forward(&self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        geom(x.dims(), w.dims(), self)?;
        x.contiguous()?.apply_op2(&w.contiguous()?, *self)
    }
}

/// `x.conv2d(w, padding, stride, dilation, 1)` with the same bits: [`TiledConv2d`] where it
/// applies, candle's `conv2d` elsewhere.
fn conv2d_like_candle(
    x: &Tensor,
    w: &Tensor,
    padding: usize,
    stride: usize,
    dilation: usize,
) -> candle_core::Result<Tensor> {
    let cfg = candle_nn::Conv2dConfig {
        padding,
        stride,
        dilation,
        groups: 1,
        cudnn_fwd_algo: None,
    };
    if TiledConv2d::supports(x, w, &cfg) {
        TiledConv2d::from_config(&cfg).forward(x, w)
    } else {
        x.conv2d(w, padding, stride, dilation, 1)
    }
}

/// The sizes of `x.conv2d(w, …)` with `op`.
fn geom(x: &[usize], wd: &[usize], op: &TiledConv2d) -> candle_core::Result<Geom> {
    Geom::new(
        (OP, op.padding, op.stride, op.dilation),
        (x, "[n, c_in, h, w]"),
        (wd, "[c_out, c_in, kh, kw]"),
        |ci, co, ci_w| {
            if ci == 0 || co == 0 || ci_w != ci {
                candle_core::bail!(
                    "{OP}: weight of shape {wd:?} for an input of {ci} channels, expected \
                     [c_out ≥ 1, {ci}, kh, kw] with at least one input channel"
                )
            }
            Ok(())
        },
    )
}

/// The tiled path's sizes.
impl Geom {
    /// Rows of the column matrix: `c_in · kh · kw`.
    fn k(&self) -> usize {
        self.ci * self.kh * self.kw
    }

    fn plane_in(&self) -> usize {
        self.h * self.w
    }

    fn plane_out(&self) -> usize {
        self.oh * self.ow
    }

    fn tiles(&self) -> usize {
        self.plane_out().div_ceil(TILE)
    }
}

/// The element types (F32, F64).
trait Elem: WithDType + Copy + Send + Sync + 'static {}
impl Elem for f32 {}
impl Elem for f64 {}

/// The weight `[c_out, c_in, kh, kw]` as candle's `k_flat`: `[c_out, kh, kw, c_in]`.
fn flatten_kernel<T: Elem>(w: &[T], g: &Geom) -> Vec<T> {
    let taps = g.kh * g.kw;
    let mut flat = Vec::with_capacity(g.co * g.k());
    for o in 0..g.co {
        for t in 0..taps {
            for c in 0..g.ci {
                flat.push(w[(o * g.ci + c) * taps + t]);
            }
        }
    }
    flat
}

/// A run of a tile's output pixels on one output row: row `oy`, columns `[ox, ox + len)`,
/// at column `at` of the tile.
#[derive(Clone, Copy, Debug)]
struct Run {
    oy: usize,
    ox: usize,
    len: usize,
    at: usize,
}

/// The runs of output pixels `[t0, t1)`.
fn runs(g: &Geom, t0: usize, t1: usize, out: &mut Vec<Run>) {
    out.clear();
    let mut p = t0;
    while p < t1 {
        let (oy, ox) = (p / g.ow, p % g.ow);
        let len = (g.ow - ox).min(t1 - p);
        out.push(Run {
            oy,
            ox,
            len,
            at: p - t0,
        });
        p += len;
    }
}

/// Copies `src[..dst.len()]` to `dst`: runs are short (an output row), so in blocks of 8 (the
/// last one overlapping), without a call to `memcpy` per run.
#[inline(always)]
fn copy_run<T: Copy>(dst: &mut [T], src: &[T]) {
    const B: usize = 8;
    let n = dst.len();
    let src = &src[..n];
    if n < B {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
        return;
    }
    let mut i = 0;
    while i + B <= n {
        dst[i..i + B].copy_from_slice(&src[i..i + B]);
        i += B;
    }
    if i < n {
        dst[n - B..].copy_from_slice(&src[n - B..]);
    }
}

/// Per-thread buffers of the forward.
struct Scratch<T> {
    /// The column matrix `[k, tile]`.
    col: Vec<T>,
    /// The gemm result `[c_out, tile]`.
    res: Vec<T>,
    /// One input channel's rows that the tile reads, zero-padded: `rows × wp`.
    padded: Vec<T>,
    /// The tile's runs of output pixels.
    runs: Vec<Run>,
}

impl<T> Scratch<T> {
    fn new() -> Scratch<T> {
        Scratch {
            col: Vec::new(),
            res: Vec::new(),
            padded: Vec::new(),
            runs: Vec::new(),
        }
    }
}

/// Fills `sc.col` (`[k, tile]`, row-major) with the column matrix of output pixels
/// `[t0, t0 + tile)` of one image (`x`, `[c_in, h, w]`): row `(ky·kw + kx)·c_in + ci`,
/// column `p − t0`, holds `x[ci, oy·s + ky·d − pad, ox·s + kx·d − pad]` for pixel
/// `p = oy·ow + ox`, or `+0` in the padding. Per input channel, the padded rows the tile reads
/// are built once; then every (tap, run) is one copy from them.
fn fill_columns<T: Elem>(x: &[T], g: &Geom, t0: usize, tile: usize, sc: &mut Scratch<T>) {
    let (s, d, wp) = (g.stride, g.dil, g.wp());
    runs(g, t0, t0 + tile, &mut sc.runs);
    let (Some(first), Some(last)) = (sc.runs.first(), sc.runs.last()) else {
        return;
    };
    // Padded rows [y0, y1) hold everything the tile reads.
    let y0 = first.oy * s;
    let y1 = last.oy * s + (g.kh - 1) * d + 1;
    sc.col.resize(g.k() * tile, T::zero());
    sc.padded.resize((y1 - y0) * wp, T::zero());
    for (c, plane) in x.chunks_exact(g.plane_in()).enumerate() {
        for (y, prow) in (y0..y1).zip(sc.padded.chunks_exact_mut(wp)) {
            match y.checked_sub(g.pad).filter(|iy| *iy < g.h) {
                Some(iy) => {
                    prow[..g.pad].fill(T::zero());
                    copy_run(&mut prow[g.pad..g.pad + g.w], &plane[iy * g.w..]);
                    prow[g.pad + g.w..].fill(T::zero());
                }
                None => prow.fill(T::zero()),
            }
        }
        for ky in 0..g.kh {
            for run in &sc.runs {
                let base = (run.oy * s + ky * d - y0) * wp + run.ox * s;
                for kx in 0..g.kw {
                    let r = (ky * g.kw + kx) * g.ci + c;
                    let dst = &mut sc.col[r * tile + run.at..][..run.len];
                    let src = &sc.padded[base + kx * d..];
                    if s == 1 {
                        copy_run(dst, src);
                    } else {
                        for (o, v) in dst.iter_mut().zip(src.iter().step_by(s)) {
                            *o = *v;
                        }
                    }
                }
            }
        }
    }
}

/// gemm's parallelism for one product, as candle's `MatMul` picks it.
fn parallelism() -> gemm::Parallelism {
    let threads = candle_core::utils::get_num_threads();
    if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

/// `dst [m, n] = lhs [m, k] · rhs [k, n]`, all contiguous row-major: exactly the gemm call
/// candle's `MatMul((1, m, n, k))` makes for contiguous operands.
fn matmul<T: Elem>(
    lhs: &[T],
    rhs: &[T],
    dst: &mut [T],
    (m, n, k): (usize, usize, usize),
    parallelism: gemm::Parallelism,
) {
    assert!(lhs.len() >= m * k && rhs.len() >= k * n && dst.len() >= m * n);
    // The strides of contiguous `[m, k]`, `[k, n]`, `[m, n]` layouts, as candle passes them
    // (row stride = the row length, also for a single row or column).
    let as_stride = |v: usize| isize::try_from(v).unwrap_or(isize::MAX);
    // SAFETY: the three buffers hold at least `m·k`, `k·n` and `m·n` elements (asserted
    // above), addressed with unit column strides and row strides `k`, `n` and `n`; `dst` is
    // borrowed mutably, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            as_stride(n),
            false,
            lhs.as_ptr(),
            1,
            as_stride(k),
            rhs.as_ptr(),
            1,
            as_stride(n),
            T::zero(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The output buffer, shared by the threads that write disjoint parts of it.
struct SharedOut<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: `SharedOut` is only written through `write`, whose callers write disjoint ranges.
unsafe impl<T: Send> Send for SharedOut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T: Copy> SharedOut<T> {
    /// Copies `src` to `[at, at + src.len())`.
    ///
    /// # Safety
    /// No other thread reads or writes that range while this runs.
    unsafe fn write(&self, at: usize, src: &[T]) {
        assert!(at <= self.len && src.len() <= self.len - at);
        // SAFETY: in bounds (asserted); the caller guarantees no concurrent access.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(at), src.len()) }
    }
}

fn forward<T: Elem>(x: &[T], w: &[T], g: &Geom) -> Vec<T> {
    let (k, plane, tiles) = (g.k(), g.plane_out(), g.tiles());
    let k_flat = flatten_kernel(w, g);
    let par = parallelism();
    let len = g.n * g.co * plane;
    let mut out: Vec<T> = Vec::with_capacity(len);
    let shared = SharedOut {
        ptr: out.as_mut_ptr(),
        len,
    };
    (0..g.n * tiles)
        .into_par_iter()
        .for_each_init(Scratch::new, |sc: &mut Scratch<T>, job| {
            let (b, t) = (job / tiles, job % tiles);
            let t0 = t * TILE;
            let tile = TILE.min(plane - t0);
            let image = &x[b * g.ci * g.plane_in()..][..g.ci * g.plane_in()];
            fill_columns(image, g, t0, tile, sc);
            sc.res.clear();
            sc.res.resize(g.co * tile, T::zero());
            matmul(&k_flat, &sc.col, &mut sc.res, (g.co, tile, k), par);
            for (o, row) in sc.res.chunks_exact(tile).enumerate() {
                // SAFETY: job (b, t) alone writes pixels [t0, t0 + tile) of image b's planes.
                unsafe { shared.write((b * g.co + o) * plane + t0, row) };
            }
        });
    // SAFETY: the jobs wrote every element: each (image, channel) plane's pixels are split
    // into the tiles `[t·TILE, min((t + 1)·TILE, plane))`, `t < tiles`, and `T` is a float
    // (no drop, every bit pattern valid).
    unsafe { out.set_len(len) };
    out
}

impl CustomOp2 for TiledConv2d {
    fn name(&self) -> &'static str {
        "lowbit-tiled-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = geom(l1.dims(), l2.dims(), self)?;
        let out = on_floats!(OP, (s1, l1, "input"), (s2, l2, "weight"), |x, w| forward(
            x, w, &g
        ))?;
        Ok((out, g.out_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = geom(x.dims(), w.dims(), self)?;
        check_grad_shape(OP, grad, &g.out_shape())?;
        let (pad, s, d) = (g.pad, g.stride, g.dil);
        let gx = if x.track_op() {
            // Candle's formula: the transposed convolution, with the output padding that
            // restores each axis's length (candle takes the height's for both).
            let out_padding = |len: usize, out: usize, k: usize| {
                // `len + 2·pad ≥ (out − 1)·s + span`, the stretch the kernel covers.
                len + 2 * pad - ((out - 1) * s + d * (k - 1) + 1)
            };
            let (ph, pw) = (out_padding(g.h, g.oh, g.kh), out_padding(g.w, g.ow, g.kw));
            let gx = grad.conv_transpose2d(w, pad, ph.max(pw), s, d)?;
            Some(gx.narrow(2, 0, g.h)?.narrow(3, 0, g.w)?)
        } else {
            None
        };
        // Candle's formula: the input's channels as a batch, convolved with the gradient's
        // channels as kernels (stride and dilation swapped), cut to the kernel's size.
        let gw = conv2d_like_candle(&x.transpose(0, 1)?, &grad.transpose(0, 1)?, pad, d, s)?
            .transpose(0, 1)?;
        let gw = if gw.dim(2)? != g.kh || gw.dim(3)? != g.kw {
            gw.narrow(2, 0, g.kh)?.narrow(3, 0, g.kw)?
        } else {
            gw
        };
        Ok((gx, Some(gw)))
    }
}
