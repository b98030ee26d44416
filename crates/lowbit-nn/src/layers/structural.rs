//! Ops without weights whose inputs real hardware quantizes: residual add, concat and the
//! matmuls of attention (Q·Kᵀ, attention·V).

use candle_core::Tensor;

use crate::error::{NnError, Result};
use crate::layers::wrong_params;
use crate::op::{LayerQuant, QuantOp};
use crate::registry::OpParams;

/// Add, concat or matmul of quantized inputs.
#[derive(Debug)]
pub struct QStructural {
    params: OpParams,
    quant: LayerQuant,
}

impl QStructural {
    /// Checks the params.
    pub fn build(params: &OpParams, quant: LayerQuant) -> Result<QStructural> {
        match params {
            OpParams::Add | OpParams::Concat { .. } | OpParams::Matmul => Ok(QStructural {
                params: params.clone(),
                quant,
            }),
            _ => Err(wrong_params(&quant, params)),
        }
    }
}

impl QuantOp for QStructural {
    fn quant(&self) -> &LayerQuant {
        &self.quant
    }

    fn compute(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let name = &self.quant.name;
        match self.params {
            OpParams::Add => {
                let (first, rest) = inputs
                    .split_first()
                    .ok_or_else(|| NnError::layer(name, "add needs at least one input"))?;
                let mut acc = first.clone();
                for t in rest {
                    acc = acc.broadcast_add(t)?;
                }
                Ok(acc)
            }
            OpParams::Concat { dim } => Ok(Tensor::cat(inputs, dim)?),
            OpParams::Matmul => match inputs {
                [a, b] => match self.quant.accumulator() {
                    Some(acc) => crate::accumulate::matmul_accumulated(a, b, acc),
                    None => Ok(a.broadcast_matmul(b)?),
                },
                _ => Err(NnError::layer(
                    name,
                    format!("matmul takes 2 inputs, got {}", inputs.len()),
                )),
            },
            _ => Err(NnError::layer(name, "not a structural op")),
        }
    }
}
