//! End-to-end tests of the `lowbit` binary on the ImageNet models: EfficientNet-Lite0 on the
//! fetched photos (skipped without `scripts/fetch-assets.sh photos efficientnet`), ResNet-18
//! with a synthetic checkpoint on a synthetic ImageFolder (always runs; checks the plumbing,
//! not accuracy), and the usage errors of `--checkpoint`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use lowbit_models::{ResNet, ResNetConfig, assets};

mod common;
use common::{json, lowbit, lowbit_env, only_subdir, rows, text};

#[test]
fn efficientnet_lite0_on_the_photos_prints_the_table() {
    let photos = [
        "chelsea.png",
        "coffee.png",
        "rocket.jpg",
        "motorcycle_left.png",
    ];
    if !assets::present("photos", &photos)
        || !assets::present("efficientnet-lite0", &["efficientnet_lite0.safetensors"])
    {
        eprintln!(
            "skipped: EfficientNet-Lite0 weights or photos absent; run `scripts/fetch-assets.sh photos efficientnet`"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let o = lowbit(&[
        "run",
        "--model",
        "efficientnet_lite0",
        "--formats",
        "int8,fp8_e4m3,mxfp4",
        "--out",
        out,
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    for name in ["fp32", "int8", "fp8_e4m3", "mxfp4"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{name} "))),
            "row {name}:\n{stdout}"
        );
    }
    assert!(stdout.contains("4 photos"), "{stdout}");
    assert!(stdout.contains("282 tiger cat"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let run = only_subdir(tmp.path());
    let summary = json(&run.join("summary.json"));
    let rows = rows(&summary);
    // The labels are the golden FP32 top-1 classes, so FP32 agrees on all four.
    assert_eq!(rows["fp32"]["samples"], 4);
    assert_eq!(rows["fp32"]["top1"].as_f64(), Some(1.0));
    for c in ["int8", "fp8_e4m3", "mxfp4"] {
        let r = &rows[c];
        assert_eq!(r["compliance_violations"], 0, "{c}");
        let rep = json(&run.join(r["run_dir"].as_str().unwrap()).join("report.json"));
        assert_eq!(rep["compliance"]["passed"], true, "{c}");
        assert_eq!(rep["fp32"]["top1"].as_f64(), Some(1.0), "{c}");
        assert!(rep["model"] == "efficientnet_lite0", "{c}");
        // Every conv, BN, activation, add, pool and the classifier has a row.
        assert!(rep["layers"].as_array().unwrap().len() > 100, "{c}");
        assert!(r["compression"].as_f64().unwrap() > 3.0, "{c}");
    }
    let sqnr = |c: &str| rows[c]["mean_sqnr_db"].as_f64().unwrap();
    assert!(sqnr("int8") > sqnr("mxfp4") + 6.0, "{stdout}");
    assert!(sqnr("fp8_e4m3") > sqnr("mxfp4") + 3.0, "{stdout}");
}

/// A ResNet-18 checkpoint (1000 classes) whose every value is a formula of its position:
/// weights `sin(0.37·i + 0.11·k) / fan_in` (k: tensor index), running variances in [1, 1.5].
fn write_resnet18(path: &Path) {
    let specs = ResNet::tensor_specs(&ResNetConfig::resnet18()).unwrap();
    let mut tensors = HashMap::new();
    for (k, s) in specs.iter().enumerate() {
        let n: usize = s.shape.iter().product();
        let fan_in: usize = s.shape.iter().skip(1).product::<usize>().max(1);
        let v: Vec<f32> = (0..n)
            .map(|i| {
                let x = (0.37 * i as f64 + 0.11 * k as f64).sin();
                if s.name.ends_with("running_var") {
                    (1.0 + 0.5 * x.abs()) as f32
                } else {
                    (x / fan_in as f64) as f32
                }
            })
            .collect();
        let t = Tensor::from_vec(v, s.shape.as_slice(), &Device::Cpu).unwrap();
        tensors.insert(s.name.clone(), t);
    }
    candle_core::safetensors::save(&tensors, path).unwrap();
}

/// `root/<class>/<file>` PNGs of the given sizes (not square, so resize and crop both work).
fn write_folder(root: &Path, images: &[(&str, &str, u32, u32)]) {
    for (i, (class, file, w, h)) in images.iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        let img = image::RgbImage::from_fn(*w, *h, |x, y| {
            image::Rgb([
                (x * 7 + i as u32 * 40) as u8,
                (y * 5) as u8,
                ((x + y) * 3) as u8,
            ])
        });
        img.save(dir.join(file)).unwrap();
    }
}

#[test]
fn resnet18_with_a_synthetic_checkpoint_on_a_tiny_image_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("resnet18.safetensors");
    write_resnet18(&ckpt);
    let data = tmp.path().join("val");
    write_folder(
        &data,
        &[
            ("cat", "a.png", 300, 200),
            ("cat", "b.png", 180, 260),
            ("dog", "c.png", 256, 256),
        ],
    );
    let out = tmp.path().join("runs");
    let (ck, dd, oo) = (
        ckpt.to_str().unwrap(),
        data.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let o = lowbit(&[
        "run",
        "--model",
        "resnet18",
        "--checkpoint",
        ck,
        "--data",
        dd,
        "--limit",
        "4",
        "--batch-size",
        "2",
        "--formats",
        "int8",
        "--out",
        oo,
    ]);
    let (stdout, stderr) = text(&o);
    eprintln!("{stdout}{stderr}");
    assert!(o.status.success(), "{stdout}\n{stderr}");
    // A 1000-class head on 2 folders: a clear warning, not a failure.
    assert!(
        stderr.contains("warning") && stderr.contains("2 class folders"),
        "{stderr}"
    );
    assert!(stderr.contains("1000 outputs"), "{stderr}");
    assert!(stdout.lines().any(|l| l.starts_with("int8 ")), "{stdout}");
    let run = only_subdir(&out);
    let summary = json(&run.join("summary.json"));
    let rows = rows(&summary);
    assert_eq!(rows["fp32"]["samples"], 3);
    assert_eq!(rows["int8"]["compliance_violations"], 0);
    let rep = json(&run.join("int8").join("report.json"));
    assert_eq!(rep["model"], "resnet18");
    let desc = rep["data"].as_str().unwrap();
    assert!(
        desc.contains("ImageFolder") && desc.contains("3 of 3"),
        "{desc}"
    );
    assert!(
        rep["layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "layer4.1.conv2"),
        "{rep}"
    );

    // Folders named by ImageNet synset (a subset): ImageNet-1k labels, no warning.
    let synset_data = tmp.path().join("val-synsets");
    write_folder(
        &synset_data,
        &[
            ("n02123159", "a.png", 300, 200),
            ("n07920052", "b.png", 180, 260),
        ],
    );
    let synset_out = tmp.path().join("runs-synsets");
    let o = lowbit(&[
        "run",
        "--model",
        "resnet18",
        "--checkpoint",
        ck,
        "--data",
        synset_data.to_str().unwrap(),
        "--formats",
        "int8",
        "--out",
        synset_out.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let rep = json(&only_subdir(&synset_out).join("int8").join("report.json"));
    let desc = rep["data"].as_str().unwrap();
    assert!(desc.contains("ImageNet-1k labels"), "{desc}");

    // The same through `sweep`, the checkpoint and data given in the models file.
    let configs = tmp.path().join("configs");
    std::fs::create_dir_all(&configs).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/int8.yaml"),
        configs.join("int8.yaml"),
    )
    .unwrap();
    let models = tmp.path().join("models.yaml");
    std::fs::write(
        &models,
        format!("models:\n  - {{name: resnet18, checkpoint: {ck}, data: {dd}}}\n"),
    )
    .unwrap();
    let sweep_out = tmp.path().join("sweep");
    let o = lowbit(&[
        "sweep",
        "--configs",
        configs.to_str().unwrap(),
        "--models",
        models.to_str().unwrap(),
        "--limit",
        "2",
        "--out",
        sweep_out.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    let rep = json(&sweep_out.join("resnet18/int8/report.json"));
    assert_eq!(rep["fp32"]["samples"], 2);

    // A checkpoint of another architecture: the error names the missing tensor.
    let o = lowbit(&[
        "run",
        "--model",
        "resnet34",
        "--checkpoint",
        ck,
        "--data",
        dd,
        "--formats",
        "int8",
        "--out",
        oo,
    ]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("layer1.2.conv1.weight"), "{stderr}");

    // No --data and no fetched photos: the error names the fetch command.
    let empty = tmp.path().join("no-assets");
    std::fs::create_dir_all(&empty).unwrap();
    let o = lowbit_env(
        &[
            "run",
            "--model",
            "resnet18",
            "--checkpoint",
            ck,
            "--formats",
            "int8",
            "--out",
            oo,
        ],
        &[("LOWBIT_ASSETS", &empty)],
    );
    let (_, stderr) = text(&o);
    assert!(!o.status.success());
    assert!(
        stderr.contains("scripts/fetch-assets.sh photos"),
        "{stderr}"
    );

    // explain with the checkpoint.
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/int8.yaml");
    let o = lowbit(&[
        "explain",
        "-c",
        cfg.to_str().unwrap(),
        "--model",
        "resnet18",
        "--checkpoint",
        ck,
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("layer4.1.conv2"), "{stdout}");
}

#[test]
fn explain_shows_the_layers_of_an_architecture_without_weights() {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/int8.yaml");
    let cfg = cfg.to_str().unwrap();
    for (model, layer) in [
        ("resnet50", "layer4.2.conv3"),
        ("vit_b16", "blocks.11.attn.matmul_qk"),
        ("efficientnet_lite0", "_blocks.15._depthwise_conv"),
    ] {
        let o = lowbit(&["explain", "-c", cfg, "--model", model]);
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "{model}: {stderr}");
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{layer} "))),
            "{model}: {stdout}"
        );
    }
}

#[test]
fn checkpoint_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let fake = tmp.path().join("x.safetensors");
    std::fs::write(&fake, b"not used").unwrap();
    let fake = fake.to_str().unwrap();
    // ResNet and ViT need a checkpoint; the message says how to export one.
    for (model, from) in [
        ("resnet50", "torchvision.models.resnet50"),
        ("vit_b16", "timm"),
    ] {
        let o = lowbit(&["run", "--model", model, "--out", out]);
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{model}: {stderr}");
        assert!(stderr.contains("needs --checkpoint"), "{stderr}");
        assert!(stderr.contains(from), "{stderr}");
        assert!(stderr.contains("docs/models.md"), "{stderr}");
    }
    // tiny_mlp has built-in weights and takes none.
    let o = lowbit(&[
        "run",
        "--model",
        "tiny_mlp",
        "--checkpoint",
        fake,
        "--out",
        out,
    ]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("takes no --checkpoint"), "{stderr}");
    // A checkpoint that is not there.
    let o = lowbit(&[
        "run",
        "--model",
        "resnet18",
        "--checkpoint",
        "/nonexistent/r.safetensors",
        "--out",
        out,
    ]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/r.safetensors"), "{stderr}");
    // Not a safetensors file: named.
    let o = lowbit(&[
        "run",
        "--model",
        "resnet18",
        "--checkpoint",
        fake,
        "--out",
        out,
    ]);
    let (_, stderr) = text(&o);
    assert!(!o.status.success());
    assert!(
        stderr.contains(fake) && stderr.contains("not a safetensors file"),
        "{stderr}"
    );
    // Unknown names list the image models.
    let o = lowbit(&["run", "--model", "resnet19", "--out", out]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr.contains("efficientnet_lite0") && stderr.contains("vit_b16"),
        "{stderr}"
    );
    // EfficientNet-Lite0 without its fetched weights names the fetch command.
    let empty = tmp.path().join("no-assets");
    std::fs::create_dir_all(&empty).unwrap();
    let o = lowbit_env(
        &["run", "--model", "efficientnet_lite0", "--out", out],
        &[("LOWBIT_ASSETS", &empty)],
    );
    let (_, stderr) = text(&o);
    assert!(!o.status.success());
    assert!(
        stderr.contains("scripts/fetch-assets.sh photos efficientnet"),
        "{stderr}"
    );
}
