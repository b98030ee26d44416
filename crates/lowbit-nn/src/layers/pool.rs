//! Pooling: max, average, adaptive average.

use candle_core::Tensor;

use crate::error::{NnError, Result};
use crate::layers::wrong_params;
use crate::op::{LayerQuant, QuantOp};
use crate::registry::OpParams;

/// A pooling op (no parameters; quantized input and output).
#[derive(Debug)]
pub struct QPool {
    params: OpParams,
    quant: LayerQuant,
}

impl QPool {
    /// Checks the params.
    pub fn build(params: &OpParams, quant: LayerQuant) -> Result<QPool> {
        match params {
            OpParams::MaxPool2d { .. }
            | OpParams::AvgPool2d { .. }
            | OpParams::AdaptiveAvgPool2d { .. } => Ok(QPool {
                params: params.clone(),
                quant,
            }),
            _ => Err(wrong_params(&quant, params)),
        }
    }
}

/// PyTorch's adaptive pooling bin `[start, end)` for output index `i` of `out` over `len`.
fn bin(i: usize, out: usize, len: usize) -> (usize, usize) {
    ((i * len) / out, ((i + 1) * len).div_ceil(out))
}

/// Adaptive average pooling of `[N, C, H, W]` to `[N, C, oh, ow]` with PyTorch's bin edges.
pub fn adaptive_avg_pool2d(x: &Tensor, oh: usize, ow: usize) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if oh == 1 && ow == 1 {
        return x.mean_keepdim(3)?.mean_keepdim(2);
    }
    let mut rows = Vec::with_capacity(oh);
    for i in 0..oh {
        let (h0, h1) = bin(i, oh, h);
        let mut cols = Vec::with_capacity(ow);
        for j in 0..ow {
            let (w0, w1) = bin(j, ow, w);
            cols.push(
                x.narrow(2, h0, h1 - h0)?
                    .narrow(3, w0, w1 - w0)?
                    .mean_keepdim(3)?
                    .mean_keepdim(2)?,
            );
        }
        rows.push(Tensor::cat(&cols, 3)?);
    }
    Tensor::cat(&rows, 2)
}

impl QuantOp for QPool {
    fn quant(&self) -> &LayerQuant {
        &self.quant
    }

    fn compute(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let x = &inputs[0];
        Ok(match self.params {
            OpParams::MaxPool2d { kernel, stride } => x.max_pool2d_with_stride(kernel, stride)?,
            OpParams::AvgPool2d { kernel, stride } => x.avg_pool2d_with_stride(kernel, stride)?,
            OpParams::AdaptiveAvgPool2d { h, w } => adaptive_avg_pool2d(x, h, w)?,
            _ => return Err(NnError::layer(&self.quant.name, "not a pooling op")),
        })
    }
}
