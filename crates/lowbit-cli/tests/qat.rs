//! End-to-end tests of `lowbit qat --resume` and `--bn fold` on a tiny subset of the committed
//! test split (`--train-on-test`: CI has no training split). Every run uses two threads, so
//! runs are bit-reproducible.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

mod common;
// Every run on two threads (bit-reproducible).
use common::{json, lowbit_two_threads as lowbit, only_subdir};

fn ok(args: &[&str]) -> Output {
    let o = lowbit(args);
    assert!(
        o.status.success(),
        "lowbit {}\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn config(name: &str) -> String {
    format!("{}/../../configs/qat/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Name → (dtype, shape, bytes) of a safetensors file.
fn tensors(p: &Path) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let data = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&data).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                (
                    format!("{:?}", v.dtype()),
                    v.shape().to_vec(),
                    v.data().to_vec(),
                ),
            )
        })
        .collect()
}

/// `qat.json` without what legitimately differs between a straight and a resumed run
/// (wall-clock seconds, the resume record).
fn results(run: &Path) -> serde_json::Value {
    let mut q = json(&run.join("qat.json"));
    let o = q.as_object_mut().unwrap();
    o.remove("seconds");
    o.remove("resumed_at");
    for e in o["epochs"].as_array_mut().unwrap() {
        e.as_object_mut().unwrap().remove("seconds");
    }
    q
}

/// A straight run of `epochs` vs the same options run in two invocations (`first` extra
/// arguments for the first, then `--resume` to `epochs`): the same weights, optimizer state
/// and curves, bit for bit.
fn straight_vs_resumed(options: &[&str], epochs: &str, first: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let cfg = config("w4a8_int4.yaml");
    let common = |out: &Path| {
        let mut v: Vec<String> = [
            "qat",
            "-c",
            &cfg,
            "--train-on-test",
            "--limit",
            "192",
            "--test-limit",
            "128",
            "--batch-size",
            "64",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(options.iter().map(|s| s.to_string()));
        v
    };
    let run = |mut args: Vec<String>, extra: &[&str]| {
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&refs);
    };
    run(common(&a), &["--epochs", epochs]);
    let straight = only_subdir(&a);
    run(common(&b), first);
    let resumed = only_subdir(&b);
    let state = json(&resumed.join("checkpoint/state.json"));
    let done = state["epochs_done"].as_u64().unwrap();
    assert!(done >= 1 && done < epochs.parse().unwrap(), "{state}");
    run(
        common(&b),
        &["--epochs", epochs, "--resume", resumed.to_str().unwrap()],
    );
    assert_eq!(only_subdir(&b), resumed, "a resume writes into the run");
    for f in [
        "checkpoint/last.safetensors",
        "checkpoint/optimizer.safetensors",
        "checkpoint.safetensors",
        "best.safetensors",
    ] {
        let exists = straight.join(f).exists();
        assert_eq!(exists, resumed.join(f).exists(), "{f}");
        if !exists {
            // best.safetensors: no epoch beat PTQ.
            continue;
        }
        let (x, y) = (tensors(&straight.join(f)), tensors(&resumed.join(f)));
        assert!(!x.is_empty());
        assert_eq!(
            x.keys().collect::<Vec<_>>(),
            y.keys().collect::<Vec<_>>(),
            "{f}"
        );
        for (k, v) in &x {
            assert!(
                *v == y[k],
                "{f}: `{k}` differs between the straight and the resumed run"
            );
        }
    }
    assert_eq!(results(&straight), results(&resumed));
    let q = json(&resumed.join("qat.json"));
    assert_eq!(q["resumed_at"], serde_json::json!([done]));
    assert_eq!(
        q["epochs"].as_array().unwrap().len(),
        epochs.parse::<usize>().unwrap()
    );
    let state = |run: &Path| {
        let mut s = json(&run.join("checkpoint/state.json"));
        for row in s["curves"].as_array_mut().unwrap() {
            row.as_object_mut().unwrap().remove("seconds");
        }
        s
    };
    let (s1, s2) = (state(&straight), state(&resumed));
    for k in [
        "curves",
        "schedule",
        "data_order",
        "optimizer",
        "options",
        "config",
    ] {
        assert_eq!(s1[k], s2[k], "state.json `{k}`");
    }
}

/// AdamW on the cosine schedule with learned (LSQ) scales: planned for 3 epochs, stopped
/// after 1 (`--stop-after`), resumed.
#[test]
fn an_interrupted_run_resumes_bit_for_bit() {
    straight_vs_resumed(
        &["--learned-scales", "--lr", "0.002"],
        "3",
        &["--epochs", "3", "--stop-after", "1"],
    );
}

/// SGD with momentum on the step schedule, batch norm folded, frozen activation scales: a
/// 1-epoch run extended to 2 with `--resume` (the step schedule does not depend on the
/// total).
#[test]
fn a_finished_run_extends_bit_for_bit_with_folded_batch_norm_and_sgd_momentum() {
    straight_vs_resumed(
        &[
            "--optimizer",
            "sgd",
            "--momentum",
            "0.9",
            "--lr",
            "0.01",
            "--schedule",
            "step",
            "--gamma",
            "0.5",
            "--bn",
            "fold",
            "--frozen-scales",
            "1",
        ],
        "2",
        &["--epochs", "1"],
    );
}

/// A resume that does not fit the run fails before any work, naming the file and the field.
#[test]
fn a_mismatched_resume_names_the_file_and_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let cfg = config("w4a8_int4.yaml");
    let base = [
        "qat",
        "--train-on-test",
        "--limit",
        "128",
        "--test-limit",
        "64",
        "--batch-size",
        "64",
        "--out",
        out.to_str().unwrap(),
    ];
    let mut args = base.to_vec();
    args.extend(["-c", &cfg, "--epochs", "2", "--stop-after", "1"]);
    ok(&args);
    let run = only_subdir(&out);
    let run_s = run.to_str().unwrap();
    let fp4 = config("w4a8_fp4.yaml");
    let expect_err = |extra: &[&str], needles: &[&str]| {
        let mut args = base.to_vec();
        args.extend(extra);
        let o = lowbit(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "lowbit {}", args.join(" "));
        for n in needles {
            assert!(err.contains(n), "`{n}` not in: {err}");
        }
    };
    let state = "checkpoint/state.json";
    expect_err(
        &["-c", &fp4, "--epochs", "2", "--resume", run_s],
        &[state, "`config.defaults.weight.format`", "w4a8_fp4.yaml"],
    );
    expect_err(
        &[
            "-c", &cfg, "--epochs", "2", "--lr", "0.001", "--resume", run_s,
        ],
        &[state, "`options.lr`"],
    );
    expect_err(
        &[
            "-c", &cfg, "--epochs", "2", "--bn", "fold", "--resume", run_s,
        ],
        &[state, "`options.bn`", "\"train\"", "\"fold\""],
    );
    expect_err(
        &["-c", &cfg, "--epochs", "1", "--resume", run_s],
        &["has done 1 epochs", "nothing to train"],
    );
    let missing = tmp.path().join("nowhere");
    expect_err(
        &["-c", &cfg, "--resume", missing.to_str().unwrap()],
        &["nowhere", "state.json"],
    );
    // A checkpoint of another model: a tensor missing from last.safetensors.
    let last = run.join("checkpoint/last.safetensors");
    let data = std::fs::read(&last).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&data).unwrap();
    let st = safetensors::SafeTensors::deserialize(&data).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "fc.bias")
        .collect();
    let bytes = safetensors::tensor::serialize(kept, header.metadata().clone()).unwrap();
    std::fs::write(&last, bytes).unwrap();
    expect_err(
        &["-c", &cfg, "--epochs", "2", "--resume", run_s],
        &["last.safetensors", "`fc.bias` is missing"],
    );
    // The pipeline runs in one go.
    let mut args = base.to_vec();
    args[0] = "pipeline";
    args.extend(["-c", &cfg, "--resume", run_s]);
    let o = lowbit(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
}

/// `--bn fold`: the low-bit checkpoint holds the folded convolutions and reloads to the
/// trained model's accuracy; the pipeline's hardware report lists the folded weights.
#[test]
fn folded_batch_norm_is_what_the_checkpoint_and_the_hardware_report_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let common = [
        "--train-on-test",
        "--limit",
        "128",
        "--test-limit",
        "128",
        "--batch-size",
        "64",
        "--epochs",
        "1",
        "--bn",
        "fold",
        "--out",
        out,
    ];
    let cfg = config("w4a8_int4.yaml");
    let mut args = vec!["qat", "-c", &cfg];
    args.extend(common);
    ok(&args);
    let run = only_subdir(tmp.path());
    let q = json(&run.join("qat.json"));
    assert_eq!(q["bn"], "fold");
    assert_eq!(q["quantized_checkpoint_top1"], q["epochs"][0]["test_top1"]);
    let folding = json(&run.join("quantized/folding.json"));
    assert_eq!(folding["pairs"].as_array().unwrap().len(), 6, "{folding}");
    let rest = tensors(&run.join("quantized/fp32.safetensors"));
    assert!(rest.contains_key("conv1.bias") && rest.contains_key("layer2.0.conv2.bias"));
    assert!(
        !rest
            .keys()
            .any(|k| k.contains(".bn") || k.starts_with("bn")),
        "{:?}",
        rest.keys()
    );
    // The training checkpoint keeps the unfolded parameters (batch norm included).
    assert!(tensors(&run.join("checkpoint.safetensors")).contains_key("bn1.running_var"));
    std::fs::remove_dir_all(&run).unwrap();

    let po2 = config("w4a8_int4_po2.yaml");
    let mut args = vec!["pipeline", "-c", &po2, "--calib-batches", "1"];
    args.extend(common);
    ok(&args);
    let run = only_subdir(tmp.path());
    let r = json(&run.join("hardware_report.json"));
    assert_eq!(r["bn"], "fold");
    let t = r["tensors"].as_array().unwrap();
    let conv1 = t
        .iter()
        .find(|e| e["layer"] == "conv1" && e["role"] == "weight")
        .unwrap();
    assert_eq!(conv1["bit_width"], 4);
    assert!(conv1["shifts"].as_array().is_some_and(|s| s.len() == 32));
    // The folded batch norms have no parameters left to report.
    assert!(!t.iter().any(|e| {
        let l = e["layer"].as_str().unwrap();
        (l.contains("bn") || l.ends_with("downsample.1")) && e["role"] == "weight"
    }));

    let mut args = vec!["qat", "-c", &cfg, "--bn", "frozen"];
    args.extend(["--train-on-test", "--limit", "64"]);
    let o = lowbit(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--bn frozen"));
}

#[test]
fn lowbit_run_evaluates_the_low_bit_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (qat_out, run_out) = (tmp.path().join("qat"), tmp.path().join("run"));
    let cfg = config("w4a8_int4.yaml");
    ok(&[
        "qat",
        "-c",
        &cfg,
        "--train-on-test",
        "--limit",
        "128",
        "--test-limit",
        "128",
        "--batch-size",
        "64",
        "--epochs",
        "1",
        "--out",
        qat_out.to_str().unwrap(),
    ]);
    let qrun = only_subdir(&qat_out);
    let reloaded = json(&qrun.join("qat.json"))["quantized_checkpoint_top1"]
        .as_f64()
        .unwrap();
    // The same 128 test images in one batch, the run's config: the quantized top-1 of
    // `lowbit run` on the low-bit checkpoint is the one `qat` measured on it.
    let o = ok(&[
        "run",
        "--model",
        "fashion_cnn",
        "--checkpoint",
        qrun.join("quantized").to_str().unwrap(),
        "-c",
        &cfg,
        "--limit",
        "128",
        "--layer-samples",
        "0",
        "--out",
        run_out.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("w4a8_int4"));
    let report = json(&only_subdir(&run_out).join("w4a8_int4/report.json"));
    assert_eq!(report["quantized"]["top1"].as_f64().unwrap(), reloaded);
    assert_eq!(report["compliance"]["passed"], true);
    // Its FP32 weights file works too, and a directory that is no low-bit checkpoint is named.
    ok(&[
        "run",
        "--model",
        "fashion_cnn",
        "--checkpoint",
        qrun.join("checkpoint.safetensors").to_str().unwrap(),
        "--formats",
        "int8",
        "--limit",
        "64",
        "--out",
        run_out.to_str().unwrap(),
    ]);
    let o = lowbit(&[
        "run",
        "--model",
        "fashion_cnn",
        "--checkpoint",
        tmp.path().to_str().unwrap(),
        "--out",
        run_out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("low-bit checkpoint"));
}

#[test]
fn qat_and_pipeline_refuse_smoothing_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("sq.yaml");
    std::fs::write(
        &cfg,
        "defaults: { weight: int8, input: int8, smoothing: 0.5 }\n",
    )
    .unwrap();
    for cmd in ["qat", "pipeline"] {
        let o = lowbit(&[
            cmd,
            "--train-on-test",
            "--limit",
            "64",
            "-c",
            cfg.to_str().unwrap(),
            "--out",
            tmp.path().join("runs").to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains("smoothing") && err.contains("lowbit calibrate"),
            "{cmd}: {err}"
        );
    }
}
