//! Quantized `Embedding`.

use candle_core::{Module, Tensor};
use candle_nn::{VarBuilder, init};

use crate::error::Result;
use crate::layers::wrong_params;
use crate::op::{LayerQuant, QuantOp};
use crate::registry::OpParams;

/// An embedding table with a quantized table and output. Its input is token ids, which are
/// never quantized (an input quantizer in the config is ignored).
#[derive(Debug)]
pub struct QEmbedding {
    /// Table `[vocab, dim]`.
    pub weight: Tensor,
    dim: usize,
    quant: LayerQuant,
}

impl QEmbedding {
    /// Loads `weight`.
    pub fn build(params: &OpParams, vb: &VarBuilder, quant: LayerQuant) -> Result<QEmbedding> {
        let OpParams::Embedding { vocab, dim } = *params else {
            return Err(wrong_params(&quant, params));
        };
        Ok(QEmbedding {
            weight: vb.get_with_hints(
                (vocab, dim),
                "weight",
                init::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )?,
            dim,
            quant,
        })
    }
}

impl QuantOp for QEmbedding {
    fn quant(&self) -> &LayerQuant {
        &self.quant
    }

    fn compute(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let w = self.quant.weight(&self.weight)?;
        Ok(candle_nn::Embedding::new(w, self.dim).forward(&inputs[0])?)
    }

    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let ids: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
        let y = self.compute(&ids)?;
        let y = self.quant.quantize_output(&y)?;
        self.quant.tap(inputs, &y);
        Ok(y)
    }
}
