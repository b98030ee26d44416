//! torchvision's ResNet: the tensor names and shapes equal torchvision's state dicts, the
//! forward pass on a synthetic checkpoint equals torchvision's (golden logits from
//! `scripts/golden/torchvision_timm_keys.py`), checkpoint errors name the tensor, and a
//! config's `layers` patterns address layers by their checkpoint names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod synthetic;

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use lowbit_models::resnet::{BlockKind, ResNet, ResNetConfig, is_bookkeeping};
use lowbit_models::{ModelError, TensorSpec};
use lowbit_nn::{QuantConfig, QuantModel};

/// torchvision's keys without the bookkeeping the loader ignores; checks there is some.
fn torchvision_keys(file: &str) -> BTreeMap<String, Vec<usize>> {
    let all = synthetic::golden_keys(file);
    let kept: BTreeMap<String, Vec<usize>> = all
        .iter()
        .filter(|(k, _)| !is_bookkeeping(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let ignored: Vec<&String> = all.keys().filter(|k| is_bookkeeping(k)).collect();
    assert!(!ignored.is_empty());
    assert!(ignored.iter().all(|k| all[*k].is_empty()), "scalars");
    kept
}

#[test]
fn resnet18_tensor_specs_equal_torchvision_state_dict() {
    let specs = ResNet::tensor_specs(&ResNetConfig::resnet18()).unwrap();
    let want = torchvision_keys("torchvision_resnet18_keys.json");
    assert_eq!(synthetic::spec_map(&specs), want);
    assert_eq!(want.len(), 102);
    assert_eq!(want["layer2.0.downsample.0.weight"], [128, 64, 1, 1]);
    assert_eq!(want["fc.weight"], [1000, 512]);
}

#[test]
fn resnet50_tensor_specs_equal_torchvision_state_dict() {
    let specs = ResNet::tensor_specs(&ResNetConfig::resnet50()).unwrap();
    let want = torchvision_keys("torchvision_resnet50_keys.json");
    assert_eq!(synthetic::spec_map(&specs), want);
    assert_eq!(want.len(), 267);
    // v1.5: the stride-2 convolution of a downsampling Bottleneck is the 3×3 `conv2`.
    assert_eq!(want["layer2.0.conv1.weight"], [128, 256, 1, 1]);
    assert_eq!(want["layer2.0.conv2.weight"], [128, 128, 3, 3]);
    assert_eq!(want["layer1.0.downsample.0.weight"], [256, 64, 1, 1]);
    assert_eq!(want["fc.weight"], [1000, 2048]);
}

#[test]
fn resnet34_has_resnet18s_tensors_and_more_blocks() {
    let r18 = synthetic::spec_map(&ResNet::tensor_specs(&ResNetConfig::resnet18()).unwrap());
    let r34 = synthetic::spec_map(&ResNet::tensor_specs(&ResNetConfig::resnet34()).unwrap());
    assert!(r18.iter().all(|(k, v)| r34.get(k) == Some(v)));
    assert!(r34.contains_key("layer3.5.bn2.running_var"));
    assert!(!r34.contains_key("layer3.6.conv1.weight"));
}

fn config_of(case: &serde_json::Value) -> ResNetConfig {
    let c = &case["config"];
    let layers = synthetic::usizes(&c["layers"]);
    ResNetConfig {
        block: match c["block"].as_str().unwrap() {
            "basic" => BlockKind::Basic,
            "bottleneck" => BlockKind::Bottleneck,
            b => panic!("block {b}"),
        },
        layers: [layers[0], layers[1], layers[2], layers[3]],
        num_classes: c["num_classes"].as_u64().unwrap() as usize,
    }
}

/// Rebuilds the synthetic checkpoint of golden case `name`, saves it (with PyTorch's
/// `num_batches_tracked` scalars), loads it through `ResNet::load` and compares the logits
/// with PyTorch's.
fn forward_matches_torchvision(name: &str) {
    let golden = synthetic::golden("resnet_forward_golden.json");
    let case = &golden[name];
    let cfg = config_of(case);
    let t0 = Instant::now();
    let specs = ResNet::tensor_specs(&cfg).unwrap();
    let tensors = synthetic::checkpoint(&specs, Some(&case["sums"]), true);
    let dir = tempfile::tempdir().unwrap();
    let file = synthetic::save(&tensors, dir.path(), "resnet.safetensors");
    drop(tensors);
    let t1 = Instant::now();
    let model = ResNet::load(&file, &cfg, &QuantConfig::default(), &Device::Cpu).unwrap();
    let t2 = Instant::now();
    let x = synthetic::input(&synthetic::usizes(&case["input_shape"]));
    let logits = model.forward(&x).unwrap();
    let t3 = Instant::now();
    assert_eq!(logits.dims(), [2, cfg.num_classes]);
    let got: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    let want = synthetic::f64s(&case["logits_f64"]);
    let (rel, abs) = synthetic::compare(&got, &want);
    let torch_f32 = case["torch_f32_vs_f64_max_abs"].as_f64().unwrap();
    println!(
        "{name}: max |Δ| vs PyTorch f64 {abs:.3e} (PyTorch f32: {torch_f32:.3e}), max |Δ|/(1+|y|) {rel:.3e}; \
         checkpoint {:.2} s, load {:.2} s, forward {:.2} s",
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        (t3 - t2).as_secs_f64()
    );
    // The reference is PyTorch in f64 on the same f32 weights, so what is left is f32
    // rounding: PyTorch's own f32 logits are within 1.2e-7 of it (the fixture's
    // `torch_f32_vs_f64_max_abs`), these within 1.1e-7 (measured). 1e-6 (8 f32 ulps at 1)
    // leaves room for another summation order (other SIMD widths, thread counts), while the
    // two images' logits differ by more than 1e-3, so a wrong name, layout, stride, padding
    // or epsilon is far above it.
    assert!(rel < 1e-6, "{name}: {got:?} vs {want:?}");
    // The two images give different logits (the input matters).
    let d: f64 = (0..cfg.num_classes)
        .map(|j| (want[j] - want[j + cfg.num_classes]).abs())
        .fold(0.0, f64::max);
    assert!(d > 1e-3, "{d}");
}

#[test]
fn resnet18_forward_matches_torchvision() {
    forward_matches_torchvision("resnet18_c10");
}

#[test]
fn bottleneck_resnet_forward_matches_torchvision() {
    forward_matches_torchvision("bottleneck_1111_c10");
}

/// A small ResNet (one BasicBlock per stage) for the error tests.
fn small() -> ResNetConfig {
    ResNetConfig {
        layers: [1, 1, 1, 1],
        ..ResNetConfig::resnet18().with_num_classes(3)
    }
}

fn load_edited(edit: impl FnOnce(&mut std::collections::HashMap<String, Tensor>)) -> ModelError {
    let cfg = small();
    let t = synthetic::checkpoint(&ResNet::tensor_specs(&cfg).unwrap(), None, true);
    synthetic::load_edited(t, edit, |file| {
        ResNet::load(file, &cfg, &QuantConfig::default(), &Device::Cpu)
    })
}

#[test]
fn checkpoint_errors_name_the_tensor_and_its_shape() {
    let e = load_edited(|t| {
        t.remove("layer3.0.downsample.1.running_var");
    });
    synthetic::assert_missing(&e, "layer3.0.downsample.1.running_var", &[256]);
    assert!(e.to_string().contains("[256]"), "{e}");

    let e = load_edited(|t| {
        t.insert(
            "layer1.0.conv2.weight".into(),
            Tensor::zeros((64, 64, 1, 1), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    synthetic::assert_misshaped(
        &e,
        "layer1.0.conv2.weight",
        &[64, 64, 3, 3],
        &[64, 64, 1, 1],
    );

    let e = load_edited(|t| {
        t.insert(
            "layer1.1.conv1.weight".into(),
            Tensor::zeros((64, 64, 3, 3), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    synthetic::assert_unused(&e, "layer1.1.conv1.weight");
}

#[test]
fn a_checkpoint_of_another_depth_or_width_is_refused() {
    // resnet18 weights into a resnet34: the missing blocks are named.
    let dir = tempfile::tempdir().unwrap();
    let t = synthetic::checkpoint(&ResNet::tensor_specs(&small()).unwrap(), None, false);
    let file = synthetic::save(&t, dir.path(), "small.safetensors");
    let cfg = ResNetConfig {
        layers: [2, 1, 1, 1],
        ..small()
    };
    match ResNet::load(&file, &cfg, &QuantConfig::default(), &Device::Cpu).unwrap_err() {
        ModelError::MissingTensor { name, .. } => assert!(name.starts_with("layer1.1."), "{name}"),
        e => panic!("{e}"),
    }
    // ...with another number of classes: `fc` is mis-shaped.
    let cfg = small().with_num_classes(5);
    match ResNet::load(&file, &cfg, &QuantConfig::default(), &Device::Cpu).unwrap_err() {
        ModelError::TensorShape { name, expected, .. } => {
            assert_eq!(name, "fc.weight");
            assert_eq!(expected, [5, 512]);
        }
        e => panic!("{e}"),
    }
    // A missing file names how to export one.
    let e = ResNet::load(
        dir.path().join("nope"),
        &small(),
        &QuantConfig::default(),
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(
        matches!(&e, ModelError::MissingFile { setup, .. } if setup.contains("save_file")),
        "{e}"
    );
}

#[test]
fn bad_configs_and_inputs_are_errors() {
    let cfg = ResNetConfig {
        layers: [2, 0, 2, 2],
        ..ResNetConfig::resnet18()
    };
    assert!(matches!(
        ResNet::tensor_specs(&cfg),
        Err(ModelError::Invalid(_))
    ));
    let cfg = ResNetConfig::resnet18().with_num_classes(0);
    assert!(matches!(
        ResNet::tensor_specs(&cfg),
        Err(ModelError::Invalid(_))
    ));

    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let model = ResNet::from_var_builder(vb, &small(), &QuantConfig::default()).unwrap();
    let grey = Tensor::zeros((1, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let e = model.logits(&grey).unwrap_err();
    assert!(e.to_string().contains("[1, 1, 32, 32]"), "{e}");
    assert!(model.forward(&grey).is_err());
}

fn explain(cfg: &ResNetConfig, yaml: &str) -> Vec<lowbit_nn::ExplainRow> {
    let config = QuantConfig::from_yaml(yaml, "test.yaml").unwrap();
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let model = ResNet::from_var_builder(vb, cfg, &config).unwrap();
    model.layers().explain_rows()
}

#[test]
fn layer_patterns_address_torchvision_names() {
    let cfg = ResNetConfig::resnet50();
    let base = explain(&cfg, "defaults: { weight: int8 }\n");
    let rows = explain(
        &cfg,
        "defaults: { weight: int8 }\nlayers:\n  - pattern: \"layer4.*\"\n    weight: mxfp4\n    input: fp8_e4m3\n",
    );
    assert_eq!(base.len(), rows.len());
    let int8 = &base[0].weight;
    let mxfp4 = &rows
        .iter()
        .find(|r| r.layer == "layer4.0.conv1")
        .unwrap()
        .weight;
    let fp8 = &rows
        .iter()
        .find(|r| r.layer == "layer4.2.add")
        .unwrap()
        .input;
    assert!(
        int8 != "-" && mxfp4 != "-" && fp8 != "-" && int8 != mxfp4,
        "{int8} {mxfp4}"
    );
    let mut changed = 0;
    for (b, r) in base.iter().zip(&rows) {
        assert_eq!(b.layer, r.layer);
        if r.layer.starts_with("layer4.") {
            changed += 1;
            assert_eq!(&r.input, fp8, "{}", r.layer);
            if b.weight != "-" {
                assert_eq!(&r.weight, mxfp4, "{}", r.layer);
            }
        } else {
            assert_eq!(
                (&b.weight, &b.input, &b.output),
                (&r.weight, &r.input, &r.output),
                "{}",
                r.layer
            );
            assert_eq!(r.input, "-");
        }
    }
    // layer4: 3 Bottlenecks × (3 conv + 3 bn + 3 relu + add) + the shortcut's conv and bn.
    assert_eq!(changed, 32);
    // Layer names are the checkpoint names (plus the tensor-free relu/add/pool layers).
    let specs: Vec<TensorSpec> = ResNet::tensor_specs(&cfg).unwrap();
    for r in &rows {
        let has_tensors = specs
            .iter()
            .any(|s| s.name.starts_with(&format!("{}.", r.layer)));
        assert_eq!(has_tensors, r.weight != "-", "{}", r.layer);
    }
    // A pattern that matches nothing is an error (a typo does not silently quantize nothing).
    let config = QuantConfig::from_yaml(
        "layers:\n  - pattern: \"layer5.*\"\n    weight: int8\n",
        "typo.yaml",
    )
    .unwrap();
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    assert!(ResNet::from_var_builder(vb, &cfg, &config).is_err());
}

#[test]
fn maxpool_quantizes_its_unpadded_input() {
    // Taps record what each layer saw: `maxpool` gets the 16×16 map and gives 8×8.
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let model = ResNet::from_var_builder(vb, &small(), &QuantConfig::default()).unwrap();
    let x = synthetic::input(&[1, 3, 32, 32]);
    model.context().set_taps(true);
    model.forward(&x).unwrap();
    let taps = model.context().take_taps();
    let pool = &taps["maxpool"];
    assert_eq!(pool.inputs[0].dims(), [1, 64, 16, 16]);
    assert_eq!(pool.output.dims(), [1, 64, 8, 8]);
}
