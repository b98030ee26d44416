//! Quantized `Linear`.

use candle_core::{Module, Tensor};
use candle_nn::{VarBuilder, init};

use crate::error::Result;
use crate::layers::{fan_in_uniform, wrong_params};
use crate::op::{LayerQuant, QuantOp};
use crate::registry::OpParams;

/// `y = x Wᵀ + b` with quantized weight, bias, input and output; computed by candle's
/// `Linear`, so it is candle's layer bit for bit when the quantizers are off.
#[derive(Debug)]
pub struct QLinear {
    /// Weight `[out, in]`, FP32.
    pub weight: Tensor,
    /// Bias `[out]`, FP32.
    pub bias: Option<Tensor>,
    quant: LayerQuant,
}

impl QLinear {
    /// Loads `weight` (and `bias`) from `vb` (HF/PyTorch names).
    pub fn build(params: &OpParams, vb: &VarBuilder, quant: LayerQuant) -> Result<QLinear> {
        let OpParams::Linear {
            in_dim,
            out_dim,
            bias,
        } = *params
        else {
            return Err(wrong_params(&quant, params));
        };
        // candle_nn::linear's initialisation where the builder creates the parameters (a
        // VarMap); loading backends ignore the hints.
        let weight =
            vb.get_with_hints((out_dim, in_dim), "weight", init::DEFAULT_KAIMING_NORMAL)?;
        let bias = if bias {
            Some(vb.get_with_hints(out_dim, "bias", fan_in_uniform(in_dim))?)
        } else {
            None
        };
        Ok(QLinear {
            weight,
            bias,
            quant,
        })
    }
}

impl QuantOp for QLinear {
    fn quant(&self) -> &LayerQuant {
        &self.quant
    }

    fn compute(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let w = self.quant.weight(&self.weight)?;
        let b = self.bias.as_ref().map(|b| self.quant.bias(b)).transpose()?;
        Ok(candle_nn::Linear::new(w, b).forward(&inputs[0])?)
    }
}
