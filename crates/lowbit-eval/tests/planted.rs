//! A planted off-grid value in a quantized tensor is reported; clean runs pass.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lowbit_eval::{Evaluator, Reference, RunMeta, RunReport, Variant};
use lowbit_nn::{LayerTable, Mode, QBuilder, QuantConfig, QuantModel, QuantOp, Registry};
use std::sync::Arc;

struct Net {
    fc: Arc<dyn QuantOp>,
    table: LayerTable,
}
impl QuantModel for Net {
    fn forward(&self, x: &Tensor) -> lowbit_nn::Result<Tensor> {
        self.fc.forward1(x)
    }
    fn layers(&self) -> &LayerTable {
        &self.table
    }
}

fn net(vm: &VarMap, yaml: &str) -> Box<dyn QuantModel> {
    let cfg = QuantConfig::from_yaml(yaml, "test.yaml").unwrap();
    let vb = VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu);
    let b = QBuilder::new(vb, &cfg, Registry::default()).unwrap();
    let fc = b.linear("fc", 64, 10).unwrap();
    Box::new(Net {
        fc,
        table: b.finish().unwrap(),
    })
}

fn meta() -> RunMeta {
    RunMeta {
        model: "net".into(),
        data: "random".into(),
        batch_size: 8,
        seed: 0,
    }
}

#[test]
fn planted_value_is_reported_and_clean_run_passes() {
    let vm = VarMap::new();
    let cfg = "defaults: { weight: mxfp4, input: fp8_e4m3 }";
    let fp32 = net(&vm, "{}");
    let x = Tensor::randn(0f32, 1.0, (8, 64), &Device::Cpu).unwrap();
    let labels: Vec<u32> = (0..8).collect();

    // Clean.
    let mut ev = Evaluator::new(
        net(&vm, "{}"),
        vec![Variant {
            name: "mxfp4".into(),
            model: net(&vm, cfg),
            detail: true,
        }],
    );
    ev.add_batch(&x, &labels).unwrap();
    let res = ev.finish();
    let rep = RunReport::new(&meta(), res.fp32, &res.variants[0], &[]);
    assert!(rep.compliance.passed, "{:?}", rep.compliance);
    let fc = &rep.layers[0];
    assert_eq!(fc.compliance.weight.unwrap().elements, 640);
    assert_eq!(fc.compliance.input.unwrap().elements, 512);
    assert_eq!(fc.weight_bits_per_element, Some(4.25));
    assert!(fc.propagated.output.unwrap().sqnr_db.0 > 5.0);
    assert!(fc.isolated_output.is_some());

    // Planted: one weight nudged off the E2M1 grid in the quantized run's taps.
    let q = net(&vm, cfg);
    let r = Reference::run(fp32.as_ref(), &x).unwrap();
    q.layers().set_mode(Mode::Quantize);
    q.layers().context().set_taps(true);
    q.forward(&x).unwrap();
    let mut taps = q.layers().context().take_taps();
    let rec = taps.get_mut("fc").unwrap();
    let w = rec.weight.as_ref().unwrap();
    let mut v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[5] = v[5] * 1.1 + 1e-3;
    rec.weight = Some(Tensor::from_vec(v, w.dims(), &Device::Cpu).unwrap());
    let mut ev = Evaluator::new(
        net(&vm, "{}"),
        vec![Variant {
            name: "mxfp4".into(),
            model: q,
            detail: true,
        }],
    );
    ev.observe_taps(0, &r, &taps).unwrap();
    let res = ev.finish();
    let rep = RunReport::new(&meta(), res.fp32, &res.variants[0], &[]);
    assert!(!rep.compliance.passed);
    assert_eq!(rep.compliance.totals.off_grid, 1);
    assert_eq!(rep.compliance.layers_with_violations, ["fc"]);
    assert!(lowbit_eval::format_comparison(&rep).contains("compliance: FAIL"));
    assert!(
        lowbit_eval::html::run_html(&rep)
            .unwrap()
            .contains("COMPLIANCE VIOLATIONS")
    );
}

#[test]
fn layer_statistics_limited_to_the_first_batches() {
    // Zero weights everywhere (a fresh VarMap): the numbers are not the point; what is
    // measured on which batches is.
    let vm = VarMap::new();
    let cfg = "defaults: { weight: int8, input: fp8_e4m3 }";
    let batches: Vec<Tensor> = (0..3)
        .map(|_| Tensor::randn(0f32, 1.0, (8, 64), &Device::Cpu).unwrap())
        .collect();
    let labels: Vec<u32> = (0..8).collect();
    let run = |limit: Option<u64>, feed: usize| {
        let mut ev = Evaluator::new(
            net(&vm, "{}"),
            vec![Variant {
                name: "q".into(),
                model: net(&vm, cfg),
                detail: true,
            }],
        );
        ev.set_layer_batches(limit);
        for x in &batches[..feed] {
            ev.add_batch(x, &labels).unwrap();
        }
        ev.finish()
    };
    let limited = run(Some(1), 3);
    let first_only = run(None, 1);
    let all = run(None, 3);
    // Task metrics cover every batch; layer statistics only the first.
    assert_eq!(limited.variants[0].task, all.variants[0].task);
    assert_eq!(limited.variants[0].layer_samples, 8);
    assert_eq!(all.variants[0].layer_samples, 24);
    assert_eq!(limited.variants[0].layers, first_only.variants[0].layers);
    let input = limited.variants[0].layers[0].compliance.input.unwrap();
    assert_eq!(input.elements, 8 * 64);
    let rep = RunReport::new(&meta(), limited.fp32, &limited.variants[0], &[]);
    assert_eq!(rep.layer_samples, 8);
}

struct Bn {
    bn: Arc<dyn QuantOp>,
    table: LayerTable,
}
impl QuantModel for Bn {
    fn forward(&self, x: &Tensor) -> lowbit_nn::Result<Tensor> {
        Ok(self.bn.forward1(x)?.flatten_from(1)?)
    }
    fn layers(&self) -> &LayerTable {
        &self.table
    }
}

fn bn_net(vm: &VarMap, yaml: &str) -> Box<dyn QuantModel> {
    let cfg = QuantConfig::from_yaml(yaml, "test.yaml").unwrap();
    let vb = VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu);
    let b = QBuilder::new(vb, &cfg, Registry::default()).unwrap();
    let bn = b
        .op(
            "batch_norm2d",
            "bn",
            lowbit_nn::OpParams::BatchNorm2d {
                channels: 6,
                eps: 1e-5,
            },
        )
        .unwrap();
    Box::new(Bn {
        bn,
        table: b.finish().unwrap(),
    })
}

#[test]
fn batch_norm_weight_compliance_checks_the_folded_scale() {
    // A quantized eval-mode batch norm quantizes its folded scale γ/√(σ²+ε); the FP32 model
    // records that scale too, so the weight check compares like with like (it used to compare
    // Q(s) with scales computed from γ and report every channel off the grid).
    let mut vm = VarMap::new();
    let fp32 = bn_net(&vm, "{}");
    let dev = Device::Cpu;
    vm.set_one(
        "bn.weight",
        Tensor::new(&[0.7f32, 1.3, -0.4, 2.2, 0.05, 1.0], &dev).unwrap(),
    )
    .unwrap();
    vm.set_one(
        "bn.running_var",
        Tensor::new(&[0.5f32, 2.0, 1.5, 0.1, 3.0, 1.0], &dev).unwrap(),
    )
    .unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 6, 3, 3), &dev).unwrap();
    let mut ev = Evaluator::new(
        fp32,
        vec![Variant {
            name: "fp8".into(),
            model: bn_net(&vm, "defaults: { weight: fp8_e4m3, bias: fp8_e4m3 }"),
            detail: true,
        }],
    );
    ev.add_batch(&x, &[0, 1]).unwrap();
    let res = ev.finish();
    let rep = RunReport::new(&meta(), res.fp32, &res.variants[0], &[]);
    assert!(rep.compliance.passed, "{:?}", rep.compliance);
    let bn = &rep.layers[0];
    assert_eq!(bn.compliance.weight.unwrap().elements, 6);
    // E4M3 keeps ~4 significant bits: the folded scale's SQNR is far above 20 dB.
    assert!(
        bn.propagated.weight.unwrap().sqnr_db.0 > 25.0,
        "{:?}",
        bn.propagated.weight
    );
}

/// The reports of `model` and of `plain` (the same specs without the transform) on one batch
/// of `x` (labels 0..n).
fn beside_plain(
    fp32: Box<dyn QuantModel>,
    model: Box<dyn QuantModel>,
    plain: Box<dyn QuantModel>,
    x: &Tensor,
) -> (RunReport, RunReport) {
    let variant = |name: &str, model| Variant {
        name: name.into(),
        model,
        detail: true,
    };
    let mut ev = Evaluator::new(fp32, vec![variant("model", model), variant("plain", plain)]);
    let labels: Vec<u32> = (0..x.dims()[0] as u32).collect();
    ev.add_batch(x, &labels).unwrap();
    let res = ev.finish();
    (
        RunReport::new(&meta(), res.fp32, &res.variants[0], &[]),
        RunReport::new(&meta(), res.fp32, &res.variants[1], &[]),
    )
}

#[test]
fn rotated_layers_are_compared_and_checked_in_the_right_basis() {
    // Weight and input errors compare Q(x R) Rᵀ with x (not the rotated tensor with the
    // FP32 one), compliance checks Q(x R) against the scales of x R.
    let vm = VarMap::new();
    let fp32 = net(&vm, "{}");
    let x = Tensor::randn(0f32, 1.0, (8, 64), &Device::Cpu).unwrap();
    let cfg = "defaults: { weight: mxfp4, input: fp8_e4m3, rotation: { size: 32, seed: 3 } }";
    let (rep, plain) = beside_plain(
        fp32,
        net(&vm, cfg),
        net(&vm, "defaults: { weight: mxfp4, input: fp8_e4m3 }"),
        &x,
    );
    assert!(rep.compliance.passed, "{:?}", rep.compliance);
    let (fc, pfc) = (&rep.layers[0], &plain.layers[0]);
    assert_eq!(fc.rotation.as_deref(), Some("hadamard 32 (signs seed 3)"));
    assert_eq!(fc.compliance.weight.unwrap().elements, 640);
    // Errors of the same order as without rotation (a wrong basis would be ~0 dB).
    let (w, pw) = (
        fc.propagated.weight.unwrap().sqnr_db.0,
        pfc.propagated.weight.unwrap().sqnr_db.0,
    );
    let (i, pi) = (
        fc.propagated.input.unwrap().sqnr_db.0,
        pfc.propagated.input.unwrap().sqnr_db.0,
    );
    assert!(
        w > 10.0 && (w - pw).abs() < 6.0,
        "weight {w} dB, plain {pw} dB"
    );
    assert!(
        i > 20.0 && (i - pi).abs() < 6.0,
        "input {i} dB, plain {pi} dB"
    );
}

#[test]
fn smoothed_layers_are_compared_and_checked_in_the_right_basis() {
    // SmoothQuant: errors compare Q(x / s) · s with x and Q(W · s) / s with W; compliance
    // checks Q(x / s) against the scales of x / s. An input with one channel 50× the others
    // under per-tensor int8: smoothed, its error in the original basis is much lower.
    let vm = VarMap::new();
    let fp32 = net(&vm, "{}");
    let mut v = Tensor::randn(0f32, 1.0, (8, 64), &Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for row in v.chunks_mut(64) {
        row[3] *= 50.0;
    }
    let x = Tensor::from_vec(v, (8, 64), &Device::Cpu).unwrap();
    let smoothed = net(
        &vm,
        "defaults: { weight: int8, input: int8, smoothing: 0.5 }",
    );
    smoothed.layers().begin_observation().unwrap();
    smoothed.forward(&x).unwrap();
    smoothed.layers().finish_observation().unwrap();
    smoothed.layers().set_mode(Mode::Quantize);
    let (rep, plain) = beside_plain(
        fp32,
        smoothed,
        net(&vm, "defaults: { weight: int8, input: int8 }"),
        &x,
    );
    assert!(rep.compliance.passed, "{:?}", rep.compliance);
    let (fc, pfc) = (&rep.layers[0], &plain.layers[0]);
    assert_eq!(fc.smoothing.as_deref(), Some("smoothquant α=0.5"));
    assert_eq!(pfc.smoothing, None);
    assert_eq!(fc.compliance.input.unwrap().elements, 512);
    let (i, pi) = (
        fc.propagated.input.unwrap().sqnr_db.0,
        pfc.propagated.input.unwrap().sqnr_db.0,
    );
    let (w, pw) = (
        fc.propagated.weight.unwrap().sqnr_db.0,
        pfc.propagated.weight.unwrap().sqnr_db.0,
    );
    let (o, po) = (
        fc.propagated.output.unwrap().sqnr_db.0,
        pfc.propagated.output.unwrap().sqnr_db.0,
    );
    assert!(i > pi + 6.0, "input {i} dB, plain {pi} dB");
    assert!(w > 20.0, "weight {w} dB (plain {pw} dB)");
    assert!(o > po + 6.0, "output {o} dB, plain {po} dB");
}

struct Attn {
    mm: Arc<dyn QuantOp>,
    k: Tensor,
    table: LayerTable,
}
impl QuantModel for Attn {
    fn forward(&self, x: &Tensor) -> lowbit_nn::Result<Tensor> {
        self.mm.forward(&[x, &self.k])
    }
    fn layers(&self) -> &LayerTable {
        &self.table
    }
}

fn attn(k: &Tensor, yaml: &str) -> Box<dyn QuantModel> {
    let cfg = QuantConfig::from_yaml(yaml, "test.yaml").unwrap();
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let b = QBuilder::new(vb, &cfg, Registry::default()).unwrap();
    let mm = b.matmul("scores").unwrap();
    Box::new(Attn {
        mm,
        k: k.clone(),
        table: b.finish().unwrap(),
    })
}

#[test]
fn rotated_matmul_operands_are_compared_in_their_own_basis() {
    // Q·Kᵀ with a K outlier channel: both operands' errors compare R-turned and back with the
    // FP32 ones (the right operand along its contraction axis), compliance in the turned basis.
    let x = Tensor::randn(0f32, 1.0, (8, 64), &Device::Cpu).unwrap();
    let mut kv = Tensor::randn(0f32, 1.0, (64, 10), &Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for v in &mut kv[5 * 10..6 * 10] {
        *v *= 40.0;
    }
    let k = Tensor::from_vec(kv, (64, 10), &Device::Cpu).unwrap();
    let labels: Vec<u32> = (0..8).collect();
    let mut ev = Evaluator::new(
        attn(&k, "{}"),
        vec![
            Variant {
                name: "rotated".into(),
                model: attn(
                    &k,
                    "ops: { matmul: { input: { format: int8 }, rotation: { size: 64, seed: 4 } } }",
                ),
                detail: true,
            },
            Variant {
                name: "plain".into(),
                model: attn(&k, "ops: { matmul: { input: { format: int8 } } }"),
                detail: true,
            },
        ],
    );
    ev.add_batch(&x, &labels).unwrap();
    let res = ev.finish();
    let rep = RunReport::new(&meta(), res.fp32, &res.variants[0], &[]);
    let plain = RunReport::new(&meta(), res.fp32, &res.variants[1], &[]);
    assert!(rep.compliance.passed, "{:?}", rep.compliance);
    let (mm, pmm) = (&rep.layers[0], &plain.layers[0]);
    assert_eq!(mm.rotation.as_deref(), Some("hadamard 64 (signs seed 4)"));
    assert_eq!(mm.compliance.input.unwrap().elements, 8 * 64 + 64 * 10);
    let (i, pi) = (
        mm.propagated.input.unwrap().sqnr_db.0,
        pmm.propagated.input.unwrap().sqnr_db.0,
    );
    let (o, po) = (
        mm.propagated.output.unwrap().sqnr_db.0,
        pmm.propagated.output.unwrap().sqnr_db.0,
    );
    // A wrong basis would read ~0 dB; the rotation helps the output.
    assert!(i > 20.0, "input {i} dB (plain {pi} dB)");
    assert!(o > po + 6.0, "output {o} dB, plain {po} dB");
}
