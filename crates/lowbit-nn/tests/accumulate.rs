//! The `accumulator` setting: linear and matmul layers whose dot products run in a narrow
//! accumulator, against loops written here with the `half` crate's BF16 and FP16 arithmetic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use half::{bf16, f16};
use lowbit_nn::{Mode, OpParams, QuantConfig};

mod common;
use common::{Rng, build_linear, build_op, f32s, fq, tensor_bits};

/// `Σ x·w` in BF16: each product (exact in f32 for FP8 operands) rounded to BF16, each sum
/// rounded to BF16 (an f32 sum of two BF16 values is exact or far from a BF16 tie).
fn bf16_dot(x: &[f32], w: &[f32]) -> f32 {
    let mut acc = bf16::ZERO;
    for (a, b) in x.iter().zip(w) {
        let p = bf16::from_f32(a * b);
        acc = bf16::from_f32(acc.to_f32() + p.to_f32());
    }
    acc.to_f32()
}

/// The same in FP16, promoted to an f32 total every `chunk` products.
fn f16_dot_chunked(x: &[f32], w: &[f32], chunk: usize) -> f32 {
    let mut total = 0.0f32;
    for (cx, cw) in x.chunks(chunk).zip(w.chunks(chunk)) {
        let mut acc = f16::ZERO;
        for (a, b) in cx.iter().zip(cw) {
            let p = f16::from_f32(a * b);
            acc = f16::from_f32(acc.to_f32() + p.to_f32());
        }
        total += acc.to_f32();
    }
    total
}

#[test]
fn linear_with_a_bf16_accumulator_equals_the_bf16_loop() {
    let mut r = Rng(11);
    let (wt, bt, x) = (
        r.tensor(&[6, 300], 0.5),
        r.tensor(&[6], 0.1),
        r.tensor(&[2, 3, 300], 2.0),
    );
    let yaml = "defaults: { weight: fp8_e4m3, input: fp8_e4m3, accumulator: bf16 }";
    let (op, table) = build_linear(yaml, &wt, &bt);
    let got = f32s(&op.forward1(&x).unwrap());
    let (xq, wq) = (f32s(&fq("fp8_e4m3", &x)), f32s(&fq("fp8_e4m3", &wt)));
    let b = f32s(&bt);
    let want: Vec<f32> = xq
        .chunks(300)
        .flat_map(|row| {
            wq.chunks(300)
                .zip(&b)
                .map(|(wrow, bias)| bf16_dot(row, wrow) + bias)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(common::bits(&got), common::bits(&want));
    // BF16 accumulation over 300 products loses bits: the f32 matmul differs.
    let plain = candle_nn::Linear::new(fq("fp8_e4m3", &wt), Some(bt.clone()));
    let f32_out = f32s(&candle_core::Module::forward(&plain, &fq("fp8_e4m3", &x)).unwrap());
    assert_ne!(common::bits(&got), common::bits(&f32_out));
    // The FP32 pass of the same model is candle's layer: no accumulator there.
    table.set_mode(Mode::Fp32);
    let plain = candle_nn::Linear::new(wt.clone(), Some(bt.clone()));
    assert_eq!(
        tensor_bits(&op.forward1(&x).unwrap()),
        tensor_bits(&candle_core::Module::forward(&plain, &x).unwrap())
    );
    assert!(
        table.explain().contains("e8m7 nearest_even"),
        "{}",
        table.explain()
    );
}

#[test]
fn chunked_fp16_accumulation_and_batched_matmul() {
    let mut r = Rng(12);
    let (a, b) = (r.tensor(&[2, 3, 200], 1.0), r.tensor(&[2, 200, 4], 1.0));
    let yaml = "defaults: { input: fp8_e4m3, accumulator: { format: fp16, chunk: 64 } }";
    let (op, _) = build_op(
        VarBuilder::zeros(DType::F32, &Device::Cpu),
        yaml,
        "matmul",
        "mm",
        OpParams::Matmul,
    );
    let got = f32s(&op.forward(&[&a, &b]).unwrap());
    let (aq, bq) = (f32s(&fq("fp8_e4m3", &a)), f32s(&fq("fp8_e4m3", &b)));
    let mut want = Vec::new();
    for batch in 0..2 {
        for i in 0..3 {
            let row = &aq[(batch * 3 + i) * 200..][..200];
            for j in 0..4 {
                let col: Vec<f32> = (0..200).map(|k| bq[(batch * 200 + k) * 4 + j]).collect();
                want.push(f16_dot_chunked(row, &col, 64));
            }
        }
    }
    assert_eq!(common::bits(&got), common::bits(&want));
    // Batch dimensions broadcast: [3, 200] against [2, 200, 4].
    let a2 = r.tensor(&[3, 200], 1.0);
    let y = op.forward(&[&a2, &b]).unwrap();
    assert_eq!(y.dims(), [2, 3, 4]);
}

#[test]
fn gradients_are_the_plain_matmuls() {
    // Straight-through: the accumulator's rounding is identity in the backward pass.
    let mut r = Rng(13);
    let (a, b) = (r.tensor(&[4, 64], 1.0), r.tensor(&[64, 5], 1.0));
    let (va, vb) = (Var::from_tensor(&a).unwrap(), Var::from_tensor(&b).unwrap());
    let acc = lowbit_formats::Accumulator::new(
        "e5m4".parse().unwrap(),
        lowbit_formats::AccumulatorRounding::TowardZero,
        Some(16),
    )
    .unwrap();
    let y = lowbit_nn::matmul_accumulated(va.as_tensor(), vb.as_tensor(), acc).unwrap();
    let g = (y.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
    // d(Σ y²)/dA = 2y·Bᵀ, with y the simulated forward value.
    let want_a = (&y * 2.0).unwrap().matmul(&b.t().unwrap()).unwrap();
    let want_b = a.t().unwrap().matmul(&(&y * 2.0).unwrap()).unwrap();
    assert_eq!(tensor_bits(g.get(&va).unwrap()), tensor_bits(&want_a));
    assert_eq!(tensor_bits(g.get(&vb).unwrap()), tensor_bits(&want_b));
}

#[test]
fn config_forms_and_errors() {
    let ok = |yaml: &str| QuantConfig::from_yaml(yaml, "acc.yaml").unwrap();
    let c = ok(
        "defaults: { accumulator: fp22 }\nlayers:\n  - pattern: fc\n    accumulator: null\nops:\n  matmul: { accumulator: { format: e8m13, rounding: toward_zero, chunk: 128 } }\n",
    );
    let back = QuantConfig::from_yaml(&c.to_yaml().unwrap(), "back.yaml").unwrap();
    assert_eq!(back.defaults.accumulator, c.defaults.accumulator);
    let err = |yaml: &str| {
        QuantConfig::from_yaml(yaml, "acc.yaml")
            .unwrap_err()
            .to_string()
    };
    let e = err("defaults:\n  accumulator: e9m2\n");
    assert!(e.contains("acc.yaml:2") && e.contains("e9m2"), "{e}");
    let e = err("defaults:\n  accumulator: { format: fp16, chunk: 0 }\n");
    assert!(e.contains("acc.yaml:2") && e.contains("chunk"), "{e}");
    let e = err("defaults:\n  accumulator: { format: fp16, rounding: up }\n");
    assert!(e.contains("rounding") || e.contains("up"), "{e}");
    // Ops other than linear and matmul ignore it.
    let mut r = Rng(14);
    let x = r.tensor(&[2, 8], 1.0);
    let (op, table) = build_op(
        VarBuilder::zeros(DType::F32, &Device::Cpu),
        "defaults: { accumulator: bf16 }",
        "add",
        "add",
        OpParams::Add,
    );
    assert_eq!(
        tensor_bits(&op.forward(&[&x, &x]).unwrap()),
        tensor_bits(&(&x + &x).unwrap())
    );
    assert!(
        !table.explain().contains("accumulator"),
        "{}",
        table.explain()
    );
}

#[test]
fn conv2d_with_a_bf16_accumulator_equals_the_bf16_loop() {
    // Groups, stride, padding and dilation; the reduction over (input channel, kernel row,
    // kernel column), padding as +0 terms.
    let mut r = Rng(15);
    let (n, c, h, w, co, k, groups, pad, stride, dil) = (2, 4, 7, 7, 6, 3, 2, 1, 2, 1);
    let x = fq("fp8_e4m3", &r.tensor(&[n, c, h, w], 1.0));
    let wt = fq("fp8_e4m3", &r.tensor(&[co, c / groups, k, k], 0.5));
    let cfg = candle_nn::Conv2dConfig {
        padding: pad,
        stride,
        dilation: dil,
        groups,
        cudnn_fwd_algo: None,
    };
    let acc = lowbit_formats::Accumulator::new(
        "bf16".parse().unwrap(),
        lowbit_formats::AccumulatorRounding::NearestEven,
        None,
    )
    .unwrap();
    let got = lowbit_nn::conv2d_accumulated(&x, &wt, &cfg, acc).unwrap();
    let (oh, ow) = (
        (h + 2 * pad - dil * (k - 1) - 1) / stride + 1,
        (w + 2 * pad - dil * (k - 1) - 1) / stride + 1,
    );
    assert_eq!(got.dims(), [n, co, oh, ow]);
    let (xv, wv) = (f32s(&x), f32s(&wt));
    let cg = c / groups;
    let mut want = Vec::new();
    for img in 0..n {
        for o in 0..co {
            let g = o / (co / groups);
            for oy in 0..oh {
                for ox in 0..ow {
                    let (mut xs, mut ws) = (Vec::new(), Vec::new());
                    for ci in 0..cg {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * stride + ky * dil) as isize - pad as isize;
                                let ix = (ox * stride + kx * dil) as isize - pad as isize;
                                let v =
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w
                                    {
                                        xv[((img * c + g * cg + ci) * h + iy as usize) * w
                                            + ix as usize]
                                    } else {
                                        0.0
                                    };
                                xs.push(v);
                                ws.push(wv[((o * cg + ci) * k + ky) * k + kx]);
                            }
                        }
                    }
                    want.push(bf16_dot(&xs, &ws));
                }
            }
        }
    }
    assert_eq!(common::bits(&f32s(&got)), common::bits(&want));
    // Through a config: the layer adds its bias in f32; gradients are candle's conv2d's.
    let bias = r.tensor(&[co], 0.1);
    let weights: HashMap<String, Tensor> = [
        ("c.weight".to_string(), wt.clone()),
        ("c.bias".to_string(), bias.clone()),
    ]
    .into();
    let (op, _) = build_op(
        VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu),
        "defaults: { accumulator: bf16 }",
        "conv2d",
        "c",
        OpParams::Conv2d {
            in_channels: c,
            out_channels: co,
            kernel: k,
            cfg,
            bias: true,
        },
    );
    let y = op.forward1(&x).unwrap();
    let want_y = got
        .broadcast_add(&bias.reshape((1, co, 1, 1)).unwrap())
        .unwrap();
    assert_eq!(tensor_bits(&y), tensor_bits(&want_y));
    // Training: the simulated value, the plain convolution's gradient.
    let ctx = op.quant().context().clone();
    ctx.set_training(true);
    let vx = Var::from_tensor(&x).unwrap();
    let y = op.forward1(vx.as_tensor()).unwrap();
    assert_eq!(tensor_bits(&y), tensor_bits(&want_y));
    let g = y.sum_all().unwrap().backward().unwrap();
    ctx.set_mode(Mode::Fp32);
    let vx2 = Var::from_tensor(&x).unwrap();
    let plain = op.forward1(vx2.as_tensor()).unwrap();
    let want_g = plain.sum_all().unwrap().backward().unwrap();
    assert_eq!(
        tensor_bits(g.get(&vx).unwrap()),
        tensor_bits(want_g.get(&vx2).unwrap())
    );
    assert_ne!(tensor_bits(&plain), tensor_bits(&want_y));
}
