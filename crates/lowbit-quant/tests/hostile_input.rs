//! Hostile input gets an error, never a panic: shapes with zero and huge dimensions (products
//! that overflow), mismatched codes and scales, and safetensors files with corrupted bytes,
//! headers and metadata. Every call runs under `catch_unwind`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use lowbit_quant::{QuantSpec, QuantizedTensor, Scales};
use proptest::prelude::*;

fn presets() -> Vec<QuantSpec> {
    QuantSpec::presets().map(|(_, s)| s).collect()
}

/// Dimensions: small, zero, and large enough that products overflow `usize`.
fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..40,
        1 => Just(0usize),
        1 => Just(1usize << 31),
        1 => Just(1usize << 40),
        1 => Just(usize::MAX),
    ]
}

fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what} panicked: {msg}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn from_parts_and_quantize_refuse_bad_shapes(
        spec_i in 0usize..64,
        shape in proptest::collection::vec(dim(), 0..5),
        scale_shape in proptest::collection::vec(dim(), 0..5),
        codes_len in 0usize..64,
        values_len in 0usize..16,
    ) {
        let presets = presets();
        let spec = presets[spec_i % presets.len()];
        let what = format!("{spec} shape {shape:?} scales {scale_shape:?}");
        no_panic(&what, || {
            let scales = Scales {
                shape: scale_shape.clone(),
                values: vec![1.0; values_len],
                zero_points: None,
                tensor_scale: Some(1.0),
            };
            if let Ok(t) = QuantizedTensor::from_parts(spec, shape.clone(), vec![0u8; codes_len], scales) {
                let _ = t.dequantize();
                let _ = t.codes();
                let _ = t.to_safetensors();
            }
            // Quantizing: the source length must be the product; a huge product is refused.
            let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if let Some(n) = n.filter(|&n| n <= 4096) {
                let x = vec![0.5f32; n];
                let _ = spec.quantize(&x, &shape);
                let _ = spec.compute_scales(&x, &shape);
                let mut y = vec![0f32; n];
                let _ = spec.fake_quantize(&x, &shape, &mut y);
            } else {
                let x = vec![0.5f32; 8];
                let _ = spec.quantize(&x, &shape);
                let mut y = vec![0f32; 8];
                let _ = spec.fake_quantize(&x, &shape, &mut y);
            }
        });
    }

    #[test]
    fn corrupted_safetensors_are_errors(
        spec_i in 0usize..64,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
        truncate in any::<bool>(),
    ) {
        let presets = presets();
        let spec = presets[spec_i % presets.len()];
        let x: Vec<f32> = (0..128).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let Ok(t) = spec.quantize(&x, &[4, 32]) else { return Ok(()) };
        let mut bytes = t.to_safetensors().unwrap();
        for (at, v) in &flips {
            let i = at % bytes.len();
            bytes[i] ^= v;
        }
        if truncate {
            bytes.truncate(cut % (bytes.len() + 1));
        }
        no_panic(&format!("{spec} flips {flips:?}"), || {
            if let Ok(t) = QuantizedTensor::from_safetensors(&bytes) {
                let _ = t.dequantize();
            }
        });
    }
}

/// Header edits that keep the file well-formed JSON: shapes and metadata that lie.
#[test]
fn lying_headers_are_errors() {
    let spec: QuantSpec = "mxfp4".parse().unwrap();
    let x: Vec<f32> = (0..128).map(|i| i as f32 * 0.01).collect();
    let bytes = spec
        .quantize(&x, &[4, 32])
        .unwrap()
        .to_safetensors()
        .unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let body = &bytes[8 + n..];
    let edits: Vec<(&str, String)> = vec![
        ("[4,32]", "[0,18446744073709551615,4]".into()),
        ("[4,32]", "[4294967296,4294967296]".into()),
        ("[4,32]", "[4,33]".into()),
        ("[4,32]", "[]".into()),
        ("[4,32]", "[-1,32]".into()),
        ("mxfp4", "nvfp4".into()),
        ("e2m1", "e9m9".into()),
        ("F8_E8M0", "F32".into()),
        ("F8_E8M0", "BOOL".into()),
    ];
    for (from, to) in edits {
        for nth in 0..header.matches(from).count() {
            let mut h = String::new();
            let mut rest = header.as_str();
            for k in 0..=nth {
                let i = rest.find(from).unwrap();
                h.push_str(&rest[..i]);
                h.push_str(if k == nth { &to } else { from });
                rest = &rest[i + from.len()..];
            }
            h.push_str(rest);
            let mut file = (h.len() as u64).to_le_bytes().to_vec();
            file.extend(h.as_bytes());
            file.extend(body);
            no_panic(&format!("{from} -> {to} (#{nth})"), || {
                if let Ok(t) = QuantizedTensor::from_safetensors(&file) {
                    let _ = t.dequantize();
                }
            });
        }
    }
}
