//! The depthwise convolution (`DepthwiseConv2d`, the CPU path of depthwise `QConv2d`s)
//! against candle's grouped `conv2d` and an independent f64 reference:
//!
//! - forward: bit for bit equal to candle 0.11's grouped conv2d (F32 and F64), over kernels 3
//!   and 5, strides 1 and 2, padding 0–2, dilation 1 and 2, channel multipliers 1 and 2,
//!   square, non-square and odd sizes, batch 1–3, inputs with and without exact zeros;
//! - forward and gradients (input and weight) within `1e-5 · Σ|terms|` of a plain f64
//!   reference (the bound scales with the sum of the absolute products, the condition of the
//!   sum), and the gradients within the same bound of candle's own conv2d backward;
//! - `QConv2d` takes the path, stays candle's layer bit for bit, and trains (gradients reach
//!   the weight through the quantizer's STE);
//! - the cases it does not take, and errors instead of panics on bad shapes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Conv2dConfig, VarBuilder, VarMap};
use lowbit_nn::OpParams;
use lowbit_nn::layers::DepthwiseConv2d;

mod common;
use common::{
    Built, Conv, ConvDims, Rng, assert_close, assert_close_f32, bits, build_op,
    check_stays_candles_layer, f32s, grads, qat_step, reference, tensor, time,
};

/// One test geometry.
#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    c: usize,
    m: usize,
    h: usize,
    w: usize,
    k: usize,
    pad: usize,
    stride: usize,
    dil: usize,
}

impl Case {
    fn dims(&self) -> ConvDims {
        ConvDims {
            n: self.n,
            ci: self.c,
            co: self.c * self.m,
            groups: self.c,
            h: self.h,
            w: self.w,
            kh: self.k,
            kw: self.k,
            pad: self.pad,
            stride: self.stride,
            dil: self.dil,
        }
    }
    fn out(&self, len: usize) -> Option<usize> {
        self.dims().out(len, self.k)
    }
    fn cfg(&self) -> Conv2dConfig {
        Conv2dConfig {
            padding: self.pad,
            stride: self.stride,
            dilation: self.dil,
            groups: self.c,
            cudnn_fwd_algo: None,
        }
    }
    fn op(&self) -> DepthwiseConv2d {
        DepthwiseConv2d::from_config(&self.cfg())
    }
    fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    fn w_shape(&self) -> [usize; 4] {
        [self.c * self.m, 1, self.k, self.k]
    }
}

/// Every valid combination of the parameters the issue names, over a few shapes.
fn cases() -> Vec<Case> {
    let shapes = [
        (2, 3, 9, 9),
        (3, 4, 8, 11),
        (1, 5, 7, 6),
        (2, 8, 16, 16),
        (2, 6, 13, 10),
        (1, 16, 23, 19),
    ];
    let mut v = Vec::new();
    for (n, c, h, w) in shapes {
        for k in [3, 5] {
            for stride in [1, 2] {
                for pad in [0, 1, 2] {
                    for dil in [1, 2] {
                        for m in [1, 2] {
                            let case = Case {
                                n,
                                c,
                                m,
                                h,
                                w,
                                k,
                                pad,
                                stride,
                                dil,
                            };
                            if case.out(h).is_some() && case.out(w).is_some() {
                                v.push(case);
                            }
                        }
                    }
                }
            }
        }
    }
    v
}

/// Inputs for case `i`: every other case goes through a ReLU, so some receptive fields are
/// all exact zeros (and their outputs signed zeros).
fn inputs(case: &Case, i: usize) -> (Vec<f32>, Vec<f32>) {
    let mut r = Rng(1000 + i as u64);
    let mut x = r.vec(case.x_shape().iter().product(), 2.0);
    if i % 2 == 1 {
        for v in &mut x {
            *v = v.max(0.0);
        }
    }
    let w = r.vec(case.w_shape().iter().product(), 0.7);
    (x, w)
}

#[test]
fn forward_equals_candle_grouped_conv2d_bit_for_bit() {
    let cases = cases();
    assert!(cases.len() > 200, "{}", cases.len());
    let mut signed_zeros = 0;
    for (i, case) in cases.iter().enumerate() {
        let (xv, wv) = inputs(case, i);
        let (x, w) = (tensor(&xv, case.x_shape()), tensor(&wv, case.w_shape()));
        let cfg = case.cfg();
        assert!(DepthwiseConv2d::supports(&x, &w, &cfg), "{case:?}");
        let got = case.op().forward(&x, &w).unwrap();
        let want = x
            .conv2d(&w, cfg.padding, cfg.stride, cfg.dilation, cfg.groups)
            .unwrap();
        assert_eq!(got.dims(), want.dims(), "{case:?}");
        let (got, want) = (f32s(&got), f32s(&want));
        let pixels = case.out(case.h).unwrap() * case.out(case.w).unwrap();
        for (j, (g, e)) in got.iter().zip(&want).enumerate() {
            // Candle convolves in tiles of 512 output pixels, and gemm sums a one-pixel tile
            // with its dot-product kernel (another order): that pixel may differ in the last
            // bits (it is checked against the reference below).
            if pixels % 512 == 1 && j % pixels == pixels - 1 {
                continue;
            }
            assert_eq!(
                g.to_bits(),
                e.to_bits(),
                "{case:?} [{j}]: {g} vs candle {e}"
            );
        }
        signed_zeros += want.iter().filter(|v| **v == 0.0).count();
        // And the mathematics, independently of candle.
        let r = vec![0.0; got.len()];
        let re = reference(&case.dims(), &xv, &wv, &r);
        assert_close("forward", case, &got, &re.y, &re.y_abs);
    }
    // The zero inputs produced zero outputs (whose signs were compared above).
    assert!(signed_zeros > 100, "{signed_zeros}");
}

/// Zero sums: candle's gemm gives `-0` for multiplier 1 (its first term is a product) and
/// `+0` for multiplier 2 (its accumulators start at `+0`); so does the op.
#[test]
fn signed_zero_outputs_equal_candles() {
    for m in [1usize, 2, 3] {
        for pad in [0, 1] {
            let x = Tensor::zeros((2, 2, 5, 6), DType::F32, &Device::Cpu).unwrap();
            let w = Tensor::full(-0.5f32, (2 * m, 1, 3, 3), &Device::Cpu).unwrap();
            let want = f32s(&x.conv2d(&w, pad, 1, 1, 2).unwrap());
            let op = DepthwiseConv2d {
                padding: pad,
                stride: 1,
                dilation: 1,
            };
            let got = f32s(&op.forward(&x, &w).unwrap());
            assert_eq!(bits(&got), bits(&want), "m {m} pad {pad}");
            assert_eq!(got[0].is_sign_negative(), m == 1, "m {m} pad {pad}");
        }
    }
}

#[test]
fn forward_f64_equals_candle_bit_for_bit() {
    for (i, case) in cases().iter().enumerate().step_by(5) {
        let (xv, wv) = inputs(case, i);
        let x = tensor(&xv, case.x_shape()).to_dtype(DType::F64).unwrap();
        let w = tensor(&wv, case.w_shape()).to_dtype(DType::F64).unwrap();
        let cfg = case.cfg();
        assert!(DepthwiseConv2d::supports(&x, &w, &cfg));
        let got = case.op().forward(&x, &w).unwrap();
        let want = x
            .conv2d(&w, cfg.padding, cfg.stride, cfg.dilation, cfg.groups)
            .unwrap();
        let got = got.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let want = want.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let pixels = case.out(case.h).unwrap() * case.out(case.w).unwrap();
        let same = got.iter().zip(&want).enumerate().all(|(j, (a, b))| {
            a.to_bits() == b.to_bits() || (pixels % 512 == 1 && j % pixels == pixels - 1)
        });
        assert!(same, "{case:?}");
    }
}

#[test]
fn gradients_match_the_reference_and_candle_backward() {
    let (mut compared, mut candle_failed) = (0, 0);
    for (i, case) in cases().iter().enumerate() {
        let (xv, wv) = inputs(case, i);
        let (oh, ow) = (case.out(case.h).unwrap(), case.out(case.w).unwrap());
        let r = Rng(7 + i as u64).vec(case.n * case.c * case.m * oh * ow, 1.0);
        let re = reference(&case.dims(), &xv, &wv, &r);
        let op = case.op();
        let (gx, gw) = grads((&xv, case.x_shape()), (&wv, case.w_shape()), &r, |x, w| {
            op.forward(x, w)
        })
        .unwrap();
        assert_close("grad input", case, &gx, &re.gx, &re.gx_abs);
        assert_close("grad weight", case, &gw, &re.gw, &re.gw_abs);
        let cfg = case.cfg();
        let candle = grads((&xv, case.x_shape()), (&wv, case.w_shape()), &r, |x, w| {
            x.conv2d(w, cfg.padding, cfg.stride, cfg.dilation, cfg.groups)
        });
        // Candle's backward sizes its transposed convolution with an output padding taken
        // from the height alone, so it fails when the width needs another one.
        let span = case.dil * (case.k - 1) + 1;
        let out_padding = (case.h + 2 * case.pad) - ((oh - 1) * case.stride + span);
        let candle_width = (ow - 1) * case.stride + span + out_padding - 2 * case.pad;
        match candle {
            Ok((cgx, cgw)) => {
                assert_eq!(candle_width, case.w, "{case:?}");
                assert_close_f32("grad input vs candle", case, &gx, &cgx, &re.gx_abs);
                assert_close_f32("grad weight vs candle", case, &gw, &cgw, &re.gw_abs);
                compared += 1;
            }
            Err(e) => {
                assert_ne!(candle_width, case.w, "{case:?}: {e}");
                candle_failed += 1;
            }
        }
    }
    eprintln!(
        "compared with candle's backward: {compared}; candle's backward failed: {candle_failed}"
    );
    assert!(compared > 150, "{compared}");
}

fn build(c: usize, m: usize, k: usize, cfg: Conv2dConfig, vb: VarBuilder, yaml: &str) -> Built {
    let params = OpParams::Conv2d {
        in_channels: c,
        out_channels: c * m,
        kernel: k,
        cfg,
        bias: true,
    };
    build_op(vb, yaml, "conv2d", "dw", params)
}

#[test]
fn qconv2d_takes_the_path_and_stays_candles_layer() {
    let case = Case {
        n: 2,
        c: 6,
        m: 2,
        h: 11,
        w: 10,
        k: 3,
        pad: 1,
        stride: 2,
        dil: 1,
    };
    let (xv, wv) = inputs(&case, 0);
    let (x, w) = (tensor(&xv, case.x_shape()), tensor(&wv, case.w_shape()));
    // The layer runs `DepthwiseConv2d`: at this shape (11×10, stride 2) candle's own backward
    // fails (see above), the layer's works.
    let build = |vb| build(6, 2, 3, case.cfg(), vb, "defaults: {}");
    check_stays_candles_layer("dw", (&x, &w), case.cfg(), build, |x, w| {
        x.conv2d(w, 1, 2, 1, 6)
    });
}

/// QAT: a quantized depthwise `QConv2d` over a (randomly initialised) `VarMap` trains — its
/// weight and bias get gradients through the STE, equal to candle's conv2d on the
/// fake-quantized weight.
#[test]
fn qconv2d_depthwise_trains() {
    let case = Case {
        n: 2,
        c: 8,
        m: 1,
        h: 10,
        w: 10,
        k: 3,
        pad: 1,
        stride: 1,
        dil: 1,
    };
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let built = build(8, 1, 3, case.cfg(), vb, "defaults: { weight: int8 }");
    let (xv, _) = inputs(&case, 0);
    let x = tensor(&xv, case.x_shape());
    let step = qat_step(&built, &vm, "dw", &x, |x, w| x.conv2d(w, 1, 1, 1, 8));
    assert_eq!(f32s(&step.y), f32s(&step.candle_y));
    let re = reference(&case.dims(), &xv, &step.wq, &f32s(&step.r));
    let (gw, cgw) = (&step.gw, &step.candle_gw);
    assert_close_f32("QAT grad weight vs candle", &case, gw, cgw, &re.gw_abs);
    assert_close("QAT grad weight", &case, gw, &re.gw, &re.gw_abs);
}

#[test]
fn other_cases_stay_on_candle_and_bad_shapes_are_errors() {
    let dev = Device::Cpu;
    let x = Tensor::ones((1, 4, 6, 6), DType::F32, &dev).unwrap();
    let w = Tensor::ones((4, 1, 3, 3), DType::F32, &dev).unwrap();
    let dw = Conv2dConfig {
        groups: 4,
        ..Default::default()
    };
    assert!(DepthwiseConv2d::supports(&x, &w, &dw));
    // Not depthwise: groups 1, groups 2 (weight [4, 2, 3, 3]).
    let w2 = Tensor::ones((4, 2, 3, 3), DType::F32, &dev).unwrap();
    assert!(!DepthwiseConv2d::supports(&x, &w, &Conv2dConfig::default()));
    let g2 = Conv2dConfig {
        groups: 2,
        ..Default::default()
    };
    assert!(!DepthwiseConv2d::supports(&x, &w2, &g2));
    // Other dtypes, mixed dtypes.
    let (xh, wh) = (
        x.to_dtype(DType::F16).unwrap(),
        w.to_dtype(DType::F16).unwrap(),
    );
    assert!(!DepthwiseConv2d::supports(&xh, &wh, &dw));
    assert!(!DepthwiseConv2d::supports(&x, &wh, &dw));
    // An input smaller than the kernel, a weight that does not divide into the channels,
    // stride 0: not supported, and errors (not panics) when forced.
    let tiny = Tensor::ones((1, 4, 2, 2), DType::F32, &dev).unwrap();
    assert!(!DepthwiseConv2d::supports(&tiny, &w, &dw));
    let op = DepthwiseConv2d::from_config(&dw);
    let err = op.forward(&tiny, &w).unwrap_err().to_string();
    assert!(err.contains("smaller than the 3×3 kernel"), "{err}");
    let w5 = Tensor::ones((5, 1, 3, 3), DType::F32, &dev).unwrap();
    let err = op.forward(&x, &w5).unwrap_err().to_string();
    assert!(
        err.contains("[5, 1, 3, 3]") && err.contains("4 channels"),
        "{err}"
    );
    let s0 = DepthwiseConv2d { stride: 0, ..op };
    assert!(s0.forward(&x, &w).is_err());
    assert!(op.forward(&x, &wh).is_err());
    let x3 = Tensor::ones((4, 6, 6), DType::F32, &dev).unwrap();
    assert!(op.forward(&x3, &w).is_err());
    // A non-contiguous input is made contiguous, not misread.
    let xt = Tensor::from_vec(Rng(9).vec(144, 1.0), (1, 4, 6, 6), &dev)
        .unwrap()
        .transpose(2, 3)
        .unwrap();
    let wr = Tensor::from_vec(Rng(10).vec(36, 1.0), (4, 1, 3, 3), &dev).unwrap();
    assert_eq!(
        f32s(&op.forward(&xt, &wr).unwrap()),
        f32s(&xt.conv2d(&wr, 0, 1, 1, 4).unwrap())
    );
}

/// The same convolution from candle tensor ops: pad once, then add the `k²` shifted
/// (strided: `index_select`) slices times the per-channel weight. Multiplier 1, dilation 1.
fn tensor_ops_depthwise(
    x: &Tensor,
    w: &Tensor,
    pad: usize,
    stride: usize,
) -> candle_core::Result<Tensor> {
    let xp = x.pad_with_zeros(2, pad, pad)?.pad_with_zeros(3, pad, pad)?;
    let (_, c, hp, wp) = xp.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let (oh, ow) = ((hp - kh) / stride + 1, (wp - kw) / stride + 1);
    let mut acc: Option<Tensor> = None;
    for ky in 0..kh {
        for kx in 0..kw {
            let s = if stride == 1 {
                xp.narrow(2, ky, oh)?.narrow(3, kx, ow)?
            } else {
                let iy: Vec<u32> = (0..oh).map(|o| (o * stride + ky) as u32).collect();
                let ix: Vec<u32> = (0..ow).map(|o| (o * stride + kx) as u32).collect();
                let iy = Tensor::new(iy.as_slice(), x.device())?;
                let ix = Tensor::new(ix.as_slice(), x.device())?;
                xp.index_select(&iy, 2)?.index_select(&ix, 3)?
            };
            let wt = w
                .narrow(2, ky, 1)?
                .narrow(3, kx, 1)?
                .reshape((1, c, 1, 1))?;
            let term = s.broadcast_mul(&wt)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
    }
    acc.ok_or_else(|| candle_core::Error::Msg("empty kernel".into()))
}

/// EfficientNet-Lite0's depthwise layers (batch 1, 224×224 input; SAME padding as
/// symmetric here): candle's grouped conv2d vs tensor ops vs `DepthwiseConv2d`, forward and
/// forward + backward. A report: `cargo test -p lowbit-nn --test depthwise -- --ignored
/// --nocapture` (set `RAYON_NUM_THREADS`).
#[test]
#[ignore = "report: timing"]
fn report_depthwise_timing() {
    // (channels, input size, kernel, stride, how many such layers in Lite0)
    let layers = [
        (32, 112, 3, 1, 1),
        (96, 112, 3, 2, 1),
        (144, 56, 3, 1, 1),
        (144, 56, 5, 2, 1),
        (240, 28, 5, 1, 1),
        (240, 28, 3, 2, 1),
        (480, 14, 3, 1, 2),
        (480, 14, 5, 1, 1),
        (672, 14, 5, 1, 2),
        (672, 14, 5, 2, 1),
        (1152, 7, 5, 1, 3),
        (1152, 7, 3, 1, 1),
    ];
    let mut totals = [0f64; 6];
    eprintln!(
        "layer                 candle   tensor-ops  depthwise | bwd: candle tensor-ops depthwise (ms)"
    );
    for (c, s, k, stride, count) in layers {
        let pad = (k - 1) / 2;
        let mut r = Rng(c as u64);
        let x = Tensor::from_vec(r.vec(c * s * s, 1.0), (1, c, s, s), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(r.vec(c * k * k, 0.5), (c, 1, k, k), &Device::Cpu).unwrap();
        let op = DepthwiseConv2d {
            padding: pad,
            stride,
            dilation: 1,
        };
        let a = f32s(&x.conv2d(&w, pad, stride, 1, c).unwrap());
        let b = f32s(&tensor_ops_depthwise(&x, &w, pad, stride).unwrap());
        let d = f32s(&op.forward(&x, &w).unwrap());
        let diff = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4 && a == d, "{diff}");
        let fwd: [&Conv<'_>; 3] = [
            &|x, w| x.conv2d(w, pad, stride, 1, c),
            &|x, w| tensor_ops_depthwise(x, w, pad, stride),
            &|x, w| op.forward(x, w),
        ];
        let mut row = [0f64; 6];
        for (j, f) in fwd.iter().enumerate() {
            row[j] = time(5, || {
                f(&x, &w).unwrap();
            });
            let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
            row[3 + j] = time(5, || {
                let y = f(xv.as_tensor(), wv.as_tensor()).unwrap();
                y.sum_all().unwrap().backward().unwrap();
            });
        }
        eprintln!(
            "{c:4}×{s:3}² k{k} s{stride} ×{count}  {:7.2}  {:9.2}  {:9.2} | {:9.2} {:9.2} {:9.2}",
            row[0], row[1], row[2], row[3], row[4], row[5]
        );
        for (t, v) in totals.iter_mut().zip(row) {
            *t += v * count as f64;
        }
    }
    eprintln!(
        "Lite0 total (ms)       {:7.1}  {:9.1}  {:9.1} | {:9.1} {:9.1} {:9.1}",
        totals[0], totals[1], totals[2], totals[3], totals[4], totals[5]
    );
}
