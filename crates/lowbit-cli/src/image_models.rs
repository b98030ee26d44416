//! The ImageNet classifiers of the CLI and the image sets they are evaluated on.
//!
//! - `efficientnet_lite0`: EfficientNet-Lite0 with the ImageNet-1k weights of
//!   `scripts/fetch-assets.sh efficientnet` (or `--checkpoint FILE`, the same tensor names).
//! - `resnet18`, `resnet34`, `resnet50`, `resnet101`, `resnet152`: torchvision's ResNets, and
//!   `vit_b16`: timm's `vit_base_patch16_224`, from the user's `--checkpoint FILE` (a state
//!   dict saved as safetensors; docs/models.md says how). The number of classes is read from the
//!   checkpoint (`fc.weight`, `head.weight`).
//!
//! Data: without `--data`, the four fetched photos that show an obvious ImageNet object
//! ([`PHOTOS`], `scripts/fetch-assets.sh photos`), labelled with that class; top-1 on them is
//! agreement with the obvious class, and the numbers that matter are the changes against FP32
//! (Δ top-1, output and per-layer SQNR). With `--data DIR`: a torchvision `ImageFolder` (an
//! ImageNet validation set sorted into its 1000 synset folders), labels being the index of each
//! image's folder among the sorted folder names; `--limit N` (default
//! [`DEFAULT_FOLDER_LIMIT`]) images spread evenly over the set. Images are decoded and
//! preprocessed one batch at a time ([`ImageFiles`]), so memory does not grow with the set.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use lowbit_models::image::{Normalization, Preprocess, load_rgb};
use lowbit_models::{
    EfficientNetLite0, ImageFolder, ResNet, ResNetConfig, Vit, VitConfig, assets, efficientnet,
    imagenet_classes,
};
use lowbit_nn::{QuantConfig, QuantModel};
use rayon::prelude::*;

use crate::error::{CliError, Result};
use crate::models::{Dataset, LazyInputs, ModelSource, model_err};

/// The `--model` names of this module.
pub const IMAGE_MODELS: [&str; 7] = [
    "efficientnet_lite0",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "vit_b16",
];

/// The default evaluation set: the fetched photos (`assets/photos/`) that show an obvious
/// ImageNet-1k object, with that class. The labels are the FP32 top-1 classes of the original
/// EfficientNet-Lite0 code on these photos in the committed golden fixture
/// `crates/lowbit-models/tests/data/efficientnet_photos.json` (checked by a test), each the
/// obvious class: 282 tiger cat, 967 espresso, 657 missile, 665 moped. `astronaut.png` and
/// `horse.png` (a silhouette) show no ImageNet class and are left out.
pub const PHOTOS: [(&str, u32); 4] = [
    ("chelsea.png", 282),
    ("coffee.png", 967),
    ("rocket.jpg", 657),
    ("motorcycle_left.png", 665),
];

/// The asset group of [`PHOTOS`].
pub const PHOTOS_GROUP: &str = "photos";

/// Images evaluated from an `ImageFolder` without `--limit`, spread evenly over the set (for
/// an ImageNet validation set: one per class on average).
pub const DEFAULT_FOLDER_LIMIT: usize = 1000;

/// Classes of ImageNet-1k.
const IMAGENET_CLASSES: usize = 1000;

/// The architecture behind a name.
#[derive(Clone, Debug)]
enum Arch {
    EfficientNetLite0,
    ResNet(ResNetConfig),
    Vit(VitConfig),
}

impl Arch {
    fn of(name: &str) -> Option<Arch> {
        Some(match name {
            "efficientnet_lite0" => Arch::EfficientNetLite0,
            "resnet18" => Arch::ResNet(ResNetConfig::resnet18()),
            "resnet34" => Arch::ResNet(ResNetConfig::resnet34()),
            "resnet50" => Arch::ResNet(ResNetConfig::resnet50()),
            "resnet101" => Arch::ResNet(ResNetConfig::resnet101()),
            "resnet152" => Arch::ResNet(ResNetConfig::resnet152()),
            "vit_b16" => Arch::Vit(VitConfig::vit_b16()),
            _ => return None,
        })
    }

    /// The classifier tensor whose first dimension is the number of classes.
    fn head_tensor(&self) -> Option<&'static str> {
        match self {
            Arch::EfficientNetLite0 => None,
            Arch::ResNet(_) => Some("fc.weight"),
            Arch::Vit(_) => Some("head.weight"),
        }
    }

    /// The evaluation transform its weights expect, and its description.
    fn preprocess(&self) -> (Preprocess, &'static str) {
        match self {
            Arch::EfficientNetLite0 => (
                Preprocess::efficientnet_lite(),
                "resize 256, crop 224, (v - 127) / 128",
            ),
            Arch::ResNet(_) => (
                Preprocess::imagenet(),
                "resize 256, crop 224, ImageNet mean/std",
            ),
            // timm's `vit_base_patch16_224` pretrained configs: crop_pct 0.9 (resize
            // ⌊224 / 0.9⌋ = 248), mean = std = 0.5 (bicubic there; bilinear here).
            Arch::Vit(_) => (
                Preprocess {
                    resize: Some(248),
                    crop: 224,
                    normalization: Normalization {
                        divisor: 255.0,
                        mean: [0.5; 3],
                        std: [0.5; 3],
                    },
                },
                "resize 248, crop 224, mean = std = 0.5 (timm)",
            ),
        }
    }
}

/// How to export a checkpoint for `name` (the message of a missing `--checkpoint`).
fn export_help(name: &str) -> String {
    match name {
        "vit_b16" => "export timm's weights once with `python -c \"import timm; from safetensors.torch import save_file; \
             m = timm.create_model('vit_base_patch16_224', pretrained=True); \
             save_file({k: t.contiguous() for k, t in m.state_dict().items()}, 'vit_b16.safetensors')\"` \
             (docs/models.md, \"Exporting from Python\")"
            .to_string(),
        _ => format!(
            "export torchvision's weights once with `python -c \"import torchvision; from safetensors.torch import save_file; \
             save_file(torchvision.models.{name}(weights='DEFAULT').state_dict(), '{name}.safetensors')\"` \
             (docs/models.md, \"Exporting from Python\")"
        ),
    }
}

/// The shape of tensor `name` in the safetensors file `file`, from its header only (the file
/// is not read further); `None` when the file has no such tensor.
pub fn tensor_shape(file: &Path, name: &str) -> Result<Option<Vec<usize>>> {
    use std::io::Read as _;
    let unreadable =
        |e: std::io::Error| CliError::Usage(format!("--checkpoint {}: {e}", file.display()));
    let bad = |m: String| {
        CliError::Other(format!(
            "--checkpoint {}: not a safetensors file ({m})",
            file.display()
        ))
    };
    let mut f = std::fs::File::open(file).map_err(unreadable)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| bad(format!("no 8-byte header length: {e}")))?;
    let len = u64::from_le_bytes(len);
    // The format's own limit on the header.
    if len > 100_000_000 {
        return Err(bad(format!("header length {len} bytes")));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .map_err(|e| bad(format!("header of {len} bytes cut short: {e}")))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    let Some(entry) = header.get(name) else {
        return Ok(None);
    };
    let shape = entry
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or_else(|| bad(format!("tensor `{name}` without a shape")))?;
    shape
        .iter()
        .map(|d| {
            d.as_u64()
                .map(|d| d as usize)
                .ok_or_else(|| bad(format!("tensor `{name}`: shape {shape:?}")))
        })
        .collect::<Result<Vec<usize>>>()
        .map(Some)
}

/// One of [`IMAGE_MODELS`] with its weights file.
#[derive(Clone, Debug)]
pub struct ImageModel {
    name: String,
    arch: Arch,
    checkpoint: PathBuf,
    num_classes: usize,
}

/// The model `name` (one of [`IMAGE_MODELS`]) with `checkpoint`, or `None` when `name` is not
/// an image model. Errors: a ResNet or ViT without a checkpoint (usage error saying how to
/// export one), a checkpoint that is missing or not safetensors, EfficientNet-Lite0's fetched
/// weights missing (naming `scripts/fetch-assets.sh photos efficientnet`).
pub fn source(name: &str, checkpoint: Option<&Path>) -> Result<Option<ImageModel>> {
    let Some(arch) = Arch::of(name) else {
        return Ok(None);
    };
    let checkpoint = match (checkpoint, &arch) {
        (Some(c), _) => {
            if !c.is_file() {
                return Err(CliError::Usage(format!(
                    "--checkpoint {}: no such file",
                    c.display()
                )));
            }
            c.to_path_buf()
        }
        (None, Arch::EfficientNetLite0) => {
            let w = efficientnet::weights_path();
            if !w.is_file() {
                return Err(CliError::Other(format!(
                    "efficientnet_lite0: the weights {} are missing; fetch them and the photos with \
                     `scripts/fetch-assets.sh photos efficientnet` (or give --checkpoint FILE)",
                    w.display()
                )));
            }
            w
        }
        (None, _) => {
            return Err(CliError::Usage(format!(
                "--model {name} needs --checkpoint FILE (no pretrained weights ship with lowbit): {}",
                export_help(name)
            )));
        }
    };
    let num_classes = match arch.head_tensor() {
        None => efficientnet::NUM_CLASSES,
        Some(t) => match tensor_shape(&checkpoint, t)? {
            Some(shape) if shape.len() == 2 && shape[0] > 0 => shape[0],
            // Let the loader name what is wrong (missing or mis-shaped tensor).
            _ => IMAGENET_CLASSES,
        },
    };
    Ok(Some(ImageModel {
        name: name.to_string(),
        arch,
        checkpoint,
        num_classes,
    }))
}

impl ImageModel {
    /// The model with `config` over `vb` (any weights: zeros show the layers of the
    /// architecture, see [`explain_architecture`]).
    fn build_over(&self, vb: VarBuilder<'_>, config: &QuantConfig) -> Result<Box<dyn QuantModel>> {
        Ok(match &self.arch {
            Arch::EfficientNetLite0 => {
                Box::new(EfficientNetLite0::from_var_builder(vb, config).map_err(model_err)?)
            }
            Arch::ResNet(cfg) => Box::new(
                ResNet::from_var_builder(
                    vb,
                    &cfg.clone().with_num_classes(self.num_classes),
                    config,
                )
                .map_err(model_err)?,
            ),
            Arch::Vit(cfg) => Box::new(
                Vit::from_var_builder(vb, &cfg.clone().with_num_classes(self.num_classes), config)
                    .map_err(model_err)?,
            ),
        })
    }

    /// The fetched photos ([`PHOTOS`]), the first `limit`.
    fn photos(&self, limit: Option<usize>) -> Result<Dataset> {
        if self.num_classes != IMAGENET_CLASSES {
            return Err(CliError::Usage(format!(
                "--model {}: the checkpoint's classifier has {} classes, and the default photos are \
                 labelled with ImageNet-1k's 1000: give --data DIR (an ImageFolder with the \
                 model's classes as sorted folder names)",
                self.name, self.num_classes
            )));
        }
        let files: Vec<&str> = PHOTOS.iter().map(|(f, _)| *f).collect();
        let dir = assets::group(PHOTOS_GROUP);
        if !assets::present(PHOTOS_GROUP, &files) {
            return Err(CliError::Other(format!(
                "{}: the default data of --model {} (photos {}) are missing; fetch them with \
                 `scripts/fetch-assets.sh photos efficientnet` (or give --data DIR, an ImageFolder)",
                dir.display(),
                self.name,
                files.join(", ")
            )));
        }
        let n = limit.unwrap_or(PHOTOS.len()).min(PHOTOS.len());
        let (preprocess, how) = self.arch.preprocess();
        let names = imagenet_classes();
        let listed: Vec<String> = PHOTOS[..n]
            .iter()
            .map(|(f, l)| {
                let class = names.get(*l as usize).copied().unwrap_or("?");
                format!("{f} {l} {class}")
            })
            .collect();
        let images = ImageFiles {
            paths: PHOTOS[..n].iter().map(|(f, _)| dir.join(f)).collect(),
            preprocess,
        };
        Ok(Dataset {
            inputs: Vec::new(),
            item_shape: images.item_shape(),
            labels: PHOTOS[..n].iter().map(|(_, l)| *l).collect(),
            description: format!(
                "{n} photos in {}, each labelled with the ImageNet class it obviously shows: {}; \
                 top-1 = agreement with these labels, the changes vs FP32 are what count; {how}",
                std::fs::canonicalize(&dir).unwrap_or(dir).display(),
                listed.join(", ")
            ),
            lazy: Some(Arc::new(images)),
        })
    }

    /// `limit` images (default [`DEFAULT_FOLDER_LIMIT`]) spread evenly over the ImageFolder
    /// `root`; warns on stderr when its classes cannot be the model's.
    fn folder(&self, root: &Path, limit: Option<usize>) -> Result<Dataset> {
        let mut set =
            ImageFolder::open(root).map_err(|e| CliError::Usage(format!("--data: {e}")))?;
        let classes = set.classes().len();
        let synsets = self.num_classes == IMAGENET_CLASSES && set.has_imagenet_synsets();
        if synsets {
            // Folders named by synset: ImageNet-1k labels whatever subset of classes is there.
            set = set
                .with_imagenet_labels()
                .map_err(|e| CliError::Usage(format!("--data: {e}")))?;
        } else if classes != self.num_classes {
            eprintln!(
                "warning: --data {}: {classes} class folders, but {} has {} outputs. Labels are the \
                 index of each image's folder among the sorted folder names (torchvision's \
                 ImageFolder), so top-1/top-5 mean something only for a set with exactly the \
                 model's classes in its order, or for ImageNet-1k models a set whose folders are \
                 all named by synset (n01440764 … n15075141; any subset of them). The comparison \
                 with FP32 (Δ, SQNR, compliance) does not use labels.",
                root.display(),
                self.name,
                self.num_classes
            );
        } else if classes == IMAGENET_CLASSES
            && (set.classes().first().map(String::as_str) != Some("n01440764")
                || set.classes().last().map(String::as_str) != Some("n15075141"))
        {
            eprintln!(
                "warning: --data {}: 1000 class folders, but not named by ImageNet synset \
                 (n01440764 … n15075141): labels are the sorted folder index, so check that this \
                 order is ImageNet-1k's class order.",
                root.display()
            );
        }
        let total = set.len();
        let n = limit.unwrap_or(DEFAULT_FOLDER_LIMIT);
        let set = set.spread(n);
        let (preprocess, how) = self.arch.preprocess();
        let images = ImageFiles {
            paths: set.samples().iter().map(|s| s.path.clone()).collect(),
            preprocess,
        };
        let default = if limit.is_none() && total > n {
            format!(" (default --limit {DEFAULT_FOLDER_LIMIT})")
        } else {
            String::new()
        };
        Ok(Dataset {
            inputs: Vec::new(),
            item_shape: images.item_shape(),
            labels: set.samples().iter().map(|s| s.label as u32).collect(),
            description: format!(
                "ImageFolder {}: {} of {total} images spread evenly{default}, {classes} classes{}; {how}",
                root.display(),
                set.len(),
                if synsets {
                    " (synset folders: ImageNet-1k labels)"
                } else {
                    ""
                },
            ),
            lazy: Some(Arc::new(images)),
        })
    }
}

impl ModelSource for ImageModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn build(&self, config: &QuantConfig, device: &Device) -> Result<Box<dyn QuantModel>> {
        let f = &self.checkpoint;
        Ok(match &self.arch {
            Arch::EfficientNetLite0 => {
                Box::new(EfficientNetLite0::load(f, config, device).map_err(model_err)?)
            }
            Arch::ResNet(cfg) => {
                let cfg = cfg.clone().with_num_classes(self.num_classes);
                Box::new(ResNet::load(f, &cfg, config, device).map_err(model_err)?)
            }
            Arch::Vit(cfg) => {
                let cfg = cfg.clone().with_num_classes(self.num_classes);
                Box::new(Vit::load(f, &cfg, config, device).map_err(model_err)?)
            }
        })
    }

    fn data(&self, data: Option<&Path>, limit: Option<usize>, _seed: u64) -> Result<Dataset> {
        match data {
            Some(root) => self.folder(root, limit),
            None => self.photos(limit),
        }
    }
    fn default_batch_size(&self) -> usize {
        32
    }
}

/// The layer table of image model `name` under `config`: over `checkpoint` when given,
/// otherwise over zero weights (the layers and the specs they get do not depend on the
/// weights; ResNet and ViT then have 1000 classes). `None` when `name` is not an image model.
pub fn explain_architecture(
    name: &str,
    checkpoint: Option<&Path>,
    config: &QuantConfig,
) -> Result<Option<String>> {
    let Some(arch) = Arch::of(name) else {
        return Ok(None);
    };
    let model = match checkpoint {
        Some(_) => match source(name, checkpoint)? {
            Some(m) => m.build(config, &Device::Cpu)?,
            None => return Ok(None),
        },
        None => {
            let m = ImageModel {
                name: name.to_string(),
                arch,
                checkpoint: PathBuf::new(),
                num_classes: IMAGENET_CLASSES,
            };
            m.build_over(VarBuilder::zeros(DType::F32, &Device::Cpu), config)?
        }
    };
    Ok(Some(model.layers().explain()))
}

/// Image files decoded and preprocessed when their batch is asked for (in parallel on the
/// current rayon pool; the result does not depend on the threads).
#[derive(Clone, Debug)]
pub struct ImageFiles {
    /// The files, in item order.
    pub paths: Vec<PathBuf>,
    /// The transform applied to each.
    pub preprocess: Preprocess,
}

impl ImageFiles {
    /// `[3, crop, crop]`.
    pub fn item_shape(&self) -> Vec<usize> {
        let c = self.preprocess.crop as usize;
        vec![3, c, c]
    }
}

impl LazyInputs for ImageFiles {
    fn load(&self, start: usize, end: usize) -> Result<Vec<f32>> {
        let paths = self.paths.get(start..end).ok_or_else(|| {
            CliError::Other(format!(
                "images {start}..{end} asked of a set of {}",
                self.paths.len()
            ))
        })?;
        let items: Vec<Vec<f32>> = paths
            .par_iter()
            .map(|p| {
                let img = load_rgb(p).map_err(model_err)?;
                self.preprocess.apply(&img).map_err(model_err)
            })
            .collect::<Result<_>>()?;
        Ok(items.concat())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// The labels of [`PHOTOS`] are the FP32 top-1 classes of the committed golden fixture.
    #[test]
    fn photo_labels_are_the_golden_fp32_top1() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../lowbit-models/tests/data/efficientnet_photos.json");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let photos = doc["photos"].as_array().unwrap();
        for (file, label) in PHOTOS {
            let p = photos.iter().find(|p| p["file"] == file).unwrap();
            assert_eq!(
                p["top5"]["indices"][0].as_u64(),
                Some(u64::from(label)),
                "{file}"
            );
        }
        assert_eq!(imagenet_classes()[282], "tiger cat");
        assert_eq!(imagenet_classes()[967], "espresso");
    }

    #[test]
    fn every_name_has_an_architecture() {
        for n in IMAGE_MODELS {
            assert!(Arch::of(n).is_some(), "{n}");
        }
        assert!(Arch::of("resnet19").is_none());
    }

    #[test]
    fn vit_preprocess_is_timms() {
        let (p, _) = Arch::of("vit_b16").unwrap().preprocess();
        assert_eq!((p.resize, p.crop), (Some(248), 224));
        assert_eq!(p.normalization.apply(0, 255), 1.0);
        assert_eq!(p.normalization.apply(0, 0), -1.0);
    }
}
