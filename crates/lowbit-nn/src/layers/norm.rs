//! Quantized normalisation layers.

use candle_core::{D, Module, ModuleT, Tensor};
use candle_nn::{VarBuilder, init};

use crate::error::Result;
use crate::layers::wrong_params;
use crate::op::{LayerQuant, QuantOp};
use crate::registry::OpParams;

/// Batch norm over axis 1 of an `[N, C, …]` tensor.
///
/// With its weight and bias quantizers off it is candle's `BatchNorm`, bit for bit (eval mode:
/// running statistics; training mode: batch statistics). With them on, in eval mode it runs as
/// inference hardware does after folding: `y = x·s + t` with the per-channel scale
/// `s = γ/√(σ² + ε)` quantized by the weight quantizer and the shift `t = β − μ·s` by the bias
/// quantizer — the running statistics are quantized through what they become. In eval mode the
/// weight it records for the taps is that folded scale `s` (quantized or not), so layer-wise
/// weight errors compare like with like.
#[derive(Debug)]
pub struct QBatchNorm2d {
    /// γ `[C]`.
    pub weight: Tensor,
    /// β `[C]`.
    pub bias: Tensor,
    /// Running mean `[C]`.
    pub running_mean: Tensor,
    /// Running variance `[C]`.
    pub running_var: Tensor,
    /// ε.
    pub eps: f64,
    quant: LayerQuant,
}

impl QBatchNorm2d {
    /// Loads `weight`, `bias`, `running_mean`, `running_var` (torchvision names).
    pub fn build(params: &OpParams, vb: &VarBuilder, quant: LayerQuant) -> Result<QBatchNorm2d> {
        let OpParams::BatchNorm2d { channels, eps } = *params else {
            return Err(wrong_params(&quant, params));
        };
        Ok(QBatchNorm2d {
            weight: vb.get_with_hints(channels, "weight", init::ONE)?,
            bias: vb.get_with_hints(channels, "bias", init::ZERO)?,
            running_mean: vb.get_with_hints(channels, "running_mean", init::ZERO)?,
            running_var: vb.get_with_hints(channels, "running_var", init::ONE)?,
            eps,
            quant,
        })
    }

    /// The folded per-channel scale and shift `(s, t)` in FP32.
    pub fn folded(&self) -> Result<(Tensor, Tensor)> {
        let s = self
            .weight
            .broadcast_div(&(self.running_var.affine(1.0, self.eps)?.sqrt()?))?;
        let t = self.bias.sub(&self.running_mean.mul(&s)?)?;
        Ok((s, t))
    }

    fn candle_bn(&self, weight: Tensor, bias: Tensor) -> Result<candle_nn::BatchNorm> {
        let c = self.weight.dim(0)?;
        Ok(candle_nn::BatchNorm::new(
            c,
            self.running_mean.clone(),
            self.running_var.clone(),
            weight,
            bias,
            self.eps,
        )?)
    }
}

impl QuantOp for QBatchNorm2d {
    fn quant(&self) -> &LayerQuant {
        &self.quant
    }

    fn compute(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let x = &inputs[0];
        let training = self.quant.context().is_training();
        let quantized = self.quant.weight.as_ref().is_some_and(|q| q.is_active())
            || self.quant.bias.as_ref().is_some_and(|q| q.is_active());
        if !quantized || training {
            let w = self.quant.weight(&self.weight)?;
            let b = self.quant.bias(&self.bias)?;
            let y = self.candle_bn(w, b)?.forward_t(x, training)?;
            if !training {
                // A quantized eval pass quantizes the folded scale, and the FP32 reference
                // (a model built without quantizers) records it too, so weight error and
                // compliance compare the same tensor.
                self.quant.remember_weight(&self.folded()?.0);
            }
            return Ok(y);
        }
        let (s, t) = self.folded()?;
        let s = self.quant.weight(&s)?;
        let t = self.quant.bias(&t)?;
        let mut shape = vec![1usize; x.rank()];
        shape[1] = s.dim(0)?;
        Ok(x.broadcast_mul(&s.reshape(shape.clone())?)?
            .broadcast_add(&t.reshape(shape)?)?)
    }
}

/// Layer norm over the last axis, candle's `LayerNorm` with quantized γ and β.
#[derive(Debug)]
pub struct QLayerNorm {
    /// γ.
    pub weight: Tensor,
    /// β.
    pub bias: Tensor,
    /// ε.
    pub eps: f64,
    quant: LayerQuant,
}

impl QLayerNorm {
    /// Loads `weight` and `bias` (HF names).
    pub fn build(params: &OpParams, vb: &VarBuilder, quant: LayerQuant) -> Result<QLayerNorm> {
        let OpParams::LayerNorm { dim, eps } = *params else {
            return Err(wrong_params(&quant, params));
        };
        Ok(QLayerNorm {
            weight: vb.get_with_hints(dim, "weight", init::ONE)?,
            bias: vb.get_with_hints(dim, "bias", init::ZERO)?,
            eps,
            quant,
        })
    }
}

impl QuantOp for QLayerNorm {
    fn quant(&self) -> &LayerQuant {
        &self.quant
    }

    fn compute(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let w = self.quant.weight(&self.weight)?;
        let b = self.quant.bias(&self.bias)?;
        if self.quant.context().is_training() {
            // The fused kernel has no gradient: compose it from differentiable ops.
            let x = &inputs[0];
            let mean = x.mean_keepdim(D::Minus1)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            let xn = xc.broadcast_div(&var.affine(1.0, self.eps)?.sqrt()?)?;
            return Ok(xn.broadcast_mul(&w)?.broadcast_add(&b)?);
        }
        Ok(candle_nn::LayerNorm::new(w, b, self.eps).forward(&inputs[0])?)
    }
}

/// Folds an eval-mode batch norm into the convolution before it: `W' = W · s` per output
/// channel and `b' = (b − μ) · s + β` with `s = γ/√(σ² + ε)`, as inference compilers do before
/// quantizing. Returns the folded `(weight, bias)` for a convolution with weight
/// `[out, in/groups, k, k]` (or any rank with the output channel first).
pub fn fold_batch_norm(
    weight: &Tensor,
    bias: Option<&Tensor>,
    bn: &QBatchNorm2d,
) -> Result<(Tensor, Tensor)> {
    let (s, _) = bn.folded()?;
    let out = weight.dim(0)?;
    let mut shape = vec![1usize; weight.rank()];
    shape[0] = out;
    let w = weight.broadcast_mul(&s.reshape(shape)?)?;
    let b = match bias {
        Some(b) => b.clone(),
        None => Tensor::zeros(out, weight.dtype(), weight.device())?,
    };
    let b = b.sub(&bn.running_mean)?.mul(&s)?.add(&bn.bias)?;
    Ok((w, b))
}
