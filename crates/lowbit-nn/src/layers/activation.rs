//! Activation functions and softmax, with quantized input and output.

use candle_core::Tensor;

use crate::error::{NnError, Result};
use crate::layers::wrong_params;
use crate::op::{LayerQuant, QuantOp};
use crate::registry::{Activation, OpParams};

/// An activation function or softmax.
#[derive(Debug)]
pub struct QActivation {
    params: OpParams,
    quant: LayerQuant,
}

impl QActivation {
    /// Checks the params.
    pub fn build(params: &OpParams, quant: LayerQuant) -> Result<QActivation> {
        match params {
            OpParams::Activation(_) | OpParams::Softmax { .. } => Ok(QActivation {
                params: params.clone(),
                quant,
            }),
            _ => Err(wrong_params(&quant, params)),
        }
    }
}

impl QuantOp for QActivation {
    fn quant(&self) -> &LayerQuant {
        &self.quant
    }

    fn compute(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let x = &inputs[0];
        Ok(match self.params {
            OpParams::Activation(Activation::Relu) => x.relu()?,
            OpParams::Activation(Activation::Relu6) => x.clamp(0f32, 6f32)?,
            OpParams::Activation(Activation::Gelu) => x.gelu_erf()?,
            OpParams::Activation(Activation::GeluTanh) => x.gelu()?,
            OpParams::Activation(Activation::Silu) => x.silu()?,
            OpParams::Activation(Activation::Sigmoid) => candle_nn::ops::sigmoid(x)?,
            OpParams::Activation(Activation::Tanh) => x.tanh()?,
            // The differentiable softmax (the fused last-dim kernel has no gradient).
            OpParams::Softmax { dim } => candle_nn::ops::softmax(x, dim)?,
            _ => return Err(NnError::layer(&self.quant.name, "not an activation")),
        })
    }
}
