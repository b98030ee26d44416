//! [`Gptq`]: GPTQ weight quantization in a model (config key `gptq`). A `linear` layer that
//! asks for it accumulates `H = Σ x xᵀ` of its inputs during the FP32 observation pass
//! ([`LayerTable::begin_observation`]), and [`LayerTable::finish_observation`] quantizes its
//! weight with [`lowbit_quant::gptq`] under the layer's weight spec. The result (codes and
//! scales, a [`QuantizedTensor`]) replaces round-to-nearest of the weight in the quantized and
//! calibration passes, and travels with the static scales (`<config>.scales.gptq/`).
//!
//! By default the inputs are the FP32 model's (every layer sees unquantized activations while
//! observing), as in GPTQ's one-shot variants. With `sequential: true` a layer's inputs come
//! from the model whose earlier GPTQ layers already hold their GPTQ weights (activations
//! unquantized), as in the paper and the reference implementation: [`LayerTable::observe`]
//! runs one pass per group of layers that read the same input (q/k/v projections form one).
//!
//! On a layer with a `rotation`, GPTQ quantizes `W R` from the rotated inputs `x R` (QuaRot's
//! order: rotate, then GPTQ); with `smoothing`, `W · s` from the smoothed inputs `x / s`
//! (SmoothQuant, then GPTQ). Both on one layer are refused.
//!
//! [`LayerTable::observe`]: crate::LayerTable::observe
//!
//! [`LayerTable::begin_observation`]: crate::LayerTable::begin_observation
//! [`LayerTable::finish_observation`]: crate::LayerTable::finish_observation

use candle_core::{Device, Tensor};
use lowbit_quant::{GptqOptions, QuantizedTensor};
use serde::{Deserialize, Serialize};

use crate::error::Result;

fn default_damp() -> f64 {
    GptqOptions::default().damp
}

fn default_block() -> usize {
    GptqOptions::default().block
}

/// GPTQ's settings in a config: `gptq: {damp, block, act_order, static_groups, sequential}`
/// (all optional), or a number (the damp).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gptq {
    /// Dampening of the Hessian's diagonal, a fraction of its mean (0.01).
    #[serde(default = "default_damp")]
    pub damp: f64,
    /// The reference's lazy-batch width (128), which decides what a group's scale sees.
    #[serde(default = "default_block")]
    pub block: usize,
    /// Columns in decreasing order of the inputs' energy (with block scales, needs
    /// `static_groups`).
    #[serde(default)]
    pub act_order: bool,
    /// Every block's scale from the weight before any column is quantized (the reference's
    /// `static_groups`; block scales only, no effect otherwise).
    #[serde(default)]
    pub static_groups: bool,
    /// Inputs from the model whose earlier GPTQ layers are already quantized (the
    /// reference's order), instead of the FP32 model's.
    #[serde(default)]
    pub sequential: bool,
}

impl Default for Gptq {
    fn default() -> Self {
        Gptq {
            damp: default_damp(),
            block: default_block(),
            act_order: false,
            static_groups: false,
            sequential: false,
        }
    }
}

impl Gptq {
    /// Checks the settings.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(self.damp.is_finite() && self.damp >= 0.0) {
            return Err(format!(
                "gptq damp {} must be a finite number ≥ 0",
                self.damp
            ));
        }
        if self.block == 0 {
            return Err("gptq block must be at least 1".into());
        }
        Ok(())
    }

    /// As [`lowbit_quant::gptq`] takes them.
    pub fn options(&self) -> GptqOptions {
        GptqOptions {
            damp: self.damp,
            block: self.block,
            act_order: self.act_order,
            static_groups: self.static_groups,
        }
    }
}

impl std::fmt::Display for Gptq {
    /// `gptq (damp 0.01)`.
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(out, "gptq (damp {})", self.damp)?;
        if self.block != default_block() {
            write!(out, " block {}", self.block)?;
        }
        if self.act_order {
            write!(out, " act order")?;
        }
        if self.static_groups {
            write!(out, " static groups")?;
        }
        if self.sequential {
            write!(out, " sequential")?;
        }
        Ok(())
    }
}

/// A layer's installed GPTQ weight: codes and scales, and the values as an f32 CPU tensor.
#[derive(Debug)]
pub(crate) struct GptqInstalled {
    pub(crate) stored: QuantizedTensor,
    pub(crate) values: Tensor,
}

impl GptqInstalled {
    pub(crate) fn new(stored: QuantizedTensor) -> Result<GptqInstalled> {
        let values = Tensor::from_vec(stored.dequantize()?, stored.shape(), &Device::Cpu)?;
        Ok(GptqInstalled { stored, values })
    }
}
