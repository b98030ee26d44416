//! The operator registry: op kind → how to build its quantized implementation.
//!
//! Built-in ops are registered exactly the way a user registers their own: implement
//! [`OpFactory`] (or pass a closure to [`Registry::register_fn`]) and call
//! [`Registry::register`]. A later registration of a kind replaces the earlier one, so a user
//! can also swap a built-in implementation for a faster or more faithful one.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use candle_nn::VarBuilder;

use crate::config::OpClass;
use crate::error::{NnError, Result};
use crate::layers;
use crate::op::{LayerQuant, QuantOp};

/// Activation functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// max(x, 0).
    Relu,
    /// min(max(x, 0), 6).
    Relu6,
    /// GELU, exact erf form.
    Gelu,
    /// GELU, tanh approximation.
    GeluTanh,
    /// x·sigmoid(x).
    Silu,
    /// 1/(1+e^−x).
    Sigmoid,
    /// tanh.
    Tanh,
}

/// The hyper-parameters of an op, passed to its factory.
#[derive(Clone, Debug)]
pub enum OpParams {
    /// `y = x Wᵀ + b`, weight `[out, in]`.
    Linear {
        /// Input features.
        in_dim: usize,
        /// Output features.
        out_dim: usize,
        /// Whether there is a bias.
        bias: bool,
    },
    /// 1-D convolution, weight `[out, in/groups, k]`.
    Conv1d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel size.
        kernel: usize,
        /// Padding, stride, dilation, groups.
        cfg: candle_nn::Conv1dConfig,
        /// Whether there is a bias.
        bias: bool,
    },
    /// 2-D convolution, weight `[out, in/groups, k, k]`.
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel size.
        kernel: usize,
        /// Padding, stride, dilation, groups.
        cfg: candle_nn::Conv2dConfig,
        /// Whether there is a bias.
        bias: bool,
    },
    /// 2-D transposed convolution, weight `[in, out, k, k]`.
    ConvTranspose2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel size.
        kernel: usize,
        /// Padding, output padding, stride, dilation.
        cfg: candle_nn::ConvTranspose2dConfig,
        /// Whether there is a bias.
        bias: bool,
    },
    /// Batch norm over channel axis 1 (eval mode uses the running statistics).
    BatchNorm2d {
        /// Channels.
        channels: usize,
        /// Epsilon.
        eps: f64,
    },
    /// Layer norm over the last axis.
    LayerNorm {
        /// Normalised size.
        dim: usize,
        /// Epsilon.
        eps: f64,
    },
    /// Embedding table `[vocab, dim]`.
    Embedding {
        /// Vocabulary size.
        vocab: usize,
        /// Embedding size.
        dim: usize,
    },
    /// Max pooling (no padding).
    MaxPool2d {
        /// Kernel size.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// Average pooling (no padding).
    AvgPool2d {
        /// Kernel size.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// Adaptive average pooling to `(h, w)` (PyTorch's bin edges).
    AdaptiveAvgPool2d {
        /// Output height.
        h: usize,
        /// Output width.
        w: usize,
    },
    /// An activation function.
    Activation(Activation),
    /// Softmax along `dim`.
    Softmax {
        /// The axis.
        dim: usize,
    },
    /// Elementwise sum of the inputs (residual add).
    Add,
    /// Concatenation of the inputs along `dim`.
    Concat {
        /// The axis.
        dim: usize,
    },
    /// Batched matrix product of two inputs (attention's Q·Kᵀ and A·V).
    Matmul,
    /// Anything a user-registered op needs.
    Custom(Arc<dyn Any + Send + Sync>),
}

/// Builds the quantized implementation of one op kind.
pub trait OpFactory: Send + Sync {
    /// How the config's defaults apply to this kind.
    fn class(&self) -> OpClass;

    /// Builds layer `quant.name` from its parameters (loaded through `vb`, already prefixed
    /// with the layer's name) and its quantizers.
    fn build(
        &self,
        params: &OpParams,
        vb: &VarBuilder,
        quant: LayerQuant,
    ) -> Result<Arc<dyn QuantOp>>;
}

type BuildFn = dyn Fn(&OpParams, &VarBuilder, LayerQuant) -> Result<Arc<dyn QuantOp>> + Send + Sync;

struct FnFactory {
    class: OpClass,
    f: Box<BuildFn>,
}

impl OpFactory for FnFactory {
    fn class(&self) -> OpClass {
        self.class
    }
    fn build(
        &self,
        params: &OpParams,
        vb: &VarBuilder,
        quant: LayerQuant,
    ) -> Result<Arc<dyn QuantOp>> {
        (self.f)(params, vb, quant)
    }
}

/// Op kind → factory.
#[derive(Clone)]
pub struct Registry {
    ops: BTreeMap<String, Arc<dyn OpFactory>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.kinds())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Registry {
        Registry {
            ops: BTreeMap::new(),
        }
    }

    /// Registers (or replaces) `kind`.
    pub fn register(&mut self, kind: &str, factory: Arc<dyn OpFactory>) -> &mut Self {
        self.ops.insert(kind.to_string(), factory);
        self
    }

    /// Registers `kind` from a closure.
    pub fn register_fn(
        &mut self,
        kind: &str,
        class: OpClass,
        f: impl Fn(&OpParams, &VarBuilder, LayerQuant) -> Result<Arc<dyn QuantOp>>
        + Send
        + Sync
        + 'static,
    ) -> &mut Self {
        self.register(
            kind,
            Arc::new(FnFactory {
                class,
                f: Box::new(f),
            }),
        )
    }

    /// The factory of `kind`.
    pub fn get(&self, kind: &str) -> Result<&Arc<dyn OpFactory>> {
        self.ops.get(kind).ok_or_else(|| NnError::UnknownOp {
            kind: kind.to_string(),
            known: self.kinds().join(", "),
        })
    }

    /// Registered kinds, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        self.ops.keys().map(String::as_str).collect()
    }
}

impl Default for Registry {
    /// Every built-in op: linear, conv1d, conv2d, conv_transpose2d, batch_norm2d, layer_norm,
    /// embedding, max_pool2d, avg_pool2d, adaptive_avg_pool2d, relu, relu6, gelu, gelu_tanh,
    /// silu, sigmoid, tanh, softmax, add, concat, matmul.
    fn default() -> Registry {
        let mut r = Registry::empty();
        layers::register_builtins(&mut r);
        r
    }
}
