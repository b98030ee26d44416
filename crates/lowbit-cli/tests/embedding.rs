//! `lowbit run --model minilm`: the sentence-embedding path end to end (needs the fetched
//! MiniLM and gensim assets; skipped with a message without them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{json, lowbit, only_subdir};

fn assets_present() -> bool {
    use lowbit_models::assets::present;
    let ok = present(
        "minilm",
        &["model.safetensors", "tokenizer.json", "config.json"],
    ) && present(
        "gensim",
        &[
            "wordsim353.tsv",
            "simlex999.txt",
            "lee.cor",
            "similarities0-1.txt",
        ],
    );
    if !ok {
        eprintln!(
            "skipped: MiniLM or gensim assets absent; `scripts/fetch-assets.sh minilm gensim` fetches them"
        );
    }
    ok
}

#[test]
fn minilm_run_scores_embeddings_and_writes_valid_reports() {
    if !assets_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let o = lowbit(&[
        "run",
        "--model",
        "minilm",
        "--limit",
        "12",
        "--layer-samples",
        "8",
        "--formats",
        "fp8_e4m3,int4_g128",
        "--out",
        out,
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for h in [
        "WordSim ρ",
        "SimLex ρ",
        "Lee r",
        "cos mean",
        "fp8_e4m3",
        "int4_g128",
    ] {
        assert!(stdout.contains(h), "{h} missing:\n{stdout}");
    }
    let run = only_subdir(tmp.path());
    let schema: serde_json::Value = serde_json::from_str(lowbit_eval::REPORT_SCHEMA).unwrap();
    let mut fp32 = Vec::new();
    let mut cos = Vec::new();
    for c in ["fp8_e4m3", "int4_g128"] {
        let doc = json(&run.join(c).join("report.json"));
        let errs = lowbit_eval::validate_schema(&schema, &doc);
        assert!(errs.is_empty(), "{errs:#?}");
        let e = &doc["embedding"];
        // 12 pairs of each word set, 12 Lee documents (66 pairs).
        assert_eq!(e["fp32"]["wordsim353_pairs"], 12);
        assert_eq!(e["fp32"]["simlex999_pairs"], 12);
        assert_eq!(e["fp32"]["lee_pairs"], 66);
        assert_eq!(e["agreement"]["items"], e["fp32"]["items"]);
        assert_eq!(doc["layer_samples"], 8);
        assert_eq!(doc["compliance"]["passed"], true);
        // Per-layer statistics exist for the attention products too.
        let layers = doc["layers"].as_array().unwrap();
        assert!(
            layers
                .iter()
                .any(|l| l["name"] == "encoder.layer.0.attention.self.scores")
        );
        fp32.push(e["fp32"].clone());
        cos.push(e["agreement"]["cosine_mean"].as_f64().unwrap());
        assert!(run.join(c).join("report.html").is_file());
    }
    // One FP32 pass shared by every config.
    assert_eq!(fp32[0], fp32[1]);
    // FP8 per tensor keeps MiniLM's embeddings (cosine ≈ 0.99 on the full sets); 4-bit
    // integers in blocks of 128 lose more (≈ 0.89).
    assert!(cos[0] > 0.97, "{cos:?}");
    assert!(cos[1] < cos[0], "{cos:?}");
    let summary = std::fs::read_to_string(run.join("summary.csv")).unwrap();
    assert!(
        summary
            .lines()
            .next()
            .unwrap()
            .ends_with("cosine_mean,cosine_min")
    );
    assert_eq!(summary.lines().count(), 4); // header, fp32, two configs
}

#[test]
fn minilm_has_no_sensitivity_ranking() {
    if !assets_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let o = lowbit(&[
        "run",
        "--model",
        "minilm",
        "--limit",
        "4",
        "--formats",
        "int8",
        "--sensitivity",
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--sensitivity"));
}

#[test]
fn minilm_calibrates_smoothing_then_runs() {
    if !assets_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("sq.yaml");
    std::fs::write(
        &cfg,
        "defaults:\n  weight: int8\n  input: { format: int8, granularity: { kind: per_tensor }, mode: static }\n  smoothing: 0.8\nskip: [\"*embeddings*\"]\nquantized_ops: [linear]\n",
    )
    .unwrap();
    let o = lowbit(&[
        "calibrate",
        "--model",
        "minilm",
        "-c",
        cfg.to_str().unwrap(),
        "--batches",
        "2",
        "--batch-size",
        "8",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Six encoder layers × six linear layers.
    assert!(out.contains("smoothing factors of 36 layers"), "{out}");
    assert!(out.contains("on 16 samples"), "{out}");
    let scales = json(&tmp.path().join("sq.scales.json"));
    assert_eq!(scales["smoothing"].as_object().unwrap().len(), 36);
    let runs = tmp.path().join("runs");
    let o = lowbit(&[
        "run",
        "--model",
        "minilm",
        "-c",
        cfg.to_str().unwrap(),
        "--limit",
        "12",
        "--layer-samples",
        "8",
        "--out",
        runs.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep = json(&only_subdir(&runs).join("sq").join("report.json"));
    assert_eq!(rep["compliance"]["passed"], true);
    let smoothed = rep["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["smoothing"] == "smoothquant α=0.8")
        .count();
    assert_eq!(smoothed, 36);
}
