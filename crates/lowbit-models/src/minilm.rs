//! Sentence embeddings with `sentence-transformers/all-MiniLM-L6-v2`: the WordPiece tokenizer
//! of its `tokenizer.json`, the [`BertModel`] encoder (6 layers, hidden 384), mean pooling
//! over the attention mask and L2 normalisation — the model's sentence-transformers pipeline,
//! with its `max_seq_length` of 256 tokens.
//!
//! The files come from `scripts/fetch-assets.sh minilm` ([`assets::group`]`("minilm")`):
//! `config.json`, `model.safetensors`, `tokenizer.json`.
//!
//! The shipped `tokenizer.json` pads every input to 128 tokens and truncates at 128; the
//! encoder turns its padding off and truncates at [`MAX_SEQ_LENGTH`] instead, and pads each
//! batch to its longest item. [`SentenceEncoder::encode`] sorts the texts by length before
//! batching them (as sentence-transformers does), so that little padding is computed.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use lowbit_nn::{LayerTable, QuantConfig, QuantModel, Registry};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::assets;
use crate::bert::{BertConfig, BertModel, l2_normalize, mean_pool, to_nn_error};
use crate::checkpoint::TensorSpec;
use crate::error::{ModelError, Result};

/// The asset group of the model (`scripts/fetch-assets.sh minilm`).
pub const ASSET_GROUP: &str = "minilm";

/// The files [`SentenceEncoder::load`] reads from the model directory.
pub const FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// Longest input in tokens, `[CLS]` and `[SEP]` included (sentence-transformers'
/// `max_seq_length` of all-MiniLM-L6-v2); longer texts are truncated.
pub const MAX_SEQ_LENGTH: usize = 256;

/// Texts per forward pass in [`SentenceEncoder::encode`] unless set otherwise
/// (sentence-transformers' default).
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Embedding size of all-MiniLM-L6-v2.
pub const DIM: usize = 384;

/// A sentence encoder: tokenizer, BERT encoder, mean pooling, L2 normalisation.
///
/// ```no_run
/// use candle_core::Device;
/// use lowbit_models::SentenceEncoder;
/// use lowbit_nn::QuantConfig;
///
/// let enc = SentenceEncoder::load_default(&QuantConfig::default(), &Device::Cpu)?;
/// let e = enc.encode(&["A man is playing a guitar.", "Someone is strumming a guitar."])?;
/// assert_eq!(e.dims(), &[2, 384]);
/// let cos = (e.get(0)? * e.get(1)?)?.sum_all()?.to_scalar::<f32>()?;
/// assert!(cos > 0.6);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SentenceEncoder {
    bert: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    batch_size: usize,
}

impl SentenceEncoder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir` and builds the
    /// encoder with `config` and `registry`. A missing file names
    /// `scripts/fetch-assets.sh minilm`; a checkpoint that does not fit the config is an
    /// error naming the tensor and the expected shape.
    pub fn load_with_registry(
        dir: &Path,
        config: &QuantConfig,
        registry: Registry,
        device: &Device,
    ) -> Result<SentenceEncoder> {
        let setup = assets::setup_command(ASSET_GROUP);
        let bert_config = BertConfig::from_file(&dir.join("config.json"), &setup)?;
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"), &setup)?;
        let bert = BertModel::load_with_registry(
            &dir.join("model.safetensors"),
            &bert_config,
            config,
            registry,
            device,
            &setup,
        )?;
        Ok(SentenceEncoder {
            bert,
            tokenizer,
            device: device.clone(),
            batch_size: DEFAULT_BATCH_SIZE,
        })
    }

    /// [`load_with_registry`](SentenceEncoder::load_with_registry) with the default registry.
    pub fn load(dir: &Path, config: &QuantConfig, device: &Device) -> Result<SentenceEncoder> {
        SentenceEncoder::load_with_registry(dir, config, Registry::default(), device)
    }

    /// Loads the fetched model ([`default_dir`]).
    pub fn load_default(config: &QuantConfig, device: &Device) -> Result<SentenceEncoder> {
        SentenceEncoder::load(&default_dir(), config, device)
    }

    /// Every tensor all-MiniLM-L6-v2's checkpoint must hold (101, Hugging Face names), with
    /// its shape, in build order; the checkpoint's `pooler.*` and `embeddings.position_ids`
    /// are not among them (see [`crate::bert::is_unused_tensor`]).
    pub fn tensor_specs() -> Result<Vec<TensorSpec>> {
        BertModel::tensor_specs(&BertConfig::all_minilm_l6_v2())
    }

    /// Sets the number of texts per forward pass in [`encode`](SentenceEncoder::encode).
    pub fn set_batch_size(&mut self, batch_size: usize) -> Result<()> {
        if batch_size == 0 {
            return Err(ModelError::Invalid("batch size must be positive".into()));
        }
        self.batch_size = batch_size;
        Ok(())
    }

    /// Texts per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The encoder.
    pub fn bert(&self) -> &BertModel {
        &self.bert
    }

    /// The layers (names, quantizers, mode).
    pub fn layers(&self) -> &LayerTable {
        self.bert.layers()
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Embedding size (`hidden_size`).
    pub fn dim(&self) -> usize {
        self.bert.config().hidden_size
    }

    /// The token ids of each text: `[CLS] … [SEP]`, truncated at [`MAX_SEQ_LENGTH`], not
    /// padded.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                self.tokenizer
                    .encode(*t, true)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| ModelError::Invalid(format!("tokenizing text {i}: {e}")))
            })
            .collect()
    }

    /// Unit-norm embeddings `[texts.len(), dim]` of `texts`, in their order. The texts are
    /// sorted by token count and run [`batch_size`](SentenceEncoder::batch_size) at a time,
    /// each batch padded to its longest text.
    pub fn encode(&self, texts: &[&str]) -> Result<Tensor> {
        let ids = self.tokenize(texts)?;
        self.encode_ids(&ids)
    }

    /// [`encode`](SentenceEncoder::encode) of already tokenized texts.
    pub fn encode_ids(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        if ids.is_empty() {
            return Ok(Tensor::zeros((0, self.dim()), DType::F32, &self.device)?);
        }
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut parts = Vec::new();
        for chunk in order.chunks(self.batch_size) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            parts.push(self.encode_batch(&batch)?);
        }
        let sorted = Tensor::cat(&parts, 0)?;
        // Row k of `sorted` is text order[k]: put each text back in its place.
        let mut inverse = vec![0u32; order.len()];
        for (k, &i) in order.iter().enumerate() {
            inverse[i] = k as u32;
        }
        let inverse = Tensor::from_vec(inverse, order.len(), &self.device)?;
        Ok(sorted.index_select(&inverse, 0)?)
    }

    /// Token id lists padded to the longest with the pad id, on the encoder's device:
    /// `input_ids` `[B, T]` and the attention mask `[B, T]` (1 for tokens, 0 for padding) — the
    /// input of [`embed`](Self::embed), or of the [`QuantModel`] forward (ids only). Errors: no
    /// list, or only empty ones.
    pub fn pad_ids<S: AsRef<[u32]>>(&self, batch: &[S]) -> Result<(Tensor, Tensor)> {
        let t = batch.iter().map(|b| b.as_ref().len()).max().unwrap_or(0);
        if t == 0 {
            return Err(ModelError::Invalid("a text with no tokens".into()));
        }
        let pad = self.bert.config().pad_token_id;
        let mut ids = Vec::with_capacity(batch.len() * t);
        let mut mask = Vec::with_capacity(batch.len() * t);
        for b in batch {
            let b = b.as_ref();
            ids.extend_from_slice(b);
            ids.extend(std::iter::repeat_n(pad, t - b.len()));
            mask.extend(std::iter::repeat_n(1u32, b.len()));
            mask.extend(std::iter::repeat_n(0u32, t - b.len()));
        }
        let ids = Tensor::from_vec(ids, (batch.len(), t), &self.device)?;
        let mask = Tensor::from_vec(mask, (batch.len(), t), &self.device)?;
        Ok((ids, mask))
    }

    /// Embeddings of one batch of token id lists, padded and masked.
    fn encode_batch(&self, batch: &[&[u32]]) -> Result<Tensor> {
        let (ids, mask) = self.pad_ids(batch)?;
        self.embed(&ids, &mask)
    }

    /// Unit-norm embeddings `[B, dim]` of padded `input_ids` `[B, T]` with their
    /// `attention_mask` `[B, T]` (1 for tokens, 0 for padding).
    pub fn embed(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let h = self.bert.forward(input_ids, None, Some(attention_mask))?;
        l2_normalize(&mean_pool(&h, attention_mask)?)
    }
}

impl QuantModel for SentenceEncoder {
    /// Unit-norm embeddings `[B, dim]` of token ids `[B, T]` padded with `pad_token_id` (the
    /// attention mask is derived from it; `[CLS]`/`[SEP]` are never the pad id).
    fn forward(&self, input: &Tensor) -> lowbit_nn::Result<Tensor> {
        let run = || {
            let mask = self.bert.mask_from_ids(input)?;
            self.embed(input, &mask)
        };
        run().map_err(|e| to_nn_error("minilm", e))
    }
    fn layers(&self) -> &LayerTable {
        self.bert.layers()
    }
}

/// The fetched model's directory: [`assets::group`]`("minilm")`.
pub fn default_dir() -> PathBuf {
    assets::group(ASSET_GROUP)
}

/// Reads `tokenizer.json` with its padding off and truncation at [`MAX_SEQ_LENGTH`].
fn load_tokenizer(path: &Path, setup: &str) -> Result<Tokenizer> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e, setup))?;
    let parse = |message: String| ModelError::Parse {
        path: path.to_path_buf(),
        line: None,
        message,
    };
    let mut tok = Tokenizer::from_bytes(&bytes).map_err(|e| parse(e.to_string()))?;
    tok.with_padding(None);
    tok.with_truncation(Some(TruncationParams {
        max_length: MAX_SEQ_LENGTH,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        direction: TruncationDirection::Right,
    }))
    .map_err(|e| parse(e.to_string()))?;
    Ok(tok)
}
