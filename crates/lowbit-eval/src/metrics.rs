//! Task metrics of a classifier: top-1, top-5 and average certainty (mean max softmax
//! probability), accumulated batch by batch.

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
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

/// Pearson's correlation coefficient of `a` and `b` (as `scipy.stats.pearsonr`), computed in
/// two passes (means first) in f64.
///
/// NaN when a sample is constant or holds a NaN (scipy gives NaN too); an error when the
/// lengths differ or there are fewer than 2 values.
///
/// ```
/// // Deviations (−1, 0, 1) and (−1, 1, 0): r = 1 / √(2·2).
/// assert_eq!(lowbit_eval::pearson(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0])?, 0.5);
/// # Ok::<(), lowbit_eval::EvalError>(())
/// ```
pub fn pearson(a: &[f64], b: &[f64]) -> Result<f64> {
    check_pair("pearson", a, b)?;
    let n = a.len() as f64;
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x - ma, y - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa == 0.0 || sbb == 0.0 {
        return Ok(f64::NAN);
    }
    Ok((sab / (saa * sbb).sqrt()).clamp(-1.0, 1.0))
}

/// Spearman's rank correlation of `a` and `b` (as `scipy.stats.spearmanr`): Pearson's
/// coefficient of their ranks, tied values getting the average of the ranks they span.
///
/// NaN when a sample is constant or holds a NaN; an error when the lengths differ or there
/// are fewer than 2 values.
///
/// ```
/// // Ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): r = 4.5 / √(4.5·5) = 3/√10.
/// let r = lowbit_eval::spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0])?;
/// assert!((r - 0.9486832980505138).abs() < 1e-15);
/// # Ok::<(), lowbit_eval::EvalError>(())
/// ```
pub fn spearman(a: &[f64], b: &[f64]) -> Result<f64> {
    check_pair("spearman", a, b)?;
    if a.iter().chain(b).any(|x| x.is_nan()) {
        return Ok(f64::NAN);
    }
    pearson(&average_ranks(a), &average_ranks(b))
}

/// The 1-based ranks of `x`, ties sharing the mean of their ranks (`scipy.stats.rankdata`'s
/// `average` method). NaN values rank last.
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
    let mut ranks = vec![0.0; x.len()];
    let mut start = 0;
    while start < order.len() {
        let v = x[order[start]];
        let mut end = start + 1;
        while end < order.len() && x[order[end]] == v {
            end += 1;
        }
        // Positions start..end hold ranks start+1 ..= end: their mean is (start + 1 + end) / 2.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

fn check_pair(what: &str, a: &[f64], b: &[f64]) -> Result<()> {
    if a.len() != b.len() {
        return Err(EvalError::mismatch(
            what,
            format!("samples of {} and {} values", a.len(), b.len()),
        ));
    }
    if a.len() < 2 {
        return Err(EvalError::mismatch(
            what,
            format!("{} values; at least 2 are needed", a.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod correlation_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn pearson_exact_cases() {
        // Deviations (−1, 0, 1), (−1, 1, 0): Σdxdy = 1, Σdx² = Σdy² = 2 → 1/2.
        // (scipy 1.17.1 pearsonr: 0.4999999999999999, one ulp below.)
        assert_eq!(pearson(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]).unwrap(), 0.5);
        assert_eq!(pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).unwrap(), 1.0);
        assert_eq!(pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap(), -1.0);
        // scipy 1.17.1: pearsonr(a, b).statistic = -0.3029552174492919 for these:
        let a = [3.5, 1.0, 2.0, 2.0, 7.25, -1.0, 2.0, 4.0];
        let b = [10.0, 20.0, 20.0, 30.0, 5.0, 5.0, 40.0, 0.0];
        // By hand (exact fractions): mean a = 83/32, mean b = 65/4; Σxy = 1065/4, so
        // Σdxdy = 1065/4 − 8·(83/32)·(65/4) = −1135/16; Σx² = 1517/16, Σdx² = 5247/128;
        // Σy² = 3450, Σdy² = 2675/2.
        let hand = -(1135.0 / 16.0) / (5247.0f64 / 128.0 * 2675.0 / 2.0).sqrt();
        let r = pearson(&a, &b).unwrap();
        assert!((r - hand).abs() < 1e-15, "{r} vs {hand}");
        assert!((r - -0.3029552174492919).abs() < 1e-15, "{r}");
    }

    #[test]
    fn spearman_with_ties() {
        // Ranks (1, 2.5, 2.5, 4), (1, 3, 2, 4): 4.5/√(4.5·5) = 3/√10; scipy 0.9486832980505139.
        let r = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((r - 3.0 / 10f64.sqrt()).abs() < 1e-15, "{r}");
        let a = [3.5, 1.0, 2.0, 2.0, 7.25, -1.0, 2.0, 4.0];
        let b = [10.0, 20.0, 20.0, 30.0, 5.0, 5.0, 40.0, 0.0];
        // scipy.stats.rankdata (method "average"):
        assert_eq!(average_ranks(&a), [6.0, 2.0, 4.0, 4.0, 8.0, 1.0, 4.0, 7.0]);
        assert_eq!(average_ranks(&b), [4.0, 5.5, 5.5, 7.0, 2.5, 2.5, 8.0, 1.0]);
        // Rank deviations from 4.5: Σdxdy = −15.5, Σdx² = 40, Σdy² = 41;
        // scipy 1.17.1 spearmanr: -0.38274521870171596.
        let r = spearman(&a, &b).unwrap();
        assert!((r - -15.5 / 1640f64.sqrt()).abs() < 1e-15, "{r}");
        assert!((r - -0.38274521870171596).abs() < 1e-15, "{r}");
        assert_eq!(
            spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[5.0, 4.0, 3.0, 2.0, 1.0]).unwrap(),
            -1.0
        );
    }

    #[test]
    fn degenerate_inputs() {
        assert!(
            pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0])
                .unwrap()
                .is_nan()
        );
        assert!(
            spearman(&[1.0, f64::NAN, 3.0], &[1.0, 2.0, 3.0])
                .unwrap()
                .is_nan()
        );
        let e = pearson(&[1.0, 2.0], &[1.0]).unwrap_err().to_string();
        assert!(e.contains("pearson") && e.contains("2 and 1"), "{e}");
        assert!(spearman(&[1.0], &[1.0]).is_err());
    }
}
