//! The [`QuantOp`] trait every quantized layer implements, and [`LayerQuant`], the quantizers
//! of one layer.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::Tensor;

use crate::config::ResolvedLayer;
use crate::context::{ModelContext, TapRecord};
use crate::error::{NnError, Result};
use crate::gptq::Gptq;
use crate::quantizer::{Quantizer, Role};
use crate::smoothing::Smoothing;

mod observe;
use observe::Observation;

/// An op that can be quantized: the FP32 computation plus the quantizers of its tensors.
///
/// Implement [`compute`](QuantOp::compute) (the FP32 op on already-quantized inputs, using
/// [`LayerQuant::weight`] for parameters) and [`quant`](QuantOp::quant); the default
/// [`forward`](QuantOp::forward) quantizes the inputs, computes, quantizes the output and
/// records taps — correct for any op, so a user's op works as soon as it is registered.
pub trait QuantOp: Debug + Send + Sync {
    /// The layer's quantizers, name and kind.
    fn quant(&self) -> &LayerQuant;

    /// The FP32 computation on (already quantized) inputs.
    fn compute(&self, inputs: &[Tensor]) -> Result<Tensor>;

    /// Quantize inputs → compute → quantize output → taps.
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let q = self.quant();
        let qin = inputs
            .iter()
            .enumerate()
            .map(|(i, x)| q.quantize_input_at(x, i))
            .collect::<Result<Vec<_>>>()?;
        let y = self.compute(&qin).map_err(|e| match e {
            NnError::Layer { .. } => e,
            e => NnError::layer(&q.name, e),
        })?;
        let y = q.quantize_output(&y)?;
        q.tap(inputs, &y);
        Ok(y)
    }

    /// [`forward`](QuantOp::forward) of a single input.
    fn forward1(&self, x: &Tensor) -> Result<Tensor> {
        self.forward(&[x])
    }
}

/// The quantizers of one layer (any may be absent) and what it shares with its model.
#[derive(Debug)]
pub struct LayerQuant {
    /// Full layer name, e.g. `encoder.layer.0.attention.self.query`.
    pub name: String,
    /// Op kind, e.g. `linear`.
    pub kind: String,
    /// Weight quantizer.
    pub weight: Option<Quantizer>,
    /// Bias quantizer.
    pub bias: Option<Quantizer>,
    /// Input quantizer (applied to every input).
    pub input: Option<Quantizer>,
    /// Output quantizer.
    pub output: Option<Quantizer>,
    /// The accumulator of the op's dot products (`linear`, `matmul`, `conv2d`; `None`: f32);
    /// [`LayerQuant::accumulator`] says whether it applies now.
    accumulator: Option<lowbit_formats::Accumulator>,
    /// The rotation of the input and weight (`linear`); [`LayerQuant::rotation`] says whether
    /// it applies now.
    rotation: Option<crate::rotation::Rotation>,
    /// Its matrices, built on first use.
    rotator: std::sync::OnceLock<crate::rotation::Rotator>,
    /// The weight parameter is already in the rotated basis (a loaded low-bit checkpoint).
    weight_rotated: AtomicBool,
    /// SmoothQuant smoothing of the input and weight (`linear`); [`LayerQuant::smoothing`]
    /// says whether it applies now.
    smoothing: Option<Smoothing>,
    /// GPTQ of the weight (`linear`), from the FP32 observation pass.
    gptq: Option<Gptq>,
    /// What smoothing and GPTQ observed in the FP32 pass, and installed from it.
    observed: Mutex<Observation>,
    layer_on: AtomicBool,
    ctx: Arc<ModelContext>,
    cache: Mutex<Vec<(u64, usize, Tensor)>>,
    last_weight: Mutex<Option<Tensor>>,
}

impl LayerQuant {
    /// Quantizers for `name` from a resolved config entry.
    pub fn new(name: &str, kind: &str, r: &ResolvedLayer, ctx: Arc<ModelContext>) -> LayerQuant {
        let mk = |role: Role, spec: Option<lowbit_quant::QuantSpec>| {
            spec.map(|s| Quantizer::new(name, role, s, r.backward, ctx.clone()))
        };
        LayerQuant {
            name: name.to_string(),
            kind: kind.to_string(),
            weight: mk(Role::Weight, r.weight),
            bias: mk(Role::Bias, r.bias),
            input: mk(Role::Input, r.input),
            output: mk(Role::Output, r.output),
            accumulator: r.accumulator,
            rotation: r.rotation,
            rotator: std::sync::OnceLock::new(),
            weight_rotated: AtomicBool::new(false),
            smoothing: r.smoothing,
            gptq: r.gptq,
            observed: Mutex::new(Observation::default()),
            layer_on: AtomicBool::new(true),
            ctx,
            cache: Mutex::new(Vec::new()),
            last_weight: Mutex::new(None),
        }
    }

    /// The model context.
    pub fn context(&self) -> &Arc<ModelContext> {
        &self.ctx
    }

    /// Every quantizer with its role.
    pub fn quantizers(&self) -> impl Iterator<Item = &Quantizer> {
        [&self.weight, &self.bias, &self.input, &self.output]
            .into_iter()
            .flatten()
    }

    /// Turns every quantizer of the layer on or off (first/last-layer switches, sensitivity
    /// sweeps).
    pub fn set_enabled(&self, on: bool) {
        for q in self.quantizers() {
            q.set_enabled(on);
        }
        self.layer_on.store(on, Ordering::SeqCst);
        self.ctx.invalidate();
    }

    /// The accumulator the op's dot products use now: the configured one while the layer is
    /// enabled and the model quantizes ([`crate::Mode::Quantize`]); `None` (f32) otherwise, so
    /// the FP32 and calibration passes see the plain matmul.
    pub fn accumulator(&self) -> Option<lowbit_formats::Accumulator> {
        let on = self.layer_on.load(Ordering::SeqCst)
            && self.ctx.mode() == crate::context::Mode::Quantize;
        self.accumulator.filter(|_| on)
    }

    /// The configured accumulator while the layer is enabled, whatever the mode (what a
    /// quantized pass uses).
    pub fn enabled_accumulator(&self) -> Option<lowbit_formats::Accumulator> {
        self.accumulator
            .filter(|_| self.layer_on.load(Ordering::SeqCst))
    }

    /// The rotation of the input and weight now: the configured one while the layer is
    /// enabled and the model is not in [`crate::Mode::Fp32`] (calibration observes the
    /// rotated tensors the quantizers will see).
    pub fn rotation(&self) -> Option<crate::rotation::Rotation> {
        let on =
            self.layer_on.load(Ordering::SeqCst) && self.ctx.mode() != crate::context::Mode::Fp32;
        self.rotation.filter(|_| on)
    }

    /// Marks the weight parameter as already rotated (`W R`, as a low-bit checkpoint of a
    /// rotating layer stores it), so that it is not turned again; the input still is.
    pub fn set_weight_rotated(&self, rotated: bool) {
        self.weight_rotated.store(rotated, Ordering::SeqCst);
        self.ctx.invalidate();
    }

    /// The configured rotation while the layer is enabled, whatever the mode.
    pub fn enabled_rotation(&self) -> Option<crate::rotation::Rotation> {
        self.rotation
            .filter(|_| self.layer_on.load(Ordering::SeqCst))
    }

    /// The layer's rotator when it rotates now ([`LayerQuant::rotation`]).
    fn rotator(&self) -> Result<Option<&crate::rotation::Rotator>> {
        if self.rotation().is_none() {
            return Ok(None);
        }
        self.enabled_rotator()
    }

    /// The configured rotation's rotator while the layer is enabled, whatever the mode (GPTQ
    /// observes in FP32 passes what the quantized pass will rotate).
    pub(super) fn enabled_rotator(&self) -> Result<Option<&crate::rotation::Rotator>> {
        let Some(r) = self.enabled_rotation() else {
            return Ok(None);
        };
        if self.rotator.get().is_none() {
            let built =
                crate::rotation::Rotator::new(r).map_err(|e| NnError::layer(&self.name, e))?;
            let _ = self.rotator.set(built);
        }
        Ok(self.rotator.get())
    }

    /// `x` as the input quantizer sees it: divided by the smoothing factors when the layer
    /// smooths, then rotated when it rotates: `(x / s) R`.
    pub fn transform_input(&self, x: &Tensor) -> Result<Tensor> {
        self.transform(x, false)
    }

    /// Input `index` as the input quantizer sees it: [`transform_input`] for every input of
    /// every op, except the right operand (index 1) of a rotating `matmul`, which turns along
    /// its contraction axis (−2) by `Rᵀ`: `(A R)(Rᵀ B) = A B`.
    ///
    /// [`transform_input`]: Self::transform_input
    pub fn transform_input_at(&self, x: &Tensor, index: usize) -> Result<Tensor> {
        if self.rhs_turns(index) {
            return self.turn_rhs(x, true);
        }
        self.transform_input(x)
    }

    /// Back from [`transform_input_at`](Self::transform_input_at).
    pub fn input_back_at(&self, q: &Tensor, index: usize) -> Result<Tensor> {
        if self.rhs_turns(index) {
            return self.turn_rhs(q, false);
        }
        self.input_back(q)
    }

    /// Whether input `index` is a rotating matmul's right operand.
    fn rhs_turns(&self, index: usize) -> bool {
        index == 1 && self.kind == "matmul" && self.rotation().is_some()
    }

    /// `Rᵀ B` (`forward`) or `R B'` along axis −2 of `b`: `(Bᵀ R)ᵀ` and `(B'ᵀ Rᵀ)ᵀ`.
    fn turn_rhs(&self, b: &Tensor, forward: bool) -> Result<Tensor> {
        let Some(r) = self.rotator()? else {
            return Ok(b.clone());
        };
        let rank = b.rank();
        if rank < 2 {
            return Err(NnError::layer(
                &self.name,
                format!(
                    "a rotating matmul needs a right operand of rank 2 or more; it is {:?}",
                    b.dims()
                ),
            ));
        }
        let bt = b.transpose(rank - 2, rank - 1)?;
        let turned = if forward {
            r.rotate(&bt)
        } else {
            r.unrotate(&bt)
        }
        .map_err(|e| NnError::layer(&self.name, e))?;
        Ok(turned.transpose(rank - 2, rank - 1)?.contiguous()?)
    }

    /// A weight as the weight quantizer sees it: `(W · s) R`.
    pub fn transform_weight(&self, w: &Tensor) -> Result<Tensor> {
        self.transform(w, true)
    }

    /// Back from [`transform_input`](Self::transform_input): `(q Rᵀ) · s`, the effective
    /// input the layer computes with, comparable with the FP32 one.
    pub fn input_back(&self, q: &Tensor) -> Result<Tensor> {
        self.untransform(q, false)
    }

    /// Back from [`transform_weight`](Self::transform_weight): `(q Rᵀ) / s`.
    pub fn weight_back(&self, q: &Tensor) -> Result<Tensor> {
        self.untransform(q, true)
    }

    /// `x · s` (a weight) or `x / s` (an input), then `R`, with what the layer applies now.
    fn transform(&self, x: &Tensor, weight: bool) -> Result<Tensor> {
        self.transform_by(x, weight, self.smoother()?.as_deref(), self.rotator()?)
    }

    /// `Rᵀ`, then `/ s` (a weight) or `· s` (an input): the inverse of [`Self::transform`].
    fn untransform(&self, q: &Tensor, weight: bool) -> Result<Tensor> {
        self.untransform_by(q, weight, self.smoother()?.as_deref(), self.rotator()?)
    }

    /// [`Self::transform`] with the given smoother and rotator (GPTQ applies the configured
    /// ones outside the quantized pass).
    pub(super) fn transform_by(
        &self,
        x: &Tensor,
        weight: bool,
        smoother: Option<&crate::smoothing::Smoother>,
        rotator: Option<&crate::rotation::Rotator>,
    ) -> Result<Tensor> {
        let x = match smoother {
            Some(s) if weight => s.smooth_weight(x),
            Some(s) => s.smooth_input(x),
            None => Ok(x.clone()),
        }
        .map_err(|e| NnError::layer(&self.name, e))?;
        match rotator {
            Some(r) => r.rotate(&x).map_err(|e| NnError::layer(&self.name, e)),
            None => Ok(x),
        }
    }

    /// [`Self::untransform`] with the given smoother and rotator.
    pub(super) fn untransform_by(
        &self,
        q: &Tensor,
        weight: bool,
        smoother: Option<&crate::smoothing::Smoother>,
        rotator: Option<&crate::rotation::Rotator>,
    ) -> Result<Tensor> {
        let q = match rotator {
            Some(r) => r.unrotate(q).map_err(|e| NnError::layer(&self.name, e))?,
            None => q.clone(),
        };
        match smoother {
            Some(s) if weight => s.smooth_input(&q),
            Some(s) => s.smooth_weight(&q),
            None => Ok(q),
        }
        .map_err(|e| NnError::layer(&self.name, e))
    }

    /// Applies the input quantizer (to the transformed input when the layer smooths or
    /// rotates: [`transform_input`](Self::transform_input)).
    pub fn quantize_input(&self, x: &Tensor) -> Result<Tensor> {
        self.quantize_input_at(x, 0)
    }

    /// Applies the input quantizer to input `index` ([`transform_input_at`]).
    ///
    /// [`transform_input_at`]: Self::transform_input_at
    pub fn quantize_input_at(&self, x: &Tensor, index: usize) -> Result<Tensor> {
        self.observe(x, false)?;
        let x = self.transform_input_at(x, index)?;
        match &self.input {
            Some(q) => q.apply(&x),
            None => Ok(x),
        }
    }

    /// Applies the output quantizer.
    pub fn quantize_output(&self, y: &Tensor) -> Result<Tensor> {
        match &self.output {
            Some(q) => q.apply(y),
            None => Ok(y.clone()),
        }
    }

    /// The weight as the op uses it: quantized by the weight quantizer when it is active.
    /// Outside training the result is cached until the mode, the scales or the weights change
    /// (so static weights are quantized once, not at every forward).
    pub fn weight(&self, w: &Tensor) -> Result<Tensor> {
        self.param(w, &self.weight, 0)
    }

    /// The bias as the op uses it.
    pub fn bias(&self, b: &Tensor) -> Result<Tensor> {
        self.param(b, &self.bias, 1)
    }

    /// Any other parameter, quantized with the weight (`slot` even) or bias (`slot` odd)
    /// quantizer; `slot` keys the cache.
    pub fn param_slot(&self, p: &Tensor, slot: usize) -> Result<Tensor> {
        let q = if slot.is_multiple_of(2) {
            &self.weight
        } else {
            &self.bias
        };
        self.param(p, q, slot)
    }

    fn param(&self, p: &Tensor, q: &Option<Quantizer>, slot: usize) -> Result<Tensor> {
        if slot == 0 {
            self.observe(p, true)?;
        }
        // The weight turns with the input, quantized or not: ((x / s) R)((W · s) R)ᵀ = x Wᵀ
        // (unless it was stored turned).
        let turns = slot == 0
            && !self.weight_rotated.load(Ordering::SeqCst)
            && (self.rotator()?.is_some() || self.smoother()?.is_some());
        // A GPTQ weight stands in for the weight quantizer's result (it is only there while
        // that quantizer is active), cached like it.
        let gptq = if slot == 0 { self.gptq_now(p)? } else { None };
        let q = q.as_ref().filter(|q| q.is_active());
        // Sequential GPTQ's observation passes: earlier layers' GPTQ weights in the FP32 model.
        if slot == 0
            && q.is_none()
            && let Some(g) = self.gptq_substitute(p)?
        {
            self.remember_weight(&g);
            return Ok(g);
        }
        if q.is_none() && !turns {
            if slot == 0 {
                self.remember_weight(p);
            }
            return Ok(p.clone());
        }
        let generation = self.ctx.generation();
        let cacheable = !self.ctx.is_training();
        if cacheable
            && let Ok(c) = self.cache.lock()
            && let Some((_, _, t)) = c.iter().find(|(g, s, _)| *g == generation && *s == slot)
        {
            let t = t.clone();
            drop(c);
            if slot == 0 {
                self.remember_weight(&t);
            }
            return Ok(t);
        }
        let t = if let Some(g) = gptq {
            g.to_dtype(p.dtype())?.to_device(p.device())?
        } else {
            let p = if turns {
                self.transform(p, true)?
            } else {
                p.clone()
            };
            match q {
                Some(q) => q.apply(&p)?,
                None => p,
            }
        };
        if cacheable && let Ok(mut c) = self.cache.lock() {
            c.retain(|(g, s, _)| *g == generation && *s != slot);
            c.push((generation, slot, t.clone()));
        }
        if slot == 0 {
            self.remember_weight(&t);
        }
        Ok(t)
    }

    /// Records `w` as the weight this layer used in the pass (for the weight comparison and
    /// compliance of the taps), when taps are on; ops whose quantized weight is not one of
    /// their parameters (batch norm quantizes its folded scale) call it in every pass.
    pub fn remember_weight(&self, w: &Tensor) {
        if self.ctx.taps_on()
            && let Ok(mut l) = self.last_weight.lock()
        {
            *l = Some(w.clone());
        }
    }

    /// Records the layer's inputs and output when taps are on (free when off).
    pub fn tap(&self, inputs: &[&Tensor], output: &Tensor) {
        if !self.ctx.taps_on() {
            return;
        }
        let weight = self.last_weight.lock().ok().and_then(|mut l| l.take());
        self.ctx.record(
            &self.name,
            TapRecord {
                inputs: inputs.iter().map(|t| (*t).clone()).collect(),
                output: output.clone(),
                weight,
            },
        );
    }
}
