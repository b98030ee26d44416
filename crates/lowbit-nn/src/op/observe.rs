//! The FP32 observation pass of a layer and what comes of it: SmoothQuant's channel maxima and
//! factors, GPTQ's input Hessian and quantized weight ([`crate::LayerTable::begin_observation`],
//! [`crate::LayerTable::finish_observation`], and their scales-file forms).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use candle_core::Tensor;

use super::LayerQuant;
use crate::error::{NnError, Result};
use crate::gptq::{Gptq, GptqInstalled};
use crate::smoothing::{Smoother, Smoothing, SmoothingFactors, channel_amax, merge_amax};

/// What a smoothing or GPTQ layer observed in the FP32 pass, and what it installed from it.
#[derive(Debug, Default)]
pub(super) struct Observation {
    /// Observing FP32 passes ([`crate::LayerTable::begin_observation`]).
    observing: bool,
    /// The input's channel maxima so far.
    act_amax: Option<Vec<f32>>,
    /// The weight's column maxima.
    weight_amax: Option<Vec<f32>>,
    /// The calibrated factors.
    smoother: Option<Arc<Smoother>>,
    /// GPTQ: `Σ x xᵀ` of the inputs so far.
    hessian: Option<lowbit_quant::Hessian>,
    /// GPTQ: the FP32 weight seen while observing.
    weight_seen: Option<Tensor>,
    /// GPTQ: the quantized weight.
    gptq: Option<Arc<GptqInstalled>>,
    /// GPTQ: when the first input of this observation came (a process-wide sequence number)
    /// and a fingerprint of its values (layers that read the same tensor share it).
    first_input: Option<(u64, u64)>,
    /// GPTQ, sequential: the installed weight stands in for the FP32 weight in FP32 passes.
    substitute: bool,
}

/// Orders the first inputs of the layers' observations.
static INPUT_SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// FNV-1a over the bits of `v`.
fn fingerprint(v: &[f32]) -> u64 {
    v.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, x| {
        (h ^ u64::from(x.to_bits())).wrapping_mul(0x100_0000_01B3)
    })
}

impl LayerQuant {
    /// SmoothQuant smoothing now: the configured one while the layer is enabled and the model
    /// is not in [`crate::Mode::Fp32`] (calibration observes the smoothed tensors).
    pub fn smoothing(&self) -> Option<Smoothing> {
        let on =
            self.layer_on.load(Ordering::SeqCst) && self.ctx.mode() != crate::context::Mode::Fp32;
        self.smoothing.filter(|_| on)
    }

    /// The configured smoothing while the layer is enabled, whatever the mode.
    pub fn enabled_smoothing(&self) -> Option<Smoothing> {
        self.smoothing
            .filter(|_| self.layer_on.load(Ordering::SeqCst))
    }

    fn observation(&self) -> Result<std::sync::MutexGuard<'_, Observation>> {
        self.observed
            .lock()
            .map_err(|_| NnError::layer(&self.name, "smoothing state poisoned by a panic"))
    }

    /// The installed factors when the layer smooths now; an error when it should and has
    /// none.
    pub(super) fn smoother(&self) -> Result<Option<Arc<Smoother>>> {
        let Some(sm) = self.smoothing() else {
            return Ok(None);
        };
        match &self.observation()?.smoother {
            Some(s) => Ok(Some(s.clone())),
            None => Err(NnError::layer(
                &self.name,
                format!(
                    "{sm} needs factors calibrated on the FP32 model's activations: run \
                     `lowbit calibrate` on the config first (in code: LayerTable::begin_observation, \
                     FP32 forward passes, LayerTable::finish_observation)"
                ),
            )),
        }
    }

    /// Starts the FP32 observation of what the layer's smoothing (channel maxima) and GPTQ
    /// (the inputs' Hessian, the weight) need; nothing when it has neither.
    pub fn begin_observation(&self) -> Result<()> {
        if self.smoothing.is_some() || self.gptq.is_some() {
            let mut st = self.observation()?;
            st.observing = true;
            st.act_amax = None;
            st.weight_amax = None;
            st.hessian = None;
            st.weight_seen = None;
            st.first_input = None;
        }
        Ok(())
    }

    /// GPTQ: when the layer's first input of the current observation came, and a fingerprint
    /// of its values ([`crate::LayerTable::observe`] orders and groups sequential layers by
    /// them).
    pub(crate) fn gptq_first_input(&self) -> Option<(u64, u64)> {
        self.observed.lock().ok()?.first_input
    }

    /// GPTQ, sequential: whether the installed GPTQ weight stands in for the FP32 weight in
    /// FP32 passes (the observation passes of later layers).
    pub(crate) fn set_gptq_substitute(&self, on: bool) -> Result<()> {
        self.observation()?.substitute = on;
        Ok(())
    }

    /// The installed GPTQ weight when it stands in for the FP32 weight now.
    pub(super) fn gptq_substitute(&self, p: &Tensor) -> Result<Option<Tensor>> {
        if self.gptq.is_none() {
            return Ok(None);
        }
        let st = self.observation()?;
        let values = match &st.gptq {
            Some(g) if st.substitute && g.values.dims() == p.dims() => g.values.clone(),
            _ => return Ok(None),
        };
        let smoother = self.gptq_smoother(&st);
        drop(st);
        // The GPTQ weight is of the transformed weight (`Q(W R)`, `Q(W · s)`): the FP32 pass
        // takes it back (`Q(W R) Rᵀ`, `Q(W · s) / s`).
        let values =
            self.untransform_by(&values, true, smoother.as_deref(), self.enabled_rotator()?)?;
        Ok(Some(values.to_dtype(p.dtype())?.to_device(p.device())?))
    }

    /// The installed smoothing factors when the layer smooths, whatever the mode (GPTQ works
    /// on the smoothed weight).
    fn gptq_smoother(&self, st: &Observation) -> Option<Arc<Smoother>> {
        st.smoother.clone().filter(|_| self.smoothing.is_some())
    }

    /// Whether the layer needs an observation pass (it smooths or runs GPTQ, and is enabled).
    pub fn observes(&self) -> bool {
        self.enabled_smoothing().is_some() || self.enabled_gptq().is_some()
    }

    /// Computes and installs the smoothing factors from what
    /// [`begin_observation`](Self::begin_observation) observed; `None` when the layer does
    /// not smooth.
    pub fn freeze_smoothing(&self) -> Result<Option<SmoothingFactors>> {
        let Some(sm) = self.smoothing else {
            return Ok(None);
        };
        let mut st = self.observation()?;
        st.observing = false;
        let (Some(act), Some(w)) = (st.act_amax.take(), st.weight_amax.take()) else {
            return Err(NnError::layer(
                &self.name,
                "smoothing saw no forward pass of this layer while observing: no factors",
            ));
        };
        let factors = sm
            .factors(&act, &w)
            .map_err(|e| NnError::layer(&self.name, e))?;
        let stored = SmoothingFactors {
            alpha: sm.alpha,
            factors,
        };
        st.smoother = Some(Arc::new(
            Smoother::new(stored.clone()).map_err(|e| NnError::layer(&self.name, e))?,
        ));
        drop(st);
        self.ctx.invalidate();
        Ok(Some(stored))
    }

    /// The configured GPTQ while the layer is enabled.
    pub fn enabled_gptq(&self) -> Option<Gptq> {
        self.gptq.filter(|_| self.layer_on.load(Ordering::SeqCst))
    }

    /// The weight spec GPTQ quantizes to: the layer's weight quantizer's (an error without
    /// one, with both smoothing and a rotation, which GPTQ does not compose with here, and on
    /// a weight stored rotated).
    fn gptq_spec(&self) -> Result<lowbit_quant::QuantSpec> {
        if self.smoothing.is_some() && self.rotation.is_some() {
            return Err(NnError::layer(
                &self.name,
                "gptq with both smoothing and a rotation on the same layer is not supported \
                 (either one is)",
            ));
        }
        if self.weight_rotated.load(Ordering::SeqCst) {
            return Err(NnError::layer(
                &self.name,
                "gptq on a weight stored rotated (a low-bit checkpoint) is not supported",
            ));
        }
        match &self.weight {
            Some(q) => Ok(q.spec()),
            None => Err(NnError::layer(
                &self.name,
                "gptq quantizes the weight, but the config gives this layer no weight quantizer",
            )),
        }
    }

    /// Runs GPTQ on the observed weight and Hessian and installs the result; `None` when the
    /// layer does not run GPTQ.
    pub fn freeze_gptq(&self) -> Result<Option<lowbit_quant::QuantizedTensor>> {
        let Some(g) = self.gptq else {
            return Ok(None);
        };
        let spec = self.gptq_spec()?;
        let mut st = self.observation()?;
        st.observing = false;
        let (Some(h), Some(w)) = (st.hessian.take(), st.weight_seen.take()) else {
            return Err(NnError::layer(
                &self.name,
                "gptq saw no forward pass of this layer while observing: no weight",
            ));
        };
        let (rows, cols) = w.dims2().map_err(|_| {
            NnError::layer(
                &self.name,
                format!("gptq needs a 2-D weight; it is {:?}", w.dims()),
            )
        })?;
        // GPTQ of the weight as the quantized pass transforms it (`W · s`, `W R`), with the
        // Hessian of the inputs it transforms: rotated as they were observed, smoothed here
        // (`H_ij / (s_i s_j)`; the factors are frozen first, from the same pass).
        let smoother = self.gptq_smoother(&st);
        let mut h = h;
        match (&self.smoothing, &smoother) {
            (Some(_), None) => {
                return Err(NnError::layer(
                    &self.name,
                    "gptq with smoothing needs the smoothing factors first (no pass observed)",
                ));
            }
            (_, Some(s)) => {
                let d: Vec<f64> = s
                    .stored
                    .factors
                    .iter()
                    .map(|&f| 1.0 / f64::from(f))
                    .collect();
                h.scale_inputs(&d)
                    .map_err(|e| NnError::layer(&self.name, format!("gptq inputs: {e}")))?;
            }
            (None, None) => {}
        }
        let w = self.transform_by(&w, true, smoother.as_deref(), self.enabled_rotator()?)?;
        let wv = w
            .to_dtype(candle_core::DType::F32)?
            .to_device(&candle_core::Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let layer = |e: lowbit_quant::QuantError| NnError::layer(&self.name, e);
        let out = lowbit_quant::gptq(&spec, &wv, rows, cols, &h, g.options()).map_err(layer)?;
        let stored = spec
            .quantize_with_scales(&out.values, &[rows, cols], &out.scales)
            .map_err(layer)?;
        st.gptq = Some(Arc::new(GptqInstalled::new(stored.clone())?));
        drop(st);
        self.ctx.invalidate();
        Ok(Some(stored))
    }

    /// The installed GPTQ weight (codes and scales), if any.
    pub fn gptq_weight(&self) -> Option<lowbit_quant::QuantizedTensor> {
        let st = self.observed.lock().ok()?;
        st.gptq.as_ref().map(|g| g.stored.clone())
    }

    /// Installs a GPTQ weight (from a scales file); the layer must run GPTQ with the same
    /// weight spec.
    pub fn load_gptq(&self, t: &lowbit_quant::QuantizedTensor) -> Result<()> {
        if self.gptq.is_none() {
            return Err(NnError::layer(
                &self.name,
                "the scales file has a GPTQ weight, but the config gives this layer no gptq",
            ));
        }
        let spec = self.gptq_spec()?;
        if *t.spec() != spec {
            return Err(NnError::layer(
                &self.name,
                format!(
                    "the scales file's GPTQ weight is {}, the config's weight spec {spec}: calibrate again",
                    t.spec()
                ),
            ));
        }
        let installed = GptqInstalled::new(t.clone())?;
        self.observation()?.gptq = Some(Arc::new(installed));
        self.ctx.invalidate();
        Ok(())
    }

    /// The scales the weight was quantized on when GPTQ did it (for compliance checks).
    pub fn gptq_scales(&self) -> Option<lowbit_quant::Scales> {
        let st = self.observed.lock().ok()?;
        st.gptq.as_ref().map(|g| g.stored.scales().clone())
    }

    /// The GPTQ weight to use instead of round-to-nearest now (f32, on the CPU): the installed
    /// one while the weight quantizer is active; an error when the layer runs GPTQ and has
    /// none, or when its shape is not the weight's `p`.
    pub(super) fn gptq_now(&self, p: &Tensor) -> Result<Option<Tensor>> {
        if self.gptq.is_none() || !self.weight.as_ref().is_some_and(|q| q.is_active()) {
            return Ok(None);
        }
        let st = self.observation()?;
        let Some(g) = &st.gptq else {
            return Err(NnError::layer(
                &self.name,
                "gptq needs the weight quantized from calibration inputs: run `lowbit calibrate` \
                 on the config first (in code: LayerTable::begin_observation, FP32 forward \
                 passes, LayerTable::finish_observation)",
            ));
        };
        if g.values.dims() != p.dims() {
            return Err(NnError::layer(
                &self.name,
                format!(
                    "the GPTQ weight is {:?}, the layer's weight {:?}",
                    g.values.dims(),
                    p.dims()
                ),
            ));
        }
        Ok(Some(g.values.clone()))
    }

    /// The installed smoothing factors, if any.
    pub fn smoothing_factors(&self) -> Option<SmoothingFactors> {
        let st = self.observed.lock().ok()?;
        st.smoother.as_ref().map(|s| s.stored.clone())
    }

    /// Installs calibrated factors (from a scales file); the layer must smooth with the same
    /// α.
    pub fn load_smoothing(&self, f: &SmoothingFactors) -> Result<()> {
        let Some(sm) = self.smoothing else {
            return Err(NnError::layer(
                &self.name,
                "the scales file has smoothing factors, but the config does not smooth this layer",
            ));
        };
        if sm.alpha != f.alpha {
            return Err(NnError::layer(
                &self.name,
                format!(
                    "the scales file's smoothing factors were calibrated with alpha {}, the config says {}: calibrate again",
                    f.alpha, sm.alpha
                ),
            ));
        }
        let smoother = Smoother::new(f.clone()).map_err(|e| NnError::layer(&self.name, e))?;
        self.observation()?.smoother = Some(Arc::new(smoother));
        self.ctx.invalidate();
        Ok(())
    }

    pub(super) fn observe(&self, x: &Tensor, weight: bool) -> Result<()> {
        if (self.smoothing.is_none() && self.gptq.is_none()) || !x.dtype().is_float() {
            return Ok(());
        }
        let mut st = self.observation()?;
        if !st.observing {
            return Ok(());
        }
        let layer = |e: NnError| NnError::layer(&self.name, e);
        if self.smoothing.is_some() {
            let m = channel_amax(x).map_err(layer)?;
            let slot = if weight {
                &mut st.weight_amax
            } else {
                &mut st.act_amax
            };
            merge_amax(slot, m).map_err(layer)?;
        }
        if self.gptq.is_some() {
            // A rotating layer computes with `x R`: GPTQ's Hessian is of those (the FP32 pass
            // does not rotate; the weight is transformed when GPTQ runs).
            let rotated;
            let x = match self.enabled_rotator()? {
                Some(r) if !weight => {
                    rotated = r.rotate(x).map_err(|e| NnError::layer(&self.name, e))?;
                    &rotated
                }
                _ => x,
            };
            if weight {
                st.weight_seen = Some(x.clone());
            } else {
                let width = x.dims().last().copied().unwrap_or(1);
                let v = x
                    .to_dtype(candle_core::DType::F32)?
                    .to_device(&candle_core::Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                if st.first_input.is_none() {
                    let order = INPUT_SEQUENCE.fetch_add(1, Ordering::SeqCst);
                    st.first_input = Some((order, fingerprint(&v)));
                }
                let h = st
                    .hessian
                    .get_or_insert_with(|| lowbit_quant::Hessian::new(width));
                h.add(&v)
                    .map_err(|e| NnError::layer(&self.name, format!("gptq inputs: {e}")))?;
            }
        }
        Ok(())
    }
}
