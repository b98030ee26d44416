//! # lowbit-eval
//!
//! Evaluates quantized models against their FP32 selves: task metrics, layer-wise error from
//! lowbit-nn's taps (propagated and isolated), format compliance judged by the value tables,
//! compression with scales included, one-layer-at-a-time sensitivity, and the reports of a run
//! directory (`report.json`, `layers.csv`, `comparison_report.txt`, `report.html`) and of a
//! sweep (`summary.md`, `summary.csv`, `summary.json`).
//!
//! ```
//! use lowbit_eval::{ErrorAccumulator, TaskAccumulator};
//!
//! // Two samples of three classes; the first is right, the second wrong.
//! let mut task = TaskAccumulator::default();
//! task.add(&[0.0, 3.0, 1.0, 2.0, 0.0, 1.0], 3, &[1, 2]);
//! assert_eq!(task.finish().top1, 0.5);
//!
//! // SQNR of a quantized tensor: 10·log10(Σx² / Σ(x − q)²).
//! let mut err = ErrorAccumulator::default();
//! err.add(&[3.0, 4.0], &[3.0, 3.5]); // Σx² = 25, Σe² = 0.25
//! assert!((err.finish().sqnr_db.0 - 20.0).abs() < 1e-12);
//! ```
//!
//! ## Map
//!
//! - [`TaskAccumulator`], [`TaskMetrics`] (`metrics.rs`): top-1, top-5, average certainty;
//!   [`pearson`], [`spearman`] (average ranks for ties).
//! - [`embedding`]: sentence-embedding scores ([`embedding_eval`]: WordSim-353, SimLex-999,
//!   Lee) and agreement of quantized with FP32 embeddings ([`compare_embeddings`]).
//! - [`ErrorAccumulator`], [`ErrorStats`], [`Db`] (`stats.rs`): MSE, cosine, SQNR, max error.
//! - [`Evaluator`], [`Variant`], [`Reference`] (`evaluator.rs`): the FP32 reference once per
//!   batch, N quantized variants; per-layer [`LayerResult`]s with compliance
//!   ([`check_tensor`]) and bits per element.
//! - [`RunReport`], [`SummaryRow`], writers (`report.rs`): every file of a run directory.
//! - `html.rs`: the self-contained `report.html` (plotters SVG charts).
//! - [`validate_schema`] (`schema.rs`) and [`REPORT_SCHEMA`]: the `report.json` schema.
//! - [`EvalError`] (`error.rs`).

#![warn(missing_docs)]

pub mod embedding;
mod error;
mod evaluator;
pub mod html;
mod metrics;
mod report;
mod schema;
mod stats;

pub use embedding::{
    EmbeddingAgreement, EmbeddingEval, EmbeddingStats, EmbeddingTasks, compare_embeddings,
    embedding_eval, embedding_scores,
};
pub use error::{EvalError, Result};
pub use evaluator::{
    EvalResults, Evaluator, LayerResult, PerRole, Reference, RoleCompliance, Variant,
    VariantResult, bits_per_element, check_tensor, to_f32,
};
pub use metrics::{TaskAccumulator, TaskMetrics, average_ranks, pearson, spearman};
pub use report::{
    ComplianceSummary, Compression, EmbeddingReport, EmbeddingRow, REPORT_SCHEMA, RunMeta,
    RunReport, SCHEMA_VERSION, SensitivityRow, SqnrSummary, SummaryRow, format_comparison,
    format_layers_csv, format_markdown, format_summary_csv, format_table, read_finished,
    write_atomic, write_run_dir, write_summary,
};
pub use schema::validate_schema;
pub use stats::{Db, ErrorAccumulator, ErrorStats, sqnr};
