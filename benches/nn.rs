//! Quantized layers against FP32 candle, in the same run:
//!
//! - a transformer MLP: Linear 768→3072, GELU, Linear 3072→768 on a batch of 64 tokens;
//! - a conv block: Conv2d 3×3 64→64 (padding 1) + BatchNorm2d + ReLU on 32×64×56×56;
//! - a depthwise Conv2d 3×3 (144 channels, padding 1) on 8×144×56×56, as in EfficientNet:
//!   candle's grouped `conv2d` (one convolution per channel) against `QConv2d`, which runs
//!   lowbit-nn's `DepthwiseConv2d` (the same numbers);
//! - the Fashion-MNIST ResNet's dense 3×3 convs at batch 500 (32→32 on 14×14, 1→32 on
//!   28×28): candle's `conv2d` against lowbit-nn's `TiledConv2d` (the same bits).
//!
//! The quantized variants are W8A8 FP8: `fp8_e4m3` (per tensor, dynamic) fake-quant on every
//! weight and input. Weights are static, so they are quantized once and cached; inputs are
//! quantized at every forward. The issue's target: quantized ≤ 1.25× the FP32 time.
//!
//! ```text
//! cargo bench --bench nn -- --warm-up-time 1 --measurement-time 3
//! ```

use std::collections::HashMap;
use std::error::Error;
use std::hint::black_box;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use criterion::Criterion;
use lowbit::nn::layers::TiledConv2d;
use lowbit::nn::{Activation, Mode, QBuilder, QuantConfig, Registry};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn seeded(shape: &[usize], scale: f32, seed: u64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut z = seed;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            z = z
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

fn main() -> Result<()> {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let config =
        QuantConfig::from_yaml("defaults: { weight: fp8_e4m3, input: fp8_e4m3 }", "bench")?;

    // Transformer MLP.
    let mut w = HashMap::new();
    w.insert("fc1.weight".to_string(), seeded(&[3072, 768], 0.03, 1)?);
    w.insert("fc1.bias".to_string(), seeded(&[3072], 0.01, 2)?);
    w.insert("fc2.weight".to_string(), seeded(&[768, 3072], 0.03, 3)?);
    w.insert("fc2.bias".to_string(), seeded(&[768], 0.01, 4)?);
    let b = QBuilder::new(
        VarBuilder::from_tensors(w, DType::F32, &Device::Cpu),
        &config,
        Registry::default(),
    )?;
    let (fc1, act, fc2) = (
        b.linear("fc1", 768, 3072)?,
        b.activation("act", Activation::Gelu)?,
        b.linear("fc2", 3072, 768)?,
    );
    let mlp = b.finish()?;
    let x = seeded(&[64, 768], 2.0, 5)?;
    let mut g = c.benchmark_group("mlp_768_3072_b64");
    for (name, mode) in [("fp32", Mode::Fp32), ("w8a8_fp8_e4m3", Mode::Quantize)] {
        mlp.set_mode(mode);
        g.bench_function(name, |bench| {
            bench.iter(|| {
                let h = fc1
                    .forward1(black_box(&x))
                    .and_then(|h| act.forward1(&h))
                    .and_then(|h| fc2.forward1(&h));
                black_box(h.map(|t| t.dims().len()).unwrap_or(0))
            })
        });
    }
    g.finish();

    // Conv block.
    let mut w = HashMap::new();
    w.insert("conv.weight".to_string(), seeded(&[64, 64, 3, 3], 0.05, 6)?);
    w.insert("bn.weight".to_string(), seeded(&[64], 1.0, 7)?.abs()?);
    w.insert("bn.bias".to_string(), seeded(&[64], 0.1, 8)?);
    w.insert("bn.running_mean".to_string(), seeded(&[64], 0.1, 9)?);
    w.insert(
        "bn.running_var".to_string(),
        seeded(&[64], 1.0, 10)?.abs()?.affine(1.0, 0.5)?,
    );
    let b = QBuilder::new(
        VarBuilder::from_tensors(w, DType::F32, &Device::Cpu),
        &config,
        Registry::default(),
    )?;
    let cfg = candle_nn::Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    let (conv, bn, relu) = (
        b.conv2d("conv", 64, 64, 3, cfg, false)?,
        b.batch_norm2d("bn", 64, 1e-5)?,
        b.activation("relu", Activation::Relu)?,
    );
    let block = b.finish()?;
    let x = seeded(&[32, 64, 56, 56], 1.0, 11)?;
    let mut g = c.benchmark_group("conv3x3_64_bn_relu_32x56x56");
    for (name, mode) in [("fp32", Mode::Fp32), ("w8a8_fp8_e4m3", Mode::Quantize)] {
        block.set_mode(mode);
        g.bench_function(name, |bench| {
            bench.iter(|| {
                let h = conv
                    .forward1(black_box(&x))
                    .and_then(|h| bn.forward1(&h))
                    .and_then(|h| relu.forward1(&h));
                black_box(h.map(|t| t.dims().len()).unwrap_or(0))
            })
        });
    }
    g.finish();

    // Depthwise conv.
    let mut w = HashMap::new();
    let dw_weight = seeded(&[144, 1, 3, 3], 0.3, 12)?;
    w.insert("dw.weight".to_string(), dw_weight.clone());
    let b = QBuilder::new(
        VarBuilder::from_tensors(w, DType::F32, &Device::Cpu),
        &config,
        Registry::default(),
    )?;
    let cfg = candle_nn::Conv2dConfig {
        padding: 1,
        groups: 144,
        ..Default::default()
    };
    let dw = b.conv2d("dw", 144, 144, 3, cfg, false)?;
    let layer = b.finish()?;
    let x = seeded(&[8, 144, 56, 56], 1.0, 13)?;
    let mut g = c.benchmark_group("depthwise3x3_144_8x56x56");
    g.bench_function("candle_grouped_conv2d", |bench| {
        bench.iter(|| {
            let h = black_box(&x).conv2d(&dw_weight, 1, 1, 1, 144);
            black_box(h.map(|t| t.dims().len()).unwrap_or(0))
        })
    });
    for (name, mode) in [("fp32", Mode::Fp32), ("w8a8_fp8_e4m3", Mode::Quantize)] {
        layer.set_mode(mode);
        g.bench_function(name, |bench| {
            bench.iter(|| {
                let h = dw.forward1(black_box(&x));
                black_box(h.map(|t| t.dims().len()).unwrap_or(0))
            })
        });
    }
    g.finish();

    // Dense convs of the Fashion-MNIST ResNet at its evaluation batch (500): candle's conv2d
    // against lowbit-nn's `TiledConv2d` (the same bits), the path `QConv2d` takes.
    let mut g = c.benchmark_group("fashion_conv3x3_b500");
    g.sample_size(10);
    for (name, x_shape, w_shape) in [
        ("32to32_14x14", [500, 32, 14, 14], [32, 32, 3, 3]),
        ("1to32_28x28", [500, 1, 28, 28], [32, 1, 3, 3]),
    ] {
        let x = seeded(&x_shape, 1.0, 14)?;
        let w = seeded(&w_shape, 0.2, 15)?;
        let op = TiledConv2d {
            padding: 1,
            stride: 1,
            dilation: 1,
        };
        g.bench_function(format!("candle_conv2d_{name}"), |bench| {
            bench.iter(|| {
                let h = black_box(&x).conv2d(&w, 1, 1, 1, 1);
                black_box(h.map(|t| t.dims().len()).unwrap_or(0))
            })
        });
        g.bench_function(format!("tiled_conv2d_{name}"), |bench| {
            bench.iter(|| {
                let h = op.forward(black_box(&x), &w);
                black_box(h.map(|t| t.dims().len()).unwrap_or(0))
            })
        });
    }
    g.finish();
    c.final_summary();
    Ok(())
}
