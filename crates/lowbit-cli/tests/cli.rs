//! End-to-end tests of the `lowbit` binary on the built-in `tiny_mlp` model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{json, lowbit, only_subdir};

#[test]
fn default_sweep_table_on_a_subset() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let o = lowbit(&["run", "--model", "tiny_mlp", "--limit", "500", "--out", out]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for name in [
        "fp32",
        "fp8_e4m3",
        "fp8_e5m2",
        "int8",
        "fp6_e2m3",
        "fp4_e2m1",
        "int4_g128",
        "mxfp8_e4m3",
        "mxfp6_e3m2",
        "mxfp4",
        "nvfp4",
        "fp8_e4m3_chunk128_po2",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{name} "))),
            "row {name}:\n{stdout}"
        );
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let run = only_subdir(tmp.path());
    let summary = json(&run.join("summary.json"));
    let rows = summary["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 12);
    let row = |c: &str| rows.iter().find(|r| r["config"] == c).unwrap();
    // FP32 row = the FP32 accuracy every report measured on the same 500 samples.
    let fp32 = row("fp32")["top1"].as_f64().unwrap();
    assert_eq!(row("fp32")["samples"], 500);
    for r in rows.iter().skip(1) {
        let rep = json(&run.join(r["run_dir"].as_str().unwrap()).join("report.json"));
        assert_eq!(rep["fp32"]["top1"].as_f64().unwrap(), fp32);
        assert_eq!(rep["compliance"]["passed"], true, "{}", r["config"]);
        assert_eq!(r["compliance_violations"], 0);
    }
    // fp8 loses less than fp4 (accuracy and signal).
    assert!(row("fp8_e4m3")["top1"].as_f64().unwrap() >= row("fp4_e2m1")["top1"].as_f64().unwrap());
    assert!(
        row("fp8_e4m3")["mean_sqnr_db"].as_f64().unwrap()
            > row("fp4_e2m1")["mean_sqnr_db"].as_f64().unwrap() + 6.0
    );
    assert!(
        row("mxfp8_e4m3")["mean_sqnr_db"].as_f64().unwrap()
            > row("mxfp4")["mean_sqnr_db"].as_f64().unwrap()
    );
    for f in ["summary.md", "summary.csv", "report.html"] {
        assert!(run.join(f).is_file(), "{f}");
    }
    for f in [
        "config.yaml",
        "report.json",
        "layers.csv",
        "comparison_report.txt",
        "report.html",
    ] {
        assert!(run.join("mxfp4").join(f).is_file(), "{f}");
    }
}

#[test]
fn report_json_validates_and_html_is_self_contained() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let o = lowbit(&[
        "run",
        "--model",
        "tiny_mlp",
        "--limit",
        "300",
        "--formats",
        "nvfp4,int8",
        "--sensitivity",
        "--out",
        out,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = only_subdir(tmp.path());
    let schema: serde_json::Value = serde_json::from_str(lowbit_eval::REPORT_SCHEMA).unwrap();
    for c in ["nvfp4", "int8"] {
        let doc = json(&run.join(c).join("report.json"));
        let errs = lowbit_eval::validate_schema(&schema, &doc);
        assert!(errs.is_empty(), "{errs:#?}");
        assert_eq!(doc["schema_version"], 1);
        assert_eq!(doc["sensitivity"].as_array().unwrap().len(), 2); // fc1, fc2
        // A broken document fails.
        let mut bad = doc.clone();
        bad.as_object_mut().unwrap().remove("layers");
        assert!(!lowbit_eval::validate_schema(&schema, &bad).is_empty());
        let html = std::fs::read_to_string(run.join(c).join("report.html")).unwrap();
        check_html(&html);
    }
    check_html(&std::fs::read_to_string(run.join("report.html")).unwrap());
}

fn check_html(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.matches("<svg").count() >= 2, "charts");
    assert!(html.ends_with("</html>\n"));
    assert!(!html.contains("<script"));
    for bad in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(bad), "external resource {bad}");
    }
}

#[test]
fn same_seed_same_numbers_whatever_the_threads() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for (d, t) in [(&a, "1"), (&b, "2")] {
        let o = lowbit(&[
            "run",
            "--model",
            "tiny_mlp",
            "--limit",
            "400",
            "--batch-size",
            "64",
            "--formats",
            "mxfp4,fp8_e5m2",
            "--threads",
            t,
            "--seed",
            "7",
            "--out",
            d.path().to_str().unwrap(),
        ]);
        assert!(o.status.success());
    }
    for c in ["mxfp4", "fp8_e5m2"] {
        let ra =
            std::fs::read_to_string(only_subdir(a.path()).join(c).join("report.json")).unwrap();
        let rb =
            std::fs::read_to_string(only_subdir(b.path()).join(c).join("report.json")).unwrap();
        assert_eq!(ra, rb);
    }
}

#[test]
fn interrupted_sweep_resumes_to_the_same_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("configs");
    std::fs::create_dir(&cfg).unwrap();
    std::fs::write(
        cfg.join("a_fp8.yaml"),
        "defaults: { weight: fp8_e4m3, input: fp8_e4m3 }\n",
    )
    .unwrap();
    std::fs::write(cfg.join("b_int8.yaml"), "defaults: { weight: int8 }\n").unwrap();
    std::fs::write(
        cfg.join("c_mxfp4.yaml"),
        "defaults: { weight: mxfp4, input: mxfp4 }\n",
    )
    .unwrap();
    let models = tmp.path().join("models.yaml");
    std::fs::write(&models, "models: [tiny_mlp]\n").unwrap();
    let (c, m) = (cfg.to_str().unwrap(), models.to_str().unwrap());
    let resumed = tmp.path().join("resumed");
    let whole = tmp.path().join("whole");
    let r = resumed.to_str().unwrap();
    let o = lowbit(&[
        "sweep",
        "--configs",
        c,
        "--models",
        m,
        "--out",
        r,
        "--limit",
        "300",
        "--max-runs",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(resumed.join("tiny_mlp/a_fp8/report.json").is_file());
    assert!(!resumed.join("tiny_mlp/b_int8").exists());
    assert!(!resumed.join("summary.json").exists());
    let o = lowbit(&[
        "sweep",
        "--configs",
        c,
        "--models",
        m,
        "--out",
        r,
        "--limit",
        "300",
    ]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("a_fp8: finished earlier, skipped"));
    let o = lowbit(&[
        "sweep",
        "--configs",
        c,
        "--models",
        m,
        "--out",
        whole.to_str().unwrap(),
        "--limit",
        "300",
    ]);
    assert!(o.status.success());
    assert_eq!(
        json(&resumed.join("summary.json")),
        json(&whole.join("summary.json"))
    );
    assert_eq!(
        std::fs::read_to_string(resumed.join("summary.csv")).unwrap(),
        std::fs::read_to_string(whole.join("summary.csv")).unwrap()
    );
}

#[test]
fn every_bad_config_class_names_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown_key.yaml",
            "defaults:\n  weight: int8\n  wieght: int8\n",
            &[":3", "wieght"],
        ),
        (
            "bad_value.yaml",
            "defaults:\n  weight: fp7_e9\n",
            &[":2", "fp7_e9"],
        ),
        (
            "bad_type.yaml",
            "quantize_first_layer: maybe\n",
            &[":1", "quantize_first_layer"],
        ),
        (
            "unknown_op.yaml",
            "defaults: { weight: int8 }\nops:\n  conv9d: { weight: int4_g128 }\n",
            &[":3", "ops.conv9d"],
        ),
        (
            "no_layer.yaml",
            "defaults: { weight: int8 }\nlayers:\n  - pattern: \"encoder.*\"\n    weight: null\n",
            &[":3", "layers[0].pattern"],
        ),
        ("bad_glob.yaml", "skip: [\"fc[\"]\n", &[":1", "skip[0]"]),
        (
            "syntax.yaml",
            "defaults: { weight: int8\n",
            &["syntax.yaml"],
        ),
        (
            "bad_spec.yaml",
            "defaults:\n  weight: { format: e2m1, conversion: { rounding: { mode: nearest_even }, overflow: saturate }, granularity: { kind: per_tensor }, scale: { kind: f32 }, asymmetric: true }\n",
            &[":2", "defaults"],
        ),
    ];
    for (file, text, needles) in cases {
        let p = tmp.path().join(file);
        std::fs::write(&p, text).unwrap();
        for args in [
            vec![
                "run",
                "--model",
                "tiny_mlp",
                "--limit",
                "10",
                "-c",
                p.to_str().unwrap(),
                "--out",
                tmp.path().to_str().unwrap(),
            ],
            vec!["explain", "--model", "tiny_mlp", "-c", p.to_str().unwrap()],
        ] {
            let o = lowbit(&args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{file}: {err}");
            assert!(err.starts_with("error: "), "{file}: {err}");
            assert!(err.contains(*file), "{file}: {err}");
            for n in *needles {
                assert!(err.contains(n), "{file}: `{n}` not in {err}");
            }
            assert!(
                !err.contains("panicked") && !err.contains("backtrace"),
                "{err}"
            );
        }
    }
    let o = lowbit(&["run", "--model", "tiny_mlp", "-c", "/nonexistent/x.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/x.yaml"));
    let o = lowbit(&["run", "--model", "nope"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn formats_explain_inspect_calibrate() {
    let o = lowbit(&["formats"]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && s.contains("e4m3") && s.contains("448"),
        "{s}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("static.yaml");
    std::fs::write(&cfg, "defaults:\n  weight: int8\n  input: { format: e4m3fn, conversion: { rounding: { mode: nearest_even }, overflow: saturate }, granularity: { kind: per_tensor }, scale: { kind: f32 }, mode: static }\n").unwrap();
    let o = lowbit(&[
        "explain",
        "--model",
        "tiny_mlp",
        "-c",
        cfg.to_str().unwrap(),
    ]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && s.contains("fc1") && s.contains("fc2"),
        "{s}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = lowbit(&[
        "calibrate",
        "--model",
        "tiny_mlp",
        "-c",
        cfg.to_str().unwrap(),
        "--batches",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(tmp.path().join("static.scales.json").is_file());
    // `run` evaluates the static config with the scales `calibrate` wrote next to it.
    let runs = tmp.path().join("runs");
    let o = lowbit(&[
        "run",
        "--model",
        "tiny_mlp",
        "-c",
        cfg.to_str().unwrap(),
        "--limit",
        "200",
        "--out",
        runs.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // A checkpoint.
    let ck = tmp.path().join("w.safetensors");
    let data: Vec<u8> = (0..24u8).collect();
    let views = vec![(
        "a.weight",
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &data).unwrap(),
    )];
    safetensors::serialize_to_file(views, None, &ck).unwrap();
    let o = lowbit(&["inspect", ck.to_str().unwrap()]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success()
            && s.contains("a.weight")
            && s.contains("[2, 3]")
            && s.contains("6 parameters"),
        "{s}"
    );
}

#[test]
fn committed_configs_are_the_default_sweep() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let tmp = tempfile::tempdir().unwrap();
    let o = lowbit(&["write-default-configs", tmp.path().to_str().unwrap()]);
    assert!(o.status.success());
    let mut n = 0;
    for e in std::fs::read_dir(tmp.path()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            std::fs::read_to_string(dir.join(name)).unwrap(),
            "configs/{name:?} is stale: lowbit write-default-configs configs"
        );
        n += 1;
    }
    assert_eq!(n, 11);
}

#[test]
fn qat_and_the_pipeline_run_on_a_tiny_subset_and_report_exact_shifts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let cfg = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/qat/w4a8_int4_po2.yaml"
    );
    let common = [
        "--train-on-test",
        "--limit",
        "256",
        "--test-limit",
        "256",
        "--batch-size",
        "64",
        "--epochs",
        "1",
        "--out",
        out,
    ];
    let mut args = vec!["qat", "-c", cfg];
    args.extend(common);
    let o = lowbit(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = only_subdir(tmp.path());
    let q: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("qat.json")).unwrap()).unwrap();
    assert_eq!(q["epochs"].as_array().unwrap().len(), 1);
    for k in ["fp32_top1", "ptq_top1", "best_top1"] {
        let v = q[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    assert!(run.join("checkpoint.safetensors").exists());
    // The low-bit checkpoint of the last epoch evaluates exactly like the trained model.
    assert!(run.join("quantized/conv1.weight.safetensors").exists());
    assert_eq!(q["quantized_checkpoint_top1"], q["epochs"][0]["test_top1"]);
    let bits = q["quantized_weight_bits"].as_f64().unwrap();
    assert!(bits > 4.0 && bits < 5.0, "{bits}");
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("test top-1 per epoch"));
    std::fs::remove_dir_all(&run).unwrap();
    // Frozen-scale QAT: scales calibrated before training and held; the low-bit checkpoint
    // (quantized with those scales) still evaluates exactly like the trained model.
    let mut args = vec!["qat", "-c", cfg, "--frozen-scales", "1"];
    args.extend(common);
    let o = lowbit(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = only_subdir(tmp.path());
    assert!(run.join("scales.json").exists());
    let q: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("qat.json")).unwrap()).unwrap();
    assert_eq!(q["quantized_checkpoint_top1"], q["epochs"][0]["test_top1"]);
    std::fs::remove_dir_all(&run).unwrap();
    // Learned (LSQ) weight scales: they move, stay positive, and the low-bit checkpoint
    // quantized with them evaluates exactly like the trained model.
    // (A power-of-two spec cannot learn an f32 scale: a usage error names the layer.)
    let mut args = vec!["qat", "-c", cfg, "--learned-scales"];
    args.extend(common);
    let o = lowbit(&args);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("learned scales need"));
    let cfg_f32 = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/qat/w4a8_int4.yaml"
    );
    let mut args = vec!["qat", "-c", cfg_f32, "--learned-scales", "--lr", "0.003"];
    args.extend(common);
    let o = lowbit(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = only_subdir(tmp.path());
    let q: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("qat.json")).unwrap()).unwrap();
    let l = &q["learned_scales"];
    assert!(l["tensors"].as_u64().unwrap() >= 7, "{l}");
    assert!(l["min_scale"].as_f64().unwrap() > 0.0, "{l}");
    assert!(l["mean_abs_relative_change"].as_f64().unwrap() > 0.0, "{l}");
    assert_eq!(q["quantized_checkpoint_top1"], q["epochs"][0]["test_top1"]);
    std::fs::remove_dir_all(&run).unwrap();
    // Bad training options are usage errors (exit code 2) before any work.
    for bad in [
        ["--optimizer", "rmsprop"],
        ["--schedule", "linear"],
        ["--model", "tiny_mlp"],
    ] {
        let mut args = vec!["qat", "-c", cfg];
        args.extend(bad);
        let o = lowbit(&args);
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains(bad[1]));
    }

    let mut args = vec![
        "pipeline",
        "-c",
        cfg,
        "--calib-batches",
        "1",
        "--optimizer",
        "sgd",
        "--lr",
        "0.01",
        "--schedule",
        "step",
    ];
    args.extend(common);
    let o = lowbit(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = only_subdir(tmp.path());
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("hardware_report.json")).unwrap())
            .unwrap();
    for k in [
        "initial_fp32_top1",
        "ptq_top1",
        "best_qat_top1",
        "final_top1",
    ] {
        let v = r[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    let tensors = r["tensors"].as_array().unwrap();
    let roles: std::collections::BTreeSet<&str> = tensors
        .iter()
        .map(|t| t["role"].as_str().unwrap())
        .collect();
    assert!(
        roles.contains("weight") && roles.contains("input"),
        "{roles:?}"
    );
    let mut n = 0;
    for t in tensors {
        let bits = t["bit_width"].as_u64().unwrap();
        for s in t["shifts"].as_array().expect("power-of-two scales") {
            let k = s["k"].as_i64().unwrap() as i32;
            let scale = s["scale"].as_f64().unwrap() as f32;
            // 2^-k exactly, from its bit pattern.
            assert_eq!(scale.to_bits(), ((127 - k) as u32) << 23, "{s}");
            assert_eq!(s["power"].as_str().unwrap(), format!("2^({})", -k));
            let shift = match k {
                0 => "x".to_string(),
                k if k > 0 => format!("x >> {k}"),
                k => format!("x << {}", -k),
            };
            assert_eq!(s["shift"].as_str().unwrap(), shift);
            assert_eq!(s["bit_width"].as_u64().unwrap(), bits);
            n += 1;
        }
    }
    assert!(n > 100, "{n} shifts");
    assert!(run.join("scales.json").exists());
}

/// report.html in a real browser: Debian's headless Chromium loads the run's page and a
/// per-config page, logs no console error, and writes a screenshot (kept in
/// `$LOWBIT_SCREENSHOT_DIR` when set, to look at). Needs `apt-get install chromium`:
/// `cargo test -p lowbit-cli --test cli -- --ignored chromium`.
#[test]
#[ignore = "needs Debian's chromium (apt-get install chromium)"]
fn report_html_renders_in_headless_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let o = lowbit(&[
        "run",
        "--model",
        "tiny_mlp",
        "--limit",
        "300",
        "--formats",
        "fp8_e4m3,mxfp4",
        "--out",
        out,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = only_subdir(tmp.path());
    let shots = std::env::var("LOWBIT_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| tmp.path().to_path_buf());
    for (name, page) in [
        ("run", run.join("report.html")),
        ("mxfp4", run.join("mxfp4").join("report.html")),
    ] {
        assert!(page.exists(), "{}", page.display());
        let shot = shots.join(format!("report-{name}.png"));
        let o = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1200,2400",
                &format!("--screenshot={}", shot.display()),
                &format!("file://{}", page.display()),
            ])
            .output()
            .expect("run chromium (apt-get install chromium)");
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{log}");
        let console: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
            .collect();
        assert!(
            console.is_empty(),
            "console messages on {name}: {console:?}"
        );
        let size = std::fs::metadata(&shot).unwrap().len();
        assert!(size > 20_000, "{name}: screenshot of {size} bytes");
    }
}

#[test]
fn hardware_templates_in_the_docs_build() {
    // Every YAML template of docs/hardware.md parses and resolves on the Fashion-MNIST ResNet
    // (`explain` builds the model with it), so the page cannot drift from the config format.
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/hardware.md"
    ))
    .unwrap();
    let blocks: Vec<&str> = doc
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert_eq!(blocks.len(), 4, "templates in docs/hardware.md");
    let tmp = tempfile::tempdir().unwrap();
    for (i, yaml) in blocks.iter().enumerate() {
        let cfg = tmp.path().join(format!("t{i}.yaml"));
        std::fs::write(&cfg, yaml).unwrap();
        let o = lowbit(&["explain", "-c", cfg.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "template {i}:\n{yaml}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// `lowbit calibrate --model tiny_mlp -c cfg --batches 2` plus `extra`.
fn calibrate_tiny(cfg: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "calibrate",
        "--model",
        "tiny_mlp",
        "-c",
        cfg.to_str().unwrap(),
        "--batches",
        "2",
    ];
    args.extend(extra);
    lowbit(&args)
}

/// `lowbit run --model tiny_mlp -c cfg --limit limit --out runs`.
fn run_tiny(cfg: &Path, limit: &str, runs: &Path) -> std::process::Output {
    lowbit(&[
        "run",
        "--model",
        "tiny_mlp",
        "-c",
        cfg.to_str().unwrap(),
        "--limit",
        limit,
        "--out",
        runs.to_str().unwrap(),
    ])
}

#[test]
fn smoothing_calibrates_then_runs() {
    // SmoothQuant needs calibrated factors: `run` without them says what to do; `calibrate`
    // computes them (an FP32 pass first) and stores them with the scales; `run` then uses
    // them and reports the layers as smoothed.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("sq.yaml");
    std::fs::write(
        &cfg,
        "defaults:\n  weight: int8\n  input: { format: int8, granularity: { kind: per_tensor } }\n  smoothing: 0.5\n",
    )
    .unwrap();
    let runs = tmp.path().join("runs");
    let run = || run_tiny(&cfg, "200", &runs);
    let o = run();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("lowbit calibrate") && err.contains("fc1"),
        "{err}"
    );
    let o = calibrate_tiny(&cfg, &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("smoothing factors of 2 layers"), "{out}");
    let scales = json(&tmp.path().join("sq.scales.json"));
    let fc1 = scales["smoothing"]["fc1"]["factors"].as_array().unwrap();
    assert!(!fc1.is_empty() && fc1.iter().all(|f| f.as_f64().unwrap() > 0.0));
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = only_subdir(&runs);
    let csv = std::fs::read_to_string(dir.join("sq").join("layers.csv")).unwrap();
    assert!(csv.contains("smoothquant α=0.5"), "{csv}");
}

#[test]
fn calibrate_freezes_only_static_quantizers() {
    // A dynamic MX input stays dynamic (hardware computes its block scales on the fly); the
    // static per-tensor input of fc2 is calibrated. `run` then evaluates both.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("mixed.yaml");
    std::fs::write(
        &cfg,
        "defaults:\n  weight: int8\n  input: mxfp8_e4m3\nlayers:\n  - pattern: fc2\n    input: { format: int8, granularity: { kind: per_tensor }, mode: static }\n",
    )
    .unwrap();
    let o = calibrate_tiny(&cfg, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let scales = json(&tmp.path().join("mixed.scales.json"));
    let layers = scales["layers"].as_object().unwrap();
    assert_eq!(layers.keys().collect::<Vec<_>>(), ["fc2"], "{scales}");
    let runs = tmp.path().join("runs");
    let o = run_tiny(&cfg, "100", &runs);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn calibrate_takes_a_method() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("st.yaml");
    std::fs::write(
        &cfg,
        "defaults:\n  weight: int8\n  input: { format: int8, granularity: { kind: per_tensor }, mode: static }\n",
    )
    .unwrap();
    let scale = |method: &str| {
        let o = calibrate_tiny(&cfg, &["--method", method]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(out.contains(&format!("({method})")), "{out}");
        let s = json(&tmp.path().join("st.scales.json"));
        s["layers"]["fc2"]["input"]["scales"]["values"][0]
            .as_f64()
            .unwrap()
    };
    let max = scale("max");
    let p = scale("percentile:99");
    assert!(p < max, "percentile {p} max {max}");
    let o = calibrate_tiny(&cfg, &["--method", "percentile:200"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--method") && err.contains("(0, 100]"),
        "{err}"
    );
}

#[test]
fn gptq_calibrates_then_runs() {
    // GPTQ weights come from `calibrate` (saved beside the scales file) and `run` uses them;
    // the reports say which layers ran GPTQ and their weights pass compliance on GPTQ's scales.
    // The dynamic input quantizer stays dynamic (a config with GPTQ is not frozen whole).
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("g.yaml");
    std::fs::write(
        &cfg,
        "defaults:\n  weight: { format: int4, granularity: { kind: per_block, axis: -1, size: 16 } }\n  input: fp8_e4m3\n  gptq: {}\n",
    )
    .unwrap();
    let o = calibrate_tiny(&cfg, &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("GPTQ weights of 2 layers"), "{out}");
    assert!(
        out.contains("calibrated 0 quantizers") && !out.contains("freezing every"),
        "{out}"
    );
    assert!(
        tmp.path()
            .join("g.scales.gptq")
            .join("fc1.safetensors")
            .is_file()
    );
    let runs = tmp.path().join("runs");
    let o = run_tiny(&cfg, "200", &runs);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep = json(&only_subdir(&runs).join("g").join("report.json"));
    assert_eq!(rep["compliance"]["passed"], true, "{}", rep["compliance"]);
    let gptq_layers = rep["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["gptq"] == "gptq (damp 0.01)")
        .count();
    assert_eq!(gptq_layers, 2);
}

#[test]
fn calibrate_freezes_a_dynamic_config_whole() {
    // No `mode: static` quantizer: every activation quantizer is frozen (and `run` uses them).
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("dyn.yaml");
    std::fs::write(&cfg, "defaults:\n  weight: int8\n  input: fp8_e4m3\n").unwrap();
    let o = calibrate_tiny(&cfg, &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("freezing every activation quantizer"), "{out}");
    let scales = json(&tmp.path().join("dyn.scales.json"));
    let layers = scales["layers"].as_object().unwrap();
    assert!(
        layers.contains_key("fc1") && layers.contains_key("fc2"),
        "{scales}"
    );
    let o = run_tiny(&cfg, "100", &tmp.path().join("runs"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
