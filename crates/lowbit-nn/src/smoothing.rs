//! [`Smoothing`]: SmoothQuant's per-channel migration of activation outliers into the weight
//! (Xiao et al., 2023). A linear layer `y = x Wᵀ` computes `(x / s)(W · s)ᵀ` instead, with one
//! factor per input channel
//!
//! ```text
//! s_j = max(amax(|X_j|)^α / max(amax(|W_{:,j}|), 1e-5)^(1−α), 1e-5)
//! ```
//!
//! where `amax(|X_j|)` is channel `j`'s largest magnitude over calibration batches (the FP32
//! model's activations) and `amax(|W_{:,j}|)` the weight column's. This is the reference
//! implementation's formula (`smooth_ln_fcs`), clamps included, in `f32`. In FP32 the layer
//! is unchanged up to rounding; what the quantizers see are `x / s` (its outlier channels
//! flattened) and `W · s`. In deployment `1/s` folds into the preceding LayerNorm.
//!
//! The factors are calibrated statistics: [`LayerTable::begin_observation`] observes FP32
//! passes, [`LayerTable::finish_observation`] computes and installs them, and they travel in a
//! [`StaticScales`] file with the other static scales. A layer that smooths but has no
//! factors refuses to run a quantized or calibration pass.
//!
//! [`LayerTable::begin_observation`]: crate::LayerTable::begin_observation
//! [`LayerTable::finish_observation`]: crate::LayerTable::finish_observation
//! [`StaticScales`]: crate::StaticScales

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};

/// The reference implementation's floor on the weight maxima and on the factors.
pub const SMOOTHING_FLOOR: f32 = 1e-5;

/// SmoothQuant's migration strength (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smoothing {
    /// Migration strength α in `[0, 1]`: 0 leaves the activations alone (`s = 1 / amax(W)`),
    /// 1 moves all of their range into the weight. SmoothQuant uses 0.5 for most models.
    pub alpha: f32,
}

impl Smoothing {
    /// Checks α.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(format!(
                "smoothing alpha {} must be a number from 0 to 1",
                self.alpha
            ));
        }
        Ok(())
    }

    /// The factors `s_j` from the input's channel maxima `act_amax` and the weight's column
    /// maxima `weight_amax` (same length; see the module docs).
    pub fn factors(
        &self,
        act_amax: &[f32],
        weight_amax: &[f32],
    ) -> std::result::Result<Vec<f32>, String> {
        if act_amax.len() != weight_amax.len() {
            return Err(format!(
                "smoothing needs as many input channels as weight columns: the input has {}, the weight {}",
                act_amax.len(),
                weight_amax.len()
            ));
        }
        Ok(act_amax
            .iter()
            .zip(weight_amax)
            .map(|(&a, &w)| {
                let s = a.powf(self.alpha) / w.max(SMOOTHING_FLOOR).powf(1.0 - self.alpha);
                // NaN (a NaN maximum) stays NaN and is refused when installed.
                if s < SMOOTHING_FLOOR {
                    SMOOTHING_FLOOR
                } else {
                    s
                }
            })
            .collect())
    }
}

impl std::fmt::Display for Smoothing {
    /// `smoothquant α=0.5`.
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(out, "smoothquant α={}", self.alpha)
    }
}

/// Calibrated factors of one layer, as a [`StaticScales`](crate::StaticScales) file stores
/// them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmoothingFactors {
    /// The α they were computed with.
    pub alpha: f32,
    /// One factor per input channel.
    pub factors: Vec<f32>,
}

/// Installed factors: the values, an f32 tensor on the CPU, and its copies on the devices and
/// in the dtypes the layer has run in (so a GPU layer does not copy them at every call).
#[derive(Debug)]
pub(crate) struct Smoother {
    pub(crate) stored: SmoothingFactors,
    s: Tensor,
    copies: std::sync::Mutex<Vec<Tensor>>,
}

impl Smoother {
    pub(crate) fn new(stored: SmoothingFactors) -> Result<Smoother> {
        if let Some((j, v)) = stored
            .factors
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && **v > 0.0))
        {
            return Err(NnError::Kernel(format!(
                "smoothing factor {j} is {v}: factors must be positive and finite"
            )));
        }
        let s = Tensor::new(stored.factors.as_slice(), &Device::Cpu)?;
        Ok(Smoother {
            stored,
            s,
            copies: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn check(&self, x: &Tensor) -> Result<Tensor> {
        let width = x.dims().last().copied().unwrap_or(1);
        if width != self.stored.factors.len() {
            return Err(NnError::Kernel(format!(
                "the smoothing factors are for {} input channels; the tensor is {:?}",
                self.stored.factors.len(),
                x.dims()
            )));
        }
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            return Ok(self.s.clone());
        }
        let mut copies = self
            .copies
            .lock()
            .map_err(|_| NnError::Kernel("smoothing factors poisoned by a panic".into()))?;
        if let Some(t) = copies
            .iter()
            .find(|t| t.dtype() == x.dtype() && t.device().same_device(x.device()))
        {
            return Ok(t.clone());
        }
        let t = self.s.to_dtype(x.dtype())?.to_device(x.device())?;
        copies.push(t.clone());
        Ok(t)
    }

    /// `x / s` along the last axis (an input).
    pub(crate) fn smooth_input(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.check(x)?;
        Ok(x.broadcast_div(&s)?)
    }

    /// `x · s` along the last axis (a weight; or an input taken back).
    pub(crate) fn smooth_weight(&self, w: &Tensor) -> Result<Tensor> {
        let s = self.check(w)?;
        Ok(w.broadcast_mul(&s)?)
    }
}

/// Largest magnitude of each index of the last axis of `x` (over every other axis), in f32.
/// NaN elements are skipped (`f32::max`).
pub(crate) fn channel_amax(x: &Tensor) -> Result<Vec<f32>> {
    let width = x.dims().last().copied().unwrap_or(1);
    let v = x
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    let mut out = vec![0f32; width];
    if width == 0 {
        return Ok(out);
    }
    for row in v.chunks_exact(width) {
        for (m, x) in out.iter_mut().zip(row) {
            *m = m.max(x.abs());
        }
    }
    Ok(out)
}

/// Element-wise maximum of two channel maxima (for a running observation).
pub(crate) fn merge_amax(into: &mut Option<Vec<f32>>, new: Vec<f32>) -> Result<()> {
    match into {
        None => *into = Some(new),
        Some(old) if old.len() == new.len() => {
            for (o, n) in old.iter_mut().zip(new) {
                *o = o.max(n);
            }
        }
        Some(old) => {
            return Err(NnError::Kernel(format!(
                "smoothing observed {} input channels in one batch and {} in another",
                old.len(),
                new.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn factors_follow_the_reference_formula() {
        // s = a^α / w^(1−α), floors at 1e-5 on w and on s.
        let sm = Smoothing { alpha: 0.5 };
        let s = sm
            .factors(&[16.0, 1.0, 0.0, 4.0], &[4.0, 0.25, 1.0, 0.0])
            .unwrap();
        // 4/2; 1/0.5; 0 → floor; 2/√1e-5.
        assert_eq!(s[0], 2.0);
        assert_eq!(s[1], 2.0);
        assert_eq!(s[2], SMOOTHING_FLOOR);
        assert_eq!(s[3], 2.0 / 1e-5f32.powf(0.5));
        let all_act = Smoothing { alpha: 1.0 }.factors(&[3.0], &[7.0]).unwrap();
        assert_eq!(all_act, [3.0]);
        let all_w = Smoothing { alpha: 0.0 }.factors(&[3.0], &[8.0]).unwrap();
        assert_eq!(all_w, [0.125]);
        assert!(sm.factors(&[1.0], &[1.0, 2.0]).is_err());
        assert!(Smoothing { alpha: 1.5 }.validate().is_err());
        assert!(Smoothing { alpha: f32::NAN }.validate().is_err());
    }

    #[test]
    fn channel_maxima_and_bad_factors() {
        let x = Tensor::new(&[[1f32, -5.0, 0.5], [-2.0, 3.0, f32::NAN]], &Device::Cpu).unwrap();
        assert_eq!(channel_amax(&x).unwrap(), [2.0, 5.0, 0.5]);
        let mut m = None;
        merge_amax(&mut m, vec![1.0, 4.0]).unwrap();
        merge_amax(&mut m, vec![3.0, 2.0]).unwrap();
        assert_eq!(m.as_deref(), Some(&[3.0f32, 4.0][..]));
        assert!(merge_amax(&mut m, vec![1.0]).is_err());
        let bad = SmoothingFactors {
            alpha: 0.5,
            factors: vec![1.0, 0.0],
        };
        assert!(Smoother::new(bad).is_err());
    }
}
