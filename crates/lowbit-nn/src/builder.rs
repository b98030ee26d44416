//! [`QBuilder`]: builds a model's layers through the registry, naming each with its full path
//! and asking the config what it gets; [`LayerTable`]: the finished model's layers.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::Arc;

use candle_nn::VarBuilder;
use serde::Serialize;

use crate::config::{CompiledConfig, OpClass, QuantConfig, ResolvedLayer};
use crate::context::{Mode, ModelContext};
use crate::error::{NnError, Result};
use crate::op::{LayerQuant, QuantOp};
use crate::registry::{Activation, OpParams, Registry};

/// One built layer.
#[derive(Clone, Debug)]
pub struct LayerEntry {
    /// Full name (`layer1.0.conv1`).
    pub name: String,
    /// Op kind.
    pub kind: String,
    /// Op class.
    pub class: OpClass,
    /// What the config gave it (after the first/last switches).
    pub resolved: ResolvedLayer,
    /// The layer.
    pub op: Arc<dyn QuantOp>,
}

struct BuildState {
    config: CompiledConfig,
    registry: Registry,
    ctx: Arc<ModelContext>,
    layers: Vec<LayerEntry>,
}

/// Builds layers by name through a [`Registry`], with the quantizers a [`QuantConfig`] gives
/// them. Model code asks for `linear`, `conv2d`, … and never mentions formats.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use lowbit_nn::{QBuilder, QuantConfig, Registry};
///
/// let yaml = "defaults: { weight: int8, input: fp8_e4m3 }\nlayers:\n  - pattern: head\n    weight: null\n";
/// let config = QuantConfig::from_yaml(yaml, "example.yaml")?;
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
/// let b = QBuilder::new(vb, &config, Registry::default())?;
/// let body = b.pp("body").linear("fc", 4, 8)?;
/// let head = b.linear("head", 8, 2)?;
/// let table = b.finish()?;
/// let x = Tensor::ones((3, 4), DType::F32, &Device::Cpu)?;
/// let y = head.forward1(&body.forward1(&x)?)?;
/// assert_eq!(y.dims(), &[3, 2]);
/// assert!(table.explain().contains("body.fc"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct QBuilder<'a> {
    vb: VarBuilder<'a>,
    prefix: String,
    state: Rc<RefCell<BuildState>>,
}

impl<'a> QBuilder<'a> {
    /// A builder over `vb` (weights), checking `config` against the registry's op kinds.
    pub fn new(
        vb: VarBuilder<'a>,
        config: &QuantConfig,
        registry: Registry,
    ) -> Result<QBuilder<'a>> {
        let compiled = config.compile(&registry.kinds())?;
        Ok(QBuilder {
            vb,
            prefix: String::new(),
            state: Rc::new(RefCell::new(BuildState {
                config: compiled,
                registry,
                ctx: ModelContext::new(),
                layers: Vec::new(),
            })),
        })
    }

    /// A child scope: names and weights under `name`.
    pub fn pp(&self, name: impl ToString) -> QBuilder<'a> {
        let name = name.to_string();
        QBuilder {
            vb: self.vb.pp(&name),
            prefix: self.full_name(&name),
            state: self.state.clone(),
        }
    }

    /// The full name of `leaf` in this scope.
    pub fn full_name(&self, leaf: &str) -> String {
        if self.prefix.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.prefix)
        }
    }

    /// The shared model context (mode, taps).
    pub fn context(&self) -> Arc<ModelContext> {
        self.state.borrow().ctx.clone()
    }

    /// The underlying `VarBuilder` of this scope.
    pub fn var_builder(&self) -> &VarBuilder<'a> {
        &self.vb
    }

    /// Builds op `kind` named `leaf` in this scope.
    pub fn op(&self, kind: &str, leaf: &str, params: OpParams) -> Result<Arc<dyn QuantOp>> {
        let name = self.full_name(leaf);
        let mut st = self.state.borrow_mut();
        let factory = st.registry.get(kind)?.clone();
        let class = factory.class();
        let resolved = st.config.resolve(&name, kind, class);
        if st.layers.iter().any(|l| l.name == name) {
            return Err(NnError::layer(
                &name,
                "a layer with this name already exists",
            ));
        }
        let quant = LayerQuant::new(&name, kind, &resolved, st.ctx.clone());
        let op = factory
            .build(&params, &self.vb.pp(leaf), quant)
            .map_err(|e| match e {
                NnError::Layer { .. } => e,
                e => NnError::layer(&name, e),
            })?;
        st.layers.push(LayerEntry {
            name,
            kind: kind.to_string(),
            class,
            resolved,
            op: op.clone(),
        });
        Ok(op)
    }

    /// `linear` with bias.
    pub fn linear(&self, leaf: &str, in_dim: usize, out_dim: usize) -> Result<Arc<dyn QuantOp>> {
        self.op(
            "linear",
            leaf,
            OpParams::Linear {
                in_dim,
                out_dim,
                bias: true,
            },
        )
    }
    /// `linear` without bias.
    pub fn linear_no_bias(
        &self,
        leaf: &str,
        in_dim: usize,
        out_dim: usize,
    ) -> Result<Arc<dyn QuantOp>> {
        self.op(
            "linear",
            leaf,
            OpParams::Linear {
                in_dim,
                out_dim,
                bias: false,
            },
        )
    }
    /// `conv2d`.
    pub fn conv2d(
        &self,
        leaf: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        cfg: candle_nn::Conv2dConfig,
        bias: bool,
    ) -> Result<Arc<dyn QuantOp>> {
        self.op(
            "conv2d",
            leaf,
            OpParams::Conv2d {
                in_channels,
                out_channels,
                kernel,
                cfg,
                bias,
            },
        )
    }
    /// `batch_norm2d`.
    pub fn batch_norm2d(&self, leaf: &str, channels: usize, eps: f64) -> Result<Arc<dyn QuantOp>> {
        self.op(
            "batch_norm2d",
            leaf,
            OpParams::BatchNorm2d { channels, eps },
        )
    }
    /// `layer_norm`.
    pub fn layer_norm(&self, leaf: &str, dim: usize, eps: f64) -> Result<Arc<dyn QuantOp>> {
        self.op("layer_norm", leaf, OpParams::LayerNorm { dim, eps })
    }
    /// `embedding`.
    pub fn embedding(&self, leaf: &str, vocab: usize, dim: usize) -> Result<Arc<dyn QuantOp>> {
        self.op("embedding", leaf, OpParams::Embedding { vocab, dim })
    }
    /// An activation (`relu`, `gelu`, …; the kind is derived from `act`).
    pub fn activation(&self, leaf: &str, act: Activation) -> Result<Arc<dyn QuantOp>> {
        let kind = match act {
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_tanh",
            Activation::Silu => "silu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
        };
        self.op(kind, leaf, OpParams::Activation(act))
    }
    /// `softmax` along `dim`.
    pub fn softmax(&self, leaf: &str, dim: usize) -> Result<Arc<dyn QuantOp>> {
        self.op("softmax", leaf, OpParams::Softmax { dim })
    }
    /// `max_pool2d`.
    pub fn max_pool2d(&self, leaf: &str, kernel: usize, stride: usize) -> Result<Arc<dyn QuantOp>> {
        self.op("max_pool2d", leaf, OpParams::MaxPool2d { kernel, stride })
    }
    /// `avg_pool2d`.
    pub fn avg_pool2d(&self, leaf: &str, kernel: usize, stride: usize) -> Result<Arc<dyn QuantOp>> {
        self.op("avg_pool2d", leaf, OpParams::AvgPool2d { kernel, stride })
    }
    /// `adaptive_avg_pool2d` to `(h, w)`.
    pub fn adaptive_avg_pool2d(&self, leaf: &str, h: usize, w: usize) -> Result<Arc<dyn QuantOp>> {
        self.op(
            "adaptive_avg_pool2d",
            leaf,
            OpParams::AdaptiveAvgPool2d { h, w },
        )
    }
    /// Residual `add` of quantized inputs.
    pub fn add(&self, leaf: &str) -> Result<Arc<dyn QuantOp>> {
        self.op("add", leaf, OpParams::Add)
    }
    /// `concat` along `dim` of quantized inputs.
    pub fn concat(&self, leaf: &str, dim: usize) -> Result<Arc<dyn QuantOp>> {
        self.op("concat", leaf, OpParams::Concat { dim })
    }
    /// `matmul` of two quantized inputs.
    pub fn matmul(&self, leaf: &str) -> Result<Arc<dyn QuantOp>> {
        self.op("matmul", leaf, OpParams::Matmul)
    }

    /// Finishes the model: applies the first/last-layer switches to the first and last layer
    /// with weights (in build order) and checks that every `layers`/`skip` pattern of the
    /// config matched some layer.
    pub fn finish(self) -> Result<LayerTable> {
        let st = self.state.borrow();
        st.config
            .check_patterns_match(st.layers.iter().map(|l| l.name.as_str()))?;
        let mut layers = st.layers.clone();
        let cfg = st.config.config();
        let weighted: Vec<usize> = (0..layers.len())
            .filter(|&i| layers[i].class == OpClass::Weighted)
            .collect();
        let mut off = Vec::new();
        if !cfg.quantize_first_layer
            && let Some(&i) = weighted.first()
        {
            off.push(i);
        }
        if !cfg.quantize_last_layer
            && let Some(&i) = weighted.last()
        {
            off.push(i);
        }
        for i in off {
            layers[i].op.quant().set_enabled(false);
            layers[i].resolved = ResolvedLayer::default();
        }
        Ok(LayerTable {
            ctx: st.ctx.clone(),
            layers,
            config: cfg.clone(),
        })
    }
}

/// A model built through [`QBuilder`]: what evaluation, calibration and QAT need of it.
///
/// `forward` maps a batch to the model's output (logits, embeddings, …); `layers` gives the
/// layers, their quantizers and the shared mode/taps context.
pub trait QuantModel: Send + Sync {
    /// The model's forward pass on a batch.
    fn forward(&self, input: &candle_core::Tensor) -> Result<candle_core::Tensor>;
    /// The model's layers.
    fn layers(&self) -> &LayerTable;
}

/// The layers of a built model, in build order, with their shared context.
#[derive(Clone, Debug)]
pub struct LayerTable {
    ctx: Arc<ModelContext>,
    layers: Vec<LayerEntry>,
    config: QuantConfig,
}

/// One row of [`LayerTable::explain_rows`].
#[derive(Clone, Debug, Serialize)]
pub struct ExplainRow {
    /// Layer name.
    pub layer: String,
    /// Op kind.
    pub kind: String,
    /// Weight spec, or `-`.
    pub weight: String,
    /// Bias spec.
    pub bias: String,
    /// Input spec.
    pub input: String,
    /// Output spec.
    pub output: String,
    /// Accumulator of the dot products, or `-` (f32).
    pub accumulator: String,
    /// Rotation of the input and weight, or `-`.
    pub rotation: String,
    /// SmoothQuant smoothing of the input and weight, or `-`.
    pub smoothing: String,
    /// GPTQ of the weight, or `-`.
    pub gptq: String,
}

impl LayerTable {
    /// The shared context (mode, training, taps).
    pub fn context(&self) -> &Arc<ModelContext> {
        &self.ctx
    }
    /// Sets the mode of every quantizer.
    pub fn set_mode(&self, mode: Mode) {
        self.ctx.set_mode(mode);
    }
    /// The layers in build order.
    pub fn layers(&self) -> &[LayerEntry] {
        &self.layers
    }
    /// The layer named `name`.
    pub fn get(&self, name: &str) -> Option<&LayerEntry> {
        self.layers.iter().find(|l| l.name == name)
    }
    /// The config the model was built with.
    pub fn config(&self) -> &QuantConfig {
        &self.config
    }

    /// Each layer's resolved specs.
    pub fn explain_rows(&self) -> Vec<ExplainRow> {
        let s = |x: Option<lowbit_quant::QuantSpec>| {
            x.map_or_else(|| "-".to_string(), |s| s.to_string())
        };
        self.layers
            .iter()
            .map(|l| ExplainRow {
                layer: l.name.clone(),
                kind: l.kind.clone(),
                weight: s(l.resolved.weight),
                bias: s(l.resolved.bias),
                input: s(l.resolved.input),
                output: s(l.resolved.output),
                accumulator: l
                    .resolved
                    .accumulator
                    .map_or_else(|| "-".to_string(), |a| a.to_string()),
                rotation: l
                    .resolved
                    .rotation
                    .map_or_else(|| "-".to_string(), |r| r.to_string()),
                smoothing: l
                    .resolved
                    .smoothing
                    .map_or_else(|| "-".to_string(), |r| r.to_string()),
                gptq: l
                    .resolved
                    .gptq
                    .map_or_else(|| "-".to_string(), |g| g.to_string()),
            })
            .collect()
    }

    /// A plain-text table of every layer's resolved specs.
    pub fn explain(&self) -> String {
        let rows = self.explain_rows();
        let w = |f: fn(&ExplainRow) -> &str, h: &str| {
            rows.iter()
                .map(|r| f(r).len())
                .max()
                .unwrap_or(0)
                .max(h.len())
        };
        let (wl, wk, ww, wb, wi) = (
            w(|r| &r.layer, "layer"),
            w(|r| &r.kind, "kind"),
            w(|r| &r.weight, "weight"),
            w(|r| &r.bias, "bias"),
            w(|r| &r.input, "input"),
        );
        // The accumulator, rotation and smoothing columns only when some layer has one.
        let accumulates = rows.iter().any(|r| r.accumulator != "-");
        let rotates = rows.iter().any(|r| r.rotation != "-");
        let smooths = rows.iter().any(|r| r.smoothing != "-");
        let gptqs = rows.iter().any(|r| r.gptq != "-");
        let (wo, wa, wr, wsm) = (
            w(|r| &r.output, "output"),
            w(|r| &r.accumulator, "accumulator"),
            w(|r| &r.rotation, "rotation"),
            w(|r| &r.smoothing, "smoothing"),
        );
        let mut out = String::new();
        let mut line = |cells: [&str; 10]| {
            let mut l = format!(
                "{:wl$}  {:wk$}  {:ww$}  {:wb$}  {:wi$}  {:wo$}",
                cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]
            );
            if accumulates {
                let _ = write!(l, "  {:wa$}", cells[6]);
            }
            if rotates {
                let _ = write!(l, "  {:wr$}", cells[7]);
            }
            if smooths {
                let _ = write!(l, "  {:wsm$}", cells[8]);
            }
            if gptqs {
                let _ = write!(l, "  {}", cells[9]);
            }
            let _ = writeln!(out, "{}", l.trim_end());
        };
        line([
            "layer",
            "kind",
            "weight",
            "bias",
            "input",
            "output",
            "accumulator",
            "rotation",
            "smoothing",
            "gptq",
        ]);
        for r in &rows {
            line([
                &r.layer,
                &r.kind,
                &r.weight,
                &r.bias,
                &r.input,
                &r.output,
                &r.accumulator,
                &r.rotation,
                &r.smoothing,
                &r.gptq,
            ]);
        }
        out
    }
}
