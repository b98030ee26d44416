//! Task metrics of a classifier: top-1, top-5 and average certainty (mean max softmax
//! probability), accumulated batch by batch.

use serde::{Deserialize, Serialize};

/// Running counts for [`TaskMetrics`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskAccumulator {
    n: u64,
    top1: u64,
    top5: u64,
    certainty: f64,
}

impl TaskAccumulator {
    /// Adds a batch of `logits` (row-major `[labels.len(), classes]`) and its labels.
    pub fn add(&mut self, logits: &[f32], classes: usize, labels: &[u32]) {
        if classes == 0 {
            return;
        }
        for (row, &label) in logits.chunks_exact(classes).zip(labels) {
            let l = label as usize;
            let target = row.get(l).copied().unwrap_or(f32::NEG_INFINITY);
            // Rank of the label: classes strictly above it, ties broken by index.
            let rank = row
                .iter()
                .enumerate()
                .filter(|&(i, &v)| v > target || (v == target && i < l))
                .count();
            self.top1 += u64::from(rank == 0);
            self.top5 += u64::from(rank < 5);
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z: f64 = row.iter().map(|&v| f64::from(v - m).exp()).sum();
            self.certainty += 1.0 / z;
            self.n += 1;
        }
    }

    /// The metrics so far.
    pub fn finish(&self) -> TaskMetrics {
        let n = self.n.max(1) as f64;
        TaskMetrics {
            samples: self.n,
            top1: self.top1 as f64 / n,
            top5: self.top5 as f64 / n,
            avg_certainty: self.certainty / n,
            correct: self.top1,
        }
    }
}

/// Task metrics of one model on one data set.
///
/// ```
/// use lowbit_eval::TaskAccumulator;
/// let mut acc = TaskAccumulator::default();
/// acc.add(&[0.0, 5.0, 1.0, 9.0, 0.0, 0.0], 3, &[1, 2]);
/// let m = acc.finish();
/// assert_eq!(m.top1, 0.5);
/// assert_eq!(m.top5, 1.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    /// Samples seen.
    pub samples: u64,
    /// Samples whose label has the highest logit.
    pub correct: u64,
    /// Top-1 accuracy in [0, 1].
    pub top1: f64,
    /// Top-5 accuracy in [0, 1].
    pub top5: f64,
    /// Mean over samples of the largest softmax probability.
    pub avg_certainty: f64,
}
