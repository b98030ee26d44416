//! Config resolution (defaults, op kinds, globs in order, skip, first/last layer, quantized
//! ops) on a toy model, and every class of bad config with its error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use lowbit_nn::{Activation, LayerTable, NnError, QBuilder, QuantConfig, Registry};
use lowbit_quant::QuantSpec;

/// A toy model: stem.conv → stem.relu → blocks.{0,1}.{fc, act} → head.
fn toy(yaml: &str) -> Result<LayerTable, NnError> {
    let config = QuantConfig::from_yaml(yaml, "toy.yaml")?;
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let b = QBuilder::new(vb, &config, Registry::default())?;
    let cfg = candle_nn::Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    b.pp("stem").conv2d("conv", 1, 4, 3, cfg, true)?;
    b.pp("stem").activation("relu", Activation::Relu)?;
    for i in 0..2 {
        let blk = b.pp("blocks").pp(i);
        blk.linear("fc", 4, 4)?;
        blk.activation("act", Activation::Gelu)?;
    }
    b.add("residual")?;
    b.linear("head", 4, 2)?;
    b.finish()
}

fn spec_of(t: &LayerTable, layer: &str, role: &str) -> String {
    let row = t
        .explain_rows()
        .into_iter()
        .find(|r| r.layer == layer)
        .unwrap_or_else(|| panic!("no layer {layer}"));
    match role {
        "weight" => row.weight,
        "bias" => row.bias,
        "input" => row.input,
        "output" => row.output,
        _ => unreachable!(),
    }
}

#[test]
fn defaults_ops_and_layer_rules_resolve_in_order() {
    let yaml = r#"
defaults:
  weight: int8
  input: fp8_e4m3
  activation: fp8_e5m2
ops:
  conv2d: { weight: mxfp8_e4m3 }
layers:
  - pattern: "blocks.*.fc"
    weight: int4_g128
  - pattern: "blocks.1.*"
    weight: mxfp4
    input: null
"#;
    let t = toy(yaml).unwrap();
    let int8: lowbit_quant::QuantSpec = "int8".parse().unwrap();
    let show = |s: &str| s.parse::<lowbit_quant::QuantSpec>().unwrap().to_string();
    assert_eq!(
        spec_of(&t, "stem.conv", "weight"),
        show("mxfp8_e4m3"),
        "op-kind default beats the global default"
    );
    assert_eq!(spec_of(&t, "stem.conv", "input"), show("fp8_e4m3"));
    assert_eq!(spec_of(&t, "stem.conv", "output"), "-");
    assert_eq!(
        spec_of(&t, "stem.relu", "input"),
        show("fp8_e5m2"),
        "activation ops take `activation`"
    );
    assert_eq!(spec_of(&t, "stem.relu", "output"), show("fp8_e5m2"));
    assert_eq!(spec_of(&t, "stem.relu", "weight"), "-");
    assert_eq!(spec_of(&t, "blocks.0.fc", "weight"), show("int4_g128"));
    assert_eq!(spec_of(&t, "blocks.0.fc", "input"), show("fp8_e4m3"));
    assert_eq!(
        spec_of(&t, "blocks.1.fc", "weight"),
        show("mxfp4"),
        "the last matching rule wins"
    );
    assert_eq!(
        spec_of(&t, "blocks.1.fc", "input"),
        "-",
        "null turns a quantizer off"
    );
    assert_eq!(
        spec_of(&t, "residual", "input"),
        show("fp8_e4m3"),
        "structural ops quantize inputs"
    );
    assert_eq!(spec_of(&t, "head", "weight"), int8.to_string());
    assert!(t.explain().contains("blocks.1.fc"));
}

#[test]
fn skip_first_last_and_quantized_ops() {
    let yaml = "defaults: { weight: int8, input: fp8_e4m3 }\nskip: [\"blocks.0.*\"]\nquantize_first_layer: false\nquantize_last_layer: false\n";
    let t = toy(yaml).unwrap();
    for l in ["blocks.0.fc", "stem.conv", "head"] {
        assert_eq!(spec_of(&t, l, "weight"), "-", "{l}");
        assert_eq!(spec_of(&t, l, "input"), "-", "{l}");
        assert!(
            t.get(l)
                .unwrap()
                .op
                .quant()
                .quantizers()
                .all(|q| !q.is_active()),
            "{l}"
        );
    }
    assert_ne!(spec_of(&t, "blocks.1.fc", "weight"), "-");
    let yaml = "defaults: { weight: int8, input: fp8_e4m3 }\nquantized_ops: [linear]\n";
    let t = toy(yaml).unwrap();
    assert_eq!(spec_of(&t, "stem.conv", "weight"), "-");
    assert_eq!(spec_of(&t, "residual", "input"), "-");
    assert_ne!(spec_of(&t, "head", "weight"), "-");
}

fn err(yaml: &str) -> String {
    match toy(yaml) {
        Ok(_) => panic!("config accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_configs_name_file_line_and_key() {
    // YAML syntax.
    let e = err("defaults:\n  weight: [int8\n");
    assert!(e.starts_with("toy.yaml:"), "{e}");
    // Unknown key, with its line.
    let e = err("defaults:\n  weight: int8\n  wieght: int4\n");
    assert!(e.contains("toy.yaml:3") && e.contains("wieght"), "{e}");
    let e = err("quantise_first_layer: false\n");
    assert!(e.contains("quantise_first_layer"), "{e}");
    // Invalid spec.
    let e = err("defaults:\n  weight: fp9_e4m3\n");
    assert!(e.contains("toy.yaml:2") && e.contains("fp9_e4m3"), "{e}");
    // Unknown op kind, in ops and in quantized_ops.
    let e = err("ops:\n  convolution: { weight: int8 }\n");
    assert!(
        e.contains("toy.yaml:2") && e.contains("ops.convolution") && e.contains("conv2d"),
        "{e}"
    );
    let e = err("quantized_ops: [linear, dense]\n");
    assert!(
        e.contains("quantized_ops[1]") && e.contains("`dense`"),
        "{e}"
    );
    // A pattern that matches nothing.
    let e = err(
        "defaults: { weight: int8 }\nlayers:\n  - pattern: \"encoder.*\"\n    weight: int4_g128\n",
    );
    assert!(
        e.contains("toy.yaml:3")
            && e.contains("layers[0].pattern")
            && e.contains("matches no layer"),
        "{e}"
    );
    let e = err("skip: [\"blocks.*\", \"decoder\"]\n");
    assert!(e.contains("skip[1]") && e.contains("decoder"), "{e}");
    // A bad glob.
    let e = err("skip: [\"blocks.[\"]\n");
    assert!(e.contains("skip[0]") && e.contains("bad pattern"), "{e}");
}

#[test]
fn unknown_op_kind_in_model_code() {
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let b = QBuilder::new(vb, &QuantConfig::default(), Registry::default()).unwrap();
    let e = b
        .op("lstm", "rnn", lowbit_nn::OpParams::Add)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no op of kind `lstm`") && e.contains("linear"),
        "{e}"
    );
}

#[test]
fn missing_or_misshaped_weights_name_the_tensor() {
    let config = QuantConfig::default();
    let mut ts = std::collections::HashMap::new();
    ts.insert(
        "fc.weight".to_string(),
        candle_core::Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap(),
    );
    let vb = VarBuilder::from_tensors(ts, DType::F32, &Device::Cpu);
    let b = QBuilder::new(vb, &config, Registry::default()).unwrap();
    let e = b.linear("fc", 4, 3).unwrap_err().to_string();
    assert!(e.contains("layer `fc`") && e.contains("fc.weight"), "{e}");
    let e = b.linear_no_bias("other", 4, 3).unwrap_err().to_string();
    assert!(
        e.contains("layer `other`") && e.contains("other.weight"),
        "{e}"
    );
}

#[test]
fn config_round_trips_through_yaml() {
    let yaml = "defaults: { weight: int8, input: null }\nlayers:\n  - pattern: head\n    weight: mxfp4\nquantize_last_layer: false\n";
    let c = QuantConfig::from_yaml(yaml, "a.yaml").unwrap();
    let back = QuantConfig::from_yaml(&c.to_yaml().unwrap(), "b.yaml").unwrap();
    assert_eq!(back.defaults, c.defaults);
    assert_eq!(back.layers, c.layers);
    assert!(!back.quantize_last_layer);
}

#[test]
fn a_format_name_or_a_partial_mapping_is_a_per_tensor_spec() {
    let per_tensor = |f: &str| {
        QuantSpec::builder(f.parse().unwrap())
            .build()
            .unwrap()
            .to_string()
    };
    let t = toy(
        "defaults:\n  weight: float8_e3m4\n  input: { format: e2m1 }\n  output: int8\nlayers:\n  - pattern: head\n    weight: { format: int4, granularity: { kind: per_channel, axis: 0 } }\n",
    )
    .unwrap();
    let fc = "blocks.0.fc";
    assert_eq!(spec_of(&t, fc, "weight"), per_tensor("e3m4"));
    assert_eq!(spec_of(&t, fc, "input"), per_tensor("e2m1"));
    // `int8` is a preset (per channel) before it is a format name.
    let int8 = "int8".parse::<QuantSpec>().unwrap().to_string();
    assert_eq!(spec_of(&t, fc, "output"), int8);
    let head = spec_of(&t, "head", "weight");
    assert!(
        head.starts_with("int4") && head.contains("per channel"),
        "{head}"
    );
    // A misspelt name says both what presets and what formats there are.
    let e = err("defaults:\n  weight: e4m3fm\n");
    assert!(
        e.contains("toy.yaml:2") && e.contains("known presets") && e.contains("format name"),
        "{e}"
    );
}

#[test]
fn a_bad_spec_mapping_names_its_field() {
    // A full spec mapping (the serialized form of a preset) with one bad value.
    let mut c = QuantConfig::default();
    c.defaults.input = lowbit_nn::Setting::Spec("fp8_e4m3".parse().unwrap());
    let yaml = c.to_yaml().unwrap();
    assert!(yaml.contains("asymmetric: false"), "{yaml}");
    let e = err(&yaml.replace("asymmetric: false", "asymmetric: true"));
    assert!(
        e.starts_with("toy.yaml:") && e.to_lowercase().contains("asymmetric"),
        "{e}"
    );
    // A missing field and an unknown one are named too.
    let e = err("defaults:\n  weight:\n    scale: { kind: f32 }\n");
    assert!(e.contains("missing field `format`"), "{e}");
    let e = err("defaults:\n  weight:\n    format: e4m3fn\n    scales: po2\n");
    assert!(e.contains("unknown field `scales`"), "{e}");
}
