//! The models the CLI knows by name, each with the data set it is evaluated on.
//!
//! - `fashion_cnn`: the Fashion-MNIST ResNet of lowbit-models on its committed 10k test split
//!   ([`fashion_cnn`]).
//! - `tiny_mlp`: a two-layer nearest-centroid classifier on seeded synthetic data, built in
//!   code (no files): for tests and as a smoke model.
//! - `efficientnet_lite0` (fetched weights), `resnet18` … `resnet152` and `vit_b16` (the
//!   user's `--checkpoint`): ImageNet classifiers on the fetched photos or an `ImageFolder`
//!   (`--data DIR`), see [`crate::image_models`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use lowbit_nn::{LayerTable, QBuilder, QuantConfig, QuantModel, QuantOp, Registry};

use crate::error::{CliError, Result};

/// A data set: `items` rows of `item_shape` f32 values, and labels. The inputs are in memory
/// (`inputs`), or produced one batch at a time by `lazy` (e.g. image files decoded per batch),
/// `inputs` then being empty.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Flattened inputs (empty when `lazy` produces them).
    pub inputs: Vec<f32>,
    /// Shape of one item.
    pub item_shape: Vec<usize>,
    /// One label per item.
    pub labels: Vec<u32>,
    /// What it is (for reports).
    pub description: String,
    /// Where the inputs come from when they are not in `inputs`.
    pub lazy: Option<Arc<dyn LazyInputs>>,
}

/// Inputs produced when their batch is asked for, instead of held in memory.
pub trait LazyInputs: Send + Sync + std::fmt::Debug {
    /// The flattened inputs of items `[start, end)` (`(end − start) · item size` values).
    fn load(&self, start: usize, end: usize) -> Result<Vec<f32>>;
}

impl Dataset {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// The batch `[start, start + n)` as a tensor on `device` and its labels.
    pub fn batch(&self, start: usize, n: usize, device: &Device) -> Result<(Tensor, &[u32])> {
        let per: usize = self.item_shape.iter().product();
        let start = start.min(self.len());
        let end = start.saturating_add(n).min(self.len());
        let mut shape = vec![end - start];
        shape.extend(&self.item_shape);
        let t = match &self.lazy {
            Some(lazy) => Tensor::from_vec(lazy.load(start, end)?, shape, device),
            None => {
                let values = self.inputs.get(start * per..end * per).ok_or_else(|| {
                    CliError::Other(format!(
                        "{}: {} input values for {} items of {per}",
                        self.description,
                        self.inputs.len(),
                        self.len()
                    ))
                })?;
                Tensor::from_slice(values, shape, device)
            }
        }
        .map_err(|e| CliError::Other(format!("{}: {e}", self.description)))?;
        Ok((t, &self.labels[start..end]))
    }
}

/// A model the CLI can build and evaluate.
pub trait ModelSource: Send + Sync {
    /// Its name (`--model`).
    fn name(&self) -> &str;
    /// An instance built with `config`, its parameters on `device`.
    fn build(&self, config: &QuantConfig, device: &Device) -> Result<Box<dyn QuantModel>>;
    /// Its evaluation data (`data` overrides the default location), at most `limit` items.
    fn data(&self, data: Option<&Path>, limit: Option<usize>, seed: u64) -> Result<Dataset>;
    /// Samples per batch when `--batch-size` is not given (image models at 224×224 use fewer:
    /// a batch's activations, for every config at once, must fit in memory).
    fn default_batch_size(&self) -> usize {
        500
    }
}

/// The model named `name`, with the weights file `checkpoint` (`--checkpoint`) for the models
/// that take one ([`crate::image_models`]: required for ResNet and ViT, optional for
/// EfficientNet-Lite0; for `fashion_cnn` a weights file or a low-bit `quantized/` directory
/// written by `lowbit qat`, instead of the committed weights; a usage error for `tiny_mlp`).
pub fn model(name: &str, checkpoint: Option<&Path>) -> Result<Box<dyn ModelSource>> {
    if let Some(m) = crate::image_models::source(name, checkpoint)? {
        return Ok(Box::new(m));
    }
    if name == "fashion_cnn" {
        return Ok(Box::new(FashionSource::new(checkpoint)?));
    }
    if let (Some(c), "tiny_mlp") = (checkpoint, name) {
        return Err(CliError::Usage(format!(
            "--checkpoint {}: --model {name} has built-in weights and takes no --checkpoint \
             (models that take one: {})",
            c.display(),
            crate::image_models::IMAGE_MODELS.join(", ")
        )));
    }
    match name {
        "tiny_mlp" => Ok(Box::new(TinyMlp)),
        "fashion_cnn" => fashion_cnn(),
        _ => Err(CliError::Usage(format!(
            "unknown model `{name}` (known: fashion_cnn, tiny_mlp, {})",
            crate::image_models::IMAGE_MODELS.join(", ")
        ))),
    }
}

/// `lowbit explain`: the table of which spec each layer of model `name` gets under `config`.
/// The image models need no checkpoint here (their layers do not depend on the weights).
pub fn explain(name: &str, checkpoint: Option<&Path>, config: &QuantConfig) -> Result<String> {
    if let Some(table) = crate::image_models::explain_architecture(name, checkpoint, config)? {
        return Ok(table);
    }
    let m = model(name, checkpoint)?.build(config, &Device::Cpu)?;
    Ok(m.layers().explain())
}

/// The device named by `--device`: `cpu`, `cuda` (GPU 0) or `cuda:N`.
pub fn device(name: &str) -> Result<Device> {
    lowbit_nn::parse_device(name).map_err(|e| CliError::Usage(format!("--device: {e}")))
}

/// The default model of `lowbit run`.
pub const DEFAULT_MODEL: &str = "fashion_cnn";

/// The Fashion-MNIST CNN of the `lowbit-models` crate (committed weights, committed 10k test
/// split).
pub fn fashion_cnn() -> Result<Box<dyn ModelSource>> {
    Ok(Box::new(FashionSource::default()))
}

/// `fashion_cnn`: the committed weights, or those of `--checkpoint`.
#[derive(Debug, Clone, Default)]
pub struct FashionSource {
    weights: FashionWeights,
}

/// Where `fashion_cnn`'s weights come from.
#[derive(Debug, Clone, Default)]
enum FashionWeights {
    /// `crates/lowbit-models/weights/fashion_cnn.safetensors`.
    #[default]
    Committed,
    /// A safetensors file with the model's names (`train_fashion_mnist`'s output, `lowbit
    /// qat`'s `checkpoint/best.safetensors`).
    File(PathBuf),
    /// A low-bit checkpoint directory written by `lowbit qat` (`quantized/`): its weights are
    /// dequantized from their codes and scales, so the FP32 reference of a run is the
    /// quantized-trained model itself and a config's weight quantizers re-quantize them.
    LowBit(PathBuf),
}

impl FashionSource {
    /// With the weights of `checkpoint` (a file or a `quantized/` directory), if any.
    pub fn new(checkpoint: Option<&Path>) -> Result<FashionSource> {
        let weights = match checkpoint {
            None => FashionWeights::Committed,
            Some(p) if p.is_dir() => {
                if !p.join(crate::quantized_checkpoint::FP32_REST).is_file() {
                    return Err(CliError::Usage(format!(
                        "--checkpoint {}: a directory must be a low-bit checkpoint written by `lowbit qat` (the run's quantized/ folder, with {})",
                        p.display(),
                        crate::quantized_checkpoint::FP32_REST
                    )));
                }
                FashionWeights::LowBit(p.to_path_buf())
            }
            Some(p) if p.is_file() => FashionWeights::File(p.to_path_buf()),
            Some(p) => {
                return Err(CliError::Usage(format!(
                    "--checkpoint {}: no such file or directory",
                    p.display()
                )));
            }
        };
        Ok(FashionSource { weights })
    }
}

/// A model-crate error as a CLI error (config errors keep their exit code).
pub(crate) fn model_err(e: lowbit_models::ModelError) -> CliError {
    match e {
        lowbit_models::ModelError::Nn(e) => e.into(),
        e => CliError::Other(e.to_string()),
    }
}

impl ModelSource for FashionSource {
    fn name(&self) -> &str {
        "fashion_cnn"
    }
    fn build(&self, config: &QuantConfig, device: &Device) -> Result<Box<dyn QuantModel>> {
        let m = match &self.weights {
            FashionWeights::Committed => {
                lowbit_models::FashionCnn::load_default(config, device).map_err(model_err)?
            }
            FashionWeights::File(p) => {
                lowbit_models::FashionCnn::load(p, config, device).map_err(model_err)?
            }
            FashionWeights::LowBit(d) => {
                crate::quantized_checkpoint::load_quantized(d, config, device)?
            }
        };
        Ok(Box::new(m))
    }
    fn data(&self, data: Option<&Path>, limit: Option<usize>, _seed: u64) -> Result<Dataset> {
        use lowbit_models::{FashionMnist, Split, data::IMAGE_SIDE};
        let (set, desc) = match data {
            Some(d) => (
                FashionMnist::load(d, Split::Test, limit).map_err(model_err)?,
                format!("Fashion-MNIST test split from {}", d.display()),
            ),
            None => (
                FashionMnist::committed_test(limit).map_err(model_err)?,
                "Fashion-MNIST test split (committed)".to_string(),
            ),
        };
        let n = set.len();
        let mut inputs = Vec::with_capacity(n * IMAGE_SIDE * IMAGE_SIDE);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let (Some(img), Some(l)) = (set.image(i), set.label(i)) else {
                return Err(CliError::Other(format!("image {i} missing")));
            };
            inputs.extend(img.iter().map(|&p| f32::from(p) / 255.0));
            labels.push(u32::from(l));
        }
        Ok(Dataset {
            inputs,
            item_shape: vec![1, IMAGE_SIDE, IMAGE_SIDE],
            labels,
            description: format!("{desc}, {n} images"),
            lazy: None,
        })
    }
}

/// Features of `tiny_mlp`'s inputs.
pub const TINY_FEATURES: usize = 64;
/// Classes of `tiny_mlp`.
pub const TINY_CLASSES: usize = 10;

/// SplitMix64, for seeded synthetic data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// Class centroids of `tiny_mlp` (fixed, independent of the seed).
fn centroids() -> Vec<f32> {
    let mut r = Rng(0x0001_0B17);
    (0..TINY_CLASSES * TINY_FEATURES)
        .map(|_| r.normal() * 0.5)
        .collect()
}

/// `tiny_mlp`: `fc1` (64 → 20: rows `m_c` and `−m_c`), ReLU, `fc2` (20 → 10: `[I, −I]`, bias
/// `−|m_c|²/2`): logits `m_c·x − |m_c|²/2`, the nearest-centroid rule, with a ReLU between.
#[derive(Debug, Clone, Copy)]
pub struct TinyMlp;

struct TinyModel {
    fc1: std::sync::Arc<dyn QuantOp>,
    relu: std::sync::Arc<dyn QuantOp>,
    fc2: std::sync::Arc<dyn QuantOp>,
    table: LayerTable,
}

impl QuantModel for TinyModel {
    fn forward(&self, x: &Tensor) -> lowbit_nn::Result<Tensor> {
        let h = self.relu.forward1(&self.fc1.forward1(x)?)?;
        self.fc2.forward1(&h)
    }
    fn layers(&self) -> &LayerTable {
        &self.table
    }
}

/// Builds `tiny_mlp` with `config` (any registry) on `dev`.
pub fn tiny_model(
    config: &QuantConfig,
    registry: Registry,
    dev: &Device,
) -> Result<Box<dyn QuantModel>> {
    let (c, f) = (TINY_CLASSES, TINY_FEATURES);
    let m = centroids();
    let mut w1 = Vec::with_capacity(2 * c * f);
    w1.extend(&m);
    w1.extend(m.iter().map(|v| -v));
    let mut w2 = vec![0f32; c * 2 * c];
    for k in 0..c {
        w2[k * 2 * c + k] = 1.0;
        w2[k * 2 * c + c + k] = -1.0;
    }
    let b2: Vec<f32> = (0..c)
        .map(|k| -0.5 * m[k * f..(k + 1) * f].iter().map(|v| v * v).sum::<f32>())
        .collect();
    let t = |v: Vec<f32>, s: &[usize]| Tensor::from_vec(v, s, dev);
    let mut ts = std::collections::HashMap::new();
    ts.insert("fc1.weight".to_string(), t(w1, &[2 * c, f])?);
    ts.insert("fc1.bias".to_string(), t(vec![0.0; 2 * c], &[2 * c])?);
    ts.insert("fc2.weight".to_string(), t(w2, &[c, 2 * c])?);
    ts.insert("fc2.bias".to_string(), t(b2, &[c])?);
    let vb = VarBuilder::from_tensors(ts, DType::F32, dev);
    let b = QBuilder::new(vb, config, registry)?;
    let fc1 = b.linear("fc1", f, 2 * c)?;
    let relu = b.activation("relu", lowbit_nn::Activation::Relu)?;
    let fc2 = b.linear("fc2", 2 * c, c)?;
    let table = b.finish()?;
    Ok(Box::new(TinyModel {
        fc1,
        relu,
        fc2,
        table,
    }))
}

impl ModelSource for TinyMlp {
    fn name(&self) -> &str {
        "tiny_mlp"
    }
    fn build(&self, config: &QuantConfig, device: &Device) -> Result<Box<dyn QuantModel>> {
        tiny_model(config, Registry::default(), device)
    }
    fn data(&self, data: Option<&Path>, limit: Option<usize>, seed: u64) -> Result<Dataset> {
        if let Some(p) = data {
            return Err(CliError::Usage(format!(
                "tiny_mlp evaluates on synthetic data and takes no --data (got {})",
                p.display()
            )));
        }
        let n = limit.unwrap_or(2000);
        let m = centroids();
        let mut r = Rng(seed ^ 0xDA7A);
        let mut inputs = Vec::with_capacity(n * TINY_FEATURES);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let k = (r.next() % TINY_CLASSES as u64) as usize;
            labels.push(k as u32);
            for j in 0..TINY_FEATURES {
                inputs.push(m[k * TINY_FEATURES + j] + 1.3 * r.normal());
            }
        }
        Ok(Dataset {
            inputs,
            item_shape: vec![TINY_FEATURES],
            labels,
            description: format!("synthetic centroids, {n} items, seed {seed}"),
            lazy: None,
        })
    }
}
