//! Quantized `Linear`.

use candle_core::{Module, Tensor};
use candle_nn::{VarBuilder, init};

use crate::error::Result;
use crate::layers::{fan_in_uniform, wrong_params};
use crate::op::{LayerQuant, QuantOp};
use crate::registry::OpParams;

/// `y = x Wᵀ + b` with quantized weight, bias, input and output; computed by candle's
/// `Linear`, so it is candle's layer bit for bit when the quantizers are off, or with the dot
/// products in the layer's accumulator ([`crate::linear_accumulated`]) when it has one.
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
        match self.quant.accumulator() {
            // The dot products in the accumulator, then the bias added in f32.
            Some(acc) => {
                let y = crate::accumulate::linear_accumulated(&inputs[0], &w, acc)?;
                Ok(match b {
                    Some(b) => y.broadcast_add(&b)?,
                    None => y,
                })
            }
            None => Ok(candle_nn::Linear::new(w, b).forward(&inputs[0])?),
        }
    }
}
