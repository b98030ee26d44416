//! The training loop (shared with `examples/train_fashion_mnist.rs`) on a small subset of the
//! committed test split, so it cannot rot: one short epoch lowers the loss, batch norm updates
//! its running statistics, and the saved weights reload to the same model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod synthetic;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use lowbit_models::{FashionCnn, FashionMnist, fashion};
use lowbit_nn::{QuantConfig, QuantModel};

fn var(vm: &candle_nn::VarMap, name: &str) -> Tensor {
    vm.data().lock().unwrap()[name].as_tensor().copy().unwrap()
}

#[test]
fn one_short_epoch_lowers_the_loss_and_saves() {
    let dev = Device::Cpu;
    let data = FashionMnist::committed_test(Some(1024)).unwrap();
    let (model, vm) = FashionCnn::new_trainable(&QuantConfig::default(), 0, &dev).unwrap();
    let trainable = FashionCnn::trainable_vars(&vm).unwrap();
    assert_eq!(
        trainable.len(),
        6 + 6 * 2 + 2,
        "6 convs, 6 BN γ and β, fc weight and bias"
    );
    let mut opt = AdamW::new(
        trainable,
        ParamsAdamW {
            lr: 3e-3,
            ..Default::default()
        },
    )
    .unwrap();

    // The loss with batch statistics (as trained): after a few dozen steps the running
    // statistics still hold much of their initial values (momentum 0.1), so eval mode is not
    // yet a fair measure.
    let batch_stat_loss = || {
        model.layers().context().set_training(true);
        let s = fashion::evaluate(&model, data.batches(256, &dev).unwrap()).unwrap();
        model.layers().context().set_training(false);
        s
    };
    let before = batch_stat_loss();
    let rm0 = var(&vm, "layer2.0.bn1.running_mean");
    let rv0 = var(&vm, "bn1.running_var");
    let w0 = var(&vm, "layer1.0.conv1.weight");
    let stats = fashion::train_epoch(
        &model,
        &mut opt,
        data.shuffled_batches(32, 1, &dev).unwrap(),
        &|_| 3e-3,
    )
    .unwrap();
    assert_eq!((stats.steps, stats.images), (32, 1024));
    assert!(
        !model.layers().context().is_training(),
        "training flag cleared"
    );
    let after = batch_stat_loss();
    println!(
        "loss {:.4} → {:.4} (train {:.4}), top-1 {:.3} → {:.3}, {:.1} s",
        before.mean_loss,
        after.mean_loss,
        stats.mean_loss,
        before.accuracy,
        after.accuracy,
        stats.seconds
    );
    assert!(
        after.mean_loss < 0.75 * before.mean_loss,
        "{before:?} → {after:?}"
    );
    assert!(after.accuracy > 0.4, "{after:?}");

    // Candle's batch norm updated the running statistics stored in the VarMap in place.
    let rm1 = var(&vm, "layer2.0.bn1.running_mean");
    let moved = synthetic::max_abs_diff(&rm1, &rm0);
    assert!(moved > 1e-3, "running mean moved by {moved}");
    // bn1's running variance decays from 1 towards the small batch variance.
    let rv1: Vec<f32> = var(&vm, "bn1.running_var").to_vec1().unwrap();
    assert!(rv1.iter().all(|&v| v < 0.5), "{rv1:?} (was {rv0})");
    let dw = synthetic::max_abs_diff(&var(&vm, "layer1.0.conv1.weight"), &w0);
    assert!(dw > 0.0);

    // Saved weights reload (checked) into the same model.
    let p = std::env::temp_dir().join(format!(
        "lowbit-models-{}-trained.safetensors",
        std::process::id()
    ));
    FashionCnn::save(&vm, &p).unwrap();
    let loaded = FashionCnn::load(&p, &QuantConfig::default(), &dev).unwrap();
    let x = data
        .batches(8, &dev)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .images;
    let a = model.forward(&x).unwrap().to_dtype(DType::F32).unwrap();
    let b = loaded.forward(&x).unwrap();
    assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
}

#[test]
fn initialisation_is_seeded() {
    let dev = Device::Cpu;
    let w = |seed| {
        let (_, vm) = FashionCnn::new_trainable(&QuantConfig::default(), seed, &dev).unwrap();
        var(&vm, "layer1.0.conv1.weight")
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(w(3), w(3));
    assert_ne!(w(3), w(4));
}

#[test]
fn one_qat_step_with_w4_weights_lowers_the_loss_on_a_fixed_batch() {
    // Quantization-aware training: int4 weights (per channel) and int8 inputs in the forward
    // pass, straight-through gradients; one AdamW step on one fixed batch from the committed
    // FP32 weights lowers that batch's loss.
    let dev = Device::Cpu;
    let cfg = QuantConfig::from_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/qat/w4a8_int4.yaml"
    ))
    .unwrap();
    let (model, mut vm) = FashionCnn::new_trainable(&cfg, 0, &dev).unwrap();
    vm.load(lowbit_models::fashion::weights_path()).unwrap();
    let data = FashionMnist::committed_test(Some(128)).unwrap();
    let loss = || {
        model.layers().context().set_training(true);
        let s = fashion::evaluate(&model, data.batches(128, &dev).unwrap()).unwrap();
        model.layers().context().set_training(false);
        s.mean_loss
    };
    let before = loss();
    let w0 = var(&vm, "layer1.0.conv1.weight");
    let mut opt = AdamW::new(
        FashionCnn::trainable_vars(&vm).unwrap(),
        ParamsAdamW {
            lr: 1e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let st = fashion::train_epoch(&model, &mut opt, data.batches(128, &dev).unwrap(), &|_| {
        1e-3
    })
    .unwrap();
    assert_eq!(st.steps, 1);
    let after = loss();
    assert!(after < before, "loss {before} -> {after}");
    // The FP32 weights moved (gradients passed the quantizers).
    let moved = synthetic::max_abs_diff(&var(&vm, "layer1.0.conv1.weight"), &w0);
    assert!(moved > 0.0);
}
