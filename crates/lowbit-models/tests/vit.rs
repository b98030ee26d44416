//! timm's Vision Transformer: the tensor names and shapes equal timm's
//! `vit_base_patch16_224` state dict, the forward pass on a synthetic checkpoint equals
//! timm's (golden logits from `scripts/golden/torchvision_timm_keys.py`), checkpoint errors
//! name the tensor, and a config addresses layers (attention's products included) by name.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod synthetic;

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use lowbit_models::vit::{Vit, VitConfig};
use lowbit_models::{ModelError, TensorSpec};
use lowbit_nn::{Mode, QuantConfig, QuantModel};

/// The golden case's config (img 32, patch 8, D 48, 2 blocks, 3 heads, MLP 192, 10 classes).
fn tiny() -> VitConfig {
    let golden = synthetic::golden("vit_forward_golden.json");
    let c = &golden["vit_tiny_c10"]["config"];
    let u = |k: &str| c[k].as_u64().unwrap() as usize;
    let cfg = VitConfig {
        image_size: u("image_size"),
        patch_size: u("patch_size"),
        dim: u("dim"),
        depth: u("depth"),
        heads: u("heads"),
        mlp_dim: u("mlp_dim"),
        num_classes: u("num_classes"),
    };
    assert_eq!(
        cfg,
        VitConfig {
            image_size: 32,
            patch_size: 8,
            dim: 48,
            depth: 2,
            heads: 3,
            mlp_dim: 192,
            num_classes: 10
        }
    );
    cfg
}

#[test]
fn vit_b16_tensor_specs_equal_timm_state_dict() {
    let specs = Vit::tensor_specs(&VitConfig::vit_b16()).unwrap();
    let want = synthetic::golden_keys("timm_vit_base_patch16_224_keys.json");
    assert_eq!(synthetic::spec_map(&specs), want);
    assert_eq!(want.len(), 152);
    assert_eq!(want["cls_token"], [1, 1, 768]);
    assert_eq!(want["pos_embed"], [1, 197, 768]);
    assert_eq!(want["patch_embed.proj.weight"], [768, 3, 16, 16]);
    assert_eq!(want["blocks.11.attn.qkv.weight"], [2304, 768]);
    assert_eq!(want["head.weight"], [1000, 768]);
}

/// The tiny synthetic ViT, loaded through `Vit::load` with `config`.
fn load_tiny(config: &QuantConfig) -> (Vit, serde_json::Value) {
    let golden = synthetic::golden("vit_forward_golden.json");
    let case = golden["vit_tiny_c10"].clone();
    let cfg = tiny();
    let specs = Vit::tensor_specs(&cfg).unwrap();
    let tensors = synthetic::checkpoint(&specs, Some(&case["sums"]), false);
    let dir = tempfile::tempdir().unwrap();
    let file = synthetic::save(&tensors, dir.path(), "vit.safetensors");
    (Vit::load(&file, &cfg, config, &Device::Cpu).unwrap(), case)
}

#[test]
fn vit_forward_matches_timm() {
    let t0 = Instant::now();
    let (model, case) = load_tiny(&QuantConfig::default());
    let t1 = Instant::now();
    let x = synthetic::input(&synthetic::usizes(&case["input_shape"]));
    let logits = model.forward(&x).unwrap();
    let t2 = Instant::now();
    assert_eq!(logits.dims(), [2, 10]);
    let got: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    let want = synthetic::f64s(&case["logits_f64"]);
    let (rel, abs) = synthetic::compare(&got, &want);
    let torch_f32 = case["torch_f32_vs_f64_max_abs"].as_f64().unwrap();
    println!(
        "vit_tiny_c10: max |Δ| vs PyTorch f64 {abs:.3e} (PyTorch f32: {torch_f32:.3e}), \
         max |Δ|/(1+|y|) {rel:.3e}; checkpoint + load {:.2} s, forward {:.3} s",
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64()
    );
    // The reference is timm in f64 on the same f32 weights; timm's own f32 logits (fused
    // attention) are within 1.1e-6 of it, |y| ≤ 3.6 (≈ 2.4e-7 relative to 1 + |y|). 2e-6
    // relative is 8× that and ≥ 1000× below the logits' differences between the two images,
    // so a wrong head split, scale, ε or GELU form is far above it.
    assert!(rel < 2e-6, "{got:?} vs {want:?}");
    let d: f64 = (0..10)
        .map(|j| (want[j] - want[j + 10]).abs())
        .fold(0.0, f64::max);
    assert!(d > 1e-2, "{d}");
}

#[test]
fn attention_products_are_quantizable_by_name() {
    let yaml = "layers:\n  - pattern: \"blocks.*.attn.matmul_*\"\n    input: fp8_e4m3\n";
    let (model, case) = load_tiny(&QuantConfig::from_yaml(yaml, "attn.yaml").unwrap());
    let quantized: Vec<String> = model
        .layers()
        .explain_rows()
        .into_iter()
        .filter(|r| r.input != "-")
        .map(|r| r.layer)
        .collect();
    assert_eq!(
        quantized,
        [
            "blocks.0.attn.matmul_qk",
            "blocks.0.attn.matmul_av",
            "blocks.1.attn.matmul_qk",
            "blocks.1.attn.matmul_av"
        ]
    );
    let x = synthetic::input(&synthetic::usizes(&case["input_shape"]));
    model.layers().set_mode(Mode::Fp32);
    let fp32 = model.forward(&x).unwrap();
    model.layers().set_mode(Mode::Quantize);
    model.context().set_taps(true);
    let fp8 = model.forward(&x).unwrap();
    let taps = model.context().take_taps();
    // The products are in the data path: quantizing their inputs moves the logits.
    let diff = synthetic::max_abs_diff(&fp32, &fp8);
    assert!(diff > 1e-4, "{diff}");
    // What each attention layer sees: q and kᵀ per head, then softmax rows, then A and v.
    let (b, h, t, hd) = (2, 3, 17, 16);
    let qk = &taps["blocks.1.attn.matmul_qk"];
    assert_eq!(qk.inputs[0].dims(), [b, h, t, hd]);
    assert_eq!(qk.inputs[1].dims(), [b, h, hd, t]);
    assert_eq!(qk.output.dims(), [b, h, t, t]);
    let sm = &taps["blocks.1.attn.softmax"].output;
    let row_sums: Vec<f32> = sm
        .sum(D::Minus1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(row_sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
    let av = &taps["blocks.1.attn.matmul_av"];
    assert_eq!(av.inputs[1].dims(), [b, h, t, hd]);
    assert_eq!(av.output.dims(), [b, h, t, hd]);
    assert_eq!(taps["pos_add"].inputs[1].dims(), [1, t, 48]);
}

#[test]
fn layer_patterns_address_timm_names() {
    let cfg = tiny();
    let explain = |yaml: &str| {
        let config = QuantConfig::from_yaml(yaml, "test.yaml").unwrap();
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        Vit::from_var_builder(vb, &cfg, &config)
            .unwrap()
            .layers()
            .explain_rows()
    };
    let base = explain("defaults: { weight: int8 }\n");
    let rows = explain(
        "defaults: { weight: int8 }\nlayers:\n  - pattern: \"blocks.1.*\"\n    weight: mxfp4\n    output: fp8_e5m2\n",
    );
    let names: Vec<&str> = rows.iter().map(|r| r.layer.as_str()).collect();
    let block: Vec<String> = [
        "norm1",
        "attn.qkv",
        "attn.matmul_qk",
        "attn.softmax",
        "attn.matmul_av",
        "attn.proj",
        "add1",
        "norm2",
        "mlp.fc1",
        "mlp.act",
        "mlp.fc2",
        "add2",
    ]
    .iter()
    .map(|l| format!("blocks.1.{l}"))
    .collect();
    assert_eq!(names[0..2], ["patch_embed.proj", "pos_add"]);
    assert_eq!(names[14..26], block);
    assert_eq!(names[26..], ["norm", "head"]);
    let mxfp4 = &rows[names
        .iter()
        .position(|n| *n == "blocks.1.attn.qkv")
        .unwrap()]
    .weight;
    let e5m2 = &rows[names
        .iter()
        .position(|n| *n == "blocks.1.attn.softmax")
        .unwrap()]
    .output;
    assert!(mxfp4 != &base[0].weight && e5m2 != "-");
    for (b, r) in base.iter().zip(&rows) {
        if r.layer.starts_with("blocks.1.") {
            assert_eq!(&r.output, e5m2, "{}", r.layer);
            assert_eq!(r.weight != "-", b.weight != "-", "{}", r.layer);
            if r.weight != "-" {
                assert_eq!(&r.weight, mxfp4, "{}", r.layer);
            }
        } else {
            assert_eq!(
                (&b.weight, &b.output),
                (&r.weight, &r.output),
                "{}",
                r.layer
            );
            assert_eq!(r.output, "-");
        }
    }
    // Layers with weights are exactly those with tensors in the checkpoint (cls_token and
    // pos_embed are plain parameters, not layers).
    let specs: Vec<TensorSpec> = Vit::tensor_specs(&cfg).unwrap();
    for r in &rows {
        let has_tensors = specs
            .iter()
            .any(|s| s.name.starts_with(&format!("{}.", r.layer)));
        assert_eq!(has_tensors, r.weight != "-", "{}", r.layer);
    }
}

fn load_edited(edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> ModelError {
    let cfg = tiny();
    let t = synthetic::checkpoint(&Vit::tensor_specs(&cfg).unwrap(), None, false);
    synthetic::load_edited(t, edit, |file| {
        Vit::load(file, &cfg, &QuantConfig::default(), &Device::Cpu)
    })
}

#[test]
fn checkpoint_errors_name_the_tensor_and_its_shape() {
    let e = load_edited(|t| {
        t.remove("blocks.1.attn.qkv.bias");
    });
    synthetic::assert_missing(&e, "blocks.1.attn.qkv.bias", &[144]);
    // A checkpoint for 64×64 images: pos_embed has 1 + 64 tokens, not 1 + 16.
    let e = load_edited(|t| {
        t.insert(
            "pos_embed".into(),
            Tensor::zeros((1, 65, 48), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    synthetic::assert_misshaped(&e, "pos_embed", &[1, 17, 48], &[1, 65, 48]);
    assert!(e.to_string().contains("pos_embed"), "{e}");
    // A model with fc_norm (global average pooling) is another architecture.
    let e = load_edited(|t| {
        t.insert(
            "fc_norm.weight".into(),
            Tensor::ones(48, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    synthetic::assert_unused(&e, "fc_norm.weight");
    let e = load_edited(|t| {
        t.remove("cls_token");
    });
    synthetic::assert_missing(&e, "cls_token", &[1, 1, 48]);
}

#[test]
fn bad_configs_and_inputs_are_errors() {
    let bad = [
        VitConfig { heads: 5, ..tiny() },
        VitConfig {
            patch_size: 5,
            ..tiny()
        },
        VitConfig {
            depth: 2,
            dim: 0,
            ..tiny()
        },
        VitConfig {
            patch_size: 0,
            ..tiny()
        },
    ];
    for cfg in bad {
        assert!(
            matches!(Vit::tensor_specs(&cfg), Err(ModelError::Invalid(_))),
            "{cfg:?}"
        );
    }
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let model = Vit::from_var_builder(vb, &tiny(), &QuantConfig::default()).unwrap();
    for shape in [(1, 3, 64, 64), (1, 1, 32, 32)] {
        let x = Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap();
        let e = model.logits(&x).unwrap_err();
        assert!(matches!(e, ModelError::Invalid(_)), "{e}");
        assert!(e.to_string().contains("[B, 3, 32, 32]"), "{e}");
    }
}
