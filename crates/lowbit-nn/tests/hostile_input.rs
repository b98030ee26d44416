//! Hostile configs and scales files get errors, never panics: YAML with values swapped for
//! others of every kind, and scales files whose shapes, values and names lie. Every call runs
//! under `catch_unwind`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use candle_core::{Device, Tensor};
use lowbit_nn::{Mode, StaticScales};
use proptest::prelude::*;

mod common;
use common::{Rng, build_linear};

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

const BASE: &str = "defaults:
  weight: { format: e2m1, granularity: { kind: per_block, axis: -1, size: 16 }, scale: { kind: nvfp4, block_rounding: nearest } }
  input: { format: int8, granularity: { kind: per_tensor }, mode: static }
  accumulator: { format: e5m10, rounding: toward_zero, chunk: 16 }
  rotation: { size: 16, seed: 3 }
  smoothing: 0.5
layers:
  - pattern: l
    output: fp8_e4m3
skip: []
";

/// Values a YAML scalar may be replaced with: plausible ones (so that many mutants build and
/// run) and hostile ones.
const SCALARS: &[&str] = &[
    "1",
    "16",
    "7",
    "0.5",
    "e4m3",
    "int4",
    "nvfp4",
    "mxfp4",
    "e8m0",
    "per_tensor",
    "per_channel",
    "l*",
    "0",
    "-1",
    "1e40",
    "-0.0",
    ".nan",
    ".inf",
    "18446744073709551616",
    "null",
    "~",
    "[]",
    "{}",
    "\"\"",
    "e9m9",
    "int0",
    "int64",
    "per_tile",
    "{ rows: 0, cols: 3 }",
    "[1, [2, [3]]]",
    "true",
    "'*'",
    "\"[\"",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn mutated_configs_are_errors_or_models(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0..SCALARS.len()), 1..3),
    ) {
        // Replace the value after some `key:` occurrences (or inside a flow mapping).
        let mut text = BASE.to_string();
        for (at, v) in &edits {
            // Leaf values only (not `key: {` or `key: [`), so that the YAML stays YAML.
            let colons: Vec<usize> = text
                .match_indices(": ")
                .map(|(i, _)| i)
                .filter(|&i| !matches!(text.as_bytes().get(i + 2), Some(b'{' | b'[')))
                .collect();
            if colons.is_empty() {
                break;
            }
            let i = colons[at.index(colons.len())] + 2;
            let end = text[i..]
                .find([',', '}', '\n'])
                .map_or(text.len(), |e| i + e);
            text.replace_range(i..end, SCALARS[*v]);
        }
        let mut r = Rng(5);
        let (wt, bt) = (r.tensor(&[4, 32], 1.0), r.tensor(&[4], 1.0));
        let x = r.tensor(&[3, 32], 1.0);
        no_panic(&text, || {
            if lowbit_nn::QuantConfig::from_yaml(&text, "fuzz.yaml").is_err() {
                return;
            }
            // build_linear unwraps what QBuilder returns: build through the same calls here.
            let config = lowbit_nn::QuantConfig::from_yaml(&text, "fuzz.yaml").unwrap();
            let weights: std::collections::HashMap<String, Tensor> =
                [("l.weight".to_string(), wt.clone()), ("l.bias".to_string(), bt.clone())].into();
            let vb = candle_nn::VarBuilder::from_tensors(weights, candle_core::DType::F32, &Device::Cpu);
            let Ok(b) = lowbit_nn::QBuilder::new(vb, &config, lowbit_nn::Registry::default()) else {
                return;
            };
            let Ok(op) = b.op("linear", "l", lowbit_nn::OpParams::Linear { in_dim: 32, out_dim: 4, bias: true }) else {
                return;
            };
            let Ok(table) = b.finish() else { return };
            let _ = table.explain();
            let _ = table.begin_observation();
            let _ = op.forward1(&x);
            let _ = table.finish_observation();
            let _ = table.begin_calibration(lowbit_quant::Method::Max);
            let _ = op.forward1(&x);
            let _ = table.freeze();
            table.set_mode(Mode::Quantize);
            let _ = op.forward1(&x);
        });
    }
}

/// Scales files that lie about shapes, values and layers.
#[test]
fn lying_scales_files_are_errors() {
    let mut r = Rng(6);
    let (wt, bt) = (r.tensor(&[4, 32], 1.0), r.tensor(&[4], 1.0));
    let x = r.tensor(&[3, 32], 1.0);
    let yaml = "defaults: { weight: int8, input: { format: int8, granularity: { kind: per_channel, axis: -1 }, mode: static }, smoothing: 0.5 }";
    let (op, table) = build_linear(yaml, &wt, &bt);
    table.begin_observation().unwrap();
    op.forward1(&x).unwrap();
    table.finish_observation().unwrap();
    table.begin_calibration(lowbit_quant::Method::Max).unwrap();
    op.forward1(&x).unwrap();
    let good = serde_json::to_value(table.freeze().unwrap()).unwrap();
    let text = good.to_string();
    let edits: Vec<(&str, &str)> = vec![
        ("[32]", "[0]"),
        ("[32]", "[18446744073709551615]"),
        ("[32]", "[4, 8]"),
        ("\"values\":[", "\"values\":[null,"),
        ("\"factors\":[", "\"factors\":[-1,"),
        ("\"factors\":[", "\"factors\":[1e39,"),
        ("\"alpha\":0.5", "\"alpha\":0.25"),
        ("\"l\"", "\"m\""),
        ("\"input\"", "\"weight\""),
        ("\"version\":1", "\"version\":\"x\""),
    ];
    for (from, to) in edits {
        assert!(text.contains(from), "{from} in {text}");
        let bad = text.replacen(from, to, 1);
        no_panic(&format!("{from} -> {to}"), || {
            let Ok(s) = serde_json::from_str::<StaticScales>(&bad) else {
                return;
            };
            let (op, table) = build_linear(yaml, &wt, &bt);
            if table.load_scales(&s).is_ok() {
                table.set_mode(Mode::Quantize);
                let _ = op.forward1(&x);
            }
        });
    }
}

/// GPTQ layer names in a scales file become file names: ones that would leave the directory
/// are refused.
#[test]
fn gptq_names_cannot_leave_their_directory() {
    let dir = std::env::temp_dir().join(format!("lowbit-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["../x", "a/b", ".hidden", ""] {
        let path = dir.join("s.scales.json");
        let doc = serde_json::json!({ "version": 1, "layers": {}, "gptq_layers": [name] });
        std::fs::write(&path, doc.to_string()).unwrap();
        let e = no_panic(name, || StaticScales::load(&path))
            .unwrap_err()
            .to_string();
        assert!(e.contains("file name"), "{name}: {e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
