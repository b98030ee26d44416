//! A BERT encoder (Hugging Face `BertModel` without the pooler) built through lowbit-nn's
//! [`QBuilder`], so every layer, the attention products included, is quantizable by name.
//!
//! Layer names are the checkpoint's (Hugging Face) names; the ops without weights get names
//! beside them:
//!
//! | layer | kind | what |
//! |---|---|---|
//! | `embeddings.word_embeddings`, `.position_embeddings`, `.token_type_embeddings` | embedding | tables |
//! | `embeddings.add` | add | word + token type + position |
//! | `embeddings.LayerNorm` | layer_norm | |
//! | `encoder.layer.N.attention.self.query`, `.key`, `.value` | linear | Q, K, V |
//! | `encoder.layer.N.attention.self.scores` | matmul | Q·Kᵀ per head (before the 1/√d scale) |
//! | `encoder.layer.N.attention.self.softmax` | softmax | probabilities over the keys (see below) |
//! | `encoder.layer.N.attention.self.context` | matmul | probabilities·V per head |
//! | `encoder.layer.N.attention.output.dense` | linear | |
//! | `encoder.layer.N.attention.output.add` | add | residual (dense output + layer input) |
//! | `encoder.layer.N.attention.output.LayerNorm` | layer_norm | |
//! | `encoder.layer.N.intermediate.dense` | linear | |
//! | `encoder.layer.N.intermediate.act` | gelu (or per `hidden_act`) | |
//! | `encoder.layer.N.output.dense` | linear | |
//! | `encoder.layer.N.output.add` | add | residual |
//! | `encoder.layer.N.output.LayerNorm` | layer_norm | |
//!
//! The attention is Hugging Face's eager attention: `scores = Q·Kᵀ` (the `scores` matmul),
//! scaled by 1/√d (d = hidden / heads), plus the additive mask — 0 for real keys,
//! `f32::MIN` (`torch.finfo(torch.float32).min`, as Hugging Face) for padding keys — then
//! softmax over the keys and `context = P·V` (the `context` matmul).
//!
//! The softmax layer's input quantizer sees the *scaled scores before the mask*: the mask is
//! added after it. A quantizer with a dynamic (absmax) scale would otherwise see `f32::MIN`
//! in every padded batch and flush every real score to zero. The layer's taps record those
//! unmasked scores as its input. Everything else runs through the ops' ordinary `forward`.
//!
//! The checkpoint's `pooler.dense` (unused by sentence embeddings) and the `position_ids`
//! buffer are not built: [`is_unused_tensor`] tells the loader to drop them.

use std::path::Path;
use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use lowbit_nn::{Activation, LayerTable, QBuilder, QuantConfig, QuantModel, QuantOp, Registry};
use serde::Deserialize;

use crate::checkpoint::{TensorSpec, load_checked_ignoring, record_specs};
use crate::error::{ModelError, Result};

type Op = Arc<dyn QuantOp>;

/// The additive attention mask value of padding keys: `torch.finfo(torch.float32).min`, the
/// value Hugging Face uses.
pub const MASK_VALUE: f32 = f32::MIN;

/// The activation of the feed-forward block (`hidden_act` in `config.json`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum HiddenAct {
    /// `gelu`: exact GELU, `x·Φ(x)` with the error function (Hugging Face's `gelu`).
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluTanh,
    /// `relu`.
    #[serde(rename = "relu")]
    Relu,
}

impl HiddenAct {
    fn activation(self) -> Activation {
        match self {
            HiddenAct::Gelu => Activation::Gelu,
            HiddenAct::GeluTanh => Activation::GeluTanh,
            HiddenAct::Relu => Activation::Relu,
        }
    }
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".to_string()
}

/// The fields of a Hugging Face BERT `config.json` that the encoder uses (others are ignored).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct BertConfig {
    /// Vocabulary size (rows of `word_embeddings`).
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads (must divide `hidden_size`).
    pub num_attention_heads: usize,
    /// Feed-forward size.
    pub intermediate_size: usize,
    /// Longest input in tokens (rows of `position_embeddings`).
    pub max_position_embeddings: usize,
    /// Token types (rows of `token_type_embeddings`).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Layer-norm ε.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Feed-forward activation.
    #[serde(default)]
    pub hidden_act: HiddenAct,
    /// The padding token id (the [`QuantModel`] forward derives the attention mask from it).
    #[serde(default)]
    pub pad_token_id: u32,
    /// Only `absolute` is supported.
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

impl BertConfig {
    /// The configuration of `sentence-transformers/all-MiniLM-L6-v2` (its `config.json`):
    /// 6 layers, hidden 384, 12 heads, feed-forward 1536, vocabulary 30 522, 512 positions,
    /// ε = 1e-12, exact GELU.
    pub fn all_minilm_l6_v2() -> BertConfig {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: HiddenAct::Gelu,
            pad_token_id: 0,
            position_embedding_type: default_position_type(),
        }
    }

    /// Parses a `config.json` text (`path` names it in errors) and validates it.
    pub fn from_json(text: &str, path: &Path) -> Result<BertConfig> {
        let c: BertConfig = serde_json::from_str(text).map_err(|e| ModelError::Parse {
            path: path.to_path_buf(),
            line: Some(e.line()),
            message: e.to_string(),
        })?;
        c.validate().map_err(|message| ModelError::Parse {
            path: path.to_path_buf(),
            line: None,
            message,
        })?;
        Ok(c)
    }

    /// Reads and validates `config.json` at `path`; a missing file names `setup`.
    pub fn from_file(path: &Path, setup: &str) -> Result<BertConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e, setup))?;
        BertConfig::from_json(&text, path)
    }

    /// Checks sizes: all positive, heads dividing the hidden size, absolute positions.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(format!("`{name}` must be positive"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "`hidden_size` {} is not a multiple of `num_attention_heads` {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(format!(
                "`layer_norm_eps` {} must be positive",
                self.layer_norm_eps
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "`position_embedding_type` `{}` is not supported (only `absolute`)",
                self.position_embedding_type
            ));
        }
        Ok(())
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }
}

/// Whether the loader drops the checkpoint tensor `name`: the `embeddings.position_ids`
/// buffer and the pooler (`pooler.dense`), which sentence embeddings do not use.
pub fn is_unused_tensor(name: &str) -> bool {
    name == "embeddings.position_ids" || name.starts_with("pooler.")
}

#[derive(Debug)]
struct Embeddings {
    word: Op,
    position: Op,
    token_type: Op,
    add: Op,
    norm: Op,
}

#[derive(Debug)]
struct Layer {
    query: Op,
    key: Op,
    value: Op,
    scores: Op,
    softmax: Op,
    context: Op,
    attn_dense: Op,
    attn_add: Op,
    attn_norm: Op,
    inter_dense: Op,
    act: Op,
    out_dense: Op,
    out_add: Op,
    out_norm: Op,
}

impl Layer {
    fn build(b: &QBuilder<'_>, c: &BertConfig) -> Result<Layer> {
        let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let att = b.pp("attention");
        let sa = att.pp("self");
        let ao = att.pp("output");
        let inter = b.pp("intermediate");
        let out = b.pp("output");
        Ok(Layer {
            query: sa.linear("query", h, h)?,
            key: sa.linear("key", h, h)?,
            value: sa.linear("value", h, h)?,
            scores: sa.matmul("scores")?,
            softmax: sa.softmax("softmax", 3)?,
            context: sa.matmul("context")?,
            attn_dense: ao.linear("dense", h, h)?,
            attn_add: ao.add("add")?,
            attn_norm: ao.layer_norm("LayerNorm", h, eps)?,
            inter_dense: inter.linear("dense", h, i)?,
            act: inter.activation("act", c.hidden_act.activation())?,
            out_dense: out.linear("dense", i, h)?,
            out_add: out.add("add")?,
            out_norm: out.layer_norm("LayerNorm", h, eps)?,
        })
    }

    /// `x` `[B, T, H]`, `mask` additive `[B, 1, 1, T]`.
    fn forward(&self, x: &Tensor, mask: &Tensor, heads: usize) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let d = h / heads;
        let split = |y: Tensor| -> Result<Tensor> {
            Ok(y.reshape((b, t, heads, d))?.transpose(1, 2)?.contiguous()?)
        };
        let q = split(self.query.forward1(x)?)?;
        let k = split(self.key.forward1(x)?)?;
        let v = split(self.value.forward1(x)?)?;
        let kt = k.transpose(2, 3)?.contiguous()?;
        let scores = self.scores.forward(&[&q, &kt])?;
        let scaled = scores.affine(1.0 / (d as f64).sqrt(), 0.0)?;
        let probs = masked_softmax(&self.softmax, &scaled, mask)?;
        let ctx = self.context.forward(&[&probs, &v])?;
        let ctx = ctx.transpose(1, 2)?.contiguous()?.reshape((b, t, h))?;
        let a = self.attn_dense.forward1(&ctx)?;
        let a = self.attn_norm.forward1(&self.attn_add.forward(&[&a, x])?)?;
        let f = self.act.forward1(&self.inter_dense.forward1(&a)?)?;
        let f = self.out_dense.forward1(&f)?;
        Ok(self.out_norm.forward1(&self.out_add.forward(&[&f, &a])?)?)
    }
}

/// The softmax layer's forward with the mask added after its input quantizer (see the module
/// docs): quantize `scores` → add `mask` → softmax → quantize the output → taps (the input
/// recorded is the unmasked `scores`).
fn masked_softmax(op: &Op, scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let q = op.quant();
    let s = q.quantize_input(scores)?;
    let p = op.compute(&[s.broadcast_add(mask)?]).map_err(|e| match e {
        lowbit_nn::NnError::Layer { .. } => e,
        e => lowbit_nn::NnError::layer(&q.name, e),
    })?;
    let p = q.quantize_output(&p)?;
    q.tap(&[scores], &p);
    Ok(p)
}

/// The BERT encoder: embeddings and `num_hidden_layers` transformer layers (see the module
/// docs for the layer names). Its output is the last hidden state `[B, T, hidden]`.
#[derive(Debug)]
pub struct BertModel {
    config: BertConfig,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    table: LayerTable,
}

impl BertModel {
    /// Builds the encoder through `b` (names under `b`'s scope) and finishes it.
    pub fn build(b: QBuilder<'_>, config: &BertConfig) -> Result<BertModel> {
        config.validate().map_err(ModelError::Invalid)?;
        let c = config;
        let e = b.pp("embeddings");
        let embeddings = Embeddings {
            word: e.embedding("word_embeddings", c.vocab_size, c.hidden_size)?,
            position: e.embedding(
                "position_embeddings",
                c.max_position_embeddings,
                c.hidden_size,
            )?,
            token_type: e.embedding("token_type_embeddings", c.type_vocab_size, c.hidden_size)?,
            add: e.add("add")?,
            norm: e.layer_norm("LayerNorm", c.hidden_size, c.layer_norm_eps)?,
        };
        let enc = b.pp("encoder").pp("layer");
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::build(&enc.pp(i), c))
            .collect::<Result<Vec<_>>>()?;
        let table = b.finish()?;
        Ok(BertModel {
            config: config.clone(),
            embeddings,
            layers,
            table,
        })
    }

    /// Every tensor the encoder asks of its checkpoint, with its shape, in build order
    /// (101 for all-MiniLM-L6-v2: 5 of the embeddings and 16 per layer).
    pub fn tensor_specs(config: &BertConfig) -> Result<Vec<TensorSpec>> {
        record_specs(|vb| {
            let b = QBuilder::new(vb, &QuantConfig::default(), Registry::default())?;
            BertModel::build(b, config).map(|_| ())
        })
    }

    /// Loads the safetensors checkpoint `file` (Hugging Face names; checked: no missing,
    /// mis-shaped or unused tensor, apart from those [`is_unused_tensor`] drops) and builds
    /// the encoder with `quant` and `registry`. A missing file names `setup`.
    pub fn load_with_registry(
        file: &Path,
        config: &BertConfig,
        quant: &QuantConfig,
        registry: Registry,
        device: &Device,
        setup: &str,
    ) -> Result<BertModel> {
        let specs = BertModel::tensor_specs(config)?;
        let tensors = load_checked_ignoring(file, &specs, device, setup, is_unused_tensor)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        BertModel::build(QBuilder::new(vb, quant, registry)?, config)
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The last hidden state `[B, T, hidden]` of `input_ids` `[B, T]` (u32 or i64), with
    /// optional `token_type_ids` `[B, T]` (zeros when absent) and `attention_mask` `[B, T]`
    /// (1 for real tokens, 0 for padding; all ones when absent).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let c = &self.config;
        if t > c.max_position_embeddings {
            return Err(ModelError::Invalid(format!(
                "input of {t} tokens is longer than the {} positions of the model",
                c.max_position_embeddings
            )));
        }
        let dev = input_ids.device();
        let ids = input_ids.to_dtype(DType::U32)?;
        let types = match token_type_ids {
            Some(tt) => {
                if tt.dims() != [b, t] {
                    return Err(ModelError::Invalid(format!(
                        "token_type_ids have shape {:?}, expected {:?}",
                        tt.dims(),
                        [b, t]
                    )));
                }
                tt.to_dtype(DType::U32)?
            }
            None => Tensor::zeros((b, t), DType::U32, dev)?,
        };
        let positions = Tensor::arange(0u32, t as u32, dev)?.unsqueeze(0)?;
        let mask = match attention_mask {
            Some(m) => {
                if m.dims() != [b, t] {
                    return Err(ModelError::Invalid(format!(
                        "attention_mask has shape {:?}, expected {:?}",
                        m.dims(),
                        [b, t]
                    )));
                }
                additive_mask(m)?
            }
            None => Tensor::zeros((b, 1, 1, t), DType::F32, dev)?,
        };
        let e = &self.embeddings;
        let w = e.word.forward1(&ids)?;
        let tt = e.token_type.forward1(&types)?;
        let p = e.position.forward1(&positions)?;
        let mut x = e.norm.forward1(&e.add.forward(&[&w, &tt, &p])?)?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask, c.num_attention_heads)?;
        }
        Ok(x)
    }

    /// The attention mask `[B, T]` (u8) of padded ids: 1 where the id is not
    /// `pad_token_id`.
    pub fn mask_from_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        Ok(input_ids
            .to_dtype(DType::U32)?
            .ne(self.config.pad_token_id)?)
    }

    /// The layers.
    pub fn layers(&self) -> &LayerTable {
        &self.table
    }
}

/// The additive mask `[B, 1, 1, T]`: 0 where `mask` is 1, [`MASK_VALUE`] where it is 0.
fn additive_mask(mask: &Tensor) -> Result<Tensor> {
    let (b, t) = mask.dims2()?;
    let m = mask.to_dtype(DType::F32)?;
    // (1 − m)·MIN: exactly 0 or MIN for a 0/1 mask.
    let inv = m.affine(-1.0, 1.0)?;
    Ok(inv
        .affine(f64::from(MASK_VALUE), 0.0)?
        .reshape((b, 1, 1, t))?)
}

/// Mean of `hidden` `[B, T, H]` over the tokens where `mask` `[B, T]` is 1 (the
/// sentence-transformers mean pooling: the mask count clamped at 1e-9).
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1e-9f32, f32::MAX)?;
    Ok(sum.broadcast_div(&count)?)
}

/// Rows of `x` `[N, H]` divided by their L2 norm (at least 1e-12, as
/// `torch.nn.functional.normalize`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let n = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    Ok(x.broadcast_div(&n)?)
}

/// A [`ModelError`] as lowbit-nn's error (for [`QuantModel::forward`]): lowbit-nn and Candle
/// errors pass through, others are reported against `model`.
pub(crate) fn to_nn_error(model: &str, e: ModelError) -> lowbit_nn::NnError {
    match e {
        ModelError::Nn(e) => e,
        ModelError::Candle(e) => lowbit_nn::NnError::Candle(e),
        e => lowbit_nn::NnError::layer(model, e),
    }
}

impl QuantModel for BertModel {
    /// The last hidden state of token ids `[B, T]`; padding (`pad_token_id`) is masked.
    fn forward(&self, input: &Tensor) -> lowbit_nn::Result<Tensor> {
        let run = || {
            let mask = self.mask_from_ids(input)?;
            BertModel::forward(self, input, None, Some(&mask))
        };
        run().map_err(|e| to_nn_error("bert", e))
    }
    fn layers(&self) -> &LayerTable {
        &self.table
    }
}
