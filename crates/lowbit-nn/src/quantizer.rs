//! [`Quantizer`]: one tensor role of one layer — its spec, its calibration state and the mode
//! it obeys.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};
use lowbit_quant::{Calibrator, Frozen, Method, QuantSpec, ScaleMode};
use serde::{Deserialize, Serialize};

use crate::context::{Mode, ModelContext};
use crate::error::{NnError, Result};
use crate::fake_quant::{FakeQuant, Ste};

/// The tensor a quantizer acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A weight (or another multiplicative parameter).
    Weight,
    /// A bias (or another additive parameter).
    Bias,
    /// An input activation.
    Input,
    /// An output activation.
    Output,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Weight => "weight",
            Role::Bias => "bias",
            Role::Input => "input",
            Role::Output => "output",
        })
    }
}

#[derive(Debug, Default)]
struct State {
    calibrator: Option<Calibrator>,
    frozen: Option<Arc<lowbit_quant::Scales>>,
}

/// The quantizer of one role of one layer.
///
/// - [`Mode::Fp32`], or disabled: passes the tensor through unchanged.
/// - [`Mode::Calibrate`]: activations (input/output roles) feed their calibrator and pass
///   through; frozen quantizers keep quantizing. Weights and biases pass through (their scales
///   come from the weights themselves, which do not change).
/// - [`Mode::Quantize`]: fake-quantizes with frozen scales if frozen, otherwise with dynamic
///   scales (an error for a spec marked `static` that was never calibrated). Stochastic
///   rounding uses the seed of the context's current training step
///   ([`ModelContext::begin_step`]).
#[derive(Debug)]
pub struct Quantizer {
    layer: String,
    role: Role,
    spec: QuantSpec,
    backward: Option<QuantSpec>,
    ste: Mutex<Ste>,
    enabled: AtomicBool,
    ctx: Arc<ModelContext>,
    state: Mutex<State>,
    learned: Mutex<Option<candle_core::Var>>,
}

/// f32 contents and dims of a tensor (any device and float dtype).
pub(crate) fn tensor_f32(x: &Tensor) -> Result<(Vec<f32>, Vec<usize>)> {
    let dims = x.dims().to_vec();
    let v = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok((v, dims))
}

impl Quantizer {
    /// A quantizer for `role` of `layer`.
    pub fn new(
        layer: &str,
        role: Role,
        spec: QuantSpec,
        backward: Option<QuantSpec>,
        ctx: Arc<ModelContext>,
    ) -> Quantizer {
        Quantizer {
            layer: layer.to_string(),
            role,
            spec,
            backward,
            ste: Mutex::new(Ste::default()),
            enabled: AtomicBool::new(true),
            ctx,
            state: Mutex::new(State::default()),
            learned: Mutex::new(None),
        }
    }

    /// Makes the scale trainable (LSQ, [`crate::LsqFakeQuant`]), starting from `init` (one
    /// value per group: the dynamic scales of the current weight, say); returns the variable
    /// to hand to the optimizer. Only for specs [`crate::LsqFakeQuant::check`] accepts.
    pub fn enable_learned_scale(&self, init: &[f32]) -> Result<candle_core::Var> {
        crate::LsqFakeQuant::check(&self.spec)
            .map_err(|e| NnError::layer(&self.layer, format!("{}: {e}", self.role)))?;
        if init.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(NnError::layer(
                &self.layer,
                format!(
                    "{}: learned scales must start positive and finite",
                    self.role
                ),
            ));
        }
        let var = candle_core::Var::from_slice(init, init.len(), &candle_core::Device::Cpu)?;
        let mut l = self
            .learned
            .lock()
            .map_err(|_| NnError::layer(&self.layer, "learned scale poisoned"))?;
        *l = Some(var.clone());
        Ok(var)
    }

    /// The learned scale, if [`enable_learned_scale`](Self::enable_learned_scale) made one.
    pub fn learned_scale(&self) -> Option<candle_core::Var> {
        self.learned.lock().ok().and_then(|l| l.clone())
    }

    /// The layer name.
    pub fn layer(&self) -> &str {
        &self.layer
    }
    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The spec.
    pub fn spec(&self) -> QuantSpec {
        self.spec
    }
    /// The gradient spec (QAT), if any.
    pub fn backward(&self) -> Option<QuantSpec> {
        self.backward
    }
    /// Sets the gradient rule.
    pub fn set_ste(&self, ste: Ste) {
        if let Ok(mut s) = self.ste.lock() {
            *s = ste;
        }
    }
    /// Turns the quantizer on or off.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }
    /// Whether it is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }
    /// Whether it would change a tensor now (enabled and in quantize mode, or frozen in
    /// calibrate mode).
    pub fn is_active(&self) -> bool {
        self.is_enabled()
            && match self.ctx.mode() {
                Mode::Fp32 => false,
                Mode::Quantize => true,
                Mode::Calibrate => self.frozen().is_some(),
            }
    }
    /// Whether this role is calibrated from data (activations) rather than from itself.
    pub fn is_activation(&self) -> bool {
        matches!(self.role, Role::Input | Role::Output)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| {
            NnError::layer(&self.layer, "quantizer state poisoned by an earlier panic")
        })
    }

    /// The frozen scales, if frozen.
    pub fn frozen(&self) -> Option<Arc<lowbit_quant::Scales>> {
        self.state.lock().ok().and_then(|s| s.frozen.clone())
    }

    /// Starts calibration with `method` (activations only; a no-op for weights and biases).
    pub fn begin_calibration(&self, method: Method) -> Result<()> {
        if self.is_activation() {
            let mut st = self.lock()?;
            st.calibrator = Some(Calibrator::new(self.spec, method));
            st.frozen = None;
        }
        Ok(())
    }

    /// Freezes the observed statistics into scales. Returns `None` for weights and for
    /// quantizers that saw no batch.
    pub fn freeze(&self) -> Result<Option<Frozen>> {
        let mut st = self.lock()?;
        let Some(cal) = st.calibrator.take() else {
            return Ok(None);
        };
        if cal.batches() == 0 {
            return Ok(None);
        }
        let frozen = cal
            .freeze()
            .map_err(|e| NnError::layer(&self.layer, format!("{} quantizer: {e}", self.role)))?;
        st.frozen = Some(Arc::new(frozen.scales.clone()));
        drop(st);
        self.ctx.invalidate();
        Ok(Some(frozen))
    }

    /// Installs frozen scales (from a scales file).
    pub fn load_frozen(&self, frozen: &Frozen) -> Result<()> {
        if frozen.spec.format() != self.spec.format()
            || frozen.spec.granularity() != self.spec.granularity()
        {
            return Err(NnError::layer(
                &self.layer,
                format!(
                    "{} scales were frozen for `{}`, but the config now gives `{}`",
                    self.role, frozen.spec, self.spec
                ),
            ));
        }
        self.lock()?.frozen = Some(Arc::new(frozen.scales.clone()));
        self.ctx.invalidate();
        Ok(())
    }

    /// Applies the quantizer according to the mode.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        if !self.is_enabled() {
            return Ok(x.clone());
        }
        let frozen = self.frozen();
        match self.ctx.mode() {
            Mode::Fp32 => Ok(x.clone()),
            Mode::Calibrate if frozen.is_none() => {
                if self.is_activation() {
                    let (v, dims) = tensor_f32(x)?;
                    let mut st = self.lock()?;
                    if let Some(cal) = st.calibrator.as_mut() {
                        cal.observe(&v, &dims).map_err(|e| {
                            NnError::layer(&self.layer, format!("{} calibration: {e}", self.role))
                        })?;
                    }
                }
                Ok(x.clone())
            }
            _ => {
                if frozen.is_none() && self.spec.mode() == ScaleMode::Static {
                    return Err(NnError::layer(
                        &self.layer,
                        format!(
                            "{} spec `{}` is static but no scales were calibrated (run calibration first or load a scales file)",
                            self.role, self.spec
                        ),
                    ));
                }
                let step = self.ctx.stochastic_step();
                let spec = self.spec.at_step(step);
                if let Some(var) = self.learned_scale() {
                    return x
                        .apply_op2(var.as_tensor(), crate::LsqFakeQuant { spec })
                        .map_err(|e| {
                            NnError::layer(&self.layer, format!("{} LSQ quantizer: {e}", self.role))
                        });
                }
                let ste = self.ste.lock().map(|s| *s).unwrap_or_default();
                // Frozen activation scales that no longer fit: most often groups along the batch
                // axis (per-token or per-sample scales, blocks of an activation).
                let shape_hint = if frozen.is_some() && self.is_activation() {
                    " (frozen activation scales whose groups run along the batch axis fit only the \
                     batch shape they were calibrated on: calibrate with the batch size you \
                     evaluate with, or use per_tensor, per_channel along a feature axis, or \
                     mode: dynamic)"
                } else {
                    ""
                };
                let op = FakeQuant {
                    spec,
                    scales: frozen,
                    ste,
                    grad_spec: self.backward.map(|b| b.at_step(step)),
                };
                x.apply_op1(op).map_err(|e| {
                    let e = e.to_string();
                    let hint = if e.contains("do not fit") {
                        shape_hint
                    } else {
                        ""
                    };
                    NnError::layer(&self.layer, format!("{} quantizer: {e}{hint}", self.role))
                })
            }
        }
    }
}
