//! torchvision's ResNet (18/34/50/101/152) for checkpoints users bring themselves, built
//! through lowbit-nn's [`QBuilder`] with torchvision's state-dict names, so a
//! `torchvision.models.resnet50(weights=...).state_dict()` saved as safetensors loads
//! unchanged and every layer is quantizable by its checkpoint name.
//!
//! No pretrained weights ship with lowbit (nothing is downloaded); docs/models.md says how to
//! export them from torchvision.
//!
//! | layers | output (224×224 input) |
//! |---|---|
//! | `conv1` 7×7 s2 p3 3→64, `bn1`, `relu` | 64×112×112 |
//! | `maxpool` 3×3 s2 p1 | 64×56×56 |
//! | `layer1` … `layer4`: blocks `layerS.B` (below), the first of `layer2`–`layer4` with stride 2 | 512·e × 7×7 |
//! | `avgpool` (global), `fc` 512·e → `num_classes` | logits |
//!
//! Blocks (e = expansion: 1 for [`BlockKind::Basic`], 4 for [`BlockKind::Bottleneck`]):
//!
//! - Basic (ResNet-18/34): `conv1` 3×3 (stride s), `bn1`, `relu1`, `conv2` 3×3, `bn2`, `add`,
//!   `relu2`.
//! - Bottleneck (ResNet-50/101/152, torchvision's "v1.5": the stride is on the 3×3):
//!   `conv1` 1×1, `bn1`, `relu1`, `conv2` 3×3 (stride s), `bn2`, `relu2`, `conv3` 1×1 (×4
//!   channels), `bn3`, `add`, `relu3`.
//! - The shortcut, where the stride or the width changes: `downsample.0` (1×1 conv, stride s)
//!   and `downsample.1` (batch norm); otherwise the identity.
//!
//! torchvision uses one `relu` module three times per block; lowbit needs one layer per use,
//! so they are `relu1`, `relu2` (, `relu3`), and the residual sum is the layer `add` (names
//! without tensors, so the checkpoint is unaffected). In each block the shortcut's layers are
//! built, and listed by [`LayerTable`], first. Convolutions have no bias; batch-norm ε = 1e-5.
//!
//! `maxpool` pads with −∞ like PyTorch's `MaxPool2d(padding=1)`: its input quantizer sees the
//! unpadded input, the padding is added after it (the built-in `max_pool2d` op has no padding).
//!
//! Inputs are `[N, 3, H, W]` images normalised as torchvision's weights expect (ImageNet mean
//! (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) per channel, pixels in [0, 1]).

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use lowbit_nn::{
    Activation, LayerTable, ModelContext, NnError, QBuilder, QuantConfig, QuantModel, QuantOp,
    Registry,
};

use crate::checkpoint::{TensorSpec, load_checked_ignoring, record_specs};
use crate::error::{ModelError, Result};

/// Batch-norm ε (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;

/// How to get a checkpoint (named in [`ModelError::MissingFile`]).
pub const EXPORT_HINT: &str = "safetensors.torch.save_file(torchvision.models.resnet50(weights=...).state_dict(), path) (docs/models.md)";

/// Whether a checkpoint tensor is PyTorch bookkeeping that no layer uses
/// (`*.num_batches_tracked` of batch norm); the loaders drop these.
pub fn is_bookkeeping(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

pub(crate) type Op = Arc<dyn QuantOp>;

/// A 3×3 convolution without bias, padding 1.
pub(crate) fn conv3x3(
    b: &QBuilder<'_>,
    name: &str,
    i: usize,
    o: usize,
    stride: usize,
) -> Result<Op> {
    let cfg = candle_nn::Conv2dConfig {
        padding: 1,
        stride,
        ..Default::default()
    };
    Ok(b.conv2d(name, i, o, 3, cfg, false)?)
}

/// A 1×1 convolution without bias.
fn conv1x1(b: &QBuilder<'_>, name: &str, i: usize, o: usize, stride: usize) -> Result<Op> {
    let cfg = candle_nn::Conv2dConfig {
        stride,
        ..Default::default()
    };
    Ok(b.conv2d(name, i, o, 1, cfg, false)?)
}

/// The shortcut `downsample.0` (1×1 conv, stride) + `downsample.1` (BN) where the stride or
/// the width changes, otherwise `None` (identity).
fn downsample(b: &QBuilder<'_>, i: usize, o: usize, stride: usize) -> Result<Option<(Op, Op)>> {
    if stride == 1 && i == o {
        return Ok(None);
    }
    let d = b.pp("downsample");
    Ok(Some((
        conv1x1(&d, "0", i, o, stride)?,
        d.batch_norm2d("1", o, BN_EPS)?,
    )))
}

fn shortcut(downsample: &Option<(Op, Op)>, x: &Tensor) -> Result<Tensor> {
    Ok(match downsample {
        Some((conv, bn)) => bn.forward1(&conv.forward1(x)?)?,
        None => x.clone(),
    })
}

/// A ResNet BasicBlock: `relu2(add(bn2(conv2(relu1(bn1(conv1(x))))), shortcut(x)))`.
/// Also the block of [`FashionCnn`](crate::FashionCnn).
#[derive(Debug)]
pub(crate) struct BasicBlock {
    conv1: Op,
    bn1: Op,
    relu1: Op,
    conv2: Op,
    bn2: Op,
    downsample: Option<(Op, Op)>,
    add: Op,
    relu2: Op,
}

impl BasicBlock {
    /// `i` → `o` channels, the first convolution (and the shortcut) with `stride`.
    pub(crate) fn build(b: &QBuilder<'_>, i: usize, o: usize, stride: usize) -> Result<BasicBlock> {
        let downsample = downsample(b, i, o, stride)?;
        Ok(BasicBlock {
            conv1: conv3x3(b, "conv1", i, o, stride)?,
            bn1: b.batch_norm2d("bn1", o, BN_EPS)?,
            relu1: b.activation("relu1", Activation::Relu)?,
            conv2: conv3x3(b, "conv2", o, o, 1)?,
            bn2: b.batch_norm2d("bn2", o, BN_EPS)?,
            downsample,
            add: b.add("add")?,
            relu2: b.activation("relu2", Activation::Relu)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self
            .relu1
            .forward1(&self.bn1.forward1(&self.conv1.forward1(x)?)?)?;
        let y = self.bn2.forward1(&self.conv2.forward1(&y)?)?;
        let s = shortcut(&self.downsample, x)?;
        Ok(self.relu2.forward1(&self.add.forward(&[&y, &s])?)?)
    }
}

/// A ResNet Bottleneck (torchvision v1.5, stride on the 3×3):
/// `relu3(add(bn3(conv3(relu2(bn2(conv2(relu1(bn1(conv1(x))))))), shortcut(x)))`.
#[derive(Debug)]
struct Bottleneck {
    conv1: Op,
    bn1: Op,
    relu1: Op,
    conv2: Op,
    bn2: Op,
    relu2: Op,
    conv3: Op,
    bn3: Op,
    downsample: Option<(Op, Op)>,
    add: Op,
    relu3: Op,
}

impl Bottleneck {
    /// `i` → `4·width` channels through `width` channels, the 3×3 (and the shortcut) with
    /// `stride`.
    fn build(b: &QBuilder<'_>, i: usize, width: usize, stride: usize) -> Result<Bottleneck> {
        let o = width * BlockKind::Bottleneck.expansion();
        let downsample = downsample(b, i, o, stride)?;
        Ok(Bottleneck {
            conv1: conv1x1(b, "conv1", i, width, 1)?,
            bn1: b.batch_norm2d("bn1", width, BN_EPS)?,
            relu1: b.activation("relu1", Activation::Relu)?,
            conv2: conv3x3(b, "conv2", width, width, stride)?,
            bn2: b.batch_norm2d("bn2", width, BN_EPS)?,
            relu2: b.activation("relu2", Activation::Relu)?,
            conv3: conv1x1(b, "conv3", width, o, 1)?,
            bn3: b.batch_norm2d("bn3", o, BN_EPS)?,
            downsample,
            add: b.add("add")?,
            relu3: b.activation("relu3", Activation::Relu)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self
            .relu1
            .forward1(&self.bn1.forward1(&self.conv1.forward1(x)?)?)?;
        let y = self
            .relu2
            .forward1(&self.bn2.forward1(&self.conv2.forward1(&y)?)?)?;
        let y = self.bn3.forward1(&self.conv3.forward1(&y)?)?;
        let s = shortcut(&self.downsample, x)?;
        Ok(self.relu3.forward1(&self.add.forward(&[&y, &s])?)?)
    }
}

#[derive(Debug)]
enum Block {
    Basic(BasicBlock),
    Bottleneck(Bottleneck),
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Block::Basic(b) => b.forward(x),
            Block::Bottleneck(b) => b.forward(x),
        }
    }
}

/// The residual block of a ResNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet-18/34), expansion 1.
    Basic,
    /// 1×1, 3×3, 1×1 convolutions (ResNet-50/101/152), expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Output channels of a block per channel of its stage width (1 or 4).
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The shape of a ResNet: its block, blocks per stage and number of classes.
///
/// ```
/// use lowbit_models::resnet::{BlockKind, ResNetConfig};
///
/// let cfg = ResNetConfig::resnet50().with_num_classes(10);
/// assert_eq!(cfg.block, BlockKind::Bottleneck);
/// assert_eq!(cfg.layers, [3, 4, 6, 3]);
/// assert_eq!(cfg.features(), 2048);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResNetConfig {
    /// The block of every stage.
    pub block: BlockKind,
    /// Blocks in `layer1` … `layer4` (each at least 1).
    pub layers: [usize; 4],
    /// Outputs of `fc` (torchvision's default: 1000, ImageNet).
    pub num_classes: usize,
}

/// Stage widths (channels of the 3×3 convolutions).
const WIDTHS: [usize; 4] = [64, 128, 256, 512];

/// Stem channels.
const STEM: usize = 64;

impl ResNetConfig {
    /// ResNet-18: BasicBlocks `[2, 2, 2, 2]`, 1000 classes.
    pub fn resnet18() -> ResNetConfig {
        ResNetConfig {
            block: BlockKind::Basic,
            layers: [2, 2, 2, 2],
            num_classes: 1000,
        }
    }
    /// ResNet-34: BasicBlocks `[3, 4, 6, 3]`, 1000 classes.
    pub fn resnet34() -> ResNetConfig {
        ResNetConfig {
            block: BlockKind::Basic,
            layers: [3, 4, 6, 3],
            num_classes: 1000,
        }
    }
    /// ResNet-50: Bottlenecks `[3, 4, 6, 3]`, 1000 classes.
    pub fn resnet50() -> ResNetConfig {
        ResNetConfig {
            block: BlockKind::Bottleneck,
            layers: [3, 4, 6, 3],
            num_classes: 1000,
        }
    }
    /// ResNet-101: Bottlenecks `[3, 4, 23, 3]`, 1000 classes.
    pub fn resnet101() -> ResNetConfig {
        ResNetConfig {
            block: BlockKind::Bottleneck,
            layers: [3, 4, 23, 3],
            num_classes: 1000,
        }
    }
    /// ResNet-152: Bottlenecks `[3, 8, 36, 3]`, 1000 classes.
    pub fn resnet152() -> ResNetConfig {
        ResNetConfig {
            block: BlockKind::Bottleneck,
            layers: [3, 8, 36, 3],
            num_classes: 1000,
        }
    }

    /// The same with `num_classes` outputs.
    pub fn with_num_classes(mut self, num_classes: usize) -> ResNetConfig {
        self.num_classes = num_classes;
        self
    }

    /// Channels entering `fc` (512 × expansion).
    pub fn features(&self) -> usize {
        WIDTHS[3] * self.block.expansion()
    }

    /// Checks that every stage has a block and there is a class.
    pub fn validate(&self) -> Result<()> {
        if self.layers.contains(&0) {
            return Err(ModelError::Invalid(format!(
                "ResNet config: every stage needs at least one block, got layers {:?}",
                self.layers
            )));
        }
        if self.num_classes == 0 {
            return Err(ModelError::Invalid(
                "ResNet config: num_classes must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// A torchvision ResNet (see the module docs for its layers and names).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use lowbit_models::resnet::{ResNet, ResNetConfig};
/// use lowbit_nn::{QuantConfig, QuantModel};
///
/// let cfg = ResNetConfig::resnet18().with_num_classes(10);
/// let specs = ResNet::tensor_specs(&cfg)?;
/// assert_eq!(specs[0].name, "conv1.weight");
/// assert_eq!(specs[0].shape, [64, 3, 7, 7]);
/// // A model over zero-initialised variables (a checkpoint would come from `ResNet::load`).
/// let vm = VarMap::new();
/// let model = ResNet::from_var_builder(
///     VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
///     &cfg,
///     &QuantConfig::default(),
/// )?;
/// let logits = model.logits(&Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu)?)?;
/// assert_eq!(logits.dims(), [1, 10]);
/// assert!(model.layers().get("layer4.1.conv2").is_some());
/// # Ok::<(), lowbit_models::ModelError>(())
/// ```
#[derive(Debug)]
pub struct ResNet {
    conv1: Op,
    bn1: Op,
    relu: Op,
    maxpool: Op,
    blocks: Vec<Block>,
    avgpool: Op,
    fc: Op,
    table: LayerTable,
    config: ResNetConfig,
}

impl ResNet {
    /// Builds the model described by `cfg` through `b` (its weights, config and registry)
    /// and finishes it.
    pub fn build(b: QBuilder<'_>, cfg: &ResNetConfig) -> Result<ResNet> {
        cfg.validate()?;
        let stem = candle_nn::Conv2dConfig {
            padding: 3,
            stride: 2,
            ..Default::default()
        };
        let conv1 = b.conv2d("conv1", 3, STEM, 7, stem, false)?;
        let bn1 = b.batch_norm2d("bn1", STEM, BN_EPS)?;
        let relu = b.activation("relu", Activation::Relu)?;
        let maxpool = b.max_pool2d("maxpool", 3, 2)?;
        let mut blocks = Vec::new();
        let mut c = STEM;
        for (s, (&n, &width)) in cfg.layers.iter().zip(WIDTHS.iter()).enumerate() {
            let stage = b.pp(format!("layer{}", s + 1));
            for k in 0..n {
                let stride = if k == 0 && s > 0 { 2 } else { 1 };
                let bb = stage.pp(k);
                blocks.push(match cfg.block {
                    BlockKind::Basic => Block::Basic(BasicBlock::build(&bb, c, width, stride)?),
                    BlockKind::Bottleneck => {
                        Block::Bottleneck(Bottleneck::build(&bb, c, width, stride)?)
                    }
                });
                c = width * cfg.block.expansion();
            }
        }
        let avgpool = b.adaptive_avg_pool2d("avgpool", 1, 1)?;
        let fc = b.linear("fc", c, cfg.num_classes)?;
        let table = b.finish()?;
        Ok(ResNet {
            conv1,
            bn1,
            relu,
            maxpool,
            blocks,
            avgpool,
            fc,
            table,
            config: cfg.clone(),
        })
    }

    /// Builds the model with `config` and the default registry from a `VarBuilder`.
    pub fn from_var_builder(
        vb: VarBuilder<'_>,
        cfg: &ResNetConfig,
        config: &QuantConfig,
    ) -> Result<ResNet> {
        ResNet::build(QBuilder::new(vb, config, Registry::default())?, cfg)
    }

    /// Every tensor a checkpoint of `cfg` holds, with its shape, in build order (torchvision's
    /// state-dict keys without `num_batches_tracked`).
    pub fn tensor_specs(cfg: &ResNetConfig) -> Result<Vec<TensorSpec>> {
        record_specs(|vb| ResNet::from_var_builder(vb, cfg, &QuantConfig::default()).map(|_| ()))
    }

    /// Loads the safetensors checkpoint `file` (a torchvision state dict; `num_batches_tracked`
    /// is ignored, any other missing, mis-shaped or unused tensor is an error naming it, see
    /// [`check_tensors`](crate::checkpoint::check_tensors)) and builds the model with `config`
    /// and `registry`. Tensors of any float dtype are converted to f32.
    pub fn load_with_registry(
        file: impl AsRef<Path>,
        cfg: &ResNetConfig,
        config: &QuantConfig,
        registry: Registry,
        device: &Device,
    ) -> Result<ResNet> {
        let specs = ResNet::tensor_specs(cfg)?;
        let tensors =
            load_checked_ignoring(file.as_ref(), &specs, device, EXPORT_HINT, is_bookkeeping)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        ResNet::build(QBuilder::new(vb, config, registry)?, cfg)
    }

    /// [`load_with_registry`](ResNet::load_with_registry) with the default registry.
    pub fn load(
        file: impl AsRef<Path>,
        cfg: &ResNetConfig,
        config: &QuantConfig,
        device: &Device,
    ) -> Result<ResNet> {
        ResNet::load_with_registry(file, cfg, config, Registry::default(), device)
    }

    /// Logits `[N, num_classes]` of images `[N, 3, H, W]`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        match x.dims() {
            [_, 3, _, _] => {}
            d => {
                return Err(ModelError::Invalid(format!(
                    "ResNet input must be [N, 3, H, W] images, got shape {d:?}"
                )));
            }
        }
        let x = self
            .relu
            .forward1(&self.bn1.forward1(&self.conv1.forward1(x)?)?)?;
        let mut x = max_pool_padded(&self.maxpool, &x, 1)?;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        let x = self.avgpool.forward1(&x)?.flatten_from(1)?;
        Ok(self.fc.forward1(&x)?)
    }

    /// The shape it was built with.
    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// The shared context (mode, training flag, taps).
    pub fn context(&self) -> &Arc<ModelContext> {
        self.table.context()
    }
}

impl QuantModel for ResNet {
    /// Logits (see [`ResNet::logits`]).
    fn forward(&self, input: &Tensor) -> lowbit_nn::Result<Tensor> {
        self.logits(input).map_err(|e| to_nn_error("resnet", e))
    }
    fn layers(&self) -> &LayerTable {
        &self.table
    }
}

/// A model error as lowbit-nn's error (for [`QuantModel::forward`]), layer `model` when it
/// has no layer of its own.
pub(crate) fn to_nn_error(model: &str, e: ModelError) -> NnError {
    match e {
        ModelError::Nn(e) => e,
        ModelError::Candle(e) => NnError::Candle(e),
        e => NnError::layer(model, e),
    }
}

/// The max-pooling layer `op` on `x` padded by `pad` on each spatial side with −∞, as
/// PyTorch's `MaxPool2d(padding=pad)`: the layer's input quantizer sees `x` unpadded (so a
/// block-scaled format groups the real values), the padding comes after it, then the op's
/// computation, its output quantizer and its taps, as in [`QuantOp::forward`].
fn max_pool_padded(op: &Op, x: &Tensor, pad: usize) -> Result<Tensor> {
    let q = op.quant();
    let xq = q.quantize_input(x)?;
    let padded = pad_spatial(&xq, pad, f32::NEG_INFINITY)?;
    let y = op.compute(&[padded]).map_err(|e| match e {
        NnError::Layer { .. } => e,
        e => NnError::layer(&q.name, e),
    })?;
    let y = q.quantize_output(&y)?;
    q.tap(&[x], &y);
    Ok(y)
}

/// `x` `[N, C, H, W]` with `pad` rows/columns of `value` on each side of H and W.
fn pad_spatial(x: &Tensor, pad: usize, value: f32) -> Result<Tensor> {
    if pad == 0 {
        return Ok(x.clone());
    }
    let (n, c, h, w) = x.dims4()?;
    let fill = |shape: (usize, usize, usize, usize)| {
        Tensor::full(value, shape, x.device()).and_then(|t| t.to_dtype(x.dtype()))
    };
    let side = fill((n, c, h, pad))?;
    let x = Tensor::cat(&[&side, x, &side], 3)?;
    let top = fill((n, c, pad, w + 2 * pad))?;
    Ok(Tensor::cat(&[&top, &x, &top], 2)?)
}
