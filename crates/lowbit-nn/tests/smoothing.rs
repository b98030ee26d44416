//! The `smoothing` setting: SmoothQuant's calibrated per-channel factors, `x / s` and `W · s`
//! quantized in a linear layer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{Device, Module, Tensor};
use lowbit_nn::{Mode, QuantConfig, Smoothing, SmoothingFactors, StaticScales};

mod common;
use common::{Rng, build_linear, f32s, fp32_linear, fq, tensor_bits};

/// Activations whose channel 5 is 60× the others, in two batches.
fn outlier_batches(r: &mut Rng, width: usize) -> Vec<Tensor> {
    (0..2)
        .map(|_| {
            let mut v = r.vec(16 * width, 1.0);
            for row in v.chunks_mut(width) {
                row[5] *= 60.0;
            }
            Tensor::from_vec(v, (16, width), &Device::Cpu).unwrap()
        })
        .collect()
}

/// The factors computed here from plain loops over the batches and the weight (SmoothQuant's
/// `smooth_ln_fcs` formula), for checking the layer's.
fn reference_factors(batches: &[Tensor], wt: &Tensor, alpha: f32) -> Vec<f32> {
    let width = wt.dims2().unwrap().1;
    let mut act = vec![0f32; width];
    for b in batches {
        for row in f32s(b).chunks(width) {
            for (m, x) in act.iter_mut().zip(row) {
                *m = m.max(x.abs());
            }
        }
    }
    let mut w = vec![0f32; width];
    for row in f32s(wt).chunks(width) {
        for (m, x) in w.iter_mut().zip(row) {
            *m = m.max(x.abs());
        }
    }
    act.iter()
        .zip(&w)
        .map(|(a, w)| (a.powf(alpha) / w.max(1e-5).powf(1.0 - alpha)).max(1e-5))
        .collect()
}

#[test]
fn a_smoothed_layer_quantizes_x_over_s_and_w_times_s() {
    let mut r = Rng(31);
    let (wt, bt) = (r.tensor(&[8, 24], 0.5), r.tensor(&[8], 0.1));
    let batches = outlier_batches(&mut r, 24);
    let yaml = "defaults: { weight: int8, input: int8, smoothing: 0.5 }";
    let (op, table) = build_linear(yaml, &wt, &bt);
    assert!(table.observes());
    table.begin_observation().unwrap();
    for b in &batches {
        // Observing runs the FP32 model.
        let y = op.forward1(b).unwrap();
        let plain = fp32_linear(&wt, &bt, b);
        assert_eq!(tensor_bits(&y), tensor_bits(&plain));
    }
    let factors = table.finish_observation().unwrap().smoothing;
    let s = reference_factors(&batches, &wt, 0.5);
    assert_eq!(factors["l"].factors, s);
    assert_eq!(factors["l"].alpha, 0.5);
    // The outlier channel gets the largest factor.
    let top = s
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    assert_eq!(top, 5);

    // Quantized: int8(x / s) · int8(W · s)ᵀ + b, built here from slices.
    table.set_mode(Mode::Quantize);
    let x = &batches[0];
    let st = Tensor::new(s.as_slice(), &Device::Cpu).unwrap();
    let xs: Vec<f32> = f32s(x)
        .chunks(24)
        .flat_map(|row| row.iter().zip(&s).map(|(x, s)| x / s).collect::<Vec<_>>())
        .collect();
    let ws: Vec<f32> = f32s(&wt)
        .chunks(24)
        .flat_map(|row| row.iter().zip(&s).map(|(w, s)| w * s).collect::<Vec<_>>())
        .collect();
    let xs = Tensor::from_vec(xs, (16, 24), &Device::Cpu).unwrap();
    let ws = Tensor::from_vec(ws, (8, 24), &Device::Cpu).unwrap();
    assert_eq!(
        tensor_bits(&xs),
        tensor_bits(&x.broadcast_div(&st).unwrap())
    );
    let want = candle_nn::Linear::new(fq("int8", &ws), Some(bt.clone()))
        .forward(&fq("int8", &xs))
        .unwrap();
    assert_eq!(tensor_bits(&op.forward1(x).unwrap()), tensor_bits(&want));
    assert!(table.explain().contains("smoothquant α=0.5"));

    // The factors travel in the scales file: a fresh layer given them computes the same bits.
    let scales = table.freeze().unwrap();
    assert_eq!(scales.smoothing["l"].factors, s);
    let dir = std::env::temp_dir().join(format!("lowbit-smooth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.scales.json");
    scales.save(&path).unwrap();
    let (op2, table2) = build_linear(yaml, &wt, &bt);
    table2
        .load_scales(&StaticScales::load(&path).unwrap())
        .unwrap();
    assert_eq!(tensor_bits(&op2.forward1(x).unwrap()), tensor_bits(&want));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn smoothing_alone_keeps_the_function_and_fp32_is_candle() {
    let mut r = Rng(32);
    let (wt, bt) = (r.tensor(&[6, 32], 0.5), r.tensor(&[6], 0.1));
    let batches = outlier_batches(&mut r, 32);
    let plain = candle_nn::Linear::new(wt.clone(), Some(bt.clone()));
    for yaml in [
        "defaults: { smoothing: { alpha: 0.8 } }",
        "defaults: { smoothing: 0.5, rotation: { size: 16, seed: 3 } }",
    ] {
        let (op, table) = build_linear(yaml, &wt, &bt);
        table.begin_observation().unwrap();
        op.forward1(&batches[0]).unwrap();
        table.finish_observation().unwrap();
        table.set_mode(Mode::Quantize);
        let y = f32s(&op.forward1(&batches[1]).unwrap());
        let want = f32s(&plain.forward(&batches[1]).unwrap());
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{yaml}: {a} {b}");
        }
        table.set_mode(Mode::Fp32);
        assert_eq!(
            tensor_bits(&op.forward1(&batches[1]).unwrap()),
            tensor_bits(&plain.forward(&batches[1]).unwrap())
        );
    }
}

#[test]
fn smoothing_moves_an_outlier_channel_into_the_weight() {
    // Per-tensor int8 activations with one channel 60× the others: the outlier sets the
    // scale and the other channels lose their bits; smoothed, the error drops severalfold.
    let mut r = Rng(33);
    let (wt, bt) = (r.tensor(&[32, 64], 0.2), r.tensor(&[32], 0.0));
    let batches = outlier_batches(&mut r, 64);
    let exact = f32s(&fp32_linear(&wt, &bt, &batches[1]));
    let err = |yaml: &str| {
        let (op, table) = build_linear(yaml, &wt, &bt);
        if table.observes() {
            table.begin_observation().unwrap();
            op.forward1(&batches[0]).unwrap();
            table.finish_observation().unwrap();
            table.set_mode(Mode::Quantize);
        }
        let y = f32s(&op.forward1(&batches[1]).unwrap());
        y.iter()
            .zip(&exact)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
    };
    let w = "{ format: int8, granularity: { kind: per_channel, axis: 0 } }";
    let plain = err(&format!("defaults: {{ weight: {w}, input: int8 }}"));
    let smoothed = err(&format!(
        "defaults: {{ weight: {w}, input: int8, smoothing: 0.5 }}"
    ));
    assert!(smoothed < 0.1 * plain, "smoothed {smoothed} plain {plain}");
}

#[test]
fn errors_name_the_layer_and_the_fix() {
    let mut r = Rng(34);
    let (wt, bt) = (r.tensor(&[4, 8], 1.0), r.tensor(&[4], 1.0));
    let x = r.tensor(&[2, 8], 1.0);
    // No factors: a quantized pass refuses.
    let (op, table) = build_linear("defaults: { input: int8, smoothing: 0.5 }", &wt, &bt);
    let e = op.forward1(&x).unwrap_err().to_string();
    assert!(e.contains("`l`") && e.contains("lowbit calibrate"), "{e}");
    // Freezing without an observed pass.
    table.begin_observation().unwrap();
    let e = table.finish_observation().unwrap_err().to_string();
    assert!(e.contains("`l`") && e.contains("no forward pass"), "{e}");
    // Factors for another alpha, for a layer that does not smooth, of the wrong width.
    let f = |alpha: f32, n: usize| SmoothingFactors {
        alpha,
        factors: vec![1.0; n],
    };
    let e = op
        .quant()
        .load_smoothing(&f(0.7, 8))
        .unwrap_err()
        .to_string();
    assert!(e.contains("alpha 0.7") && e.contains("0.5"), "{e}");
    let (plain, _) = build_linear("defaults: { input: int8 }", &wt, &bt);
    assert!(plain.quant().load_smoothing(&f(0.5, 8)).is_err());
    op.quant().load_smoothing(&f(0.5, 6)).unwrap();
    table.set_mode(Mode::Quantize);
    let e = op.forward1(&x).unwrap_err().to_string();
    assert!(e.contains("`l`") && e.contains("6 input channels"), "{e}");
    let bad = SmoothingFactors {
        alpha: 0.5,
        factors: vec![1.0, f32::NAN],
    };
    assert!(op.quant().load_smoothing(&bad).is_err());
    // Config: alpha out of range (with the line), the forms that parse, other ops ignore it.
    let cerr = |yaml: &str| {
        QuantConfig::from_yaml(yaml, "sq.yaml")
            .unwrap_err()
            .to_string()
    };
    let e = cerr("defaults:\n  smoothing: 1.5\n");
    assert!(e.contains("sq.yaml:2") && e.contains("from 0 to 1"), "{e}");
    let e = cerr("defaults:\n  smoothing: { alpha: -0.1 }\n");
    assert!(e.contains("sq.yaml:2") && e.contains("from 0 to 1"), "{e}");
    let e = cerr("defaults:\n  smoothing: strong\n");
    assert!(e.contains("smoothing strength"), "{e}");
    for yaml in [
        "defaults: { smoothing: 0.5 }",
        "defaults: { smoothing: { alpha: 0.5 } }",
        "ops: { linear: { smoothing: 0.5 } }",
        "layers: [ { pattern: l, smoothing: 0.5 } ]",
    ] {
        let c = QuantConfig::from_yaml(yaml, "sq.yaml").unwrap();
        let r = c.compile(&["linear", "conv2d"]).unwrap();
        let lin = r.resolve("l", "linear", lowbit_nn::OpClass::Weighted);
        assert_eq!(lin.smoothing, Some(Smoothing { alpha: 0.5 }), "{yaml}");
        let conv = r.resolve("l", "conv2d", lowbit_nn::OpClass::Weighted);
        assert_eq!(conv.smoothing, None);
    }
    let c = QuantConfig::from_yaml("defaults: { smoothing: 1 }", "sq.yaml").unwrap();
    assert_eq!(
        c.defaults.smoothing,
        lowbit_nn::Choice::On(Smoothing { alpha: 1.0 })
    );
}
