//! The `rotation` setting: block-Hadamard rotation of a linear layer's input and weight before
//! they are quantized.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{Device, Module, Tensor};
use lowbit_nn::{Mode, QuantConfig, Rotation};

mod common;
use common::{Rng, build_linear, f32s, fq, tensor_bits};

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
        tensor_bits(
            &candle_nn::Linear::new(wt.clone(), Some(bt.clone()))
                .forward(&x)
                .unwrap()
        )
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
    let exact = f32s(
        &candle_nn::Linear::new(wt.clone(), Some(bt.clone()))
            .forward(&x)
            .unwrap(),
    );
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
