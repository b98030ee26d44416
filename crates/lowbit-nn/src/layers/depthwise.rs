//! Depthwise 2-D convolution on the CPU: the path [`QConv2d`](super::QConv2d) takes when
//! `groups` equals the input channels (`c`), the weight is `[c·m, 1, kh, kw]` (channel
//! multiplier `m ≥ 1`), and input and weight are both F32 or both F64 on the CPU.
//!
//! Candle 0.11 computes a grouped convolution as one convolution per group (`chunk` the input
//! and the weight, one im2col + gemm per channel, `cat` the results), which made the depthwise
//! layers about half of EfficientNet-Lite0's CPU time. [`DepthwiseConv2d`] is a candle
//! [`CustomOp2`] that computes each output plane directly (rayon over `batch × channels`),
//! with its own backward (the gradients of the input and of the weight), so QAT trains
//! through it as through candle's convolution.
//!
//! **The same numbers as candle.** Each output is summed in the order of candle 0.11's
//! convolution (a tiled im2col, then per channel a gemm that sums along the taps in order):
//! with taps `t = ky·kw + kx` over the zero-padded input, `acc = x₀·w₀`, then
//! `acc = fma(x_t, w_t, acc)` for `t = 1, 2, …` — a fused multiply-add where gemm uses one
//! (x86-64 with AVX2 and FMA), a rounded product then a sum elsewhere. (That is gemm's
//! matrix–vector kernel, for multiplier 1; with a multiplier above 1 gemm's matrix kernel
//! starts from `acc = +0` and adds the first product too, which only changes the sign of a
//! zero sum — and is done here too.) Padding zeros are multiplied in as candle does, so even
//! the sign of a zero output agrees. `tests/depthwise.rs`
//! checks the results bit for bit against candle's grouped `conv2d` (F32 and F64, multiplier
//! 1 and 2, stride, padding, dilation). One exception: candle works in tiles of 512 output
//! pixels and gemm sums a tile of one pixel with its dot-product kernel, so when
//! `oh·ow ≡ 1 (mod 512)` the last pixel of each plane may differ in the last bits.
//!
//! The gradients are summed in another order than candle's backward (per-group transposed
//! convolutions) and agree with it to rounding. Candle's backward also takes the transposed
//! convolution's output padding from the height alone, so it fails on inputs whose width
//! needs another one (e.g. 11×10 at stride 2); this op's does not.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::conv_common::{Geom, check_grad_shape, cpu_floats, on_floats};

/// The op's name in messages.
const OP: &str = "depthwise conv2d";

/// Depthwise 2-D convolution, `x [n, c, h, w] ⊛ weight [c·m, 1, kh, kw] → [n, c·m, oh, ow]`,
/// output channel `o` reading input channel `o / m`: candle's `conv2d` with `groups = c`,
/// computed per plane. Apply it with [`DepthwiseConv2d::forward`] (or `x.apply_op2(&w, op)`
/// on contiguous tensors); check the case with [`DepthwiseConv2d::supports`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepthwiseConv2d {
    /// Zero padding on each of the four sides.
    pub padding: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Dilation (both axes).
    pub dilation: usize,
}

impl DepthwiseConv2d {
    /// The op for candle's convolution config (its `groups` is checked by
    /// [`DepthwiseConv2d::supports`]; `cudnn_fwd_algo` does not apply on the CPU).
    pub fn from_config(cfg: &candle_nn::Conv2dConfig) -> DepthwiseConv2d {
        DepthwiseConv2d {
            padding: cfg.padding,
            stride: cfg.stride,
            dilation: cfg.dilation,
        }
    }

    /// Whether this op computes `x.conv2d(w, …, cfg.groups)`: `x [n, c, h, w]` with
    /// `cfg.groups == c > 1`, `w [c·m, 1, kh, kw]`, both on the CPU with the same dtype F32 or
    /// F64, stride and dilation ≥ 1, and an output of at least one pixel. Anything else
    /// (including shapes candle would reject) stays on candle's convolution.
    pub fn supports(x: &Tensor, w: &Tensor, cfg: &candle_nn::Conv2dConfig) -> bool {
        let (Ok((_, c, _, _)), Ok(_)) = (x.dims4(), w.dims4()) else {
            return false;
        };
        cfg.groups == c
            && c > 1
            && cpu_floats(x, w)
            && geom(x.dims(), w.dims(), &DepthwiseConv2d::from_config(cfg)).is_ok()
    }

    /// Convolves `x` with `w` (both made contiguous first). Records the op for backprop when
    /// either tracks gradients.
    ///
    /// # Errors
    /// Shapes that are not a depthwise convolution (see [`DepthwiseConv2d::supports`]),
    /// dtypes other than F32/F64 or differing, a non-CPU device.
    pub fn forward(&self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        geom(x.dims(), w.dims(), self)?;
        x.contiguous()?.apply_op2(&w.contiguous()?, *self)
    }
}

/// The sizes of `x.conv2d(w, …, groups = c)` with `op` (`ci` = `c`, `co` = `c·m`).
fn geom(x: &[usize], wd: &[usize], op: &DepthwiseConv2d) -> candle_core::Result<Geom> {
    Geom::new(
        (OP, op.padding, op.stride, op.dilation),
        (x, "[n, c, h, w]"),
        (wd, "[c·m, 1, kh, kw]"),
        |c, co, ci| {
            if c == 0 || ci != 1 || co == 0 || co % c != 0 {
                candle_core::bail!(
                    "{OP}: weight of shape {wd:?} for an input of {c} channels, expected \
                     [{c}·m, 1, kh, kw]"
                )
            }
            Ok(())
        },
    )
}

/// The depthwise kernels' sizes.
impl Geom {
    /// The channel multiplier `m`: output channel `o` reads input channel `o / m`.
    fn m(&self) -> usize {
        self.co / self.ci
    }

    fn hp(&self) -> usize {
        self.h + 2 * self.pad
    }

    /// Columns per phase row: `⌈wp / s⌉`.
    fn wq(&self) -> usize {
        self.wp().div_ceil(self.stride)
    }

    /// Elements of a phased plane: `hp` rows of `s` phases of `wq`.
    fn phased_len(&self) -> usize {
        self.hp() * self.stride * self.wq()
    }

    /// Where a phased plane holds padded `[y, kx·d + ox·s]` for `ox = 0`: the next `ow`
    /// elements are the tap's inputs for `ox = 0, 1, …` (padded column `c = kx·d` is
    /// phase `c mod s`, column `c / s`).
    fn at(&self, y: usize, kx: usize) -> usize {
        let c = kx * self.dil;
        (y * self.stride + c % self.stride) * self.wq() + c / self.stride
    }
}

/// The element types of the kernels (F32, F64).
trait Elem: WithDType + Copy + Send + Sync {
    /// `self · b + c` with one rounding.
    fn fused(self, b: Self, c: Self) -> Self;
}

impl Elem for f32 {
    #[inline(always)]
    fn fused(self, b: f32, c: f32) -> f32 {
        self.mul_add(b, c)
    }
}

impl Elem for f64 {
    #[inline(always)]
    fn fused(self, b: f64, c: f64) -> f64 {
        self.mul_add(b, c)
    }
}

/// `a · b + c`: fused when `FMA` (only compiled inside `avx2,fma` functions, where it is one
/// instruction), else a rounded product and a rounded sum.
#[inline(always)]
fn mac<T: Elem, const FMA: bool>(a: T, b: T, c: T) -> T {
    if FMA { a.fused(b, c) } else { a * b + c }
}

/// Whether this CPU runs the fused kernels — the same test as gemm's (which candle's
/// convolution uses), so both round alike.
fn fused_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The first column `j` of phase `r` that holds an input column, and that column:
/// `j·s + r ≥ pad`, `ix = j·s + r − pad`.
fn phase_start(r: usize, g: &Geom) -> (usize, usize) {
    let j = g.pad.saturating_sub(r).div_ceil(g.stride);
    (j, j * g.stride + r - g.pad)
}

/// `plane` (`h × w`) zero-padded and split by column phase, in `scratch`: padded `[y, j·s + r]`
/// at `(y·s + r)·wq + j` (see [`Geom::at`]), so that every tap reads a contiguous run at any
/// stride. With stride 1 and no padding, the plane itself.
fn phased<'a, T: Elem>(plane: &'a [T], g: &Geom, scratch: &'a mut Vec<T>) -> &'a [T] {
    if g.pad == 0 && g.stride == 1 {
        return plane;
    }
    let (s, wq) = (g.stride, g.wq());
    scratch.clear();
    scratch.resize(g.phased_len(), T::zero());
    for (y, row) in plane.chunks_exact(g.w).enumerate() {
        for r in 0..s {
            let (j, ix) = phase_start(r, g);
            if ix >= g.w {
                continue;
            }
            let dst = &mut scratch[((y + g.pad) * s + r) * wq..][..wq];
            for (d, &v) in dst[j..].iter_mut().zip(row[ix..].iter().step_by(s)) {
                *d = v;
            }
        }
    }
    scratch
}

/// The inverse of [`phased`] for a gradient: the `h × w` interior of `gq` into `gx`.
fn unphase<T: Elem>(gq: &[T], g: &Geom, gx: &mut [T]) {
    let (s, wq) = (g.stride, g.wq());
    for (y, row) in gx.chunks_exact_mut(g.w).enumerate() {
        for r in 0..s {
            let (j, ix) = phase_start(r, g);
            if ix >= g.w {
                continue;
            }
            let src = &gq[((y + g.pad) * s + r) * wq..][..wq];
            for (d, &v) in row[ix..].iter_mut().step_by(s).zip(&src[j..]) {
                *d = v;
            }
        }
    }
}

// The three plane kernels below (forward, gradient of the input, gradient of the weight) walk
// the same loop nest (output row, kernel row, kernel column) on purpose: each fixes its own
// summation order (the forward's is candle's, bit for bit), and each is instantiated twice, as
// the `avx2,fma` twin in `mod fused` (one FMA per `mac`, gemm's rounding) and the generic one
// (a rounded product then a sum, gemm's elsewhere). Their innermost loops stay written out so
// that they inline and vectorise inside the `target_feature` functions; a shared closure-taking
// walker would put the arithmetic outside them.

/// One output plane: `out[oy, ox] = Σ_t xp[oy·s + ky·d, ox·s + kx·d] · wk[t]` in tap order
/// (`xq` phased).
#[inline(always)]
fn forward_plane<T: Elem, const FMA: bool>(xq: &[T], wk: &[T], out: &mut [T], g: &Geom) {
    for (oy, out_row) in out.chunks_exact_mut(g.ow).enumerate() {
        for ky in 0..g.kh {
            let y = oy * g.stride + ky * g.dil;
            for kx in 0..g.kw {
                let wv = wk[ky * g.kw + kx];
                let src = &xq[g.at(y, kx)..][..g.ow];
                if ky == 0 && kx == 0 && g.m() == 1 {
                    for (o, &x) in out_row.iter_mut().zip(src) {
                        *o = x * wv;
                    }
                } else if ky == 0 && kx == 0 {
                    for (o, &x) in out_row.iter_mut().zip(src) {
                        *o = mac::<T, FMA>(x, wv, T::zero());
                    }
                } else {
                    for (o, &x) in out_row.iter_mut().zip(src) {
                        *o = mac::<T, FMA>(x, wv, *o);
                    }
                }
            }
        }
    }
}

/// Adds one output plane's gradient into the (phased, padded) input plane's:
/// `gq[oy·s + ky·d, ox·s + kx·d] += g[oy, ox] · wk[t]`.
#[inline(always)]
fn grad_input_plane<T: Elem, const FMA: bool>(go: &[T], wk: &[T], gq: &mut [T], g: &Geom) {
    for (oy, g_row) in go.chunks_exact(g.ow).enumerate() {
        for ky in 0..g.kh {
            let y = oy * g.stride + ky * g.dil;
            for kx in 0..g.kw {
                let wv = wk[ky * g.kw + kx];
                let dst = &mut gq[g.at(y, kx)..][..g.ow];
                for (d, &gv) in dst.iter_mut().zip(g_row) {
                    *d = mac::<T, FMA>(gv, wv, *d);
                }
            }
        }
    }
}

/// Accumulates one (phased input, output-gradient) plane pair into per-tap row sums:
/// `acc[t][ox] += Σ_oy g[oy, ox] · xp[oy·s + ky·d, ox·s + kx·d]` (`acc` is `taps × ow`).
#[inline(always)]
fn grad_weight_plane<T: Elem, const FMA: bool>(xq: &[T], go: &[T], acc: &mut [T], g: &Geom) {
    for (oy, g_row) in go.chunks_exact(g.ow).enumerate() {
        for ky in 0..g.kh {
            let y = oy * g.stride + ky * g.dil;
            for kx in 0..g.kw {
                let src = &xq[g.at(y, kx)..][..g.ow];
                let a = &mut acc[(ky * g.kw + kx) * g.ow..][..g.ow];
                for ((a, &gv), &x) in a.iter_mut().zip(g_row).zip(src) {
                    *a = mac::<T, FMA>(gv, x, *a);
                }
            }
        }
    }
}

/// The `avx2,fma` instantiations of the plane kernels: the generic bodies are inlined here and
/// compiled with those features, so `mac` is one vector FMA.
#[cfg(target_arch = "x86_64")]
mod fused {
    use super::{Elem, Geom};

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn forward_plane<T: Elem>(xq: &[T], wk: &[T], out: &mut [T], g: &Geom) {
        super::forward_plane::<T, true>(xq, wk, out, g);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn grad_input_plane<T: Elem>(go: &[T], wk: &[T], gq: &mut [T], g: &Geom) {
        super::grad_input_plane::<T, true>(go, wk, gq, g);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn grad_weight_plane<T: Elem>(xq: &[T], go: &[T], acc: &mut [T], g: &Geom) {
        super::grad_weight_plane::<T, true>(xq, go, acc, g);
    }
}

/// Runs `$fused` (the `avx2,fma` instantiation) when `$fma`, else the generic kernel with
/// separate roundings.
macro_rules! dispatch {
    ($fma:expr, $name:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if $fma {
                // SAFETY: `$fma` is true only where `fused_available()` detected AVX2 and FMA.
                unsafe { fused::$name($($arg),*) }
            } else {
                $name::<_, false>($($arg),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = $fma;
            $name::<_, false>($($arg),*)
        }
    }};
}

fn forward<T: Elem>(x: &[T], w: &[T], g: &Geom, fma: bool) -> Vec<T> {
    // The fused kernels only where they can run.
    let fma = fma && fused_available();
    let (plane_in, taps) = (g.h * g.w, g.kh * g.kw);
    let mut out = vec![T::zero(); g.n * g.co * g.oh * g.ow];
    out.par_chunks_mut(g.oh * g.ow)
        .enumerate()
        .for_each_init(Vec::new, |scratch, (plane, out)| {
            let (b, o) = (plane / g.co, plane % g.co);
            let src = &x[(b * g.ci + o / g.m()) * plane_in..][..plane_in];
            let xq = phased(src, g, scratch);
            let wk = &w[o * taps..][..taps];
            dispatch!(fma, forward_plane(xq, wk, out, g));
        });
    out
}

fn grad_input<T: Elem>(go: &[T], w: &[T], g: &Geom, fma: bool) -> Vec<T> {
    // The fused kernels only where they can run.
    let fma = fma && fused_available();
    let (plane_out, taps) = (g.oh * g.ow, g.kh * g.kw);
    let mut gx = vec![T::zero(); g.n * g.ci * g.h * g.w];
    gx.par_chunks_mut(g.h * g.w).enumerate().for_each_init(
        Vec::new,
        |scratch: &mut Vec<T>, (plane, gx)| {
            let (b, c) = (plane / g.ci, plane % g.ci);
            let accumulate = |gq: &mut [T]| {
                for o in c * g.m()..(c + 1) * g.m() {
                    let gor = &go[(b * g.co + o) * plane_out..][..plane_out];
                    let wk = &w[o * taps..][..taps];
                    dispatch!(fma, grad_input_plane(gor, wk, &mut *gq, g));
                }
            };
            if g.pad == 0 && g.stride == 1 {
                accumulate(gx);
                return;
            }
            scratch.clear();
            scratch.resize(g.phased_len(), T::zero());
            accumulate(scratch);
            unphase(scratch, g, gx);
        },
    );
    gx
}

fn grad_weight<T: Elem>(x: &[T], go: &[T], g: &Geom, fma: bool) -> Vec<T> {
    // The fused kernels only where they can run.
    let fma = fma && fused_available();
    let (plane_in, plane_out, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let mut gw = vec![T::zero(); g.co * taps];
    gw.par_chunks_mut(taps).enumerate().for_each_init(
        || (Vec::new(), Vec::new(), Vec::new()),
        |(scratch, acc, total): &mut (Vec<T>, Vec<T>, Vec<f64>), (o, gw)| {
            total.clear();
            total.resize(taps, 0.0);
            for b in 0..g.n {
                let src = &x[(b * g.ci + o / g.m()) * plane_in..][..plane_in];
                let xq = phased(src, g, scratch);
                let gor = &go[(b * g.co + o) * plane_out..][..plane_out];
                acc.clear();
                acc.resize(taps * g.ow, T::zero());
                dispatch!(fma, grad_weight_plane(xq, gor, &mut acc[..], g));
                for (t, row) in total.iter_mut().zip(acc.chunks_exact(g.ow)) {
                    *t += row.iter().map(|v| v.to_f64()).sum::<f64>();
                }
            }
            for (d, t) in gw.iter_mut().zip(total.iter()) {
                *d = T::from_f64(*t);
            }
        },
    );
    gw
}

impl CustomOp2 for DepthwiseConv2d {
    fn name(&self) -> &'static str {
        "lowbit-depthwise-conv2d"
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
            x,
            w,
            &g,
            fused_available()
        ))?;
        Ok((out, g.out_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = geom(x.dims(), w.dims(), self)?;
        check_grad_shape(OP, grad_res, &g.out_shape())?;
        let grad = grad_res.contiguous()?;
        let gx = grad.apply_op2_no_bwd(&w.contiguous()?, &GradInput(g))?;
        let gw = x.contiguous()?.apply_op2_no_bwd(&grad, &GradWeight(g))?;
        Ok((Some(gx), Some(gw)))
    }
}

/// Backward to the input: `(grad_out, weight) → grad_x`.
struct GradInput(Geom);

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "lowbit-depthwise-conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let out = on_floats!(OP, (s1, l1, "gradient"), (s2, l2, "weight"), |go, w| {
            grad_input(go, w, g, fused_available())
        })?;
        Ok((out, Shape::from((g.n, g.ci, g.h, g.w))))
    }
}

/// Backward to the weight: `(x, grad_out) → grad_w`.
struct GradWeight(Geom);

impl CustomOp2 for GradWeight {
    fn name(&self) -> &'static str {
        "lowbit-depthwise-conv2d-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let out = on_floats!(OP, (s1, l1, "input"), (s2, l2, "gradient"), |x, go| {
            grad_weight(x, go, g, fused_available())
        })?;
        Ok((out, Shape::from((g.co, 1, g.kh, g.kw))))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The sum in candle's order, one output at a time, over the padded input.
    fn naive(x: &[f32], w: &[f32], g: &Geom, fused: bool) -> Vec<f32> {
        let mut out = Vec::new();
        for b in 0..g.n {
            for o in 0..g.co {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut acc = 0f32;
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let iy = (oy * g.stride + ky * g.dil) as isize - g.pad as isize;
                                let ix = (ox * g.stride + kx * g.dil) as isize - g.pad as isize;
                                let inside = (0..g.h as isize).contains(&iy)
                                    && (0..g.w as isize).contains(&ix);
                                let v = if inside {
                                    x[((b * g.ci + o / g.m()) * g.h + iy as usize) * g.w
                                        + ix as usize]
                                } else {
                                    0.0
                                };
                                let wv = w[(o * g.kh + ky) * g.kw + kx];
                                let first = ky == 0 && kx == 0;
                                acc = match (first && g.m() == 1, fused) {
                                    (true, _) => v * wv,
                                    (false, true) => v.mul_add(wv, acc),
                                    (false, false) => v * wv + acc,
                                };
                            }
                        }
                        out.push(acc);
                    }
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let z = (i.wrapping_mul(2_654_435_761) ^ seed).wrapping_mul(40_503);
                (z >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Both kernels (fused where the CPU has FMA, and the separate-rounding one every CPU
    /// can run) sum in exactly the naive loop's order; their gradients agree to rounding.
    #[test]
    fn kernels_sum_in_order_and_agree() {
        let geoms = [
            ([2, 3, 9, 8], [3, 1, 3, 3], 1, 1, 1),
            ([1, 4, 11, 10], [8, 1, 5, 5], 2, 2, 1),
            ([2, 2, 12, 9], [2, 1, 3, 3], 0, 2, 2),
            ([1, 3, 7, 13], [6, 1, 3, 3], 2, 3, 1),
        ];
        for (xd, wd, padding, stride, dilation) in geoms {
            let op = DepthwiseConv2d {
                padding,
                stride,
                dilation,
            };
            let g = geom(&xd, &wd, &op).unwrap();
            let x = values(xd.iter().product(), 1);
            let w = values(wd.iter().product(), 2);
            let mut kinds = vec![false];
            if fused_available() {
                kinds.push(true);
            }
            for fused in kinds {
                let got = forward(&x, &w, &g, fused);
                let want = naive(&x, &w, &g, fused);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same && got.len() == want.len(), "{g:?} fused {fused}");
            }
            let go = values(g.n * g.co * g.oh * g.ow, 3);
            for (a, b) in [
                (
                    grad_input(&go, &w, &g, false),
                    grad_input(&go, &w, &g, true),
                ),
                (
                    grad_weight(&x, &go, &g, false),
                    grad_weight(&x, &go, &g, true),
                ),
            ] {
                for (p, q) in a.iter().zip(&b) {
                    assert!((p - q).abs() <= 1e-5 * (1.0 + p.abs()), "{g:?}: {p} vs {q}");
                }
            }
        }
    }
}
