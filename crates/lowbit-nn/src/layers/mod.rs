//! The built-in quantized layers, one concept per file, and their registration.

mod activation;
mod conv;
mod conv_common;
mod conv_tiled;
mod depthwise;
mod embedding;
mod linear;
mod norm;
mod pool;
mod structural;

pub use activation::QActivation;
pub use conv::{QConv1d, QConv2d, QConvTranspose2d};
pub use conv_tiled::TiledConv2d;
pub use depthwise::DepthwiseConv2d;
pub use embedding::QEmbedding;
pub use linear::QLinear;
pub use norm::{QBatchNorm2d, QLayerNorm, fold_batch_norm};
pub use pool::QPool;
pub use structural::QStructural;

use std::sync::Arc;

use crate::config::OpClass;
use crate::error::NnError;
use crate::op::LayerQuant;
use crate::registry::{OpParams, Registry};

/// candle_nn's bias initialisation: uniform in `±1/√fan_in` (used only where the builder
/// creates the parameter, e.g. on a fresh `VarMap`; loading backends ignore it).
pub(crate) fn fan_in_uniform(fan_in: usize) -> candle_nn::Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    candle_nn::Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// The error for params of the wrong variant.
pub(crate) fn wrong_params(q: &LayerQuant, params: &OpParams) -> NnError {
    NnError::layer(
        &q.name,
        format!("op `{}` cannot be built from {params:?}", q.kind),
    )
}

pub(crate) fn register_builtins(r: &mut Registry) {
    r.register_fn("linear", OpClass::Weighted, |p, vb, q| {
        Ok(Arc::new(QLinear::build(p, vb, q)?))
    });
    r.register_fn("conv1d", OpClass::Weighted, |p, vb, q| {
        Ok(Arc::new(QConv1d::build(p, vb, q)?))
    });
    r.register_fn("conv2d", OpClass::Weighted, |p, vb, q| {
        Ok(Arc::new(QConv2d::build(p, vb, q)?))
    });
    r.register_fn("conv_transpose2d", OpClass::Weighted, |p, vb, q| {
        Ok(Arc::new(QConvTranspose2d::build(p, vb, q)?))
    });
    r.register_fn("batch_norm2d", OpClass::Weighted, |p, vb, q| {
        Ok(Arc::new(QBatchNorm2d::build(p, vb, q)?))
    });
    r.register_fn("layer_norm", OpClass::Weighted, |p, vb, q| {
        Ok(Arc::new(QLayerNorm::build(p, vb, q)?))
    });
    r.register_fn("embedding", OpClass::Weighted, |p, vb, q| {
        Ok(Arc::new(QEmbedding::build(p, vb, q)?))
    });
    for kind in ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"] {
        r.register_fn(kind, OpClass::Structural, |p, _, q| {
            Ok(Arc::new(QPool::build(p, q)?))
        });
    }
    for kind in [
        "relu",
        "relu6",
        "gelu",
        "gelu_tanh",
        "silu",
        "sigmoid",
        "tanh",
        "softmax",
    ] {
        r.register_fn(kind, OpClass::Activation, |p, _, q| {
            Ok(Arc::new(QActivation::build(p, q)?))
        });
    }
    for kind in ["add", "concat", "matmul"] {
        r.register_fn(kind, OpClass::Structural, |p, _, q| {
            Ok(Arc::new(QStructural::build(p, q)?))
        });
    }
}
