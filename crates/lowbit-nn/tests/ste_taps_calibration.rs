//! Straight-through gradients (masks and finite differences of the surrogate), taps in both
//! modes, the calibrate → freeze → save/load workflow, and user-registered ops.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use lowbit_nn::{
    Activation, FakeQuant, LayerQuant, Mode, OpClass, OpParams, QBuilder, QuantConfig, QuantOp,
    Registry, StaticScales, Ste,
};
use lowbit_quant::{Method, QuantSpec};

mod common;

fn vals(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// A 32-element MXFP8 E4M3 block whose max, 957, clips: scale 2^(9−8) = 2, range ±896.
fn mx_block() -> Vec<f32> {
    let mut v: Vec<f32> = (0..32).map(|i| (i as f32 - 15.5) * 7.25).collect();
    v[3] = 957.0;
    v[9] = -900.0;
    v
}

#[test]
fn clipped_ste_zeroes_exactly_the_clamped_elements() {
    let spec: QuantSpec = "mxfp8_e4m3".parse().unwrap();
    let data = mx_block();
    let w: Vec<f32> = (0..32).map(|i| 0.5 + i as f32 / 8.0).collect();
    let x = Var::from_vec(data.clone(), 32, &Device::Cpu).unwrap();
    let wt = Tensor::from_vec(w.clone(), 32, &Device::Cpu).unwrap();
    for ste in [Ste::Clipped, Ste::Plain] {
        let y = x
            .as_tensor()
            .apply_op1(FakeQuant {
                spec,
                scales: None,
                ste,
                grad_spec: None,
            })
            .unwrap();
        assert_eq!(vals(&y)[3], 896.0, "957 clamps to 896 under FLOOR");
        let loss = (y * &wt).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        let gx = vals(g.get(&x).unwrap());
        // Hand-computed mask: only |x| > 896 is clamped.
        let want: Vec<f32> = data
            .iter()
            .zip(&w)
            .map(|(&v, &wi)| {
                if ste == Ste::Clipped && v.abs() > 896.0 {
                    0.0
                } else {
                    wi
                }
            })
            .collect();
        assert_eq!(gx, want, "{ste:?}");
        // Finite differences of the surrogate (clamp for the clipped STE, identity for the
        // plain one): d/dx_i of sum(w · s(x)).
        let h = 0.25f32;
        for i in 0..32 {
            let s = |v: f32| {
                if ste == Ste::Clipped {
                    v.clamp(-896.0, 896.0)
                } else {
                    v
                }
            };
            let fd = (s(data[i] + h) - s(data[i] - h)) / (2.0 * h) * w[i];
            assert!(
                (fd - gx[i]).abs() < 1e-6,
                "{ste:?} element {i}: fd {fd} vs {}",
                gx[i]
            );
        }
    }
}

#[test]
fn gradients_can_be_quantized_with_a_backward_format() {
    let spec: QuantSpec = "fp8_e4m3".parse().unwrap();
    let grad_spec: QuantSpec = "fp8_e5m2".parse().unwrap();
    let x = Var::from_vec(vec![0.1f32, -0.2, 0.3, 0.4], 4, &Device::Cpu).unwrap();
    let w = Tensor::new(&[0.123f32, 1.0, 3.3, -7.77], &Device::Cpu).unwrap();
    let y = x
        .as_tensor()
        .apply_op1(FakeQuant {
            spec,
            scales: None,
            ste: Ste::Plain,
            grad_spec: Some(grad_spec),
        })
        .unwrap();
    let g = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let mut want = vec![0f32; 4];
    grad_spec.fake_quantize(&vals(&w), &[4], &mut want).unwrap();
    assert_eq!(vals(g.get(&x).unwrap()), want);
}

type Op = Arc<dyn QuantOp>;

fn two_layer(yaml: &str, weights: &HashMap<String, Tensor>) -> (Op, Op, Op, lowbit_nn::LayerTable) {
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    let b = QBuilder::new(
        vb,
        &QuantConfig::from_yaml(yaml, "t.yaml").unwrap(),
        Registry::default(),
    )
    .unwrap();
    let fc1 = b.linear("fc1", 6, 5).unwrap();
    let act = b.activation("act", Activation::Relu).unwrap();
    let fc2 = b.linear("fc2", 5, 3).unwrap();
    (fc1, act, fc2, b.finish().unwrap())
}

fn weights() -> HashMap<String, Tensor> {
    let d = &Device::Cpu;
    let t = |n: usize, s: f32| {
        Tensor::from_vec(
            (0..n)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) * s)
                .collect::<Vec<_>>(),
            n,
            d,
        )
        .unwrap()
    };
    HashMap::from([
        ("fc1.weight".into(), t(30, 0.1).reshape((5, 6)).unwrap()),
        ("fc1.bias".into(), t(5, 0.01)),
        ("fc2.weight".into(), t(15, 0.2).reshape((3, 5)).unwrap()),
        ("fc2.bias".into(), t(3, 0.02)),
    ])
}

fn input(seed: f32) -> Tensor {
    Tensor::from_vec(
        (0..24)
            .map(|i| ((i as f32 * 0.7 + seed).sin()) * 3.0)
            .collect::<Vec<_>>(),
        (4, 6),
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn taps_propagated_and_isolated() {
    let (fc1, act, fc2, table) = two_layer(
        "defaults: { weight: int4_g128, input: fp8_e4m3 }",
        &weights(),
    );
    let x = input(0.0);
    let run = |x: &Tensor| {
        fc2.forward1(&act.forward1(&fc1.forward1(x).unwrap()).unwrap())
            .unwrap()
    };
    // Off: nothing recorded.
    run(&x);
    assert!(table.context().take_taps().is_empty());
    // FP32 reference pass.
    table.context().set_taps(true);
    table.set_mode(Mode::Fp32);
    run(&x);
    let fp32 = table.context().take_taps();
    // Propagated: the quantized model's own inputs.
    table.set_mode(Mode::Quantize);
    let yq = run(&x);
    let q = table.context().take_taps();
    assert_eq!(q.len(), 3);
    assert_eq!(vals(&q["fc2"].output), vals(&yq));
    assert_eq!(
        vals(&q["fc2"].inputs[0]),
        vals(&q["act"].output),
        "propagated inputs are the previous layer's outputs"
    );
    let w = weights()["fc1.weight"].clone();
    let spec: QuantSpec = "int4_g128".parse().unwrap();
    let mut wq = vec![0f32; 30];
    spec.fake_quantize(&vals(&w), &[5, 6], &mut wq).unwrap();
    assert_eq!(
        vals(q["fc1"].weight.as_ref().unwrap()),
        wq,
        "the tap holds the quantized weight"
    );
    assert_eq!(
        vals(fp32["fc1"].weight.as_ref().unwrap()),
        vals(&w),
        "FP32 taps hold the FP32 weight"
    );
    // Isolated: each layer fed the FP32 model's input.
    let iso = fc2.forward(&[&fp32["fc2"].inputs[0]]).unwrap();
    let want = fc2.forward1(&fp32["fc2"].inputs[0]).unwrap();
    assert_eq!(vals(&iso), vals(&want));
    assert_ne!(
        vals(&iso),
        vals(&q["fc2"].output),
        "isolated and propagated differ once errors accumulate"
    );
    table.context().set_taps(false);
}

#[test]
fn calibrate_freeze_save_load() {
    let yaml = "defaults: { weight: int8, input: fp8_e4m3 }";
    let (fc1, act, fc2, table) = two_layer(yaml, &weights());
    let run = |x: &Tensor| {
        fc2.forward1(&act.forward1(&fc1.forward1(x).unwrap()).unwrap())
            .unwrap()
    };
    table.set_mode(Mode::Fp32);
    let fp32 = run(&input(1.0));
    table.begin_calibration(Method::Max).unwrap();
    assert_eq!(
        vals(&run(&input(1.0))),
        vals(&fp32),
        "calibration does not quantize"
    );
    run(&input(2.0));
    let scales = table.freeze().unwrap();
    assert_eq!(table.context().mode(), Mode::Quantize);
    assert!(scales.layers["fc1"].contains_key(&lowbit_nn::Role::Input));
    assert!(
        !scales.layers["fc1"].contains_key(&lowbit_nn::Role::Weight),
        "weights keep exact dynamic scales"
    );
    // The frozen input scale is amax over both batches / 448.
    let amax = vals(&input(1.0))
        .iter()
        .chain(vals(&input(2.0)).iter())
        .fold(0f32, |m, v| m.max(v.abs()));
    let frozen = &scales.layers["fc1"][&lowbit_nn::Role::Input];
    assert_eq!(frozen.scales.values, [amax / 448.0]);
    let x = input(3.0).affine(2.0, 0.0).unwrap(); // beyond the calibrated range: clamps
    let y_static = run(&x);
    // Save, load into a fresh model, same bits.
    let dir = std::env::temp_dir().join(format!("lowbit-nn-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = StaticScales::path_for_config(&dir.join("cfg.yaml"));
    assert!(path.to_string_lossy().ends_with("cfg.scales.json"));
    scales.save(&path).unwrap();
    let (g1, g2, g3, t2) = two_layer(yaml, &weights());
    t2.load_scales(&StaticScales::load(&path).unwrap()).unwrap();
    let y2 = g3
        .forward1(&g2.forward1(&g1.forward1(&x).unwrap()).unwrap())
        .unwrap();
    assert_eq!(vals(&y2), vals(&y_static));
    // A scales file that does not fit the config is an error naming the layer.
    let (_, _, _, t3) = two_layer("defaults: { weight: int8 }", &weights());
    let e = t3.load_scales(&scales).unwrap_err().to_string();
    assert!(e.contains("fc1") && e.contains("no input quantizer"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn static_spec_without_calibration_is_an_error() {
    let yaml = "defaults:\n  input:\n    format: e4m3fn\n    granularity: per_tensor\n    scale: { kind: f32 }\n    mode: static\n";
    let parsed = QuantConfig::from_yaml(yaml, "s.yaml");
    let Ok(config) = parsed else {
        // The spec's serde form may differ; build it in code instead.
        let spec = QuantSpec::builder(lowbit_formats::Format::E4M3FN)
            .mode(lowbit_quant::ScaleMode::Static)
            .build()
            .unwrap();
        let mut c = QuantConfig::default();
        c.defaults.input = lowbit_nn::Setting::Spec(spec);
        return check_static(c);
    };
    check_static(config);
}

fn check_static(config: QuantConfig) {
    let vb = VarBuilder::from_tensors(weights(), DType::F32, &Device::Cpu);
    let b = QBuilder::new(vb, &config, Registry::default()).unwrap();
    let fc1 = b.linear("fc1", 6, 5).unwrap();
    b.finish().unwrap();
    let e = fc1.forward1(&input(0.0)).unwrap_err().to_string();
    assert!(
        e.contains("fc1") && e.contains("static") && e.contains("calibrat"),
        "{e}"
    );
}

/// A user op: `y = tanh(x) · k`, registered like the built-ins.
#[derive(Debug)]
struct ScaledTanh {
    k: f64,
    quant: LayerQuant,
}

impl QuantOp for ScaledTanh {
    fn quant(&self) -> &LayerQuant {
        &self.quant
    }
    fn compute(&self, inputs: &[Tensor]) -> lowbit_nn::Result<Tensor> {
        Ok(inputs[0].tanh()?.affine(self.k, 0.0)?)
    }
}

#[test]
fn user_ops_register_like_builtins() {
    let mut reg = Registry::default();
    reg.register_fn("scaled_tanh", OpClass::Activation, |params, _vb, quant| {
        let OpParams::Custom(any) = params else {
            return Err(lowbit_nn::NnError::layer(
                &quant.name,
                "scaled_tanh takes Custom(f64)",
            ));
        };
        let k = *any
            .downcast_ref::<f64>()
            .ok_or_else(|| lowbit_nn::NnError::layer(&quant.name, "expected an f64"))?;
        Ok(Arc::new(ScaledTanh { k, quant }))
    });
    let config =
        QuantConfig::from_yaml("ops:\n  scaled_tanh: { output: fp8_e4m3 }\n", "u.yaml").unwrap();
    let b = QBuilder::new(VarBuilder::zeros(DType::F32, &Device::Cpu), &config, reg).unwrap();
    let op = b
        .op("scaled_tanh", "st", OpParams::Custom(Arc::new(2.5f64)))
        .unwrap();
    let table = b.finish().unwrap();
    let x = input(0.5);
    let y = op.forward1(&x).unwrap();
    let spec: QuantSpec = "fp8_e4m3".parse().unwrap();
    let fp = x.tanh().unwrap().affine(2.5, 0.0).unwrap();
    let mut want = vec![0f32; 24];
    spec.fake_quantize(&vals(&fp), &[4, 6], &mut want).unwrap();
    assert_eq!(vals(&y), want);
    assert!(table.explain().contains("scaled_tanh"));
}

#[test]
fn lsq_gradients_follow_the_learned_step_size_rule() {
    use lowbit_nn::LsqFakeQuant;
    // int4 per tensor (grid −7..7), s = 0.5: v = x/s = [0.6, 2.6, 8.0, −0.2].
    let spec: QuantSpec = "int4_g128".parse().unwrap();
    let spec = spec
        .to_builder()
        .granularity(lowbit_quant::Granularity::PerTensor)
        .build()
        .unwrap();
    let x = Var::from_slice(&[0.3f32, 1.3, 4.0, -0.1], 4, &Device::Cpu).unwrap();
    let s = Var::from_slice(&[0.5f32], 1, &Device::Cpu).unwrap();
    let y = x
        .as_tensor()
        .apply_op2(s.as_tensor(), LsqFakeQuant { spec })
        .unwrap();
    // Forward: Q(v)·s = [1, 3, 7, −0]·0.5 (the same engine as frozen-scale fake-quant).
    assert_eq!(vals(&y), vec![0.5, 1.5, 3.5, -0.0]);
    let g = y.sum_all().unwrap().backward().unwrap();
    // ∂/∂x: 1 inside the grid, 0 where 8.0 clamps to 7.
    assert_eq!(vals(g.get(&x).unwrap()), vec![1.0, 1.0, 0.0, 1.0]);
    // ∂/∂s: Σ (Q(v) − v) inside + 7 for the clamped element, times 1/√(N·7) with N = 4:
    // (0.4 + 0.4 + 0.2 + 7) / √28.
    let want = (0.4f64 + 0.4 + 0.2 + 7.0) / 28f64.sqrt();
    let got = f64::from(vals(g.get(&s).unwrap())[0]);
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    // Specs LSQ cannot learn are refused.
    assert!(LsqFakeQuant::check(&"mxfp4".parse().unwrap()).is_err());
    assert!(LsqFakeQuant::check(&spec).is_ok());
}

#[test]
fn frozen_per_sample_scales_on_another_batch_size_say_why() {
    // Static scales per index of the batch axis (per_channel axis 0 on [batch, features]) fit
    // only the calibration batch's size; the error says so, with the layer and role.
    let mut r = common::Rng(40);
    let (wt, bt) = (r.tensor(&[4, 8], 1.0), r.tensor(&[4], 1.0));
    let yaml = "defaults: { input: { format: int8, granularity: { kind: per_channel, axis: 0 }, mode: static } }";
    let (op, table) = common::build_linear(yaml, &wt, &bt);
    table.begin_calibration(Method::Max).unwrap();
    op.forward1(&r.tensor(&[5, 8], 1.0)).unwrap();
    table.freeze().unwrap();
    op.forward1(&r.tensor(&[5, 8], 1.0)).unwrap();
    let e = op
        .forward1(&r.tensor(&[3, 8], 1.0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`l`") && e.contains("input") && e.contains("batch axis"),
        "{e}"
    );
}
