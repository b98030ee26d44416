//! The committed weights on the committed test split: FP32 top-1 over all 10 000 images.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{D, Device};
use lowbit_models::{FashionCnn, FashionMnist, fashion};
use lowbit_nn::{Mode, QuantConfig, QuantModel};

/// The top-1 measured when the weights were committed (9106 / 10000; see docs/models.md).
const MEASURED: f64 = 0.9106;

#[test]
fn committed_weights_reach_091_on_the_test_split() {
    let model = FashionCnn::load_default(&QuantConfig::default(), &Device::Cpu).unwrap();
    model.layers().set_mode(Mode::Fp32);
    let test = FashionMnist::committed_test(None).unwrap();
    let stats = fashion::evaluate(&model, test.batches(500, &Device::Cpu).unwrap()).unwrap();
    println!(
        "FP32 test top-1 {:.4} ({}/{}), loss {:.4}",
        stats.accuracy, stats.correct, stats.images, stats.mean_loss
    );
    assert_eq!(stats.images, 10_000);
    assert!(stats.accuracy >= 0.91, "{stats:?}");
    assert!((stats.accuracy - MEASURED).abs() < 1e-9, "{stats:?}");

    // The softmax layer gives probabilities with the same arg-max.
    let b = test
        .batches(16, &Device::Cpu)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let p = model.probabilities(&b.images).unwrap();
    let sums: Vec<f32> = p.sum(D::Minus1).unwrap().to_vec1().unwrap();
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
    let a: Vec<u32> = p.argmax(D::Minus1).unwrap().to_vec1().unwrap();
    let l: Vec<u32> = model
        .logits(&b.images)
        .unwrap()
        .argmax(D::Minus1)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(a, l);
}
