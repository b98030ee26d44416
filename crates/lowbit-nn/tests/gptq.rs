//! The `gptq` setting: a linear layer's weight quantized by GPTQ from its FP32 calibration
//! inputs, used in the quantized pass, saved and loaded with the static scales.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{Device, Module, Tensor};
use lowbit_nn::{Gptq, Mode, QuantConfig, Rotation, StaticScales};
use lowbit_quant::{GptqOptions, Hessian, QuantSpec, gptq};

mod common;
use common::{Rng, build_linear, f32s, fp32_linear, tensor_bits};

/// Correlated inputs `[n, cols]`: a fixed mix of uniform values, one channel 8x larger.
fn inputs(r: &mut Rng, n: usize, cols: usize, mix: &[f32]) -> Tensor {
    let z = r.vec(n * cols, 1.0);
    let mut x = vec![0f32; n * cols];
    for s in 0..n {
        for j in 0..cols {
            let mut v = 0f32;
            for k in 0..cols {
                v += z[s * cols + k] * mix[k * cols + j];
            }
            x[s * cols + j] = if j == 3 { 8.0 * v } else { v };
        }
    }
    Tensor::from_vec(x, (n, cols), &Device::Cpu).unwrap()
}

/// `Σ (y − exact)²`.
fn squared_error(y: &Tensor, exact: &[f32]) -> f64 {
    f32s(y)
        .iter()
        .zip(exact)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum()
}

/// The weight spec of the YAML configs here: int4 in blocks of 16 along the input axis.
fn int4_g16() -> QuantSpec {
    "int4"
        .parse::<QuantSpec>()
        .and_then(|s| s.to_builder().per_block(-1, 16).build())
        .unwrap()
}

const YAML: &str = "defaults: { weight: { format: int4, granularity: { kind: per_block, axis: -1, size: 16 } }, gptq: {} }";

/// A GPTQ linear layer `l` of [`ROWS`] × [`COLS`] built from a config and observed on three
/// batches of correlated inputs.
struct Observed {
    r: Rng,
    wt: Tensor,
    bt: Tensor,
    /// The inputs' mixing matrix (for more inputs of the same kind).
    mix: Vec<f32>,
    /// The observed batches.
    batches: Vec<Tensor>,
    op: std::sync::Arc<dyn lowbit_nn::QuantOp>,
    table: lowbit_nn::LayerTable,
    /// What the observation produced.
    o: lowbit_nn::Observations,
    /// `Σ x xᵀ` of the batches, computed here.
    h: Hessian,
}

const ROWS: usize = 8;
const COLS: usize = 64;

fn observed(yaml: &str, seed: u64) -> Observed {
    let mut r = Rng(seed);
    let (wt, bt) = (r.tensor(&[ROWS, COLS], 0.3), r.tensor(&[ROWS], 0.1));
    let mix = r.vec(COLS * COLS, 0.3);
    let batches: Vec<Tensor> = (0..3).map(|_| inputs(&mut r, 40, COLS, &mix)).collect();
    let (op, table) = build_linear(yaml, &wt, &bt);
    assert!(table.observes());
    table.begin_observation().unwrap();
    for b in &batches {
        op.forward1(b).unwrap();
    }
    let o = table.finish_observation().unwrap();
    let mut h = Hessian::new(COLS);
    for b in &batches {
        h.add(&f32s(b)).unwrap();
    }
    Observed {
        r,
        wt,
        bt,
        mix,
        batches,
        op,
        table,
        o,
        h,
    }
}

#[test]
fn the_layer_uses_the_gptq_weight_of_its_calibration_inputs() {
    let (rows, cols) = (ROWS, COLS);
    let Observed {
        mut r,
        wt,
        bt,
        mix,
        op,
        table,
        o,
        h,
        ..
    } = observed(YAML, 51);
    assert_eq!(o.gptq.len(), 1);
    // The same GPTQ computed here from the same inputs.
    let spec = int4_g16();
    let want = gptq(&spec, &f32s(&wt), rows, cols, &h, GptqOptions::default()).unwrap();
    let got = o.gptq["l"].dequantize().unwrap();
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    // The quantized pass computes with it.
    table.set_mode(Mode::Quantize);
    let x = inputs(&mut r, 16, cols, &mix);
    let wq = Tensor::from_vec(want.values.clone(), (rows, cols), &Device::Cpu).unwrap();
    let y = op.forward1(&x).unwrap();
    let expect = candle_nn::Linear::new(wq, Some(bt.clone()))
        .forward(&x)
        .unwrap();
    assert_eq!(tensor_bits(&y), tensor_bits(&expect));
    // Lower output error than round-to-nearest on held-out inputs.
    let exact = f32s(&fp32_linear(&wt, &bt, &x));
    let err = |y: &Tensor| squared_error(y, &exact);
    let rtn_yaml = "defaults: { weight: { format: int4, granularity: { kind: per_block, axis: -1, size: 16 } } }";
    let (rtn, _) = build_linear(rtn_yaml, &wt, &bt);
    let (eg, er) = (err(&y), err(&rtn.forward1(&x).unwrap()));
    assert!(eg < 0.8 * er, "gptq {eg} rtn {er}");
    assert!(
        table.explain().contains("gptq (damp 0.01)"),
        "{}",
        table.explain()
    );
    // FP32: the FP32 weight.
    table.set_mode(Mode::Fp32);
    assert_eq!(
        tensor_bits(&op.forward1(&x).unwrap()),
        tensor_bits(&fp32_linear(&wt, &bt, &x))
    );

    // Saved with the scales (a safetensors file per layer beside the JSON) and loaded into a
    // fresh layer: the same bits.
    table.set_mode(Mode::Quantize);
    let scales = table.freeze().unwrap();
    let dir = std::env::temp_dir().join(format!("lowbit-gptq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("g.scales.json");
    scales.save(&path).unwrap();
    assert!(
        StaticScales::gptq_dir(&path)
            .join("l.safetensors")
            .is_file()
    );
    let loaded = StaticScales::load(&path).unwrap();
    assert_eq!(loaded.gptq_layers, ["l"]);
    let (op2, table2) = build_linear(YAML, &wt, &bt);
    table2.load_scales(&loaded).unwrap();
    assert_eq!(tensor_bits(&op2.forward1(&x).unwrap()), tensor_bits(&y));
    std::fs::remove_dir_all(&dir).ok();
}

/// `act_order` with block scales through `static_groups`: the layer's weight is
/// `lowbit_quant::gptq` with both settings, stored as codes on blocks of the weight, and it
/// differs from the in-order GPTQ.
#[test]
fn act_order_with_static_groups_keeps_block_scales() {
    let (rows, cols) = (ROWS, COLS);
    let yaml = "defaults: { weight: { format: int4, granularity: { kind: per_block, axis: -1, size: 16 } }, gptq: { act_order: true, static_groups: true } }";
    let Observed {
        wt, table, o, h, ..
    } = observed(yaml, 53);
    let opts = GptqOptions {
        act_order: true,
        static_groups: true,
        ..GptqOptions::default()
    };
    let want = gptq(&int4_g16(), &f32s(&wt), rows, cols, &h, opts).unwrap();
    let stored = &o.gptq["l"];
    let got = stored.dequantize().unwrap();
    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want.values));
    assert_eq!(want.scales.shape, [rows, cols / 16]);
    let in_order = gptq(
        &int4_g16(),
        &f32s(&wt),
        rows,
        cols,
        &h,
        GptqOptions::default(),
    )
    .unwrap();
    assert_ne!(bits(&in_order.values), bits(&want.values));
    let explain = table.explain();
    assert!(explain.contains("act order static groups"), "{explain}");
}

/// GPTQ on a layer that transforms its input and weight before quantizing them (`setting`, a
/// config line): the layer's GPTQ weight is `lowbit_quant::gptq` of `weight_t(W)` with the
/// Hessian `hessian(observed)`, the quantized pass computes `input_t(x) Q(weight_t(W))ᵀ + b`,
/// and the output error is below that of the same setting with round-to-nearest.
fn check_transformed_gptq(
    setting: &str,
    seed: u64,
    hessian: impl Fn(&Observed) -> Hessian,
    weight_t: impl Fn(&Observed, &Tensor) -> Tensor,
    input_t: impl Fn(&Observed, &Tensor) -> Tensor,
) {
    let weight = "weight: { format: int4, granularity: { kind: per_block, axis: -1, size: 16 } }";
    let mut ob = observed(
        &format!("defaults: {{ {weight}, {setting}, gptq: {{}} }}"),
        seed,
    );
    let h = hessian(&ob);
    let w_t = f32s(&weight_t(&ob, &ob.wt));
    let want = gptq(&int4_g16(), &w_t, ROWS, COLS, &h, GptqOptions::default()).unwrap();
    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&ob.o.gptq["l"].dequantize().unwrap()),
        bits(&want.values),
        "{setting}"
    );
    // The quantized pass: the transformed input against the GPTQ weight.
    ob.table.set_mode(Mode::Quantize);
    let x = inputs(&mut ob.r, 16, COLS, &ob.mix);
    let wq = Tensor::from_vec(want.values.clone(), (ROWS, COLS), &Device::Cpu).unwrap();
    let y = ob.op.forward1(&x).unwrap();
    let expect = candle_nn::Linear::new(wq, Some(ob.bt.clone()))
        .forward(&input_t(&ob, &x))
        .unwrap();
    assert_eq!(tensor_bits(&y), tensor_bits(&expect), "{setting}");
    // Better than the setting alone.
    let exact = f32s(&fp32_linear(&ob.wt, &ob.bt, &x));
    let err = |y: &Tensor| squared_error(y, &exact);
    let (rtn, rtn_table) = build_linear(
        &format!("defaults: {{ {weight}, {setting} }}"),
        &ob.wt,
        &ob.bt,
    );
    if rtn_table.observes() {
        // Smoothing: the same factors (the same FP32 pass).
        rtn_table.begin_observation().unwrap();
        for b in &ob.batches {
            rtn.forward1(b).unwrap();
        }
        rtn_table.finish_observation().unwrap();
        rtn_table.set_mode(Mode::Quantize);
    }
    let (eg, er) = (err(&y), err(&rtn.forward1(&x).unwrap()));
    assert!(eg < 0.8 * er, "{setting}: gptq {eg}, round-to-nearest {er}");
}

/// GPTQ on a rotating layer (QuaRot's recipe: rotate, then GPTQ): `W R` with the Hessian of the
/// rotated inputs `x R`.
#[test]
fn gptq_on_a_rotating_layer_quantizes_the_rotated_weight() {
    let rot = Rotation {
        size: 16,
        seed: Some(3),
    };
    check_transformed_gptq(
        "rotation: { size: 16, seed: 3 }",
        54,
        |ob| {
            let mut h = Hessian::new(COLS);
            for b in &ob.batches {
                h.add(&f32s(&rot.rotate(b).unwrap())).unwrap();
            }
            h
        },
        |_, w| rot.rotate(w).unwrap(),
        |_, x| rot.rotate(x).unwrap(),
    );
}

/// GPTQ on a smoothing layer (SmoothQuant, then GPTQ): `W · s` with the Hessian of the
/// smoothed inputs `x / s`, `H_ij / (s_i s_j)`, the factors from the same FP32 pass.
#[test]
fn gptq_on_a_smoothing_layer_quantizes_the_smoothed_weight() {
    let factors = |ob: &Observed| {
        let f = &ob.o.smoothing["l"].factors;
        Tensor::from_vec(f.clone(), f.len(), &Device::Cpu).unwrap()
    };
    check_transformed_gptq(
        "smoothing: 0.5",
        55,
        |ob| {
            let d: Vec<f64> = ob.o.smoothing["l"]
                .factors
                .iter()
                .map(|&s| 1.0 / f64::from(s))
                .collect();
            let mut h = ob.h.clone();
            h.scale_inputs(&d).unwrap();
            h
        },
        |ob, w| w.broadcast_mul(&factors(ob)).unwrap(),
        |ob, x| x.broadcast_div(&factors(ob)).unwrap(),
    );
}

#[test]
fn gptq_errors_name_the_layer_and_the_fix() {
    let mut r = Rng(52);
    let (wt, bt) = (r.tensor(&[4, 16], 1.0), r.tensor(&[4], 1.0));
    let x = r.tensor(&[5, 16], 1.0);
    // No GPTQ weight yet: the quantized pass refuses.
    let (op, table) = build_linear(YAML, &wt, &bt);
    let e = op.forward1(&x).unwrap_err().to_string();
    assert!(e.contains("`l`") && e.contains("lowbit calibrate"), "{e}");
    // Nothing observed.
    table.begin_observation().unwrap();
    let e = table.finish_observation().unwrap_err().to_string();
    assert!(e.contains("no forward pass"), "{e}");
    // No weight quantizer; with smoothing.
    for (yaml, needle) in [
        ("defaults: { gptq: {} }", "no weight quantizer"),
        (
            "defaults: { weight: int8, smoothing: 0.5, rotation: { size: 16 }, gptq: {} }",
            "not supported",
        ),
    ] {
        let (op, table) = build_linear(yaml, &wt, &bt);
        table.begin_observation().unwrap();
        op.forward1(&x).unwrap();
        let e = table.finish_observation().unwrap_err().to_string();
        assert!(e.contains("`l`") && e.contains(needle), "{yaml}: {e}");
    }
    // A GPTQ weight for another spec.
    let (op, table) = build_linear(YAML, &wt, &bt);
    table.begin_observation().unwrap();
    op.forward1(&x).unwrap();
    let t = table.finish_observation().unwrap().gptq["l"].clone();
    let (other, _) = build_linear("defaults: { weight: int8, gptq: {} }", &wt, &bt);
    let e = other.quant().load_gptq(&t).unwrap_err().to_string();
    assert!(e.contains("calibrate again"), "{e}");
    // Config forms.
    let g = |yaml: &str| {
        QuantConfig::from_yaml(yaml, "g.yaml")
            .map(|c| c.defaults.gptq)
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        g("defaults: { gptq: {} }").unwrap(),
        lowbit_nn::Choice::On(Gptq::default())
    );
    assert_eq!(
        g("defaults: { gptq: 0.05 }").unwrap(),
        lowbit_nn::Choice::On(Gptq {
            damp: 0.05,
            ..Gptq::default()
        })
    );
    let e = g("defaults:\n  gptq: { damp: -1 }\n").unwrap_err();
    assert!(e.contains("g.yaml:2") && e.contains("damp"), "{e}");
    assert!(g("defaults: { gptq: { block: 0 } }").is_err());
    assert!(g("defaults: { gptq: { dampen: 1 } }").is_err());
    // Act order with block scales without static groups: refused when GPTQ runs, naming the
    // layer and the setting that allows it.
    let (op, table) = build_linear(
        "defaults: { weight: int4_g128, gptq: { act_order: true } }",
        &r.tensor(&[4, 128], 1.0),
        &bt,
    );
    table.begin_observation().unwrap();
    op.forward1(&r.tensor(&[5, 128], 1.0)).unwrap();
    let e = table.finish_observation().unwrap_err().to_string();
    assert!(
        e.contains("`l`") && e.contains("act_order") && e.contains("static_groups: true"),
        "{e}"
    );
}

/// Three linear layers: `a` and `b` read `x`, `c` reads `a`'s output. Returns what
/// `table.observe` installs on `batches` (GPTQ weights, smoothing factors), with the number of
/// passes it ran.
fn observe_chain(
    yaml: &str,
    w: &[(Tensor, Tensor)],
    batches: &[Tensor],
) -> (lowbit_nn::Observations, usize) {
    let mut weights = std::collections::HashMap::new();
    for (name, (wt, bt)) in ["a", "b", "c"].iter().zip(w) {
        weights.insert(format!("{name}.weight"), wt.clone());
        weights.insert(format!("{name}.bias"), bt.clone());
    }
    let vb = candle_nn::VarBuilder::from_tensors(weights, candle_core::DType::F32, &Device::Cpu);
    let config = QuantConfig::from_yaml(yaml, "seq.yaml").unwrap();
    let builder = lowbit_nn::QBuilder::new(vb, &config, lowbit_nn::Registry::default()).unwrap();
    let op = |name: &str, (wt, _): &(Tensor, Tensor)| {
        let (out_dim, in_dim) = wt.dims2().unwrap();
        builder
            .op(
                "linear",
                name,
                lowbit_nn::OpParams::Linear {
                    in_dim,
                    out_dim,
                    bias: true,
                },
            )
            .unwrap()
    };
    let (a, b, c) = (op("a", &w[0]), op("b", &w[1]), op("c", &w[2]));
    let table = builder.finish().unwrap();
    let mut passes = 0;
    let o = table
        .observe(|| {
            passes += 1;
            for x in batches {
                let ya = a.forward1(x)?;
                b.forward1(x)?;
                c.forward1(&ya)?;
            }
            Ok::<(), lowbit_nn::NnError>(())
        })
        .unwrap();
    (o, passes)
}

#[test]
fn sequential_gptq_feeds_each_group_the_outputs_of_the_quantized_layers_before_it() {
    let cols = 32;
    let mut r = Rng(77);
    let w: Vec<(Tensor, Tensor)> = [(cols, cols), (cols, cols), (8, cols)]
        .iter()
        .map(|&(o, i)| (r.tensor(&[o, i], 0.3), r.tensor(&[o], 0.1)))
        .collect();
    let mix = r.vec(cols * cols, 0.3);
    let batches: Vec<Tensor> = (0..2).map(|_| inputs(&mut r, 30, cols, &mix)).collect();
    let spec = int4_g16();
    // GPTQ of `wt` on inputs `ins`; with smoothing factors `s`, of `wt · s` on `ins / s`.
    let smoothed_gptq_of = |wt: &Tensor, ins: &[Tensor], s: Option<&[f32]>| {
        let (rows, cols) = wt.dims2().unwrap();
        let mut h = Hessian::new(cols);
        for x in ins {
            h.add(&f32s(x)).unwrap();
        }
        let wt = match s {
            Some(s) => {
                let d: Vec<f64> = s.iter().map(|&v| 1.0 / f64::from(v)).collect();
                h.scale_inputs(&d).unwrap();
                wt.broadcast_mul(&Tensor::new(s, &Device::Cpu).unwrap())
                    .unwrap()
            }
            None => wt.clone(),
        };
        let g = gptq(&spec, &f32s(&wt), rows, cols, &h, GptqOptions::default()).unwrap();
        g.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    let gptq_of = |wt: &Tensor, ins: &[Tensor]| smoothed_gptq_of(wt, ins, None);
    let bits = |t: &lowbit_quant::QuantizedTensor| {
        t.dequantize()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    };
    let lin = |(wt, bt): &(Tensor, Tensor), x: &Tensor| fp32_linear(wt, bt, x);
    let weight = "weight: { format: int4, granularity: { kind: per_block, axis: -1, size: 16 } }";

    // A GPTQ weight as a tensor, and `a`'s outputs on the batches with weight `wa`.
    let values = |t: &lowbit_quant::QuantizedTensor| {
        Tensor::from_vec(t.dequantize().unwrap(), t.shape(), &Device::Cpu).unwrap()
    };
    let outputs_of_a = |wa: Tensor| -> Vec<Tensor> {
        batches
            .iter()
            .map(|x| lin(&(wa.clone(), w[0].1.clone()), x))
            .collect()
    };

    // Sequential: `a` and `b` read the same tensor (one group, the first pass), `c` gets a
    // second pass in which `a` computes with its GPTQ weight.
    let (seq, passes) = observe_chain(
        &format!("defaults: {{ {weight}, gptq: {{ sequential: true }} }}"),
        &w,
        &batches,
    );
    let seq = seq.gptq;
    assert_eq!(passes, 2);
    assert_eq!(bits(&seq["a"]), gptq_of(&w[0].0, &batches));
    assert_eq!(bits(&seq["b"]), gptq_of(&w[1].0, &batches));
    let quantized_a = outputs_of_a(values(&seq["a"]));
    assert_eq!(bits(&seq["c"]), gptq_of(&w[2].0, &quantized_a));

    // Rotating layers: GPTQ of `W R` on rotated inputs; the later group's pass computes `a`
    // with `Q(W R) Rᵀ` (the FP32 pass does not rotate).
    let rot = Rotation {
        size: 16,
        seed: Some(3),
    };
    let (seq_rot, passes) = observe_chain(
        &format!(
            "defaults: {{ {weight}, rotation: {{ size: 16, seed: 3 }}, gptq: {{ sequential: true }} }}"
        ),
        &w,
        &batches,
    );
    let seq_rot = seq_rot.gptq;
    assert_eq!(passes, 2);
    let rotated =
        |xs: &[Tensor]| -> Vec<Tensor> { xs.iter().map(|x| rot.rotate(x).unwrap()).collect() };
    let wa_r = rot.rotate(&w[0].0).unwrap();
    assert_eq!(bits(&seq_rot["a"]), gptq_of(&wa_r, &rotated(&batches)));
    let quantized_a = outputs_of_a(rot.unrotate(&values(&seq_rot["a"])).unwrap());
    let wc_r = rot.rotate(&w[2].0).unwrap();
    assert_eq!(bits(&seq_rot["c"]), gptq_of(&wc_r, &rotated(&quantized_a)));

    // Smoothing layers: GPTQ of `W · s` on `x / s`, each group's factors from its own pass;
    // the later group's pass computes `a` with `Q(W · s) / s`.
    let (seq_sm, passes) = observe_chain(
        &format!("defaults: {{ {weight}, smoothing: 0.5, gptq: {{ sequential: true }} }}"),
        &w,
        &batches,
    );
    assert_eq!(passes, 2);
    let factors = |name: &str| seq_sm.smoothing[name].factors.clone();
    let (sa, sc) = (factors("a"), factors("c"));
    assert_eq!(
        bits(&seq_sm.gptq["a"]),
        smoothed_gptq_of(&w[0].0, &batches, Some(&sa))
    );
    let qa = values(&seq_sm.gptq["a"])
        .broadcast_div(&Tensor::new(sa.as_slice(), &Device::Cpu).unwrap())
        .unwrap();
    let quantized_a = outputs_of_a(qa);
    assert_eq!(
        bits(&seq_sm.gptq["c"]),
        smoothed_gptq_of(&w[2].0, &quantized_a, Some(&sc))
    );

    // One-shot: every layer from the FP32 model's inputs, in one pass.
    let (one, passes) = observe_chain(
        &format!("defaults: {{ {weight}, gptq: {{}} }}"),
        &w,
        &batches,
    );
    let one = one.gptq;
    assert_eq!(passes, 1);
    let fp32_a: Vec<Tensor> = batches.iter().map(|x| lin(&w[0], x)).collect();
    assert_eq!(bits(&one["c"]), gptq_of(&w[2].0, &fp32_a));
    assert_ne!(bits(&one["c"]), bits(&seq["c"]));
}
