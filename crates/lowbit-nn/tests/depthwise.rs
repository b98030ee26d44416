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

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Conv2dConfig, VarBuilder, VarMap};
use lowbit_nn::layers::DepthwiseConv2d;
use lowbit_nn::{Mode, OpParams, QBuilder, QuantConfig, Registry, Ste};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

fn tensor(v: &[f32], shape: [usize; 4]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &shape, &Device::Cpu).unwrap()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

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
    fn out(&self, len: usize) -> Option<usize> {
        let span = self.dil * (self.k - 1) + 1;
        (len + 2 * self.pad >= span).then(|| (len + 2 * self.pad - span) / self.stride + 1)
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

/// The f64 reference: the output, its gradients for the upstream gradient `r`
/// (`loss = Σ y·r`), and for each the sum of the absolute terms.
struct Reference {
    y: Vec<f64>,
    y_abs: Vec<f64>,
    gx: Vec<f64>,
    gx_abs: Vec<f64>,
    gw: Vec<f64>,
    gw_abs: Vec<f64>,
}

fn reference(case: &Case, x: &[f32], w: &[f32], r: &[f32]) -> Reference {
    let (oh, ow) = (case.out(case.h).unwrap(), case.out(case.w).unwrap());
    let co = case.c * case.m;
    let mut out = Reference {
        y: vec![0.0; case.n * co * oh * ow],
        y_abs: vec![0.0; case.n * co * oh * ow],
        gx: vec![0.0; x.len()],
        gx_abs: vec![0.0; x.len()],
        gw: vec![0.0; w.len()],
        gw_abs: vec![0.0; w.len()],
    };
    for b in 0..case.n {
        for o in 0..co {
            let c = o / case.m;
            for oy in 0..oh {
                for ox in 0..ow {
                    let yi = ((b * co + o) * oh + oy) * ow + ox;
                    for ky in 0..case.k {
                        for kx in 0..case.k {
                            let iy =
                                (oy * case.stride + ky * case.dil) as isize - case.pad as isize;
                            let ix =
                                (ox * case.stride + kx * case.dil) as isize - case.pad as isize;
                            if iy < 0 || ix < 0 || iy >= case.h as isize || ix >= case.w as isize {
                                continue;
                            }
                            let xi =
                                ((b * case.c + c) * case.h + iy as usize) * case.w + ix as usize;
                            let wi = (o * case.k + ky) * case.k + kx;
                            let (xv, wv, rv) =
                                (f64::from(x[xi]), f64::from(w[wi]), f64::from(r[yi]));
                            out.y[yi] += xv * wv;
                            out.y_abs[yi] += (xv * wv).abs();
                            out.gx[xi] += rv * wv;
                            out.gx_abs[xi] += (rv * wv).abs();
                            out.gw[wi] += rv * xv;
                            out.gw_abs[wi] += (rv * xv).abs();
                        }
                    }
                }
            }
        }
    }
    out
}

const REL: f64 = 1e-5;

fn assert_close(what: &str, case: &Case, got: &[f32], want: &[f64], abs: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what} {case:?}");
    for (i, ((g, w), a)) in got.iter().zip(want).zip(abs).enumerate() {
        let err = (f64::from(*g) - w).abs();
        assert!(
            err <= REL * a + 1e-30,
            "{what} {case:?} [{i}]: got {g}, want {w} (Σ|terms| {a}, error {err:e})"
        );
    }
}

fn assert_close_f32(what: &str, case: &Case, got: &[f32], want: &[f32], abs: &[f64]) {
    let want: Vec<f64> = want.iter().map(|v| f64::from(*v)).collect();
    assert_close(what, case, got, &want, abs);
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
        let re = reference(case, &xv, &wv, &r);
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
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
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

/// Gradients of `Σ y·r` for the input and the weight, with `conv` computing `y`.
fn grads(
    x: &[f32],
    w: &[f32],
    r: &[f32],
    case: &Case,
    conv: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
    let xv = Var::from_tensor(&tensor(x, case.x_shape()))?;
    let wv = Var::from_tensor(&tensor(w, case.w_shape()))?;
    let y = conv(xv.as_tensor(), wv.as_tensor())?;
    let rt = Tensor::from_vec(r.to_vec(), y.dims(), &Device::Cpu)?;
    let g = (y * rt)?.sum_all()?.backward()?;
    let gx = g.get(xv.as_tensor()).map(f32s).unwrap_or_default();
    let gw = g.get(wv.as_tensor()).map(f32s).unwrap_or_default();
    Ok((gx, gw))
}

#[test]
fn gradients_match_the_reference_and_candle_backward() {
    let (mut compared, mut candle_failed) = (0, 0);
    for (i, case) in cases().iter().enumerate() {
        let (xv, wv) = inputs(case, i);
        let (oh, ow) = (case.out(case.h).unwrap(), case.out(case.w).unwrap());
        let r = Rng(7 + i as u64).vec(case.n * case.c * case.m * oh * ow, 1.0);
        let re = reference(case, &xv, &wv, &r);
        let op = case.op();
        let (gx, gw) = grads(&xv, &wv, &r, case, |x, w| op.forward(x, w)).unwrap();
        assert_close("grad input", case, &gx, &re.gx, &re.gx_abs);
        assert_close("grad weight", case, &gw, &re.gw, &re.gw_abs);
        let cfg = case.cfg();
        let candle = grads(&xv, &wv, &r, case, |x, w| {
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
    let config = QuantConfig::from_yaml(yaml, "test.yaml").unwrap();
    let b = QBuilder::new(vb, &config, Registry::default()).unwrap();
    let op = b
        .op(
            "conv2d",
            "dw",
            OpParams::Conv2d {
                in_channels: c,
                out_channels: c * m,
                kernel: k,
                cfg,
                bias: true,
            },
        )
        .unwrap();
    let table = b.finish().unwrap();
    (op, table)
}

type Built = (
    std::sync::Arc<dyn lowbit_nn::QuantOp>,
    lowbit_nn::LayerTable,
);

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
    let bias = Tensor::from_vec(Rng(3).vec(12, 0.1), 12, &Device::Cpu).unwrap();
    let mut t = HashMap::new();
    t.insert("dw.weight".to_string(), w.clone());
    t.insert("dw.bias".to_string(), bias.clone());
    let vb = VarBuilder::from_tensors(t, DType::F32, &Device::Cpu);
    let (op, table) = build(6, 2, 3, case.cfg(), vb, "defaults: {}");
    table.set_mode(Mode::Fp32);
    let got = f32s(&op.forward1(&x).unwrap());
    let want = f32s(
        &candle_nn::Conv2d::new(w, Some(bias), case.cfg())
            .forward(&x)
            .unwrap(),
    );
    let same = got
        .iter()
        .zip(&want)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same && got.len() == want.len());

    // The layer ran `DepthwiseConv2d`: at this shape (11×10, stride 2) candle's own backward
    // fails (see above), the layer's works.
    let xv = Var::from_tensor(&x).unwrap();
    let y = op.forward1(xv.as_tensor()).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(xv.as_tensor()).unwrap().dims(), x.dims());
    let wv = Var::from_tensor(&tensor(&wv, case.w_shape())).unwrap();
    let y = x.conv2d(wv.as_tensor(), 1, 2, 1, 6).unwrap();
    assert!(y.sum_all().unwrap().backward().is_err());
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
    let yaml = "defaults: { weight: int8 }";
    let (op, table) = build(8, 1, 3, case.cfg(), vb, yaml);
    table.set_mode(Mode::Quantize);
    // The plain STE passes the whole gradient (the default clipped one drops it where an
    // element rounds past the grid's end, which the absmax element of a random init may).
    op.quant().weight.as_ref().unwrap().set_ste(Ste::Plain);
    let (xv, _) = inputs(&case, 0);
    let x = tensor(&xv, case.x_shape());
    let y = op.forward1(&x).unwrap();
    let r = Tensor::from_vec(Rng(5).vec(y.elem_count(), 1.0), y.dims(), &Device::Cpu).unwrap();
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let vars = vm.data().lock().unwrap().clone();
    let (wvar, bvar) = (&vars["dw.weight"], &vars["dw.bias"]);
    let gw = f32s(grads.get(wvar.as_tensor()).unwrap());
    let gb = f32s(grads.get(bvar.as_tensor()).unwrap());
    assert!(gw.iter().any(|v| *v != 0.0) && gb.iter().any(|v| *v != 0.0));

    // The same step with candle's conv2d on the layer's quantized weight.
    let wq = {
        let w = wvar.as_tensor().detach();
        let spec: lowbit_quant::QuantSpec = "int8".parse().unwrap();
        let v = f32s(&w);
        let mut out = vec![0f32; v.len()];
        spec.fake_quantize(&v, w.dims(), &mut out).unwrap();
        Var::from_tensor(&Tensor::from_vec(out, w.dims(), &Device::Cpu).unwrap()).unwrap()
    };
    let b = bvar.as_tensor().detach();
    let y2 = x
        .conv2d(wq.as_tensor(), 1, 1, 1, 8)
        .unwrap()
        .broadcast_add(&b.reshape((1, 8, 1, 1)).unwrap())
        .unwrap();
    assert_eq!(f32s(&y), f32s(&y2));
    let g2 = (&y2 * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let cgw = f32s(g2.get(wq.as_tensor()).unwrap());
    let wv = f32s(wq.as_tensor());
    let re = reference(&case, &xv, &wv, &f32s(&r));
    assert_close_f32("QAT grad weight vs candle", &case, &gw, &cgw, &re.gw_abs);
    assert_close("QAT grad weight", &case, &gw, &re.gw, &re.gw_abs);
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

/// A convolution under test.
type Conv<'a> = dyn Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor> + 'a;

/// Milliseconds per call of `f` (best of 5 after a warm-up).
fn time(mut f: impl FnMut()) -> f64 {
    f();
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
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
            row[j] = time(|| {
                f(&x, &w).unwrap();
            });
            let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
            row[3 + j] = time(|| {
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
