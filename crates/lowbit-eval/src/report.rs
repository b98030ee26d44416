//! Reports: [`RunReport`] (one config on one model: `report.json`), the files of a run
//! directory, and the summary of a sweep ([`SummaryRow`]: `summary.md`, `.csv`, `.json`).

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::embedding::{EmbeddingAgreement, EmbeddingStats};
use crate::error::{EvalError, Result};
use crate::evaluator::{LayerResult, RoleCompliance, VariantResult};
use crate::metrics::TaskMetrics;
use crate::stats::{Db, ErrorStats};

/// The version of the `report.json` layout (see `schema/report.schema.json`).
pub const SCHEMA_VERSION: u32 = 1;

/// The JSON Schema of `report.json`.
pub const REPORT_SCHEMA: &str = include_str!("../schema/report.schema.json");

/// Mean and worst per-layer SQNR (propagated output error of the quantized layers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SqnrSummary {
    /// Mean over quantized layers of the output SQNR in dB (finite values only).
    pub mean_db: Db,
    /// The lowest output SQNR.
    pub worst_db: Db,
    /// The layer with the lowest output SQNR.
    pub worst_layer: Option<String>,
}

/// Compliance of the whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComplianceSummary {
    /// No violation anywhere.
    pub passed: bool,
    /// Totals over every layer and role.
    pub totals: RoleCompliance,
    /// Layers with at least one violation.
    pub layers_with_violations: Vec<String>,
}

/// Weight storage against FP32 (biases stay FP32 and are not counted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Compression {
    /// Weight elements of all layers with weights.
    pub weight_elements: u64,
    /// Bytes in FP32.
    pub fp32_bytes: f64,
    /// Bytes when stored quantized (elements and scales).
    pub quantized_bytes: f64,
    /// Stored bits per weight element, scales included.
    pub weight_bits_per_element: f64,
    /// `fp32_bytes / quantized_bytes`.
    pub ratio: f64,
    /// Mean stored bits per quantized input element (absent when no input is quantized).
    pub input_bits_per_element: Option<f64>,
}

/// One row of a sensitivity ranking: the config applied to one layer only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SensitivityRow {
    /// 1 = costs the most.
    pub rank: usize,
    /// The layer quantized alone.
    pub layer: String,
    /// Top-1 with only this layer quantized.
    pub top1: f64,
    /// Top-1 lost against FP32 (FP32 − this), in [0, 1].
    pub top1_drop: f64,
    /// SQNR of the model output against FP32.
    pub output_sqnr_db: Db,
}

/// Everything about one config on one model: what `report.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The lowbit version that wrote it.
    pub lowbit_version: String,
    /// Model name.
    pub model: String,
    /// Config name.
    pub config: String,
    /// The data set (path or description).
    pub data: String,
    /// Batch size.
    pub batch_size: usize,
    /// Seed.
    pub seed: u64,
    /// FP32 task metrics on the same samples.
    pub fp32: TaskMetrics,
    /// Quantized task metrics.
    pub quantized: TaskMetrics,
    /// Quantized top-1 minus FP32 top-1, in [−1, 1].
    pub delta_top1: f64,
    /// The model output against FP32.
    pub output: ErrorStats,
    /// Per-layer SQNR summary.
    pub sqnr: SqnrSummary,
    /// Compliance.
    pub compliance: ComplianceSummary,
    /// Compression.
    pub compression: Compression,
    /// Per layer.
    pub layers: Vec<LayerResult>,
    /// Samples the per-layer statistics and activation compliance were computed on (the task
    /// metrics cover every sample).
    #[serde(default)]
    pub layer_samples: u64,
    /// Sensitivity ranking (with `--sensitivity`).
    pub sensitivity: Option<Vec<SensitivityRow>>,
    /// Sentence-embedding models only (`null` for classifiers): the task correlations under
    /// FP32 and under the config, and the cosine of the quantized embeddings to FP32 ones. The
    /// classification fields (`fp32`, `quantized`, `delta_top1`) then hold zeros and only
    /// `samples` counts (the texts embedded).
    #[serde(default)]
    pub embedding: Option<EmbeddingReport>,
}

/// The embedding part of a [`RunReport`] (see [`crate::embedding`] for the protocol).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingReport {
    /// Scores of the FP32 embeddings.
    pub fp32: EmbeddingStats,
    /// Scores of the quantized embeddings.
    pub quantized: EmbeddingStats,
    /// Quantized against FP32 embeddings of the same texts.
    pub agreement: EmbeddingAgreement,
}

/// The embedding columns of a [`SummaryRow`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRow {
    /// Spearman's ρ on WordSim-353.
    pub wordsim353_spearman: f64,
    /// Spearman's ρ on SimLex-999.
    pub simlex999_spearman: f64,
    /// Pearson's r on the Lee corpus.
    pub lee_pearson: f64,
    /// Mean cosine to FP32 embeddings (absent on the FP32 row).
    pub cosine_mean: Option<f64>,
    /// Least cosine to FP32 embeddings (absent on the FP32 row).
    pub cosine_min: Option<f64>,
}

impl EmbeddingRow {
    /// The row of `stats`, with the agreement to FP32 if any.
    pub fn new(stats: &EmbeddingStats, agreement: Option<&EmbeddingAgreement>) -> EmbeddingRow {
        EmbeddingRow {
            wordsim353_spearman: stats.wordsim353_spearman,
            simlex999_spearman: stats.simlex999_spearman,
            lee_pearson: stats.lee_pearson,
            cosine_mean: agreement.map(|a| a.cosine_mean),
            cosine_min: agreement.map(|a| a.cosine_min),
        }
    }
}

/// Where a run came from.
#[derive(Clone, Debug)]
pub struct RunMeta {
    /// Model name.
    pub model: String,
    /// Data description.
    pub data: String,
    /// Batch size.
    pub batch_size: usize,
    /// Seed.
    pub seed: u64,
}

impl RunReport {
    /// Builds the report of `v` (a variant with detail) against `fp32`; `sensitivity` holds
    /// the one-layer variants of the same config, if any.
    pub fn new(
        meta: &RunMeta,
        fp32: TaskMetrics,
        v: &VariantResult,
        sensitivity: &[(String, VariantResult)],
    ) -> RunReport {
        let quantized: Vec<&LayerResult> = v.layers.iter().filter(|l| l.quantized).collect();
        let mut finite = Vec::new();
        let mut worst: Option<(f64, &str)> = None;
        for l in &quantized {
            if let Some(s) = l.propagated.output {
                let db = s.sqnr_db.0;
                if db.is_finite() {
                    finite.push(db);
                }
                if worst.is_none_or(|(w, _)| db < w) {
                    worst = Some((db, &l.name));
                }
            }
        }
        let sqnr = SqnrSummary {
            mean_db: Db(if finite.is_empty() {
                f64::INFINITY
            } else {
                finite.iter().sum::<f64>() / finite.len() as f64
            }),
            worst_db: Db(worst.map_or(f64::INFINITY, |w| w.0)),
            worst_layer: worst.map(|w| w.1.to_string()),
        };
        let mut totals = RoleCompliance::default();
        let mut bad_layers = Vec::new();
        for l in &v.layers {
            let mut viol = 0;
            for c in [l.compliance.weight, l.compliance.input, l.compliance.output]
                .into_iter()
                .flatten()
            {
                totals.elements += c.elements;
                totals.off_grid += c.off_grid;
                totals.scales += c.scales;
                totals.bad_scales += c.bad_scales;
                viol += c.violations();
            }
            if viol > 0 {
                bad_layers.push(l.name.clone());
            }
        }
        let weight_elements: u64 = v.layers.iter().map(|l| l.weight_elements).sum();
        let bits: f64 = v
            .layers
            .iter()
            .map(|l| l.weight_elements as f64 * l.weight_bits_per_element.unwrap_or(32.0))
            .sum();
        let (ib, in_n) = v
            .layers
            .iter()
            .filter_map(|l| l.input_bits_per_element.map(|b| (b, l.propagated.input)))
            .fold((0.0, 0.0), |(s, n), (b, st)| {
                let e = st.map_or(0.0, |s| s.elements as f64);
                (s + b * e, n + e)
            });
        let fp32_bytes = weight_elements as f64 * 4.0;
        let quantized_bytes = bits / 8.0;
        let compression = Compression {
            weight_elements,
            fp32_bytes,
            quantized_bytes,
            weight_bits_per_element: bits / weight_elements.max(1) as f64,
            ratio: if quantized_bytes > 0.0 {
                fp32_bytes / quantized_bytes
            } else {
                1.0
            },
            input_bits_per_element: (in_n > 0.0).then(|| ib / in_n),
        };
        let sensitivity = (!sensitivity.is_empty()).then(|| {
            let mut rows: Vec<SensitivityRow> = sensitivity
                .iter()
                .map(|(layer, r)| SensitivityRow {
                    rank: 0,
                    layer: layer.clone(),
                    top1: r.task.top1,
                    top1_drop: fp32.top1 - r.task.top1,
                    output_sqnr_db: r.logits.sqnr_db,
                })
                .collect();
            rows.sort_by(|a, b| {
                b.top1_drop
                    .total_cmp(&a.top1_drop)
                    .then(a.output_sqnr_db.0.total_cmp(&b.output_sqnr_db.0))
                    .then(a.layer.cmp(&b.layer))
            });
            for (i, r) in rows.iter_mut().enumerate() {
                r.rank = i + 1;
            }
            rows
        });
        RunReport {
            schema_version: SCHEMA_VERSION,
            lowbit_version: env!("CARGO_PKG_VERSION").to_string(),
            model: meta.model.clone(),
            config: v.name.clone(),
            data: meta.data.clone(),
            batch_size: meta.batch_size,
            seed: meta.seed,
            fp32,
            quantized: v.task,
            delta_top1: v.task.top1 - fp32.top1,
            output: v.logits,
            sqnr,
            compliance: ComplianceSummary {
                passed: totals.violations() == 0,
                totals,
                layers_with_violations: bad_layers,
            },
            compression,
            layers: v.layers.clone(),
            layer_samples: v.layer_samples,
            sensitivity,
            embedding: None,
        }
    }

    /// The summary row of this report.
    pub fn summary_row(&self, run_dir: &str) -> SummaryRow {
        SummaryRow {
            model: self.model.clone(),
            config: self.config.clone(),
            samples: self.quantized.samples,
            top1: self.quantized.top1,
            top5: self.quantized.top5,
            delta_top1: Some(self.delta_top1),
            avg_certainty: self.quantized.avg_certainty,
            mean_sqnr_db: Some(self.sqnr.mean_db),
            worst_sqnr_db: Some(self.sqnr.worst_db),
            worst_layer: self.sqnr.worst_layer.clone(),
            compliance_violations: Some(self.compliance.totals.violations()),
            weight_bits_per_element: self.compression.weight_bits_per_element,
            compression: self.compression.ratio,
            run_dir: run_dir.to_string(),
            embedding: self
                .embedding
                .map(|e| EmbeddingRow::new(&e.quantized, Some(&e.agreement))),
        }
    }
}

/// One row of the results table (and of `summary.csv`/`.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// Model.
    pub model: String,
    /// Config (`fp32` for the reference row).
    pub config: String,
    /// Samples.
    pub samples: u64,
    /// Top-1 in [0, 1].
    pub top1: f64,
    /// Top-5 in [0, 1].
    pub top5: f64,
    /// Top-1 minus FP32 top-1 (absent on the FP32 row).
    pub delta_top1: Option<f64>,
    /// Average certainty.
    pub avg_certainty: f64,
    /// Mean per-layer SQNR.
    pub mean_sqnr_db: Option<Db>,
    /// Worst per-layer SQNR.
    pub worst_sqnr_db: Option<Db>,
    /// Its layer.
    pub worst_layer: Option<String>,
    /// Compliance violations (absent on the FP32 row).
    pub compliance_violations: Option<u64>,
    /// Weight bits per element, scales included.
    pub weight_bits_per_element: f64,
    /// Weight compression against FP32.
    pub compression: f64,
    /// The run directory, relative to the summary.
    pub run_dir: String,
    /// Sentence-embedding models: their scores (the top-1 fields are then zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingRow>,
}

impl SummaryRow {
    /// The FP32 reference row of `model`.
    pub fn fp32(model: &str, m: &TaskMetrics) -> SummaryRow {
        SummaryRow {
            model: model.to_string(),
            config: "fp32".to_string(),
            samples: m.samples,
            top1: m.top1,
            top5: m.top5,
            delta_top1: None,
            avg_certainty: m.avg_certainty,
            mean_sqnr_db: None,
            worst_sqnr_db: None,
            worst_layer: None,
            compliance_violations: None,
            weight_bits_per_element: 32.0,
            compression: 1.0,
            run_dir: String::new(),
            embedding: None,
        }
    }

    /// The FP32 reference row of a sentence-embedding `model` on `samples` texts.
    pub fn fp32_embedding(model: &str, samples: u64, stats: &EmbeddingStats) -> SummaryRow {
        SummaryRow {
            embedding: Some(EmbeddingRow::new(stats, None)),
            ..SummaryRow::fp32(
                model,
                &TaskMetrics {
                    samples,
                    ..TaskMetrics::default()
                },
            )
        }
    }

    fn cells(&self, embedding_table: bool) -> Vec<String> {
        let pct = |x: f64| format!("{:.2}", 100.0 * x);
        let opt = |d: Option<Db>| d.map_or("-".to_string(), |d| d.to_string());
        let mut cells = vec![self.config.clone()];
        match (&self.embedding, embedding_table) {
            (Some(e), true) => {
                let c = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.4}"));
                cells.extend([
                    format!("{:.4}", e.wordsim353_spearman),
                    format!("{:.4}", e.simlex999_spearman),
                    format!("{:.4}", e.lee_pearson),
                    c(e.cosine_mean),
                    c(e.cosine_min),
                ]);
            }
            (Some(_), false) => cells.extend(["-", "-", "-", "-"].map(String::from)),
            (None, _) => cells.extend([
                pct(self.top1),
                pct(self.top5),
                self.delta_top1
                    .map_or("-".to_string(), |d| format!("{:+.2}", 100.0 * d)),
                format!("{:.4}", self.avg_certainty),
            ]),
        }
        cells.extend([
            opt(self.mean_sqnr_db),
            match (&self.worst_sqnr_db, &self.worst_layer) {
                (Some(d), Some(l)) => format!("{d} ({l})"),
                (Some(d), None) => d.to_string(),
                _ => "-".to_string(),
            },
            match self.compliance_violations {
                None => "-".to_string(),
                Some(0) => "pass".to_string(),
                Some(n) => format!("FAIL: {n} violations"),
            },
            format!("{:.2}", self.weight_bits_per_element),
            format!("{:.2}x", self.compression),
        ]);
        cells
    }
}

/// The table's headers: the embedding columns when every row is of an embedding model.
fn headers(rows: &[SummaryRow]) -> (Vec<&'static str>, bool) {
    let embedding = !rows.is_empty() && rows.iter().all(|r| r.embedding.is_some());
    if embedding {
        let mut h = vec![
            "config",
            "WordSim ρ",
            "SimLex ρ",
            "Lee r",
            "cos mean",
            "cos min",
        ];
        h.extend_from_slice(&HEADERS[5..]);
        (h, true)
    } else {
        (HEADERS.to_vec(), false)
    }
}

const HEADERS: [&str; 10] = [
    "config",
    "top-1 %",
    "top-5 %",
    "Δ top-1",
    "certainty",
    "mean SQNR dB",
    "worst SQNR dB (layer)",
    "compliance",
    "w bits/elem",
    "compression",
];

/// The results table as aligned plain text.
pub fn format_table(rows: &[SummaryRow]) -> String {
    let (headers, emb) = headers(rows);
    let cells: Vec<Vec<String>> = rows.iter().map(|r| r.cells(emb)).collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |r: &[String]| {
        let mut s = String::new();
        for (i, c) in r.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            if i == 0 {
                let _ = write!(s, "{c}{}", " ".repeat(pad));
            } else {
                let _ = write!(s, "  {}{c}", " ".repeat(pad));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = String::new();
    let head: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let _ = writeln!(out, "{}", line(&head));
    let _ = writeln!(
        out,
        "{}",
        "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
    );
    for r in &cells {
        let _ = writeln!(out, "{}", line(r));
    }
    out
}

/// The results table as Markdown.
pub fn format_markdown(rows: &[SummaryRow]) -> String {
    let mut out = String::new();
    let (headers, emb) = headers(rows);
    let _ = writeln!(out, "| model | {} |", headers.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(headers.len() + 1));
    for r in rows {
        let _ = writeln!(out, "| {} | {} |", r.model, r.cells(emb).join(" | "));
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The summary rows as CSV (raw numbers: fractions, dB, `inf`).
pub fn format_summary_csv(rows: &[SummaryRow]) -> String {
    let mut out = String::from(
        "model,config,samples,top1,top5,delta_top1,avg_certainty,mean_sqnr_db,worst_sqnr_db,worst_layer,compliance_violations,weight_bits_per_element,compression,run_dir,wordsim353_spearman,simlex999_spearman,lee_pearson,cosine_mean,cosine_min\n",
    );
    let o = |x: Option<String>| x.unwrap_or_default();
    for r in rows {
        let f = [
            r.model.clone(),
            r.config.clone(),
            r.samples.to_string(),
            r.top1.to_string(),
            r.top5.to_string(),
            o(r.delta_top1.map(|d| d.to_string())),
            r.avg_certainty.to_string(),
            o(r.mean_sqnr_db.map(db_raw)),
            o(r.worst_sqnr_db.map(db_raw)),
            o(r.worst_layer.clone()),
            o(r.compliance_violations.map(|d| d.to_string())),
            r.weight_bits_per_element.to_string(),
            r.compression.to_string(),
            r.run_dir.clone(),
            o(r.embedding.map(|e| e.wordsim353_spearman.to_string())),
            o(r.embedding.map(|e| e.simlex999_spearman.to_string())),
            o(r.embedding.map(|e| e.lee_pearson.to_string())),
            o(r.embedding
                .and_then(|e| e.cosine_mean)
                .map(|x| x.to_string())),
            o(r.embedding
                .and_then(|e| e.cosine_min)
                .map(|x| x.to_string())),
        ];
        let f: Vec<String> = f.iter().map(|s| csv_field(s)).collect();
        let _ = writeln!(out, "{}", f.join(","));
    }
    out
}

fn db_raw(d: Db) -> String {
    if d.is_inf() {
        "inf".into()
    } else {
        d.0.to_string()
    }
}

fn opt_stats(s: &Option<ErrorStats>) -> [String; 4] {
    match s {
        Some(s) => [
            s.mse.to_string(),
            s.cosine.to_string(),
            db_raw(s.sqnr_db),
            s.max_abs_error.to_string(),
        ],
        None => Default::default(),
    }
}

/// `layers.csv`: one row per layer, every number.
pub fn format_layers_csv(r: &RunReport) -> String {
    let mut out = String::from("layer,kind,quantized,weight_spec,input_spec,output_spec");
    for p in ["weight", "input", "output", "isolated_output"] {
        for m in ["mse", "cosine", "sqnr_db", "max_abs_error"] {
            let _ = write!(out, ",{p}_{m}");
        }
    }
    out.push_str(",weight_checked,weight_violations,input_checked,input_violations,output_checked,output_violations,weight_elements,weight_bits_per_element,input_bits_per_element,accumulator,rotation,smoothing,gptq\n");
    for l in &r.layers {
        let mut f = vec![
            l.name.clone(),
            l.kind.clone(),
            l.quantized.to_string(),
            l.specs.weight.clone().unwrap_or_default(),
            l.specs.input.clone().unwrap_or_default(),
            l.specs.output.clone().unwrap_or_default(),
        ];
        for s in [
            &l.propagated.weight,
            &l.propagated.input,
            &l.propagated.output,
            &l.isolated_output,
        ] {
            f.extend(opt_stats(s));
        }
        for c in [l.compliance.weight, l.compliance.input, l.compliance.output] {
            match c {
                Some(c) => {
                    f.push(c.elements.to_string());
                    f.push(c.violations().to_string());
                }
                None => f.extend([String::new(), String::new()]),
            }
        }
        f.push(l.weight_elements.to_string());
        f.push(
            l.weight_bits_per_element
                .map(|b| b.to_string())
                .unwrap_or_default(),
        );
        f.push(
            l.input_bits_per_element
                .map(|b| b.to_string())
                .unwrap_or_default(),
        );
        f.push(l.accumulator.clone().unwrap_or_default());
        f.push(l.rotation.clone().unwrap_or_default());
        f.push(l.smoothing.clone().unwrap_or_default());
        f.push(l.gptq.clone().unwrap_or_default());
        let f: Vec<String> = f.iter().map(|s| csv_field(s)).collect();
        let _ = writeln!(out, "{}", f.join(","));
    }
    out
}

/// `comparison_report.txt`: the per-layer table, human-readable.
pub fn format_comparison(r: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lowbit comparison report: model {}, config {}, {} samples (per-layer statistics on {})",
        r.model, r.config, r.quantized.samples, r.layer_samples
    );
    match &r.embedding {
        Some(e) => {
            let (f, q, a) = (&e.fp32, &e.quantized, &e.agreement);
            let _ = writeln!(
                out,
                "WordSim-353 ρ {:.4} (FP32 {:.4}), SimLex-999 ρ {:.4} (FP32 {:.4}), Lee r {:.4} (FP32 {:.4}); cosine to FP32 mean {:.4}, min {:.4}; output SQNR {} dB",
                q.wordsim353_spearman,
                f.wordsim353_spearman,
                q.simlex999_spearman,
                f.simlex999_spearman,
                q.lee_pearson,
                f.lee_pearson,
                a.cosine_mean,
                a.cosine_min,
                r.output.sqnr_db
            );
        }
        None => {
            let _ = writeln!(
                out,
                "top-1 {:.2}% (FP32 {:.2}%, Δ {:+.2}), top-5 {:.2}%, certainty {:.4}; output SQNR {} dB",
                100.0 * r.quantized.top1,
                100.0 * r.fp32.top1,
                100.0 * r.delta_top1,
                100.0 * r.quantized.top5,
                r.quantized.avg_certainty,
                r.output.sqnr_db
            );
        }
    }
    if r.compliance.passed {
        let _ = writeln!(
            out,
            "compliance: PASS ({} elements, {} scales checked)",
            r.compliance.totals.elements, r.compliance.totals.scales
        );
    } else {
        let _ = writeln!(
            out,
            "compliance: FAIL — {} off-grid elements, {} bad scales in {}",
            r.compliance.totals.off_grid,
            r.compliance.totals.bad_scales,
            r.compliance.layers_with_violations.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "weights: {:.3} bits/element, {:.0} bytes vs {:.0} FP32 ({:.2}x)\n",
        r.compression.weight_bits_per_element,
        r.compression.quantized_bytes,
        r.compression.fp32_bytes,
        r.compression.ratio
    );
    let w = r
        .layers
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        out,
        "{:w$}  {:14}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}  {:>10}  {:>8}  {:>11}  {:>6}",
        "layer",
        "kind",
        "w SQNR",
        "in SQNR",
        "out SQNR",
        "iso SQNR",
        "out cos",
        "out MSE",
        "max err",
        "violations",
        "w bits"
    );
    let db = |s: &Option<ErrorStats>| s.map_or("-".to_string(), |s| s.sqnr_db.to_string());
    for l in &r.layers {
        let viol: u64 = [l.compliance.weight, l.compliance.input, l.compliance.output]
            .into_iter()
            .flatten()
            .map(|c| c.violations())
            .sum();
        let checked = [l.compliance.weight, l.compliance.input, l.compliance.output]
            .into_iter()
            .any(|c| c.is_some());
        let _ = writeln!(
            out,
            "{:w$}  {:14}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}  {:>10}  {:>8}  {:>11}  {:>6}",
            l.name,
            l.kind,
            db(&l.propagated.weight),
            db(&l.propagated.input),
            db(&l.propagated.output),
            db(&l.isolated_output),
            l.propagated
                .output
                .map_or("-".to_string(), |s| format!("{:.6}", s.cosine)),
            l.propagated
                .output
                .map_or("-".to_string(), |s| format!("{:.3e}", s.mse)),
            l.propagated
                .output
                .map_or("-".to_string(), |s| format!("{:.3e}", s.max_abs_error)),
            if checked {
                viol.to_string()
            } else {
                "-".to_string()
            },
            l.weight_bits_per_element
                .map_or("-".to_string(), |b| format!("{b:.2}")),
        );
    }
    if let Some(sens) = &r.sensitivity {
        let _ = writeln!(
            out,
            "\nsensitivity (config applied to one layer at a time, ranked by top-1 lost):"
        );
        for s in sens {
            let _ = writeln!(
                out,
                "{:>3}. {:w$}  top-1 {:.2}%  drop {:+.2}  output SQNR {} dB",
                s.rank,
                s.layer,
                100.0 * s.top1,
                100.0 * s.top1_drop,
                s.output_sqnr_db
            );
        }
    }
    out
}

/// Writes `text` to `path` atomically (a temporary file in the same folder, renamed).
pub fn write_atomic(path: &Path, text: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| EvalError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| EvalError::io(path, e))
}

/// Writes a run directory: `config.yaml`, `layers.csv`, `comparison_report.txt`,
/// `report.html` and, last, `report.json` (so a complete `report.json` marks a finished run).
pub fn write_run_dir(dir: &Path, report: &RunReport, config_yaml: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
    write_atomic(&dir.join("config.yaml"), config_yaml.as_bytes())?;
    write_atomic(
        &dir.join("layers.csv"),
        format_layers_csv(report).as_bytes(),
    )?;
    write_atomic(
        &dir.join("comparison_report.txt"),
        format_comparison(report).as_bytes(),
    )?;
    write_atomic(
        &dir.join("report.html"),
        crate::html::run_html(report)?.as_bytes(),
    )?;
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| EvalError::io(&dir.join("report.json"), e))?;
    write_atomic(&dir.join("report.json"), json.as_bytes())
}

/// Reads a finished run's `report.json`; `None` when absent or incomplete (an interrupted run).
pub fn read_finished(dir: &Path) -> Option<RunReport> {
    let text = std::fs::read_to_string(dir.join("report.json")).ok()?;
    let r: RunReport = serde_json::from_str(&text).ok()?;
    (r.schema_version == SCHEMA_VERSION).then_some(r)
}

/// Writes `summary.md`, `summary.csv`, `summary.json` and `report.html` (charts across
/// configs) into `dir`.
pub fn write_summary(dir: &Path, rows: &[SummaryRow], reports: &[RunReport]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
    let mut md = String::from("# lowbit summary\n\n");
    md.push_str(&format_markdown(rows));
    write_atomic(&dir.join("summary.md"), md.as_bytes())?;
    write_atomic(
        &dir.join("summary.csv"),
        format_summary_csv(rows).as_bytes(),
    )?;
    let json = serde_json::json!({ "schema_version": SCHEMA_VERSION, "rows": rows });
    let text = serde_json::to_string_pretty(&json)
        .map_err(|e| EvalError::io(&dir.join("summary.json"), e))?;
    write_atomic(&dir.join("summary.json"), text.as_bytes())?;
    write_atomic(
        &dir.join("report.html"),
        crate::html::sweep_html(rows, reports)?.as_bytes(),
    )
}
