//! Name mapping of the Fashion-MNIST ResNet: every tensor of the committed checkpoint is used
//! with the shape the model expects, torchvision names, and a missing, mis-shaped or unused
//! tensor is an error naming the tensor (and the expected shape).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod synthetic;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use lowbit_models::fashion::weights_path;
use lowbit_models::{FashionCnn, ModelError, check_tensors};
use lowbit_nn::{QuantConfig, QuantModel};

fn committed() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(weights_path(), &Device::Cpu).unwrap()
}

fn tmp_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("lowbit-models-{}-{name}", std::process::id()))
}

fn load_modified(name: &str, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> ModelError {
    let mut t = committed();
    edit(&mut t);
    let p = tmp_file(name);
    candle_core::safetensors::save(&t, &p).unwrap();
    FashionCnn::load(&p, &QuantConfig::default(), &Device::Cpu).unwrap_err()
}

#[test]
fn every_committed_tensor_is_used_with_its_shape() {
    let specs = FashionCnn::tensor_specs().unwrap();
    let file = committed();
    let spec_names: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let file_names: BTreeSet<&str> = file.keys().map(String::as_str).collect();
    assert_eq!(spec_names, file_names);
    assert_eq!(spec_names.len(), specs.len(), "no tensor asked for twice");
    for s in &specs {
        assert_eq!(file[&s.name].dims(), s.shape.as_slice(), "{}", s.name);
        assert_eq!(file[&s.name].dtype(), DType::F32, "{}", s.name);
    }
    check_tensors(&weights_path(), &file, &specs).unwrap();

    // torchvision's names and shapes.
    let shape = |n: &str| specs.iter().find(|s| s.name == n).unwrap().shape.clone();
    assert_eq!(shape("conv1.weight"), [32, 1, 3, 3]);
    assert_eq!(shape("bn1.running_var"), [32]);
    assert_eq!(shape("layer1.0.conv2.weight"), [32, 32, 3, 3]);
    assert_eq!(shape("layer2.0.conv1.weight"), [64, 32, 3, 3]);
    assert_eq!(shape("layer2.0.downsample.0.weight"), [64, 32, 1, 1]);
    assert_eq!(shape("layer2.0.downsample.1.running_mean"), [64]);
    assert_eq!(shape("layer2.0.bn2.bias"), [64]);
    assert_eq!(shape("fc.weight"), [10, 64]);
    assert_eq!(shape("fc.bias"), [10]);
    let params: usize = specs
        .iter()
        .filter(|s| !s.name.contains("running_"))
        .map(|s| s.shape.iter().product::<usize>())
        .sum();
    assert!(params < 500_000, "{params}");
    assert!(std::fs::metadata(weights_path()).unwrap().len() < 2 << 20);

    // Every tensor belongs to a layer of the built model, named as in the checkpoint.
    let model = FashionCnn::load_default(&QuantConfig::default(), &Device::Cpu).unwrap();
    for s in &specs {
        let layer = s.name.rsplit_once('.').unwrap().0;
        assert!(model.layers().get(layer).is_some(), "{layer}");
    }
    let kinds: BTreeSet<&str> = model
        .layers()
        .layers()
        .iter()
        .map(|l| l.kind.as_str())
        .collect();
    for k in [
        "conv2d",
        "batch_norm2d",
        "relu",
        "add",
        "max_pool2d",
        "adaptive_avg_pool2d",
        "linear",
        "softmax",
    ] {
        assert!(kinds.contains(k), "{k} in {kinds:?}");
    }
}

#[test]
fn missing_tensor_names_it_and_its_shape() {
    let e = load_modified("missing.safetensors", |t| {
        t.remove("layer1.0.bn2.running_var");
    });
    synthetic::assert_missing(&e, "layer1.0.bn2.running_var", &[32]);
    let msg = e.to_string();
    assert!(
        msg.contains("`layer1.0.bn2.running_var`") && msg.contains("[32]"),
        "{msg}"
    );
}

#[test]
fn misshaped_tensor_names_it_and_both_shapes() {
    let e = load_modified("shape.safetensors", |t| {
        t.insert(
            "fc.weight".into(),
            Tensor::zeros((10, 32), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    synthetic::assert_misshaped(&e, "fc.weight", &[10, 64], &[10, 32]);
    let msg = e.to_string();
    assert!(
        msg.contains("`fc.weight`") && msg.contains("expected [10, 64]"),
        "{msg}"
    );
}

#[test]
fn unused_tensor_is_an_error() {
    let e = load_modified("unused.safetensors", |t| {
        t.insert(
            "layer1.0.bn1.num_batches_tracked".into(),
            Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    synthetic::assert_unused(&e, "layer1.0.bn1.num_batches_tracked");
}

#[test]
fn missing_checkpoint_names_the_training_command() {
    let e = FashionCnn::load(
        tmp_file("nope.safetensors"),
        &QuantConfig::default(),
        &Device::Cpu,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("nope.safetensors") && msg.contains("train_fashion_mnist"),
        "{msg}"
    );
}
