//! What all layers of one model share: the mode (FP32, calibrate, quantize), whether it is
//! training, and the taps.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// What the quantizers of a model do on a forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every quantizer is off: the model is the FP32 model, bit for bit.
    Fp32,
    /// Observers see every quantized tensor and nothing is quantized, except quantizers that
    /// were already frozen.
    Calibrate,
    /// Quantizers apply (frozen scales where frozen, dynamic ones otherwise).
    #[default]
    Quantize,
}

/// One layer's recorded tensors.
#[derive(Clone, Debug)]
pub struct TapRecord {
    /// The layer's inputs as it received them (before its input quantizers).
    pub inputs: Vec<Tensor>,
    /// Its output (after its output quantizer).
    pub output: Tensor,
    /// The weight it used (quantized when its weight quantizer is on).
    pub weight: Option<Tensor>,
}

/// Shared state of one model's layers.
#[derive(Debug, Default)]
pub struct ModelContext {
    mode: AtomicU8,
    training: AtomicBool,
    /// Bumped on every mode/training change, so cached quantized weights know they are stale.
    generation: AtomicU64,
    taps_on: AtomicBool,
    taps: Mutex<BTreeMap<String, TapRecord>>,
    /// Training steps begun ([`ModelContext::begin_step`]).
    steps: AtomicU64,
}

impl ModelContext {
    /// A context in [`Mode::Quantize`], not training, taps off.
    pub fn new() -> Arc<ModelContext> {
        let c = ModelContext::default();
        c.mode.store(mode_id(Mode::Quantize), Ordering::SeqCst);
        Arc::new(c)
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            0 => Mode::Fp32,
            1 => Mode::Calibrate,
            _ => Mode::Quantize,
        }
    }

    /// Sets the mode.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode_id(mode), Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether the model is training (weights change, so quantized weights are not cached;
    /// batch norm uses batch statistics).
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::SeqCst)
    }

    /// Sets training mode.
    pub fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Begins a training step (training loops call it once per batch, before the forward
    /// pass) and returns its number, counted from 1 over the context's life.
    ///
    /// While training, quantizers with stochastic rounding use the seed of this step
    /// ([`QuantSpec::at_step`](lowbit_quant::QuantSpec::at_step)), so every step draws fresh
    /// rounding noise and a run stays reproducible; outside training they use the seed as
    /// written ([`stochastic_step`](Self::stochastic_step) is 0).
    pub fn begin_step(&self) -> u64 {
        self.steps.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The step whose seed stochastic rounding uses now: the last one begun while training,
    /// 0 (the written seed) otherwise.
    pub fn stochastic_step(&self) -> u64 {
        if self.is_training() {
            self.steps.load(Ordering::SeqCst)
        } else {
            0
        }
    }

    /// Invalidates cached quantized weights (call after changing weights or scales by hand).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Turns tap recording on (clearing earlier records) or off.
    pub fn set_taps(&self, on: bool) {
        if let Ok(mut t) = self.taps.lock() {
            t.clear();
        }
        self.taps_on.store(on, Ordering::SeqCst);
    }

    /// Whether taps record.
    #[inline]
    pub fn taps_on(&self) -> bool {
        self.taps_on.load(Ordering::Relaxed)
    }

    pub(crate) fn record(&self, layer: &str, rec: TapRecord) {
        if let Ok(mut t) = self.taps.lock() {
            t.insert(layer.to_string(), rec);
        }
    }

    /// Takes the records of the last forward passes (layer name → record) and clears them.
    pub fn take_taps(&self) -> BTreeMap<String, TapRecord> {
        self.taps
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }
}

fn mode_id(m: Mode) -> u8 {
    match m {
        Mode::Fp32 => 0,
        Mode::Calibrate => 1,
        Mode::Quantize => 2,
    }
}
