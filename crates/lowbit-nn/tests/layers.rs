//! Every layer: quantizers off ≡ candle's layer bit for bit; with specs, ≡ a hand-composed
//! reference (fake-quant with lowbit-quant, then the candle op).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::VarBuilder;
use lowbit_nn::{Activation, Mode, OpParams, QBuilder, QuantConfig, Registry};

mod common;
use common::{Built, Rng, build_op, fq, tensor_bits};

/// Builds one op named `l` from `params` over `weights`, with `config`.
fn build(kind: &str, params: OpParams, weights: HashMap<String, Tensor>, yaml: &str) -> Built {
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    build_op(vb, yaml, kind, "l", params)
}

fn w(pairs: &[(&str, &Tensor)]) -> HashMap<String, Tensor> {
    pairs
        .iter()
        .map(|(k, v)| (format!("l.{k}"), (*v).clone()))
        .collect()
}

const QUANT: &str = "defaults: { weight: int8, bias: fp8_e4m3, input: fp8_e4m3, output: fp8_e5m2, activation: fp8_e4m3 }";

#[test]
fn linear() {
    let mut r = Rng(1);
    let (wt, bt, x) = (
        r.tensor(&[8, 16], 0.5),
        r.tensor(&[8], 0.1),
        r.tensor(&[3, 5, 16], 2.0),
    );
    let (op, table) = build(
        "linear",
        OpParams::Linear {
            in_dim: 16,
            out_dim: 8,
            bias: true,
        },
        w(&[("weight", &wt), ("bias", &bt)]),
        QUANT,
    );
    let want = fq(
        "fp8_e5m2",
        &candle_nn::Linear::new(fq("int8", &wt), Some(fq("fp8_e4m3", &bt)))
            .forward(&fq("fp8_e4m3", &x))
            .unwrap(),
    );
    assert_eq!(tensor_bits(&op.forward1(&x).unwrap()), tensor_bits(&want));
    table.set_mode(Mode::Fp32);
    assert_eq!(
        tensor_bits(&op.forward1(&x).unwrap()),
        tensor_bits(&candle_nn::Linear::new(wt, Some(bt)).forward(&x).unwrap())
    );
}

#[test]
fn conv2d_grouped_strided_dilated() {
    let mut r = Rng(2);
    let cfg = candle_nn::Conv2dConfig {
        padding: 1,
        stride: 2,
        dilation: 2,
        groups: 2,
        cudnn_fwd_algo: None,
    };
    let (wt, bt, x) = (
        r.tensor(&[6, 2, 3, 3], 0.5),
        r.tensor(&[6], 0.1),
        r.tensor(&[2, 4, 9, 9], 1.0),
    );
    let p = OpParams::Conv2d {
        in_channels: 4,
        out_channels: 6,
        kernel: 3,
        cfg,
        bias: true,
    };
    let (op, table) = build("conv2d", p, w(&[("weight", &wt), ("bias", &bt)]), QUANT);
    let want = fq(
        "fp8_e5m2",
        &candle_nn::Conv2d::new(fq("int8", &wt), Some(fq("fp8_e4m3", &bt)), cfg)
            .forward(&fq("fp8_e4m3", &x))
            .unwrap(),
    );
    assert_eq!(tensor_bits(&op.forward1(&x).unwrap()), tensor_bits(&want));
    table.set_mode(Mode::Fp32);
    assert_eq!(
        tensor_bits(&op.forward1(&x).unwrap()),
        tensor_bits(
            &candle_nn::Conv2d::new(wt, Some(bt), cfg)
                .forward(&x)
                .unwrap()
        )
    );
}

#[test]
fn depthwise_conv2d_and_conv1d_and_transpose() {
    let mut r = Rng(3);
    let cfg = candle_nn::Conv2dConfig {
        padding: 1,
        stride: 1,
        dilation: 1,
        groups: 4,
        cudnn_fwd_algo: None,
    };
    let (wt, x) = (r.tensor(&[4, 1, 3, 3], 0.5), r.tensor(&[1, 4, 6, 6], 1.0));
    let (op, table) = build(
        "conv2d",
        OpParams::Conv2d {
            in_channels: 4,
            out_channels: 4,
            kernel: 3,
            cfg,
            bias: false,
        },
        w(&[("weight", &wt)]),
        QUANT,
    );
    let want = fq(
        "fp8_e5m2",
        &candle_nn::Conv2d::new(fq("int8", &wt), None, cfg)
            .forward(&fq("fp8_e4m3", &x))
            .unwrap(),
    );
    assert_eq!(tensor_bits(&op.forward1(&x).unwrap()), tensor_bits(&want));
    table.set_mode(Mode::Fp32);
    assert_eq!(
        tensor_bits(&op.forward1(&x).unwrap()),
        tensor_bits(&candle_nn::Conv2d::new(wt, None, cfg).forward(&x).unwrap())
    );

    let c1 = candle_nn::Conv1dConfig {
        padding: 2,
        stride: 1,
        dilation: 1,
        groups: 1,
        cudnn_fwd_algo: None,
    };
    let (wt, bt, x) = (
        r.tensor(&[5, 3, 4], 0.5),
        r.tensor(&[5], 0.1),
        r.tensor(&[2, 3, 11], 1.0),
    );
    let (op, table) = build(
        "conv1d",
        OpParams::Conv1d {
            in_channels: 3,
            out_channels: 5,
            kernel: 4,
            cfg: c1,
            bias: true,
        },
        w(&[("weight", &wt), ("bias", &bt)]),
        QUANT,
    );
    let want = fq(
        "fp8_e5m2",
        &candle_nn::Conv1d::new(fq("int8", &wt), Some(fq("fp8_e4m3", &bt)), c1)
            .forward(&fq("fp8_e4m3", &x))
            .unwrap(),
    );
    assert_eq!(tensor_bits(&op.forward1(&x).unwrap()), tensor_bits(&want));
    table.set_mode(Mode::Fp32);
    assert_eq!(
        tensor_bits(&op.forward1(&x).unwrap()),
        tensor_bits(
            &candle_nn::Conv1d::new(wt, Some(bt), c1)
                .forward(&x)
                .unwrap()
        )
    );

    let ct = candle_nn::ConvTranspose2dConfig {
        padding: 1,
        output_padding: 1,
        stride: 2,
        dilation: 1,
    };
    let (wt, bt, x) = (
        r.tensor(&[3, 2, 3, 3], 0.5),
        r.tensor(&[2], 0.1),
        r.tensor(&[1, 3, 5, 5], 1.0),
    );
    let (op, table) = build(
        "conv_transpose2d",
        OpParams::ConvTranspose2d {
            in_channels: 3,
            out_channels: 2,
            kernel: 3,
            cfg: ct,
            bias: true,
        },
        w(&[("weight", &wt), ("bias", &bt)]),
        QUANT,
    );
    let want = fq(
        "fp8_e5m2",
        &candle_nn::ConvTranspose2d::new(fq("int8", &wt), Some(fq("fp8_e4m3", &bt)), ct)
            .forward(&fq("fp8_e4m3", &x))
            .unwrap(),
    );
    assert_eq!(tensor_bits(&op.forward1(&x).unwrap()), tensor_bits(&want));
    table.set_mode(Mode::Fp32);
    assert_eq!(
        tensor_bits(&op.forward1(&x).unwrap()),
        tensor_bits(
            &candle_nn::ConvTranspose2d::new(wt, Some(bt), ct)
                .forward(&x)
                .unwrap()
        )
    );
}

#[test]
fn batch_norm_eval_and_folded_quantization() {
    let mut r = Rng(4);
    let (g, b, m) = (
        r.tensor(&[4], 1.0),
        r.tensor(&[4], 0.5),
        r.tensor(&[4], 0.3),
    );
    let v = r.tensor(&[4], 0.5).abs().unwrap().affine(1.0, 0.1).unwrap();
    let x = r.tensor(&[2, 4, 5, 5], 2.0);
    let ws = w(&[
        ("weight", &g),
        ("bias", &b),
        ("running_mean", &m),
        ("running_var", &v),
    ]);
    let (op, table) = build(
        "batch_norm2d",
        OpParams::BatchNorm2d {
            channels: 4,
            eps: 1e-5,
        },
        ws,
        QUANT,
    );
    // Quantized: folded scale/shift, each through its quantizer.
    let s = g
        .broadcast_div(&v.affine(1.0, 1e-5).unwrap().sqrt().unwrap())
        .unwrap();
    let t = b.sub(&m.mul(&s).unwrap()).unwrap();
    let (sq, tq) = (
        fq("int8", &s).reshape((1, 4, 1, 1)).unwrap(),
        fq("fp8_e4m3", &t).reshape((1, 4, 1, 1)).unwrap(),
    );
    let want = fq(
        "fp8_e5m2",
        &fq("fp8_e4m3", &x)
            .broadcast_mul(&sq)
            .unwrap()
            .broadcast_add(&tq)
            .unwrap(),
    );
    assert_eq!(tensor_bits(&op.forward1(&x).unwrap()), tensor_bits(&want));
    table.set_mode(Mode::Fp32);
    let bn = candle_nn::BatchNorm::new(4, m, v, g, b, 1e-5).unwrap();
    assert_eq!(
        tensor_bits(&op.forward1(&x).unwrap()),
        tensor_bits(&bn.forward_t(&x, false).unwrap())
    );
}

#[test]
fn layer_norm_and_embedding() {
    let mut r = Rng(5);
    let (g, b, x) = (
        r.tensor(&[8], 1.0),
        r.tensor(&[8], 0.5),
        r.tensor(&[2, 3, 8], 2.0),
    );
    let (op, table) = build(
        "layer_norm",
        OpParams::LayerNorm { dim: 8, eps: 1e-12 },
        w(&[("weight", &g), ("bias", &b)]),
        QUANT,
    );
    let want = fq(
        "fp8_e5m2",
        &candle_nn::LayerNorm::new(fq("int8", &g), fq("fp8_e4m3", &b), 1e-12)
            .forward(&fq("fp8_e4m3", &x))
            .unwrap(),
    );
    assert_eq!(tensor_bits(&op.forward1(&x).unwrap()), tensor_bits(&want));
    table.set_mode(Mode::Fp32);
    assert_eq!(
        tensor_bits(&op.forward1(&x).unwrap()),
        tensor_bits(&candle_nn::LayerNorm::new(g, b, 1e-12).forward(&x).unwrap())
    );

    let table_w = r.tensor(&[10, 4], 1.0);
    let ids = Tensor::new(&[[1u32, 7, 3], [0, 9, 9]], &Device::Cpu).unwrap();
    let (op, table) = build(
        "embedding",
        OpParams::Embedding { vocab: 10, dim: 4 },
        w(&[("weight", &table_w)]),
        QUANT,
    );
    let want = fq(
        "fp8_e5m2",
        &candle_nn::Embedding::new(fq("int8", &table_w), 4)
            .forward(&ids)
            .unwrap(),
    );
    assert_eq!(tensor_bits(&op.forward1(&ids).unwrap()), tensor_bits(&want));
    table.set_mode(Mode::Fp32);
    assert_eq!(
        tensor_bits(&op.forward1(&ids).unwrap()),
        tensor_bits(&candle_nn::Embedding::new(table_w, 4).forward(&ids).unwrap())
    );
}

#[test]
fn pooling() {
    let mut r = Rng(6);
    let x = r.tensor(&[2, 3, 7, 7], 2.0);
    let cases: Vec<(&str, OpParams, Tensor)> = vec![
        (
            "max_pool2d",
            OpParams::MaxPool2d {
                kernel: 2,
                stride: 2,
            },
            x.max_pool2d_with_stride(2, 2).unwrap(),
        ),
        (
            "avg_pool2d",
            OpParams::AvgPool2d {
                kernel: 3,
                stride: 2,
            },
            x.avg_pool2d_with_stride(3, 2).unwrap(),
        ),
        (
            "adaptive_avg_pool2d",
            OpParams::AdaptiveAvgPool2d { h: 1, w: 1 },
            x.mean_keepdim(3).unwrap().mean_keepdim(2).unwrap(),
        ),
    ];
    for (kind, p, fp32) in cases {
        let (op, table) = build(kind, p.clone(), HashMap::new(), QUANT);
        let got = op.forward1(&x).unwrap();
        table.set_mode(Mode::Fp32);
        assert_eq!(
            tensor_bits(&op.forward1(&x).unwrap()),
            tensor_bits(&fp32),
            "{kind}"
        );
        table.set_mode(Mode::Quantize);
        let q_in = fq("fp8_e4m3", &x);
        let want = match kind {
            "max_pool2d" => q_in.max_pool2d_with_stride(2, 2).unwrap(),
            "avg_pool2d" => q_in.avg_pool2d_with_stride(3, 2).unwrap(),
            _ => q_in.mean_keepdim(3).unwrap().mean_keepdim(2).unwrap(),
        };
        assert_eq!(
            tensor_bits(&got),
            tensor_bits(&fq("fp8_e5m2", &want)),
            "{kind}"
        );
    }
    // Adaptive pooling to 3×2 with PyTorch's bin edges: rows [0,3) [2,5) [4,7), cols [0,4) [3,7).
    let (op, table) = build(
        "adaptive_avg_pool2d",
        OpParams::AdaptiveAvgPool2d { h: 3, w: 2 },
        HashMap::new(),
        "{}",
    );
    table.set_mode(Mode::Fp32);
    let y = op.forward1(&x).unwrap();
    assert_eq!(y.dims(), &[2, 3, 3, 2]);
    let manual = x
        .narrow(2, 2, 3)
        .unwrap()
        .narrow(3, 3, 4)
        .unwrap()
        .mean_keepdim(3)
        .unwrap()
        .mean_keepdim(2)
        .unwrap();
    let got = y.narrow(2, 1, 1).unwrap().narrow(3, 1, 1).unwrap();
    assert_eq!(tensor_bits(&got), tensor_bits(&manual));
}

#[test]
fn activations_and_softmax() {
    let mut r = Rng(7);
    let x = r.tensor(&[4, 9], 8.0);
    let acts: Vec<(Activation, Tensor)> = vec![
        (Activation::Relu, x.relu().unwrap()),
        (Activation::Relu6, x.clamp(0f32, 6f32).unwrap()),
        (Activation::Gelu, x.gelu_erf().unwrap()),
        (Activation::GeluTanh, x.gelu().unwrap()),
        (Activation::Silu, x.silu().unwrap()),
        (Activation::Sigmoid, candle_nn::ops::sigmoid(&x).unwrap()),
        (Activation::Tanh, x.tanh().unwrap()),
    ];
    for (act, fp32) in acts {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        let config = QuantConfig::from_yaml(QUANT, "t.yaml").unwrap();
        let b = QBuilder::new(vb, &config, Registry::default()).unwrap();
        let op = b.activation("act", act).unwrap();
        let table = b.finish().unwrap();
        // `activation` quantizes input and output of activation ops.
        let qx = fq("fp8_e4m3", &x);
        let act_of = |t: &Tensor| match act {
            Activation::Relu => t.relu().unwrap(),
            Activation::Relu6 => t.clamp(0f32, 6f32).unwrap(),
            Activation::Gelu => t.gelu_erf().unwrap(),
            Activation::GeluTanh => t.gelu().unwrap(),
            Activation::Silu => t.silu().unwrap(),
            Activation::Sigmoid => candle_nn::ops::sigmoid(t).unwrap(),
            Activation::Tanh => t.tanh().unwrap(),
        };
        assert_eq!(
            tensor_bits(&op.forward1(&x).unwrap()),
            tensor_bits(&fq("fp8_e4m3", &act_of(&qx))),
            "{act:?}"
        );
        table.set_mode(Mode::Fp32);
        assert_eq!(
            tensor_bits(&op.forward1(&x).unwrap()),
            tensor_bits(&fp32),
            "{act:?}"
        );
    }
    let (op, table) = build(
        "softmax",
        OpParams::Softmax { dim: 1 },
        HashMap::new(),
        QUANT,
    );
    let want = fq(
        "fp8_e4m3",
        &candle_nn::ops::softmax(&fq("fp8_e4m3", &x), 1).unwrap(),
    );
    assert_eq!(tensor_bits(&op.forward1(&x).unwrap()), tensor_bits(&want));
    table.set_mode(Mode::Fp32);
    assert_eq!(
        tensor_bits(&op.forward1(&x).unwrap()),
        tensor_bits(&candle_nn::ops::softmax(&x, 1).unwrap())
    );
}

#[test]
fn add_concat_matmul_quantize_their_inputs() {
    let mut r = Rng(8);
    let (a, b) = (r.tensor(&[2, 3, 4], 3.0), r.tensor(&[2, 4, 5], 3.0));
    let (op, _) = build("matmul", OpParams::Matmul, HashMap::new(), QUANT);
    let want = fq(
        "fp8_e5m2",
        &fq("fp8_e4m3", &a).matmul(&fq("fp8_e4m3", &b)).unwrap(),
    );
    assert_eq!(
        tensor_bits(&op.forward(&[&a, &b]).unwrap()),
        tensor_bits(&want)
    );
    let c = r.tensor(&[2, 3, 4], 3.0);
    let (op, table) = build("add", OpParams::Add, HashMap::new(), QUANT);
    let want = fq(
        "fp8_e5m2",
        &(fq("fp8_e4m3", &a) + fq("fp8_e4m3", &c)).unwrap(),
    );
    assert_eq!(
        tensor_bits(&op.forward(&[&a, &c]).unwrap()),
        tensor_bits(&want)
    );
    table.set_mode(Mode::Fp32);
    assert_eq!(
        tensor_bits(&op.forward(&[&a, &c]).unwrap()),
        tensor_bits(&(&a + &c).unwrap())
    );
    let (op, _) = build("concat", OpParams::Concat { dim: 2 }, HashMap::new(), QUANT);
    let want = fq(
        "fp8_e5m2",
        &Tensor::cat(&[fq("fp8_e4m3", &a), fq("fp8_e4m3", &c)], 2).unwrap(),
    );
    assert_eq!(
        tensor_bits(&op.forward(&[&a, &c]).unwrap()),
        tensor_bits(&want)
    );
}

#[test]
fn non_contiguous_and_half_inputs() {
    let mut r = Rng(9);
    let x = r.tensor(&[6, 5], 4.0);
    let xt = x.t().unwrap(); // strided
    let (op, _) = build(
        "relu",
        OpParams::Activation(Activation::Relu),
        HashMap::new(),
        QUANT,
    );
    let got = op.forward1(&xt).unwrap();
    let want = op.forward1(&xt.contiguous().unwrap()).unwrap();
    assert_eq!(tensor_bits(&got), tensor_bits(&want));
    let xh = x.to_dtype(DType::F16).unwrap();
    let got = op.forward1(&xh).unwrap();
    assert_eq!(got.dtype(), DType::F16);
    // Each quantizer computes in f32 and rounds its result back to f16.
    let h = |t: Tensor| {
        t.to_dtype(DType::F16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    let want = h(fq(
        "fp8_e4m3",
        &h(fq("fp8_e4m3", &xh.to_dtype(DType::F32).unwrap()))
            .relu()
            .unwrap(),
    ));
    assert_eq!(
        tensor_bits(&got.to_dtype(DType::F32).unwrap()),
        tensor_bits(&want)
    );
}

#[test]
fn batch_norm_folds_into_the_conv() {
    let mut r = Rng(10);
    let cfg = candle_nn::Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    let (wt, bt, x) = (
        r.tensor(&[4, 3, 3, 3], 0.5),
        r.tensor(&[4], 0.1),
        r.tensor(&[2, 3, 6, 6], 1.0),
    );
    let (g, b, m) = (
        r.tensor(&[4], 1.0),
        r.tensor(&[4], 0.5),
        r.tensor(&[4], 0.3),
    );
    let v = r.tensor(&[4], 0.5).abs().unwrap().affine(1.0, 0.1).unwrap();
    let ws = w(&[
        ("weight", &g),
        ("bias", &b),
        ("running_mean", &m),
        ("running_var", &v),
    ]);
    let (bn_op, table) = build(
        "batch_norm2d",
        OpParams::BatchNorm2d {
            channels: 4,
            eps: 1e-5,
        },
        ws,
        "{}",
    );
    table.set_mode(Mode::Fp32);
    let conv = candle_nn::Conv2d::new(wt.clone(), Some(bt.clone()), cfg);
    let want = bn_op.forward1(&conv.forward(&x).unwrap()).unwrap();
    // Rebuild a QBatchNorm2d to fold (the op behind the Arc is opaque).
    let vb = VarBuilder::from_tensors(
        w(&[
            ("weight", &g),
            ("bias", &b),
            ("running_mean", &m),
            ("running_var", &v),
        ]),
        DType::F32,
        &Device::Cpu,
    );
    let ctx = lowbit_nn::ModelContext::new();
    let lq = lowbit_nn::LayerQuant::new("l", "batch_norm2d", &Default::default(), ctx);
    let qbn = lowbit_nn::layers::QBatchNorm2d::build(
        &OpParams::BatchNorm2d {
            channels: 4,
            eps: 1e-5,
        },
        &vb.pp("l"),
        lq,
    )
    .unwrap();
    let (fw, fb) = lowbit_nn::layers::fold_batch_norm(&wt, Some(&bt), &qbn).unwrap();
    let got = candle_nn::Conv2d::new(fw, Some(fb), cfg)
        .forward(&x)
        .unwrap();
    let diff = (got - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5, "folded conv differs by {diff}");
}

#[test]
fn fresh_varmap_parameters_get_candle_initialisations() {
    // A builder on an empty VarMap creates the parameters: Kaiming-normal weights, fan-in
    // uniform biases (candle_nn's rules), BN/LayerNorm ones and zeros; not all-zero tensors
    // that would stop training.
    let vm = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let config = QuantConfig::from_yaml("{}", "test.yaml").unwrap();
    let b = QBuilder::new(vb, &config, Registry::default()).unwrap();
    b.linear("fc", 64, 8).unwrap();
    b.op(
        "batch_norm2d",
        "bn",
        OpParams::BatchNorm2d {
            channels: 4,
            eps: 1e-5,
        },
    )
    .unwrap();
    let vars = vm.data().lock().unwrap();
    let get = |k: &str| {
        vars.get(k)
            .unwrap_or_else(|| panic!("{k} missing"))
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let w = get("fc.weight");
    let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
    // Kaiming normal: std = sqrt(2 / fan_in) = 0.177 for fan_in 64 (within sampling error).
    assert!((std - 0.177).abs() < 0.03, "weight std {std}");
    let bias = get("fc.bias");
    assert!(bias.iter().all(|v| v.abs() <= 0.125) && bias.iter().any(|&v| v != 0.0));
    assert_eq!(get("bn.weight"), vec![1.0; 4]);
    assert_eq!(get("bn.bias"), vec![0.0; 4]);
    assert_eq!(get("bn.running_mean"), vec![0.0; 4]);
    assert_eq!(get("bn.running_var"), vec![1.0; 4]);
}
