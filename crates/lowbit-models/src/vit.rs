//! timm's Vision Transformer (`vit_base_patch16_224` and its relatives) for checkpoints users
//! bring themselves, built through lowbit-nn's [`QBuilder`] with timm's state-dict names, so
//! `timm.create_model('vit_base_patch16_224', pretrained=True).state_dict()` saved as
//! safetensors loads unchanged and every layer, attention's products included, is
//! quantizable by name.
//!
//! No pretrained weights ship with lowbit (nothing is downloaded); docs/models.md says how to
//! export them from timm.
//!
//! Layers (D = `dim`, N = patches, H = `heads`), in build order:
//!
//! | layer | kind | what |
//! |---|---|---|
//! | `patch_embed.proj` | conv2d | `patch_size`² kernel, stride `patch_size`, 3 → D, bias → `[B, N, D]` |
//! | (`cls_token` `[1, 1, D]`, `pos_embed` `[1, 1+N, D]`) | plain parameters | class token prepended |
//! | `pos_add` | add | tokens + `pos_embed` (its input quantizer sees both) |
//! | `blocks.{i}.norm1` | layer_norm | |
//! | `blocks.{i}.attn.qkv` | linear | fused `[3D, D]`: q, k, v, each split into H heads |
//! | `blocks.{i}.attn.matmul_qk` | matmul | (q · `head_dim`^−½) · kᵀ per head → `[B, H, 1+N, 1+N]` |
//! | `blocks.{i}.attn.softmax` | softmax | over the keys (last axis) |
//! | `blocks.{i}.attn.matmul_av` | matmul | attention · v → `[B, H, 1+N, head_dim]` |
//! | `blocks.{i}.attn.proj` | linear | heads concatenated → D |
//! | `blocks.{i}.add1` | add | residual around attention |
//! | `blocks.{i}.norm2` | layer_norm | |
//! | `blocks.{i}.mlp.fc1` | linear | D → `mlp_dim` |
//! | `blocks.{i}.mlp.act` | gelu | exact (erf) GELU |
//! | `blocks.{i}.mlp.fc2` | linear | `mlp_dim` → D |
//! | `blocks.{i}.add2` | add | residual around the MLP |
//! | `norm` | layer_norm | final |
//! | `head` | linear | class token → `num_classes` |
//!
//! Layer norms have ε = 1e-6 (timm's ViTs); pooling is the class token (timm's
//! `global_pool='token'`, no `fc_norm`). `attn.matmul_qk`, `attn.softmax`, `attn.matmul_av`,
//! `pos_add`, `add1` and `add2` are names lowbit gives (they hold no tensors); the rest are
//! timm's module names (`mlp.act` too, a module without tensors). q is scaled by `head_dim`^−½ before `matmul_qk` (timm's unfused
//! path; a power of two for head sizes 16, 64, 256), so the quantizer of `matmul_qk`'s inputs
//! sees the scaled q. Both matmul inputs share one input quantizer: the second operand is
//! kᵀ `[.., head_dim, 1+N]` and v `[.., 1+N, head_dim]`, contiguous in those layouts, so a
//! block format blocked along the last axis blocks q and the attention weights along the
//! reduction axis but kᵀ and v across it.
//!
//! `cls_token` and `pos_embed` are plain parameters, not layers: the builder has no op for a
//! bare parameter, so no weight quantizer applies to them; they enter the computation through
//! `pos_add`, whose input quantizer quantizes them along with the patch tokens.
//!
//! Inputs are `[B, 3, image_size, image_size]` images normalised as the checkpoint expects
//! (timm's `vit_base_patch16_224.augreg*` weights: mean = std = 0.5 per channel on pixels in
//! [0, 1]; check the model's `pretrained_cfg`).

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use lowbit_nn::{
    Activation, LayerTable, ModelContext, QBuilder, QuantConfig, QuantModel, QuantOp, Registry,
};

use crate::checkpoint::{TensorSpec, load_checked_ignoring, record_specs};
use crate::error::{ModelError, Result};
use crate::resnet::to_nn_error;

/// Layer-norm ε of timm's ViTs.
pub const LN_EPS: f64 = 1e-6;

/// How to get a checkpoint (named in [`ModelError::MissingFile`]).
pub const EXPORT_HINT: &str = "safetensors.torch.save_file(timm.create_model('vit_base_patch16_224', pretrained=True).state_dict(), path) (docs/models.md)";

type Op = Arc<dyn QuantOp>;

/// The shape of a ViT.
///
/// ```
/// use lowbit_models::vit::VitConfig;
///
/// let cfg = VitConfig::vit_b16();
/// assert_eq!((cfg.num_patches(), cfg.head_dim()), (196, 64));
/// assert!(VitConfig { heads: 5, ..cfg }.validate().is_err()); // 768 is not a multiple of 5
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VitConfig {
    /// Input height and width (square images).
    pub image_size: usize,
    /// Patch height and width.
    pub patch_size: usize,
    /// Token width D.
    pub dim: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Attention heads (dividing `dim`).
    pub heads: usize,
    /// Hidden width of each block's MLP.
    pub mlp_dim: usize,
    /// Outputs of `head`.
    pub num_classes: usize,
}

impl VitConfig {
    /// ViT-B/16 at 224×224 (`vit_base_patch16_224`): D = 768, 12 blocks, 12 heads, MLP 3072,
    /// 1000 classes.
    pub fn vit_b16() -> VitConfig {
        VitConfig {
            image_size: 224,
            patch_size: 16,
            dim: 768,
            depth: 12,
            heads: 12,
            mlp_dim: 3072,
            num_classes: 1000,
        }
    }

    /// The same with `num_classes` outputs.
    pub fn with_num_classes(mut self, num_classes: usize) -> VitConfig {
        self.num_classes = num_classes;
        self
    }

    /// Patches per image, N = (`image_size` / `patch_size`)².
    pub fn num_patches(&self) -> usize {
        let side = self.image_size / self.patch_size.max(1);
        side * side
    }

    /// Channels per head, `dim` / `heads`.
    pub fn head_dim(&self) -> usize {
        self.dim / self.heads.max(1)
    }

    /// Checks that the sizes are positive, the patch size divides the image size and the
    /// heads divide `dim`.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Invalid(format!("ViT config: {m} ({self:?})")));
        let sizes = [
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
            ("dim", self.dim),
            ("heads", self.heads),
            ("mlp_dim", self.mlp_dim),
            ("num_classes", self.num_classes),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return bad(format!("{name} must be at least 1"));
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return bad("patch_size must divide image_size".into());
        }
        if !self.dim.is_multiple_of(self.heads) {
            return bad("heads must divide dim".into());
        }
        Ok(())
    }
}

/// One transformer block (pre-norm): `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.
#[derive(Debug)]
struct Block {
    norm1: Op,
    qkv: Op,
    matmul_qk: Op,
    softmax: Op,
    matmul_av: Op,
    proj: Op,
    add1: Op,
    norm2: Op,
    fc1: Op,
    act: Op,
    fc2: Op,
    add2: Op,
    heads: usize,
    scale: f64,
}

impl Block {
    fn build(b: &QBuilder<'_>, cfg: &VitConfig) -> Result<Block> {
        let d = cfg.dim;
        let attn = b.pp("attn");
        let mlp = b.pp("mlp");
        Ok(Block {
            norm1: b.layer_norm("norm1", d, LN_EPS)?,
            qkv: attn.linear("qkv", d, 3 * d)?,
            matmul_qk: attn.matmul("matmul_qk")?,
            softmax: attn.softmax("softmax", 3)?,
            matmul_av: attn.matmul("matmul_av")?,
            proj: attn.linear("proj", d, d)?,
            add1: b.add("add1")?,
            norm2: b.layer_norm("norm2", d, LN_EPS)?,
            fc1: mlp.linear("fc1", d, cfg.mlp_dim)?,
            act: mlp.activation("act", Activation::Gelu)?,
            fc2: mlp.linear("fc2", cfg.mlp_dim, d)?,
            add2: b.add("add2")?,
            heads: cfg.heads,
            scale: 1.0 / (cfg.head_dim() as f64).sqrt(),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let hd = d / self.heads;
        let qkv = self.qkv.forward1(&self.norm1.forward1(x)?)?;
        // [B, N, 3D] → [3, B, H, N, hd]
        let qkv = qkv
            .reshape((b, n, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)?.contiguous()? * self.scale)?;
        let kt = qkv.get(1)?.transpose(2, 3)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let scores = self.matmul_qk.forward(&[&q, &kt])?;
        let attn = self.softmax.forward1(&scores)?;
        let o = self.matmul_av.forward(&[&attn, &v])?;
        let o = o.transpose(1, 2)?.reshape((b, n, d))?;
        let x = self.add1.forward(&[x, &self.proj.forward1(&o)?])?;
        let h = self.norm2.forward1(&x)?;
        let h = self
            .fc2
            .forward1(&self.act.forward1(&self.fc1.forward1(&h)?)?)?;
        Ok(self.add2.forward(&[&x, &h])?)
    }
}

/// A timm Vision Transformer (see the module docs for its layers and names).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use lowbit_models::vit::{Vit, VitConfig};
/// use lowbit_nn::{QuantConfig, QuantModel};
///
/// let cfg = VitConfig { image_size: 32, patch_size: 8, dim: 48, depth: 2, heads: 3, mlp_dim: 192, num_classes: 10 };
/// let names: Vec<String> = Vit::tensor_specs(&cfg)?.into_iter().map(|s| s.name).collect();
/// assert!(names.contains(&"blocks.1.attn.qkv.weight".to_string()));
/// // A model over zero-initialised variables (a checkpoint would come from `Vit::load`).
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
/// let model = Vit::from_var_builder(vb, &cfg, &QuantConfig::default())?;
/// let logits = model.logits(&Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu)?)?;
/// assert_eq!(logits.dims(), [2, 10]);
/// assert_eq!(model.layers().get("blocks.0.attn.softmax").map(|l| l.kind.as_str()), Some("softmax"));
/// # Ok::<(), lowbit_models::ModelError>(())
/// ```
#[derive(Debug)]
pub struct Vit {
    patch_embed: Op,
    cls_token: Tensor,
    pos_embed: Tensor,
    pos_add: Op,
    blocks: Vec<Block>,
    norm: Op,
    head: Op,
    table: LayerTable,
    config: VitConfig,
}

impl Vit {
    /// Builds the model described by `cfg` through `b` (its weights, config and registry) and
    /// finishes it.
    pub fn build(b: QBuilder<'_>, cfg: &VitConfig) -> Result<Vit> {
        cfg.validate()?;
        let d = cfg.dim;
        let patch = candle_nn::Conv2dConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        let patch_embed = b
            .pp("patch_embed")
            .conv2d("proj", 3, d, cfg.patch_size, patch, true)?;
        let vb = b.var_builder();
        let cls_token = vb.get((1, 1, d), "cls_token")?;
        let pos_embed = vb.get((1, 1 + cfg.num_patches(), d), "pos_embed")?;
        let pos_add = b.add("pos_add")?;
        let blocks = b.pp("blocks");
        let blocks = (0..cfg.depth)
            .map(|i| Block::build(&blocks.pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let norm = b.layer_norm("norm", d, LN_EPS)?;
        let head = b.linear("head", d, cfg.num_classes)?;
        let table = b.finish()?;
        Ok(Vit {
            patch_embed,
            cls_token,
            pos_embed,
            pos_add,
            blocks,
            norm,
            head,
            table,
            config: cfg.clone(),
        })
    }

    /// Builds the model with `config` and the default registry from a `VarBuilder`.
    pub fn from_var_builder(
        vb: VarBuilder<'_>,
        cfg: &VitConfig,
        config: &QuantConfig,
    ) -> Result<Vit> {
        Vit::build(QBuilder::new(vb, config, Registry::default())?, cfg)
    }

    /// Every tensor a checkpoint of `cfg` holds, with its shape, in build order (timm's
    /// state-dict keys).
    pub fn tensor_specs(cfg: &VitConfig) -> Result<Vec<TensorSpec>> {
        record_specs(|vb| Vit::from_var_builder(vb, cfg, &QuantConfig::default()).map(|_| ()))
    }

    /// Loads the safetensors checkpoint `file` (a timm state dict; a missing, mis-shaped or
    /// unused tensor is an error naming it, see
    /// [`check_tensors`](crate::checkpoint::check_tensors)) and builds the model with `config`
    /// and `registry`. Tensors of any float dtype are converted to f32.
    pub fn load_with_registry(
        file: impl AsRef<Path>,
        cfg: &VitConfig,
        config: &QuantConfig,
        registry: Registry,
        device: &Device,
    ) -> Result<Vit> {
        let specs = Vit::tensor_specs(cfg)?;
        let tensors = load_checked_ignoring(
            file.as_ref(),
            &specs,
            device,
            EXPORT_HINT,
            crate::resnet::is_bookkeeping,
        )?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Vit::build(QBuilder::new(vb, config, registry)?, cfg)
    }

    /// [`load_with_registry`](Vit::load_with_registry) with the default registry.
    pub fn load(
        file: impl AsRef<Path>,
        cfg: &VitConfig,
        config: &QuantConfig,
        device: &Device,
    ) -> Result<Vit> {
        Vit::load_with_registry(file, cfg, config, Registry::default(), device)
    }

    /// Logits `[B, num_classes]` of images `[B, 3, image_size, image_size]`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.config.image_size;
        let b = match x.dims() {
            &[b, 3, h, w] if h == s && w == s => b,
            d => {
                return Err(ModelError::Invalid(format!(
                    "ViT input must be [B, 3, {s}, {s}] images, got shape {d:?}"
                )));
            }
        };
        let d = self.config.dim;
        // [B, D, h, w] → [B, N, D]
        let x = self
            .patch_embed
            .forward1(x)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let cls = self.cls_token.broadcast_as((b, 1, d))?;
        let x = Tensor::cat(&[&cls, &x], 1)?;
        let mut x = self.pos_add.forward(&[&x, &self.pos_embed])?;
        for blk in &self.blocks {
            x = blk.forward(&x)?;
        }
        let x = self.norm.forward1(&x)?;
        let cls = x.narrow(1, 0, 1)?.squeeze(1)?;
        Ok(self.head.forward1(&cls)?)
    }

    /// The shape it was built with.
    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// The shared context (mode, training flag, taps).
    pub fn context(&self) -> &Arc<ModelContext> {
        self.table.context()
    }
}

impl QuantModel for Vit {
    /// Logits (see [`Vit::logits`]).
    fn forward(&self, input: &Tensor) -> lowbit_nn::Result<Tensor> {
        self.logits(input).map_err(|e| to_nn_error("vit", e))
    }
    fn layers(&self) -> &LayerTable {
        &self.table
    }
}
