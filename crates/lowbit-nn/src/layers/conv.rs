//! Quantized convolutions: `Conv1d`, `Conv2d` (groups/depthwise, padding, stride, dilation)
//! and `ConvTranspose2d`, each computed by candle's layer — except, on the CPU, depthwise
//! `Conv2d`s, which run [`DepthwiseConv2d`], and dense ones with kernels above 1×1, which run
//! [`TiledConv2d`] (the same numbers, faster).

use candle_core::{Module, Tensor};
use candle_nn::{VarBuilder, init};

use crate::error::Result;
use crate::layers::{DepthwiseConv2d, TiledConv2d, fan_in_uniform, wrong_params};
use crate::op::{LayerQuant, QuantOp};
use crate::registry::OpParams;

/// A convolution's weight (Kaiming-normal when fresh) and optional bias of `out` values
/// (uniform in ±1/√fan_in when fresh, as torch initialises it), `fan_in` = the weight's
/// elements per output.
fn conv_params<S: Into<candle_core::Shape>>(
    vb: &VarBuilder,
    weight_shape: S,
    out: usize,
    fan_in: usize,
    bias: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let weight = vb.get_with_hints(weight_shape, "weight", init::DEFAULT_KAIMING_NORMAL)?;
    let bias = if bias {
        Some(vb.get_with_hints(out, "bias", fan_in_uniform(fan_in))?)
    } else {
        None
    };
    Ok((weight, bias))
}

/// Quantized 1-D convolution.
#[derive(Debug)]
pub struct QConv1d {
    /// Weight `[out, in/groups, k]`.
    pub weight: Tensor,
    /// Bias `[out]`.
    pub bias: Option<Tensor>,
    cfg: candle_nn::Conv1dConfig,
    quant: LayerQuant,
}

impl QConv1d {
    /// Loads the layer.
    pub fn build(params: &OpParams, vb: &VarBuilder, quant: LayerQuant) -> Result<QConv1d> {
        let OpParams::Conv1d {
            in_channels,
            out_channels,
            kernel,
            cfg,
            bias,
        } = *params
        else {
            return Err(wrong_params(&quant, params));
        };
        let per_group = in_channels / cfg.groups.max(1);
        let (weight, bias) = conv_params(
            vb,
            (out_channels, per_group, kernel),
            out_channels,
            per_group * kernel,
            bias,
        )?;
        Ok(QConv1d {
            weight,
            bias,
            cfg,
            quant,
        })
    }
}

impl QuantOp for QConv1d {
    fn quant(&self) -> &LayerQuant {
        &self.quant
    }
    fn compute(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let w = self.quant.weight(&self.weight)?;
        let b = self.bias.as_ref().map(|b| self.quant.bias(b)).transpose()?;
        Ok(candle_nn::Conv1d::new(w, b, self.cfg).forward(&inputs[0])?)
    }
}

/// Quantized 2-D convolution. On the CPU with F32/F64, a depthwise one (`groups` = input
/// channels, weight `[m·groups, 1, k, k]`) runs [`DepthwiseConv2d`] and a dense one
/// (`groups` = 1, kernel larger than 1×1) runs [`TiledConv2d`]; the rest runs candle's
/// `conv2d`. Both give candle's numbers (see each).
#[derive(Debug)]
pub struct QConv2d {
    /// Weight `[out, in/groups, k, k]`.
    pub weight: Tensor,
    /// Bias `[out]`.
    pub bias: Option<Tensor>,
    cfg: candle_nn::Conv2dConfig,
    quant: LayerQuant,
}

impl QConv2d {
    /// Loads the layer.
    pub fn build(params: &OpParams, vb: &VarBuilder, quant: LayerQuant) -> Result<QConv2d> {
        let OpParams::Conv2d {
            in_channels,
            out_channels,
            kernel,
            cfg,
            bias,
        } = *params
        else {
            return Err(wrong_params(&quant, params));
        };
        let per_group = in_channels / cfg.groups.max(1);
        let (weight, bias) = conv_params(
            vb,
            (out_channels, per_group, kernel, kernel),
            out_channels,
            per_group * kernel * kernel,
            bias,
        )?;
        Ok(QConv2d {
            weight,
            bias,
            cfg,
            quant,
        })
    }

    /// The convolution config.
    pub fn config(&self) -> &candle_nn::Conv2dConfig {
        &self.cfg
    }

    /// The convolution without bias in f32: the depthwise or tiled CPU kernel where it
    /// applies, candle's `conv2d` otherwise.
    fn plain(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let c = &self.cfg;
        Ok(if DepthwiseConv2d::supports(x, w, c) {
            DepthwiseConv2d::from_config(c).forward(x, w)?
        } else if TiledConv2d::supports(x, w, c) {
            TiledConv2d::from_config(c).forward(x, w)?
        } else {
            x.conv2d(w, c.padding, c.stride, c.dilation, c.groups)?
        })
    }
}

impl QuantOp for QConv2d {
    fn quant(&self) -> &LayerQuant {
        &self.quant
    }
    fn compute(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let w = self.quant.weight(&self.weight)?;
        let b = self.bias.as_ref().map(|b| self.quant.bias(b)).transpose()?;
        let x = &inputs[0];
        let y = if let Some(acc) = self.quant.accumulator() {
            let sim = crate::accumulate::conv2d_accumulated(x, &w, &self.cfg, acc)?;
            if self.quant.context().is_training() {
                crate::accumulate::straight_through(&sim, &self.plain(x, &w)?)?
            } else {
                sim
            }
        } else if DepthwiseConv2d::supports(x, &w, &self.cfg)
            || TiledConv2d::supports(x, &w, &self.cfg)
        {
            self.plain(x, &w)?
        } else {
            return Ok(candle_nn::Conv2d::new(w, b, self.cfg).forward(x)?);
        };
        Ok(match b {
            // As candle_nn's `Conv2d` adds it.
            Some(b) => y.broadcast_add(&b.reshape((1, b.dims1()?, 1, 1))?)?,
            None => y,
        })
    }
}

/// Quantized 2-D transposed convolution (padding equal on all sides, as candle's).
#[derive(Debug)]
pub struct QConvTranspose2d {
    /// Weight `[in, out, k, k]`.
    pub weight: Tensor,
    /// Bias `[out]`.
    pub bias: Option<Tensor>,
    cfg: candle_nn::ConvTranspose2dConfig,
    quant: LayerQuant,
}

impl QConvTranspose2d {
    /// Loads the layer.
    pub fn build(
        params: &OpParams,
        vb: &VarBuilder,
        quant: LayerQuant,
    ) -> Result<QConvTranspose2d> {
        let OpParams::ConvTranspose2d {
            in_channels,
            out_channels,
            kernel,
            cfg,
            bias,
        } = *params
        else {
            return Err(wrong_params(&quant, params));
        };
        let (weight, bias) = conv_params(
            vb,
            (in_channels, out_channels, kernel, kernel),
            out_channels,
            in_channels * kernel * kernel,
            bias,
        )?;
        Ok(QConvTranspose2d {
            weight,
            bias,
            cfg,
            quant,
        })
    }
}

impl QuantOp for QConvTranspose2d {
    fn quant(&self) -> &LayerQuant {
        &self.quant
    }
    fn compute(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let w = self.quant.weight(&self.weight)?;
        let b = self.bias.as_ref().map(|b| self.quant.bias(b)).transpose()?;
        Ok(candle_nn::ConvTranspose2d::new(w, b, self.cfg).forward(&inputs[0])?)
    }
}
