//! The dense convolution (`TiledConv2d`, the CPU path of `QConv2d`s with `groups = 1` and
//! kernels above 1×1) against candle's `conv2d` and an independent f64 reference:
//!
//! - forward: bit for bit equal to candle 0.11's conv2d (F32 and F64) over kernels 3, 5 and 7
//!   (and non-square ones), strides 1 and 2, padding 0–3, dilation 1 and 2, channel counts
//!   1, 3, 7, 9, 17, 32, 33, batch 1–3, output planes around the 512-pixel tile (1, 511, 512,
//!   513, 784, 1024, 1025 pixels), inputs and weights with exact zeros and negative zeros,
//!   zero outputs;
//! - forward and gradients within `1e-5 · Σ|terms|` of a plain f64 reference, and the
//!   gradients bit for bit equal to candle's own conv2d backward wherever that one works (it
//!   fails when the width needs another transposed-convolution output padding than the
//!   height; this op's does not);
//! - `QConv2d` takes the path, stays candle's layer bit for bit, and trains (QAT gradients
//!   equal to candle's);
//! - the cases it does not take, and errors instead of panics on bad shapes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Conv2dConfig, VarBuilder, VarMap};
use lowbit_nn::OpParams;
use lowbit_nn::layers::TiledConv2d;

mod common;
use common::{
    Built, Conv, ConvDims, Rng, assert_close, bits, build_op, check_stays_candles_layer, f32s,
    grads, qat_step, reference, tensor, time,
};

/// One test geometry.
#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    pad: usize,
    stride: usize,
    dil: usize,
}

impl Case {
    fn dims(&self) -> ConvDims {
        ConvDims {
            n: self.n,
            ci: self.ci,
            co: self.co,
            groups: 1,
            h: self.h,
            w: self.w,
            kh: self.kh,
            kw: self.kw,
            pad: self.pad,
            stride: self.stride,
            dil: self.dil,
        }
    }
    fn out(&self, len: usize, k: usize) -> Option<usize> {
        self.dims().out(len, k)
    }
    fn oh(&self) -> usize {
        self.out(self.h, self.kh).unwrap()
    }
    fn ow(&self) -> usize {
        self.out(self.w, self.kw).unwrap()
    }
    fn valid(&self) -> bool {
        self.out(self.h, self.kh).is_some() && self.out(self.w, self.kw).is_some()
    }
    fn cfg(&self) -> Conv2dConfig {
        Conv2dConfig {
            padding: self.pad,
            stride: self.stride,
            dilation: self.dil,
            groups: 1,
            cudnn_fwd_algo: None,
        }
    }
    fn op(&self) -> TiledConv2d {
        TiledConv2d::from_config(&self.cfg())
    }
    fn x_shape(&self) -> [usize; 4] {
        [self.n, self.ci, self.h, self.w]
    }
    fn w_shape(&self) -> [usize; 4] {
        [self.co, self.ci, self.kh, self.kw]
    }
    fn candle(&self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        x.conv2d(w, self.pad, self.stride, self.dil, 1)
    }
}

/// Every valid combination of kernel, stride, padding and dilation over a few shapes.
fn grid() -> Vec<Case> {
    // (n, c_in, c_out, h, w)
    let shapes = [
        (1, 1, 1, 9, 9),
        (2, 3, 5, 8, 11),
        (3, 7, 9, 13, 10),
        (1, 1, 32, 28, 28),
        (2, 32, 33, 14, 14),
        (1, 9, 1, 7, 7),
        (2, 17, 10, 12, 15),
    ];
    let mut v = Vec::new();
    for (n, ci, co, h, w) in shapes {
        for k in [3, 5, 7] {
            for stride in [1, 2] {
                for pad in [0, 1, 2, 3] {
                    for dil in [1, 2] {
                        let case = Case {
                            n,
                            ci,
                            co,
                            h,
                            w,
                            kh: k,
                            kw: k,
                            pad,
                            stride,
                            dil,
                        };
                        if case.valid() {
                            v.push(case);
                        }
                    }
                }
            }
        }
    }
    v
}

/// Output planes around the 512-pixel tile (3×3, padding 1, stride 1 keeps the size), a
/// strided one of 784 pixels, and non-square kernels.
fn boundaries() -> Vec<Case> {
    let base = Case {
        n: 2,
        ci: 3,
        co: 4,
        h: 1,
        w: 1,
        kh: 3,
        kw: 3,
        pad: 1,
        stride: 1,
        dil: 1,
    };
    let mut v: Vec<Case> = [
        (1, 1),
        (7, 73),
        (16, 32),
        (27, 19),
        (28, 28),
        (32, 32),
        (25, 41),
        (1, 513),
    ]
    .into_iter()
    .map(|(h, w)| Case { h, w, ..base })
    .collect();
    v.push(Case {
        h: 56,
        w: 55,
        stride: 2,
        ..base
    });
    v.push(Case {
        n: 1,
        ci: 1,
        co: 32,
        h: 28,
        w: 28,
        ..base
    });
    for (kh, kw) in [(1, 3), (3, 1), (3, 5), (1, 2)] {
        v.push(Case {
            kh,
            kw,
            h: 9,
            w: 12,
            ..base
        });
    }
    v
}

/// Inputs for case `i`: every other case goes through a ReLU (exact zeros, so some receptive
/// fields are all zeros); every 7th input and 11th weight is `-0`, every 13th weight `+0`.
fn inputs(case: &Case, i: usize) -> (Vec<f32>, Vec<f32>) {
    let mut r = Rng(1000 + i as u64);
    let mut x = r.vec(case.x_shape().iter().product(), 2.0);
    if i % 2 == 1 {
        for v in &mut x {
            *v = v.max(0.0);
        }
    }
    for v in x.iter_mut().step_by(7) {
        *v = -0.0;
    }
    let mut w = r.vec(case.w_shape().iter().product(), 0.7);
    for v in w.iter_mut().skip(3).step_by(11) {
        *v = -0.0;
    }
    for v in w.iter_mut().skip(5).step_by(13) {
        *v = 0.0;
    }
    (x, w)
}

fn assert_same_bits(what: &str, case: &Case, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what} {case:?}");
    for (j, (g, e)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            e.to_bits(),
            "{what} {case:?} [{j}]: {g} vs candle {e}"
        );
    }
}

#[test]
fn forward_equals_candle_conv2d_bit_for_bit() {
    let cases: Vec<Case> = grid().into_iter().chain(boundaries()).collect();
    assert!(cases.len() > 250, "{}", cases.len());
    let mut zeros = 0;
    let mut tiles = std::collections::BTreeSet::new();
    for (i, case) in cases.iter().enumerate() {
        let (xv, wv) = inputs(case, i);
        let (x, w) = (tensor(&xv, case.x_shape()), tensor(&wv, case.w_shape()));
        assert!(TiledConv2d::supports(&x, &w, &case.cfg()), "{case:?}");
        let got = case.op().forward(&x, &w).unwrap();
        let want = case.candle(&x, &w).unwrap();
        assert_eq!(got.dims(), want.dims(), "{case:?}");
        let (got, want) = (f32s(&got), f32s(&want));
        assert_same_bits("forward", case, &got, &want);
        zeros += want.iter().filter(|v| **v == 0.0).count();
        tiles.insert((case.oh() * case.ow()) % 512);
        // And the mathematics, independently of candle (every other, to keep it quick).
        if i % 2 == 0 {
            let re = reference(&case.dims(), &xv, &wv, &vec![0.0; got.len()]);
            assert_close("forward", case, &got, &re.y, &re.y_abs);
        }
    }
    // Zero outputs were compared, sign included (gemm's sums start from `+0`, so a sum of
    // `-0` products is `+0`, in both); the last tile had 1, 511 and 512 pixels.
    assert!(zeros > 100, "{zeros}");
    assert!([0, 1, 511].iter().all(|t| tiles.contains(t)), "{tiles:?}");
}

#[test]
fn forward_f64_equals_candle_bit_for_bit() {
    let cases: Vec<Case> = grid().into_iter().chain(boundaries()).collect();
    for (i, case) in cases.iter().enumerate().step_by(5) {
        let (xv, wv) = inputs(case, i);
        let x = tensor(&xv, case.x_shape()).to_dtype(DType::F64).unwrap();
        let w = tensor(&wv, case.w_shape()).to_dtype(DType::F64).unwrap();
        assert!(TiledConv2d::supports(&x, &w, &case.cfg()));
        let got = case.op().forward(&x, &w).unwrap();
        let want = case.candle(&x, &w).unwrap();
        let got = got.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let want = want.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let same = got.len() == want.len()
            && got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{case:?}");
    }
}

/// All-zero receptive fields: the sign of a zero sum is gemm's (candle's), for `+0` and `-0`
/// inputs, positive and negative weights, with and without padding.
#[test]
fn signed_zero_outputs_equal_candles() {
    for x0 in [0.0f32, -0.0] {
        for w0 in [0.5f32, -0.5] {
            for pad in [0, 1] {
                let x = Tensor::full(x0, (2, 3, 5, 6), &Device::Cpu).unwrap();
                let w = Tensor::full(w0, (4, 3, 3, 3), &Device::Cpu).unwrap();
                let want = f32s(&x.conv2d(&w, pad, 1, 1, 1).unwrap());
                let op = TiledConv2d {
                    padding: pad,
                    stride: 1,
                    dilation: 1,
                };
                let got = f32s(&op.forward(&x, &w).unwrap());
                assert_eq!(bits(&got), bits(&want), "x {x0} w {w0} pad {pad}");
            }
        }
    }
}

#[test]
fn gradients_match_the_reference_and_equal_candles_backward() {
    let cases: Vec<Case> = grid().into_iter().chain(boundaries()).collect();
    let (mut compared, mut candle_failed) = (0, 0);
    for (i, case) in cases.iter().enumerate().step_by(3) {
        let (xv, wv) = inputs(case, i);
        let r = Rng(7 + i as u64).vec(case.n * case.co * case.oh() * case.ow(), 1.0);
        let re = reference(&case.dims(), &xv, &wv, &r);
        let op = case.op();
        let (gx, gw) = grads((&xv, case.x_shape()), (&wv, case.w_shape()), &r, |x, w| {
            op.forward(x, w)
        })
        .unwrap();
        assert_close("grad input", case, &gx, &re.gx, &re.gx_abs);
        assert_close("grad weight", case, &gw, &re.gw, &re.gw_abs);
        let candle = grads((&xv, case.x_shape()), (&wv, case.w_shape()), &r, |x, w| {
            case.candle(x, w)
        });
        // Candle's backward sizes its transposed convolution with the output padding of the
        // height, so it fails when the width needs another one.
        let pads = |len: usize, out: usize, k: usize| {
            len + 2 * case.pad - ((out - 1) * case.stride + case.dil * (k - 1) + 1)
        };
        let same_padding = pads(case.h, case.oh(), case.kh) == pads(case.w, case.ow(), case.kw);
        match candle {
            Ok((cgx, cgw)) => {
                assert!(same_padding, "{case:?}");
                assert_same_bits("grad input vs candle", case, &gx, &cgx);
                assert_same_bits("grad weight vs candle", case, &gw, &cgw);
                compared += 1;
            }
            Err(e) => {
                assert!(!same_padding, "{case:?}: {e}");
                candle_failed += 1;
            }
        }
    }
    eprintln!(
        "compared with candle's backward: {compared}; candle's backward failed: {candle_failed}"
    );
    assert!(
        compared > 60 && candle_failed > 0,
        "{compared} {candle_failed}"
    );
}

/// A constant input (no gradient tracked) gets no gradient; the weight's is candle's.
#[test]
fn constant_input_gets_no_gradient() {
    let case = Case {
        n: 2,
        ci: 3,
        co: 4,
        h: 9,
        w: 9,
        kh: 3,
        kw: 3,
        pad: 1,
        stride: 2,
        dil: 1,
    };
    let (xv, wv) = inputs(&case, 0);
    let x = tensor(&xv, case.x_shape());
    let mut gws = Vec::new();
    for tiled in [true, false] {
        let w = Var::from_tensor(&tensor(&wv, case.w_shape())).unwrap();
        let y = if tiled {
            case.op().forward(&x, w.as_tensor()).unwrap()
        } else {
            case.candle(&x, w.as_tensor()).unwrap()
        };
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        if tiled {
            assert!(g.get(&x).is_none());
        }
        gws.push(f32s(g.get(w.as_tensor()).unwrap()));
    }
    assert_eq!(bits(&gws[0]), bits(&gws[1]));
}

fn build(case: &Case, vb: VarBuilder, yaml: &str) -> Built {
    let params = OpParams::Conv2d {
        in_channels: case.ci,
        out_channels: case.co,
        kernel: case.kh,
        cfg: case.cfg(),
        bias: true,
    };
    build_op(vb, yaml, "conv2d", "conv", params)
}

#[test]
fn qconv2d_takes_the_path_and_stays_candles_layer() {
    let case = Case {
        n: 2,
        ci: 5,
        co: 6,
        h: 11,
        w: 10,
        kh: 3,
        kw: 3,
        pad: 1,
        stride: 2,
        dil: 1,
    };
    let (xv, wv) = inputs(&case, 0);
    let (x, w) = (tensor(&xv, case.x_shape()), tensor(&wv, case.w_shape()));
    // The layer runs `TiledConv2d`: at this shape (11×10, stride 2) candle's own backward
    // fails, the layer's works.
    let build = |vb| build(&case, vb, "defaults: {}");
    check_stays_candles_layer("conv", (&x, &w), case.cfg(), build, |x, w| {
        case.candle(x, w)
    });
}

/// QAT: a quantized dense `QConv2d` over a (randomly initialised) `VarMap` trains — its weight
/// and bias get gradients through the STE, bit for bit candle's conv2d's on the fake-quantized
/// weight.
#[test]
fn qconv2d_dense_trains() {
    let case = Case {
        n: 3,
        ci: 4,
        co: 8,
        h: 10,
        w: 10,
        kh: 3,
        kw: 3,
        pad: 1,
        stride: 1,
        dil: 1,
    };
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let built = build(&case, vb, "defaults: { weight: int8 }");
    let (xv, _) = inputs(&case, 0);
    let x = tensor(&xv, case.x_shape());
    let step = qat_step(&built, &vm, "conv", &x, |x, w| case.candle(x, w));
    assert_eq!(bits(&f32s(&step.y)), bits(&f32s(&step.candle_y)));
    assert_eq!(bits(&step.gw), bits(&step.candle_gw));
}

#[test]
fn other_cases_stay_on_candle_and_bad_shapes_are_errors() {
    let dev = Device::Cpu;
    let x = Tensor::ones((1, 4, 6, 6), DType::F32, &dev).unwrap();
    let w = Tensor::ones((5, 4, 3, 3), DType::F32, &dev).unwrap();
    let dense = Conv2dConfig::default();
    assert!(TiledConv2d::supports(&x, &w, &dense));
    // Grouped and depthwise, 1×1 kernels (candle's own special cases).
    let g2 = Conv2dConfig {
        groups: 2,
        ..Default::default()
    };
    let w2 = Tensor::ones((4, 2, 3, 3), DType::F32, &dev).unwrap();
    assert!(!TiledConv2d::supports(&x, &w2, &g2));
    let w1 = Tensor::ones((5, 4, 1, 1), DType::F32, &dev).unwrap();
    assert!(!TiledConv2d::supports(&x, &w1, &dense));
    // Other dtypes, mixed dtypes, another rank.
    let (xh, wh) = (
        x.to_dtype(DType::F16).unwrap(),
        w.to_dtype(DType::F16).unwrap(),
    );
    assert!(!TiledConv2d::supports(&xh, &wh, &dense));
    assert!(!TiledConv2d::supports(&x, &wh, &dense));
    let x3 = Tensor::ones((4, 6, 6), DType::F32, &dev).unwrap();
    assert!(!TiledConv2d::supports(&x3, &w, &dense));
    // Errors, not panics, when forced: an input smaller than the kernel (where candle's own
    // conv2d underflows), channels that differ, stride 0, a 1×1 forced through, rank 3,
    // mixed dtypes.
    let op = TiledConv2d::from_config(&dense);
    let tiny = Tensor::ones((1, 4, 2, 2), DType::F32, &dev).unwrap();
    let err = op.forward(&tiny, &w).unwrap_err().to_string();
    assert!(err.contains("smaller than the 3×3 kernel"), "{err}");
    let w3 = Tensor::ones((5, 3, 3, 3), DType::F32, &dev).unwrap();
    let err = op.forward(&x, &w3).unwrap_err().to_string();
    assert!(
        err.contains("[5, 3, 3, 3]") && err.contains("4 channels"),
        "{err}"
    );
    let s0 = TiledConv2d { stride: 0, ..op };
    assert!(s0.forward(&x, &w).is_err());
    let d0 = TiledConv2d { dilation: 0, ..op };
    assert!(d0.forward(&x, &w).is_err());
    assert!(op.forward(&x3, &w).is_err());
    assert!(op.forward(&x, &wh).is_err());
    assert!(op.forward(&xh, &wh).is_err());
    // A forced 1×1 is still a correct convolution.
    let w1r = Tensor::from_vec(Rng(4).vec(20, 1.0), (5, 4, 1, 1), &dev).unwrap();
    let xr = Tensor::from_vec(Rng(5).vec(144, 1.0), (1, 4, 6, 6), &dev).unwrap();
    let got = f32s(&op.forward(&xr, &w1r).unwrap());
    let want = f32s(&xr.conv2d(&w1r, 0, 1, 1, 1).unwrap());
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
    }
    // A non-contiguous input is made contiguous, not misread.
    let xt = xr.transpose(2, 3).unwrap();
    let wr = Tensor::from_vec(Rng(10).vec(180, 1.0), (5, 4, 3, 3), &dev).unwrap();
    assert_eq!(
        bits(&f32s(&op.forward(&xt, &wr).unwrap())),
        bits(&f32s(&xt.conv2d(&wr, 0, 1, 1, 1).unwrap()))
    );
    // A batch of zero images.
    let x0 = Tensor::zeros((0, 4, 6, 6), DType::F32, &dev).unwrap();
    assert_eq!(op.forward(&x0, &w).unwrap().dims(), &[0, 5, 4, 4]);
}

/// The Fashion-MNIST ResNet's 3×3 convs (batch 100): candle's conv2d vs `TiledConv2d`,
/// forward and forward + backward (input and weight gradients). A report:
/// `cargo test --release -p lowbit-nn --test conv_tiled -- --ignored --nocapture`.
#[test]
#[ignore = "report: timing"]
fn report_fashion_timing() {
    // (c_in, c_out, size, stride)
    for (ci, co, size, stride) in [
        (1, 32, 28, 1),
        (32, 32, 14, 1),
        (32, 64, 14, 2),
        (64, 64, 7, 1),
    ] {
        let case = Case {
            n: 100,
            ci,
            co,
            h: size,
            w: size,
            kh: 3,
            kw: 3,
            pad: 1,
            stride,
            dil: 1,
        };
        let (xv, wv) = inputs(&case, 0);
        let x = Var::from_tensor(&tensor(&xv, case.x_shape())).unwrap();
        let w = Var::from_tensor(&tensor(&wv, case.w_shape())).unwrap();
        let op = case.op();
        let tiled = |x: &Tensor, w: &Tensor| op.forward(x, w);
        let candle = |x: &Tensor, w: &Tensor| case.candle(x, w);
        let convs: [(&str, &Conv); 2] = [("candle", &candle), ("tiled", &tiled)];
        for (name, conv) in convs {
            let fwd = time(3, || {
                conv(x.as_tensor(), w.as_tensor()).unwrap();
            });
            let bwd = time(3, || {
                let y = conv(x.as_tensor(), w.as_tensor()).unwrap();
                y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            });
            println!(
                "{ci:>2}→{co:<2} {size}×{size} stride {stride}, batch 100, {name:>6}: forward \
                 {fwd:7.2} ms, forward + backward {bwd:7.2} ms"
            );
        }
    }
}
