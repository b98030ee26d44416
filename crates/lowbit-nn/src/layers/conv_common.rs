//! Plumbing shared by the CPU convolution ops [`TiledConv2d`](super::TiledConv2d) and
//! [`DepthwiseConv2d`](super::DepthwiseConv2d): the case test, the sizes with their checks, the slice of a contiguous layout, the F32/F64 dispatch of a `cpu_fwd` and the
//! gradient-shape check of a `bwd`. Every message starts with the op's name (`op`).

use candle_core::{DType, Layout, Shape, Tensor};

/// Whether `x` and `w` are both on the CPU with the same dtype, F32 or F64.
pub(super) fn cpu_floats(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu()
        && w.device().is_cpu()
        && x.dtype() == w.dtype()
        && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// The sizes of one convolution: input `[n, ci, h, w]`, weight `[co, ·, kh, kw]`, output
/// `[n, co, oh, ow]`, with its padding, stride and dilation.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geom {
    pub(super) n: usize,
    pub(super) ci: usize,
    pub(super) co: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
    pub(super) pad: usize,
    pub(super) stride: usize,
    pub(super) dil: usize,
}

/// The dims of a convolution's operand and their expected layout (for the message), e.g.
/// `(x.dims(), "[n, c_in, h, w]")`.
pub(super) type Dims<'a> = (&'a [usize], &'a str);

impl Geom {
    /// The sizes of `op` (its name, padding, stride, dilation) on an input and a weight of
    /// rank 4; `channels(ci, co, weight_ci)` checks the op's channel counts.
    ///
    /// # Errors
    /// Another rank, channel counts `channels` rejects, a zero stride, dilation or kernel
    /// size, an input (padded) smaller than the (dilated) kernel, sizes that overflow.
    pub(super) fn new(
        (op, padding, stride, dilation): (&str, usize, usize, usize),
        (x, x_axes): Dims<'_>,
        (wd, w_axes): Dims<'_>,
        channels: impl FnOnce(usize, usize, usize) -> candle_core::Result<()>,
    ) -> candle_core::Result<Geom> {
        let &[n, ci, h, w] = x else {
            candle_core::bail!("{op}: input of shape {x:?}, expected {x_axes}")
        };
        let &[co, ci_w, kh, kw] = wd else {
            candle_core::bail!("{op}: weight of shape {wd:?}, expected {w_axes}")
        };
        channels(ci, co, ci_w)?;
        if stride == 0 || dilation == 0 || kh == 0 || kw == 0 {
            candle_core::bail!(
                "{op}: stride {stride}, dilation {dilation}, kernel {kh}×{kw} must be ≥ 1"
            )
        }
        let out = |len: usize, k: usize| {
            let span = dilation.checked_mul(k - 1)?.checked_add(1)?;
            let padded = padding.checked_mul(2)?.checked_add(len)?;
            (padded >= span).then(|| (padded - span) / stride + 1)
        };
        let (Some(oh), Some(ow)) = (out(h, kh), out(w, kw)) else {
            candle_core::bail!(
                "{op}: input {h}×{w} with padding {padding} is smaller than the {kh}×{kw} kernel \
                 at dilation {dilation}"
            )
        };
        Ok(Geom {
            n,
            ci,
            co,
            h,
            w,
            kh,
            kw,
            oh,
            ow,
            pad: padding,
            stride,
            dil: dilation,
        })
    }

    /// The padded width `w + 2·pad`.
    pub(super) fn wp(&self) -> usize {
        self.w + 2 * self.pad
    }

    /// The output's shape `[n, co, oh, ow]`.
    pub(super) fn out_shape(&self) -> Shape {
        Shape::from((self.n, self.co, self.oh, self.ow))
    }
}

/// The elements of a contiguous layout (`what`: the operand, for the message).
pub(super) fn elements<'a, T>(
    v: &'a [T],
    l: &Layout,
    op: &str,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&v[start..end]),
        None => candle_core::bail!("{op}: the {what} is not contiguous"),
    }
}

/// Checks that a `bwd`'s output gradient has the forward's output shape.
pub(super) fn check_grad_shape(op: &str, grad: &Tensor, out: &Shape) -> candle_core::Result<()> {
    if grad.dims() != out.dims() {
        candle_core::bail!(
            "{op} backward: gradient of shape {:?}, expected {:?}",
            grad.dims(),
            out.dims()
        )
    }
    Ok(())
}

/// Evaluates `$body` with `$a`, `$b` the contiguous elements of two `CpuStorage`s of the same
/// float dtype (F32 or F64), wrapping the `Vec` it returns in that dtype's storage; any other
/// pair of dtypes is an error. `$op` names the op, `$what1` and `$what2` the operands.
macro_rules! on_floats {
    ($op:expr, ($s1:expr, $l1:expr, $what1:expr), ($s2:expr, $l2:expr, $what2:expr),
     |$a:ident, $b:ident| $body:expr) => {{
        use candle_core::CpuStorage;
        use candle_core::backend::BackendStorage;
        use $crate::layers::conv_common::elements;
        match ($s1, $s2) {
            (CpuStorage::F32($a), CpuStorage::F32($b)) => {
                let $a = elements($a, $l1, $op, $what1)?;
                let $b = elements($b, $l2, $op, $what2)?;
                Ok::<_, candle_core::Error>(CpuStorage::F32($body))
            }
            (CpuStorage::F64($a), CpuStorage::F64($b)) => {
                let $a = elements($a, $l1, $op, $what1)?;
                let $b = elements($b, $l2, $op, $what2)?;
                Ok(CpuStorage::F64($body))
            }
            (a, b) => Err(candle_core::Error::Msg(format!(
                "{}: {} {:?} and {} {:?}, expected both f32 or both f64",
                $op,
                $what1,
                a.dtype(),
                $what2,
                b.dtype()
            ))),
        }
    }};
}
pub(super) use on_floats;
