//! `examples/train_fashion_mnist.rs` itself runs one short epoch (so the example cannot rot):
//! the committed test split stands in for the training split, on 300 images.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use lowbit::models::FashionCnn;
use lowbit::nn::QuantConfig;

/// The example binary `cargo test` builds next to this test's binary.
fn example() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.join("examples");
    let p = dir.join(format!(
        "train_fashion_mnist{}",
        std::env::consts::EXE_SUFFIX
    ));
    p.is_file().then_some(p)
}

#[test]
fn the_training_example_runs_one_short_epoch() {
    let Some(bin) = example() else {
        eprintln!("skipped: examples/train_fashion_mnist was not built next to this test");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let committed = lowbit::models::data::committed_dir();
    for (from, to) in [
        ("t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz"),
        ("t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    ] {
        std::fs::copy(committed.join(from), tmp.path().join(to)).unwrap();
    }
    let out = tmp.path().join("w.safetensors");
    let o = Command::new(bin)
        .args(["--epochs", "1", "--limit", "300", "--batch-size", "100"])
        .arg("--data-dir")
        .arg(tmp.path())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("saved"), "{stdout}");
    // The weights it saved load into the model with every tensor checked.
    FashionCnn::load(&out, &QuantConfig::default(), &candle_core::Device::Cpu).unwrap();
}
