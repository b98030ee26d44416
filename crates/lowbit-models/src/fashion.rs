//! The embedded default model: a small ResNet trained by this project on Fashion-MNIST, its
//! committed weights, and the training loop that produced them.
//!
//! Architecture (torchvision ResNet names, BasicBlocks; 28×28 grey input):
//!
//! | layers | output |
//! |---|---|
//! | `conv1` 3×3 1→32, `bn1`, `relu` | 32×28×28 |
//! | `maxpool` 2×2 | 32×14×14 |
//! | `layer1.0`: `conv1`, `bn1`, `relu1`, `conv2`, `bn2`, `add`, `relu2` | 32×14×14 |
//! | `layer2.0` (stride 2, `downsample.0` 1×1 conv + `downsample.1` BN) | 64×7×7 |
//! | `avgpool` (global), `fc` 64→10 | 10 logits |
//! | `softmax` (in [`FashionCnn::probabilities`]) | 10 probabilities |
//!
//! Convolutions have no bias (batch norm follows each), batch-norm ε = 1e-5, momentum 0.1
//! (PyTorch's). The checkpoint's tensor names are those of the layers plus `.weight`, `.bias`,
//! `.running_mean`, `.running_var`, exactly as torchvision names them (without
//! `num_batches_tracked`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use lowbit_nn::{
    Activation, LayerTable, ModelContext, QBuilder, QuantConfig, QuantModel, QuantOp, Registry,
};

use crate::checkpoint::{TensorSpec, load_checked, record_specs};
use crate::data::Batch;
use crate::error::{ModelError, Result};
use crate::resnet::{BasicBlock, conv3x3};
use crate::rng::SplitMix64;

/// The command that (re)creates the committed weights.
pub const TRAIN_COMMAND: &str = "cargo run --release --example train_fashion_mnist";

/// Batch-norm ε.
pub const BN_EPS: f64 = 1e-5;

/// Stages after the stem: (channels, blocks, stride of the first block).
const STAGES: [(usize, usize, usize); 2] = [(32, 1, 1), (64, 1, 2)];

/// Stem channels.
const STEM: usize = 32;

/// Number of classes.
pub const NUM_CLASSES: usize = 10;

/// The committed weights (`crates/lowbit-models/weights/fashion_cnn.safetensors`).
pub fn weights_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/weights/fashion_cnn.safetensors"
    ))
}

type Op = Arc<dyn QuantOp>;

/// The Fashion-MNIST ResNet (see the module docs for its layers).
///
/// ```
/// use candle_core::Device;
/// use lowbit_models::{FashionCnn, FashionMnist};
/// use lowbit_nn::{QuantConfig, QuantModel};
///
/// let model = FashionCnn::load_default(&QuantConfig::default(), &Device::Cpu)?;
/// let test = FashionMnist::committed_test(Some(64))?;
/// let stats = lowbit_models::fashion::evaluate(&model, test.batches(64, &Device::Cpu)?)?;
/// assert!(stats.accuracy > 0.8, "{stats:?}");
/// assert!(model.layers().get("layer2.0.downsample.0").is_some());
/// # Ok::<(), lowbit_models::ModelError>(())
/// ```
#[derive(Debug)]
pub struct FashionCnn {
    conv1: Op,
    bn1: Op,
    relu: Op,
    maxpool: Op,
    blocks: Vec<BasicBlock>,
    avgpool: Op,
    fc: Op,
    softmax: Op,
    table: LayerTable,
}

impl FashionCnn {
    /// Builds the model through `b` (its weights, config and registry) and finishes it.
    pub fn build(b: QBuilder<'_>) -> Result<FashionCnn> {
        let conv1 = conv3x3(&b, "conv1", 1, STEM, 1)?;
        let bn1 = b.batch_norm2d("bn1", STEM, BN_EPS)?;
        let relu = b.activation("relu", Activation::Relu)?;
        let maxpool = b.max_pool2d("maxpool", 2, 2)?;
        let mut blocks = Vec::new();
        let mut c = STEM;
        for (s, &(o, n, stride)) in STAGES.iter().enumerate() {
            let stage = b.pp(format!("layer{}", s + 1));
            for k in 0..n {
                let st = if k == 0 { stride } else { 1 };
                blocks.push(BasicBlock::build(&stage.pp(k), c, o, st)?);
                c = o;
            }
        }
        let avgpool = b.adaptive_avg_pool2d("avgpool", 1, 1)?;
        let fc = b.linear("fc", c, NUM_CLASSES)?;
        let softmax = b.softmax("softmax", 1)?;
        let table = b.finish()?;
        Ok(FashionCnn {
            conv1,
            bn1,
            relu,
            maxpool,
            blocks,
            avgpool,
            fc,
            softmax,
            table,
        })
    }

    /// Builds the model with `config` and the default registry from a `VarBuilder`.
    pub fn from_var_builder(vb: VarBuilder<'_>, config: &QuantConfig) -> Result<FashionCnn> {
        FashionCnn::build(QBuilder::new(vb, config, Registry::default())?)
    }

    /// Every tensor the model's checkpoint holds, with its shape, in build order.
    pub fn tensor_specs() -> Result<Vec<TensorSpec>> {
        record_specs(|vb| FashionCnn::from_var_builder(vb, &QuantConfig::default()).map(|_| ()))
    }

    /// Loads the safetensors checkpoint `file` (checked with
    /// [`check_tensors`](crate::checkpoint::check_tensors): no missing, mis-shaped or unused
    /// tensor) and builds the model with `config` and `registry`.
    pub fn load_with_registry(
        file: impl AsRef<Path>,
        config: &QuantConfig,
        registry: Registry,
        device: &Device,
    ) -> Result<FashionCnn> {
        let specs = FashionCnn::tensor_specs()?;
        let tensors = load_checked(file.as_ref(), &specs, device, TRAIN_COMMAND)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        FashionCnn::build(QBuilder::new(vb, config, registry)?)
    }

    /// [`load_with_registry`](FashionCnn::load_with_registry) with the default registry.
    pub fn load(
        file: impl AsRef<Path>,
        config: &QuantConfig,
        device: &Device,
    ) -> Result<FashionCnn> {
        FashionCnn::load_with_registry(file, config, Registry::default(), device)
    }

    /// The committed weights ([`weights_path`]) with `config`.
    pub fn load_default(config: &QuantConfig, device: &Device) -> Result<FashionCnn> {
        FashionCnn::load(weights_path(), config, device)
    }

    /// A freshly initialised model for training, its variables in a new `VarMap`
    /// (see [`init_varmap`](FashionCnn::init_varmap)).
    pub fn new_trainable(
        config: &QuantConfig,
        seed: u64,
        device: &Device,
    ) -> Result<(FashionCnn, VarMap)> {
        let vm = VarMap::new();
        FashionCnn::init_varmap(&vm, seed, device)?;
        let vb = VarBuilder::from_varmap(&vm, DType::F32, device);
        Ok((FashionCnn::from_var_builder(vb, config)?, vm))
    }

    /// Fills `vm` with initial values drawn from `seed`: convolutions Kaiming-normal
    /// (fan-out, ReLU gain: torchvision's ResNet init), `fc` uniform ±1/√fan-in (PyTorch's
    /// `Linear`), batch norm γ = 1, β = 0, running mean 0, running variance 1.
    pub fn init_varmap(vm: &VarMap, seed: u64, device: &Device) -> Result<()> {
        let mut rng = SplitMix64::new(seed);
        let specs = FashionCnn::tensor_specs()?;
        let mut data = vm
            .data()
            .lock()
            .map_err(|_| ModelError::Invalid("VarMap lock poisoned".into()))?;
        for s in specs {
            let n: usize = s.shape.iter().product();
            let fc_bound = 1.0 / (STAGES[STAGES.len() - 1].0 as f64).sqrt();
            let v: Vec<f32> = match (s.shape.len(), s.name.rsplit('.').next()) {
                (4, _) => {
                    let fan_out = (s.shape[0] * s.shape[2] * s.shape[3]) as f64;
                    let std = (2.0 / fan_out).sqrt();
                    (0..n).map(|_| (normal(&mut rng) * std) as f32).collect()
                }
                (_, Some("running_var")) => vec![1.0; n],
                (_, Some("running_mean")) => vec![0.0; n],
                _ if s.name.starts_with("fc.") => (0..n)
                    .map(|_| ((rng.next_f64() * 2.0 - 1.0) * fc_bound) as f32)
                    .collect(),
                (_, Some("weight")) => vec![1.0; n],
                _ => vec![0.0; n],
            };
            let t = Tensor::from_vec(v, s.shape.as_slice(), device)?;
            data.insert(s.name, Var::from_tensor(&t)?);
        }
        Ok(())
    }

    /// The variables an optimiser updates: everything but the batch-norm running statistics
    /// (which the forward pass updates in training mode).
    pub fn trainable_vars(vm: &VarMap) -> Result<Vec<Var>> {
        let data = vm
            .data()
            .lock()
            .map_err(|_| ModelError::Invalid("VarMap lock poisoned".into()))?;
        let mut named: Vec<(&String, &Var)> = data
            .iter()
            .filter(|(k, _)| !k.ends_with(".running_mean") && !k.ends_with(".running_var"))
            .collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        Ok(named.into_iter().map(|(_, v)| v.clone()).collect())
    }

    /// Saves the variables of `vm` (torchvision names) as safetensors at `path`.
    pub fn save(vm: &VarMap, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        vm.save(path).map_err(|source| ModelError::Checkpoint {
            file: path.to_path_buf(),
            source,
        })
    }

    /// Logits `[N, 10]` of images `[N, 1, 28, 28]`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let x = self
            .relu
            .forward1(&self.bn1.forward1(&self.conv1.forward1(x)?)?)?;
        let mut x = self.maxpool.forward1(&x)?;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        let x = self.avgpool.forward1(&x)?.flatten_from(1)?;
        Ok(self.fc.forward1(&x)?)
    }

    /// Class probabilities `[N, 10]`: the logits through the model's `softmax` layer.
    pub fn probabilities(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.softmax.forward1(&self.logits(x)?)?)
    }

    /// The shared context (mode, training flag, taps).
    pub fn context(&self) -> &Arc<ModelContext> {
        self.table.context()
    }
}

impl QuantModel for FashionCnn {
    /// Logits (see [`FashionCnn::logits`]).
    fn forward(&self, input: &Tensor) -> lowbit_nn::Result<Tensor> {
        self.logits(input).map_err(|e| match e {
            ModelError::Nn(e) => e,
            ModelError::Candle(e) => lowbit_nn::NnError::Candle(e),
            e => lowbit_nn::NnError::layer("fashion_cnn", e),
        })
    }
    fn layers(&self) -> &LayerTable {
        &self.table
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut SplitMix64) -> f64 {
    let u1 = 1.0 - rng.next_f64();
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// What one training epoch did.
#[derive(Clone, Debug)]
pub struct EpochStats {
    /// Mean cross-entropy over the epoch's images (as trained: batch statistics).
    pub mean_loss: f64,
    /// Optimiser steps.
    pub steps: usize,
    /// Images seen.
    pub images: usize,
    /// Wall time.
    pub seconds: f64,
}

/// Accuracy and loss of a model on a data set.
#[derive(Clone, Debug)]
pub struct EvalStats {
    /// Top-1 accuracy.
    pub accuracy: f64,
    /// Correct predictions.
    pub correct: usize,
    /// Images.
    pub images: usize,
    /// Mean cross-entropy.
    pub mean_loss: f64,
}

/// Sets the training flag and clears it again when dropped (also on an error).
struct Training<'a>(&'a ModelContext);

impl<'a> Training<'a> {
    fn on(ctx: &'a ModelContext) -> Training<'a> {
        ctx.set_training(true);
        Training(ctx)
    }
}

impl Drop for Training<'_> {
    fn drop(&mut self) {
        self.0.set_training(false);
    }
}

/// One epoch of training: for each batch, the learning rate `lr(step)` (step counted from 0
/// within the epoch), a new step of the model context (fresh stochastic-rounding seeds,
/// [`ModelContext::begin_step`]), cross-entropy of the logits, one optimiser step. Batch norm
/// uses batch statistics and updates its running statistics (momentum 0.1); the training flag
/// is cleared afterwards.
pub fn train_epoch<M: QuantModel + ?Sized, O: Optimizer>(
    model: &M,
    opt: &mut O,
    batches: impl Iterator<Item = Result<Batch>>,
    lr: &dyn Fn(usize) -> f64,
) -> Result<EpochStats> {
    let start = Instant::now();
    let ctx = model.layers().context();
    let _training = Training::on(ctx);
    let (mut loss_sum, mut images, mut steps) = (0.0f64, 0usize, 0usize);
    for batch in batches {
        let batch = batch?;
        ctx.begin_step();
        opt.set_learning_rate(lr(steps));
        let logits = model.forward(&batch.images)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &batch.labels)?;
        opt.backward_step(&loss)?;
        let n = batch.labels.dim(0)?;
        loss_sum += f64::from(loss.to_scalar::<f32>()?) * n as f64;
        images += n;
        steps += 1;
    }
    Ok(EpochStats {
        mean_loss: loss_sum / images.max(1) as f64,
        steps,
        images,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Top-1 accuracy and mean cross-entropy of `model`'s logits over `batches` (in the model's
/// current mode; batch norm uses its running statistics).
pub fn evaluate<M: QuantModel + ?Sized>(
    model: &M,
    batches: impl Iterator<Item = Result<Batch>>,
) -> Result<EvalStats> {
    let (mut correct, mut images, mut loss_sum) = (0usize, 0usize, 0.0f64);
    for batch in batches {
        let batch = batch?;
        let logits = model.forward(&batch.images)?;
        let n = batch.labels.dim(0)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &batch.labels)?;
        loss_sum += f64::from(loss.to_scalar::<f32>()?) * n as f64;
        let pred = logits.argmax(D::Minus1)?;
        correct += pred
            .eq(&batch.labels)?
            .to_dtype(DType::U32)?
            .sum_all()?
            .to_scalar::<u32>()? as usize;
        images += n;
    }
    Ok(EvalStats {
        accuracy: correct as f64 / images.max(1) as f64,
        correct,
        images,
        mean_loss: loss_sum / images.max(1) as f64,
    })
}
