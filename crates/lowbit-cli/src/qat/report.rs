//! What a training run writes: `qat.json`'s rows and summary types, the curves page
//! (`report.html`) and the JSON writer of `qat` and `pipeline`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::resume;
use crate::error::{CliError, Result};

/// One epoch of a training curve.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochRow {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Mean test loss.
    pub test_loss: f64,
    /// Test top-1 of the quantized model.
    pub test_top1: f64,
    /// Training seconds.
    pub seconds: f64,
}

impl EpochRow {
    pub(super) fn exact(&self) -> resume::StateRow {
        resume::StateRow {
            epoch: self.epoch,
            train_loss: self.train_loss,
            test_loss: self.test_loss,
            test_top1: self.test_top1,
            seconds: self.seconds,
        }
    }

    pub(super) fn from_exact(r: &resume::StateRow) -> EpochRow {
        EpochRow {
            epoch: r.epoch,
            train_loss: r.train_loss,
            test_loss: r.test_loss,
            test_top1: r.test_top1,
            seconds: r.seconds,
        }
    }
}

/// `qat.json`.
#[derive(Clone, Debug, Serialize)]
pub struct QatReport {
    /// Format version.
    pub schema_version: u32,
    /// Model name.
    pub model: String,
    /// Config file.
    pub config: String,
    /// Batch norm during QAT: `train` or `fold`.
    pub bn: String,
    /// Training images per epoch.
    pub train_images: usize,
    /// Test images.
    pub test_images: usize,
    /// FP32 test top-1 of the initial weights.
    pub fp32_top1: f64,
    /// Test top-1 with the quantizers on, before training.
    pub ptq_top1: f64,
    /// `--epochs`: the epochs the schedule spans (more than `epochs[]` after `--stop-after`).
    pub planned_epochs: usize,
    /// One row per epoch done.
    pub epochs: Vec<EpochRow>,
    /// Best test top-1 over the epochs (and its epoch).
    pub best_top1: f64,
    /// The epoch of `best_top1` (0: no epoch beat PTQ).
    pub best_epoch: usize,
    /// Bits per weight element of the low-bit checkpoint (`quantized/`), scales included.
    pub quantized_weight_bits: f64,
    /// Test top-1 of the low-bit checkpoint reloaded (the last epoch's weights).
    pub quantized_checkpoint_top1: f64,
    /// With `--learned-scales`: how the weight scales moved.
    pub learned_scales: Option<LearnedSummary>,
    /// The epochs after which the run was resumed (`--resume`).
    pub resumed_at: Vec<usize>,
    /// Wall-clock seconds (all invocations).
    pub seconds: f64,
}

/// How the learned weight scales moved during training (`qat.json`).
#[derive(Clone, Debug, Serialize)]
pub struct LearnedSummary {
    /// Weight tensors with a learned scale.
    pub tensors: usize,
    /// Scales in all.
    pub scales: usize,
    /// The smallest scale after training (they must stay positive).
    pub min_scale: f32,
    /// Mean of |final − initial| / initial.
    pub mean_abs_relative_change: f64,
}

/// `report.html` of a training run: test top-1 per epoch (epoch 0 = before training) and the
/// losses, as inline SVG.
pub(super) fn write_curves_html(
    path: &Path,
    title: &str,
    start_top1: f64,
    rows: &[EpochRow],
    notes: &str,
) -> Result<()> {
    use lowbit_eval::html::{escape, line_chart, page};
    let mut labels = vec!["0".to_string()];
    labels.extend(rows.iter().map(|r| r.epoch.to_string()));
    let mut top1 = vec![100.0 * start_top1];
    top1.extend(rows.iter().map(|r| 100.0 * r.test_top1));
    let acc = line_chart(
        "test top-1 per epoch (epoch 0: before training)",
        &labels,
        &[("test top-1".into(), top1)],
        "top-1 %",
    )?;
    let loss = line_chart(
        "loss per epoch",
        &labels[1..],
        &[
            (
                "train loss".into(),
                rows.iter().map(|r| r.train_loss).collect(),
            ),
            (
                "test loss".into(),
                rows.iter().map(|r| r.test_loss).collect(),
            ),
        ],
        "cross-entropy",
    )?;
    let mut table = String::from(
        "<table><tr><th>epoch</th><th>train loss</th><th>test loss</th><th>test top-1 %</th><th>seconds</th></tr>",
    );
    for r in rows {
        table.push_str(&format!(
            "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.2}</td><td>{:.1}</td></tr>",
            r.epoch,
            r.train_loss,
            r.test_loss,
            100.0 * r.test_top1,
            r.seconds
        ));
    }
    table.push_str("</table>");
    let body = format!(
        "<h1>{}</h1><p>{}</p>{acc}{loss}{table}",
        escape(title),
        escape(notes)
    );
    std::fs::write(path, page(title, &body))
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", path.display())))
}

pub(super) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Other(e.to_string()))?;
    Ok(lowbit_eval::write_atomic(path, text.as_bytes())?)
}
