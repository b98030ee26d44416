//! # lowbit-models
//!
//! Real networks for lowbit, built through lowbit-nn's [`QBuilder`](lowbit_nn::QBuilder) so
//! that every layer is quantizable by its checkpoint name, with their checkpoints and the
//! data sets they are evaluated on. Everything runs offline.
//!
//! ```
//! use candle_core::Device;
//! use lowbit_models::{FashionCnn, FashionMnist, fashion};
//! use lowbit_nn::{Mode, QuantConfig, QuantModel};
//!
//! // The committed Fashion-MNIST ResNet, its layers quantized per a config.
//! let config = QuantConfig::from_yaml("defaults: { weight: fp8_e4m3, input: fp8_e4m3 }", "inline")?;
//! let model = FashionCnn::load_default(&config, &Device::Cpu)?;
//! let test = FashionMnist::committed_test(Some(200))?;
//! model.layers().set_mode(Mode::Fp32);
//! let fp32 = fashion::evaluate(&model, test.batches(100, &Device::Cpu)?)?;
//! model.layers().set_mode(Mode::Quantize);
//! let fp8 = fashion::evaluate(&model, test.batches(100, &Device::Cpu)?)?;
//! assert!(fp32.accuracy > 0.85 && (fp32.accuracy - fp8.accuracy).abs() < 0.05);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Map
//!
//! - [`fashion`]: [`FashionCnn`], the embedded default model (a small ResNet trained on
//!   Fashion-MNIST by this project; weights in `weights/`), its training loop
//!   ([`fashion::train_epoch`]) and evaluation ([`fashion::evaluate`]).
//! - [`data`]: [`FashionMnist`], the data set (test split committed in `data/`), batches.
//! - [`idx`]: the IDX file reader ([`read_idx`]).
//! - [`bert`]: [`BertModel`], a Hugging Face BERT encoder (attention products quantizable as
//!   `…attention.self.scores` / `.context`), its [`BertConfig`].
//! - [`minilm`]: [`SentenceEncoder`], all-MiniLM-L6-v2 sentence embeddings (tokenizer, mean
//!   pooling, L2 norm; `scripts/fetch-assets.sh minilm`).
//! - [`text`]: gensim's evaluation sets [`WordSim353`], [`SimLex999`], [`LeeCorpus`]
//!   (`scripts/fetch-assets.sh gensim`).
//! - [`resnet`]: [`ResNet`], torchvision's ResNet-18/34/50/101/152 ([`ResNetConfig`]) for
//!   checkpoints users export from torchvision (torchvision's tensor names).
//! - [`vit`]: [`Vit`], timm's Vision Transformer ([`VitConfig`], ViT-B/16) for checkpoints
//!   exported from timm (timm's names; attention products quantizable as
//!   `blocks.N.attn.matmul_qk` / `.softmax` / `.matmul_av`).
//! - [`efficientnet`]: [`EfficientNetLite0`], ImageNet-1k EfficientNet-Lite0 (TF "SAME"
//!   padding, depthwise convolutions; `scripts/fetch-assets.sh efficientnet`).
//! - [`image`]: photo decoding (PNG, JPEG) and torchvision's `Resize` / `CenterCrop` /
//!   normalisation ([`image::Preprocess`]; resampling bit-identical to Pillow's bilinear).
//! - [`imagefolder`]: [`ImageFolder`], torchvision-style `root/<class>/<image>` sets streamed in
//!   batches; [`imagenet_classes`] and [`imagenet_synsets`], the ImageNet-1k class names and
//!   synset ids (a set with only some synset folders keeps ImageNet labels).
//! - [`assets`]: where fetched assets live (`scripts/fetch-assets.sh`).
//! - [`checkpoint`]: checkpoints checked against a model ([`TensorSpec`], [`load_checked`]).
//! - [`rng`]: the seeded generator for shuffling and initialisation.
//! - [`ModelError`] (`error.rs`).

#![warn(missing_docs)]

pub mod assets;
pub mod bert;
pub mod checkpoint;
pub mod data;
pub mod efficientnet;
mod error;
pub mod fashion;
pub mod idx;
pub mod image;
pub mod imagefolder;
pub mod minilm;
pub mod resnet;
pub mod rng;
pub mod text;
pub mod vit;

pub use bert::{BertConfig, BertModel, HiddenAct};
pub use checkpoint::{
    TensorSpec, check_tensors, load_checked, load_checked_ignoring, record_specs,
};
pub use data::{Batch, Batches, FashionMnist, Split};
pub use efficientnet::EfficientNetLite0;
pub use error::{ModelError, Result};
pub use fashion::{EpochStats, EvalStats, FashionCnn};
pub use idx::{IdxArray, read_idx};
pub use imagefolder::{
    ImageBatches, ImageFolder, ImageSample, imagenet_classes, imagenet_index, imagenet_synsets,
};
pub use minilm::SentenceEncoder;
pub use resnet::{BlockKind, ResNet, ResNetConfig};
pub use text::{LeeCorpus, SimLex999, WordPair, WordSim353};
pub use vit::{Vit, VitConfig};
