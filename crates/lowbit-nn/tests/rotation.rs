//! The `rotation` setting: block-Hadamard rotation of a linear layer's input and weight before
//! they are quantized.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{Device, Module, Tensor};
use lowbit_nn::{Mode, QuantConfig, Rotation};

mod common;
use common::{Rng, build_linear, f32s, fp32_linear, fq, tensor_bits};

#[test]
fn the_block_is_orthogonal_with_and_without_signs() {
    for r in [
        Rotation {
            size: 32,
            seed: None,
        },
        Rotation {
            size: 64,
            seed: Some(7),
        },
    ] {
        let b = r.size;
        let m = r.block();
        // Sylvester: row 0 is all +1/√b (times its sign); entries are ±1/√b.
        for v in &m {
            assert!((v.abs() - 1.0 / (b as f32).sqrt()).abs() < 1e-7);
        }
        for i in 0..b {
            for j in 0..b {
                let dot: f64 = (0..b)
                    .map(|k| f64::from(m[i * b + k]) * f64::from(m[j * b + k]))
                    .sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-6, "{r:?} ({i}, {j}): {dot}");
            }
        }
        let x = Rng(3).tensor(&[5, 4 * b], 2.0);
        let back = r.unrotate(&r.rotate(&x).unwrap()).unwrap();
        for (a, b) in f32s(&x).iter().zip(f32s(&back)) {
            assert!((a - b).abs() < 1e-5, "{a} {b}");
        }
    }
    // Seeded signs flip some rows; the same seed gives the same matrix.
    let signed = Rotation {
        size: 16,
        seed: Some(1),
    };
    let plain = Rotation {
        size: 16,
        seed: None,
    };
    assert_ne!(signed.block(), plain.block());
    assert_eq!(signed.block(), signed.block());
}

#[test]
fn a_rotated_linear_layer_quantizes_x_r_and_w_r() {
    let mut r = Rng(21);
    let (wt, bt, x) = (
        r.tensor(&[6, 64], 0.5),
        r.tensor(&[6], 0.1),
        r.tensor(&[3, 64], 2.0),
    );
    let yaml = "defaults: { weight: int4, input: int8, rotation: { size: 32, seed: 5 } }";
    let (op, table) = build_linear(yaml, &wt, &bt);
    let rot = Rotation {
        size: 32,
        seed: Some(5),
    };
    let want = candle_nn::Linear::new(fq("int4", &rot.rotate(&wt).unwrap()), Some(bt.clone()))
        .forward(&fq("int8", &rot.rotate(&x).unwrap()))
        .unwrap();
    assert_eq!(tensor_bits(&op.forward1(&x).unwrap()), tensor_bits(&want));
    assert!(
        table.explain().contains("hadamard 32 (signs seed 5)"),
        "{}",
        table.explain()
    );
    // FP32: candle's layer, no rotation.
    table.set_mode(Mode::Fp32);
    assert_eq!(
        tensor_bits(&op.forward1(&x).unwrap()),
        tensor_bits(&fp32_linear(&wt, &bt, &x))
    );
    // Rotation alone leaves the layer's function unchanged, up to f32 rounding.
    let (op, _) = build_linear("defaults: { rotation: { size: 64 } }", &wt, &bt);
    let y = f32s(&op.forward1(&x).unwrap());
    let plain = f32s(&candle_nn::Linear::new(wt, Some(bt)).forward(&x).unwrap());
    for (a, b) in y.iter().zip(&plain) {
        assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} {b}");
    }
}

#[test]
fn rotation_spreads_an_outlier_channel() {
    // Activations with one channel 100x the others, per-token int4: without rotation the
    // outlier takes the whole range of its token; rotated, the error drops.
    let mut r = Rng(22);
    let mut xv = f32s(&r.tensor(&[64, 128], 1.0));
    for row in xv.chunks_mut(128) {
        row[17] *= 100.0;
    }
    let x = Tensor::from_vec(xv, (64, 128), &Device::Cpu).unwrap();
    let (wt, bt) = (r.tensor(&[32, 128], 0.1), r.tensor(&[32], 0.0));
    let exact = f32s(&fp32_linear(&wt, &bt, &x));
    let err = |yaml: &str| {
        let (op, _) = build_linear(yaml, &wt, &bt);
        let y = f32s(&op.forward1(&x).unwrap());
        y.iter()
            .zip(&exact)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
    };
    let input = "{ format: int4, granularity: { kind: whole_axis, axis: -1 } }";
    let plain = err(&format!("defaults: {{ input: {input} }}"));
    let rotated = err(&format!(
        "defaults: {{ input: {input}, rotation: {{ size: 128, seed: 1 }} }}"
    ));
    assert!(rotated < 0.25 * plain, "rotated {rotated} plain {plain}");
}

#[test]
fn config_errors() {
    let err = |yaml: &str| {
        QuantConfig::from_yaml(yaml, "rot.yaml")
            .unwrap_err()
            .to_string()
    };
    let e = err("defaults:\n  rotation: { size: 48 }\n");
    assert!(
        e.contains("rot.yaml:2") && e.contains("power of two"),
        "{e}"
    );
    let e = err("defaults:\n  rotation: hadamard\n");
    assert!(e.contains("rot.yaml:2") && e.contains("rotation"), "{e}");
    // A width the block does not divide: the layer says so.
    let mut r = Rng(23);
    let (op, _) = build_linear(
        "defaults: { rotation: { size: 32 } }",
        &r.tensor(&[4, 48], 1.0),
        &r.tensor(&[4], 1.0),
    );
    let e = op
        .forward1(&r.tensor(&[2, 48], 1.0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`l`") && e.contains("divisible by 32"), "{e}");
}

/// A matmul op named `attn.scores` built with `yaml`.
fn build_matmul(yaml: &str) -> common::Built {
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &Device::Cpu);
    common::build_op(
        vb,
        yaml,
        "matmul",
        "attn.scores",
        lowbit_nn::OpParams::Matmul,
    )
}

#[test]
fn a_rotated_matmul_turns_the_left_operand_by_r_and_the_right_by_r_transposed() {
    // Q·Kᵀ of attention: a [2, 3, 5, 32] and kᵀ [2, 3, 32, 7]; the contraction axis (32) turns.
    let mut r = Rng(24);
    let (a, b) = (r.tensor(&[2, 3, 5, 32], 2.0), r.tensor(&[2, 3, 32, 7], 2.0));
    let rot = Rotation {
        size: 16,
        seed: Some(9),
    };
    let yaml = "ops: { matmul: { input: int8, rotation: { size: 16, seed: 9 } } }";
    let (op, table) = build_matmul(yaml);
    // Rᵀ b = (bᵀ R)ᵀ, built here from the rotation's own rotate.
    let bt = b.transpose(2, 3).unwrap();
    let rb = rot
        .rotate(&bt)
        .unwrap()
        .transpose(2, 3)
        .unwrap()
        .contiguous()
        .unwrap();
    let want = fq("int8", &rot.rotate(&a).unwrap())
        .broadcast_matmul(&fq("int8", &rb))
        .unwrap();
    assert_eq!(
        tensor_bits(&op.forward(&[&a, &b]).unwrap()),
        tensor_bits(&want)
    );
    assert!(table.explain().contains("hadamard 16 (signs seed 9)"));
    // Rotation alone: a·b up to rounding; FP32: the plain product.
    let (op, table) = build_matmul("ops: { matmul: { rotation: { size: 32 } } }");
    let plain = f32s(&a.broadcast_matmul(&b).unwrap());
    let y = f32s(&op.forward(&[&a, &b]).unwrap());
    for (u, v) in y.iter().zip(&plain) {
        assert!((u - v).abs() < 1e-4 * (1.0 + v.abs()), "{u} {v}");
    }
    table.set_mode(Mode::Fp32);
    assert_eq!(
        tensor_bits(&op.forward(&[&a, &b]).unwrap()),
        tensor_bits(&a.broadcast_matmul(&b).unwrap())
    );
    // The inverse of each operand's turn, as the evaluator uses it.
    let lq = op.quant();
    table.set_mode(Mode::Quantize);
    for (i, x) in [&a, &b].into_iter().enumerate() {
        let back = lq
            .input_back_at(&lq.transform_input_at(x, i).unwrap(), i)
            .unwrap();
        for (u, v) in f32s(&back).iter().zip(f32s(x)) {
            assert!((u - v).abs() < 1e-5 * (1.0 + v.abs()), "input {i}: {u} {v}");
        }
    }
}

#[test]
fn matmuls_take_a_rotation_from_ops_or_layers_not_from_defaults() {
    let c = |yaml: &str| {
        QuantConfig::from_yaml(yaml, "rot.yaml")
            .unwrap()
            .compile(&["linear", "matmul"])
            .unwrap()
    };
    let w = lowbit_nn::OpClass::Structural;
    let r = Some(Rotation {
        size: 32,
        seed: None,
    });
    let d = c("defaults: { rotation: { size: 32 } }");
    assert_eq!(
        d.resolve("fc", "linear", lowbit_nn::OpClass::Weighted)
            .rotation,
        r
    );
    assert_eq!(d.resolve("scores", "matmul", w).rotation, None);
    let o = c("ops: { matmul: { rotation: { size: 32 } } }");
    assert_eq!(o.resolve("scores", "matmul", w).rotation, r);
    let l = c("layers: [ { pattern: '*.scores', rotation: { size: 32 } } ]");
    assert_eq!(l.resolve("a.scores", "matmul", w).rotation, r);
    assert_eq!(l.resolve("a.context", "matmul", w).rotation, None);
}

#[test]
fn rotation_spreads_an_outlier_of_the_contraction_axis_in_a_matmul() {
    // Keys with one channel of the head dimension 50x the others (the K outliers QuaRot
    // removes), per-tensor int8 on both operands: rotated, the product's error drops.
    let mut r = Rng(25);
    let a = r.tensor(&[4, 16, 64], 1.0);
    let mut bv = f32s(&r.tensor(&[4, 64, 16], 1.0));
    for (i, v) in bv.iter_mut().enumerate() {
        if (i / 16) % 64 == 11 {
            *v *= 50.0;
        }
    }
    let b = Tensor::from_vec(bv, (4, 64, 16), &Device::Cpu).unwrap();
    let exact = f32s(&a.broadcast_matmul(&b).unwrap());
    let err = |yaml: &str| {
        let (op, _) = build_matmul(yaml);
        let y = f32s(&op.forward(&[&a, &b]).unwrap());
        y.iter()
            .zip(&exact)
            .map(|(u, v)| f64::from(u - v).powi(2))
            .sum::<f64>()
    };
    let plain = err("ops: { matmul: { input: { format: int8 } } }");
    let rotated =
        err("ops: { matmul: { input: { format: int8 }, rotation: { size: 64, seed: 2 } } }");
    assert!(rotated < 0.25 * plain, "rotated {rotated} plain {plain}");
}
