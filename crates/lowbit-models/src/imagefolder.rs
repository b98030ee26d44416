//! Image classification sets laid out as torchvision's `ImageFolder` reads them
//! (`root/<class>/<…>/<image>`, e.g. an ImageNet validation set sorted into synset
//! directories), streamed in batches, and the ImageNet-1k class names.
//!
//! Indexing follows torchvision 0.20 exactly, so label `i` here is label `i` there:
//!
//! * classes are the sub-directories of `root` (symbolic links followed, hidden ones
//!   included), **sorted by name**; class `i` is the `i`-th (`class_to_idx`);
//! * each class directory is walked recursively; directories are visited in the sorted order
//!   of their full paths, the files of each in sorted order;
//! * a file belongs to the set when its name ends, case-insensitively, in one of
//!   [`EXTENSIONS`] (`.jpg`, `.jpeg`, `.png`). torchvision also accepts `.ppm`, `.bmp`,
//!   `.pgm`, `.tif`, `.tiff`, `.webp`, which this reader does not decode: a set holding such
//!   files is indexed differently (ImageNet's is all JPEG);
//! * a root without class directories, or a class without any image, is an error.
//!
//! A set whose folders are ImageNet-1k synset ids can instead carry ImageNet class indices
//! ([`ImageFolder::with_imagenet_labels`]), so a few classes of the validation set are labelled
//! as an ImageNet model predicts.
//!
//! Images are decoded and preprocessed one batch at a time ([`ImageFolder::batches`]), so
//! memory stays bounded by the batch whatever the size of the set.
//!
//! ```no_run
//! use candle_core::Device;
//! use lowbit_models::{ImageFolder, image::Preprocess};
//!
//! let val = ImageFolder::open("/data/imagenet/val")?.spread(1000);
//! for batch in val.batches(50, Preprocess::imagenet(), &Device::Cpu)? {
//!     let batch = batch?; // images [50, 3, 224, 224], labels [50]
//! #   let _ = batch;
//! }
//! # Ok::<(), lowbit_models::ModelError>(())
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};

use crate::data::Batch;
use crate::error::{ModelError, Result};
use crate::image::{Preprocess, load_rgb};

/// File-name endings (lower case, without the dot) of the images a set may hold.
pub const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Deepest sub-directory nesting walked inside a class directory (guards against link loops).
const MAX_DEPTH: usize = 32;

/// The 1000 ImageNet-1k class names in index order (`data/imagenet_classes.txt`, one per
/// line; the readable names torchvision 0.20 ships as `_IMAGENET_CATEGORIES` in
/// `torchvision/models/_meta.py`, the labels of its ImageNet weights). Two names occur twice
/// (`crane` 134/517, `maillot` 638/639), as in torchvision.
pub fn imagenet_classes() -> &'static [&'static str] {
    static CLASSES: OnceLock<Vec<&'static str>> = OnceLock::new();
    CLASSES.get_or_init(|| {
        include_str!("../data/imagenet_classes.txt")
            .lines()
            .collect()
    })
}

/// The 1000 ImageNet-1k synset ids (WordNet ids, `n01440764` … `n15075141`) in class-index
/// order (`data/imagenet_synsets.txt`, copied from timm 1.0.31's
/// `timm/data/_info/imagenet_synsets.txt`): class `i` of ImageNet-1k models is synset `i`,
/// named [`imagenet_classes`]`()[i]`. The list is sorted, so it is also the order torchvision's
/// `ImageFolder` gives a full 1000-folder set.
pub fn imagenet_synsets() -> &'static [&'static str] {
    static SYNSETS: OnceLock<Vec<&'static str>> = OnceLock::new();
    SYNSETS.get_or_init(|| {
        include_str!("../data/imagenet_synsets.txt")
            .lines()
            .collect()
    })
}

/// The ImageNet-1k class index of synset `wnid` (e.g. `n02123159` → 282, tiger cat).
pub fn imagenet_index(wnid: &str) -> Option<usize> {
    imagenet_synsets().binary_search(&wnid).ok()
}

/// One image of a set: its file and class index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSample {
    /// The image file.
    pub path: PathBuf,
    /// The class index: the position of its class directory among the sorted class names, or
    /// its ImageNet-1k index after [`ImageFolder::with_imagenet_labels`].
    pub label: usize,
}

/// An image classification set in torchvision's `ImageFolder` layout (see the module docs).
#[derive(Clone, Debug)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    samples: Vec<ImageSample>,
}

fn folder_err(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::ImageFolder {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<(OsString, PathBuf, bool)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| ModelError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| ModelError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let path = entry.path();
        // `is_dir` on the path follows symbolic links, as Python's `DirEntry.is_dir()` does.
        let is_dir = path.is_dir();
        out.push((entry.file_name(), path, is_dir));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn has_image_extension(name: &OsString) -> bool {
    let name = name.to_string_lossy().to_lowercase();
    EXTENSIONS
        .iter()
        .any(|ext| name.len() > ext.len() && name.ends_with(&format!(".{ext}")))
}

/// Every directory under `dir` (itself included), each with its image files sorted by name.
fn walk(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, Vec<PathBuf>)>) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(folder_err(
            dir,
            format!("directories nested deeper than {MAX_DEPTH} (a symbolic-link loop?)"),
        ));
    }
    let mut files = Vec::new();
    let mut subdirs = Vec::new();
    for (name, path, is_dir) in read_dir_sorted(dir)? {
        if is_dir {
            subdirs.push(path);
        } else if has_image_extension(&name) {
            files.push(path);
        }
    }
    out.push((dir.to_path_buf(), files));
    for d in subdirs {
        walk(&d, depth + 1, out)?;
    }
    Ok(())
}

impl ImageFolder {
    /// Indexes the set under `root` (no image is read yet). Errors: `root` missing or not a
    /// directory, no class directory in it, a class directory without images (all such
    /// classes are named).
    pub fn open(root: impl AsRef<Path>) -> Result<ImageFolder> {
        let root = root.as_ref();
        if !root.exists() {
            return Err(folder_err(root, "image folder not found"));
        }
        if !root.is_dir() {
            return Err(folder_err(root, "not a directory"));
        }
        let classes: Vec<(String, PathBuf)> = read_dir_sorted(root)?
            .into_iter()
            .filter(|(_, _, is_dir)| *is_dir)
            .map(|(name, path, _)| (name.to_string_lossy().into_owned(), path))
            .collect();
        if classes.is_empty() {
            return Err(folder_err(
                root,
                "no class directory found (expected root/<class>/<image>)",
            ));
        }
        let mut samples = Vec::new();
        let mut empty = Vec::new();
        for (label, (name, dir)) in classes.iter().enumerate() {
            let mut dirs = Vec::new();
            walk(dir, 0, &mut dirs)?;
            // Python sorts os.walk's tuples by their root path string.
            dirs.sort_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
            let before = samples.len();
            for (_, files) in dirs {
                samples.extend(files.into_iter().map(|path| ImageSample { path, label }));
            }
            if samples.len() == before {
                empty.push(name.clone());
            }
        }
        if !empty.is_empty() {
            return Err(folder_err(
                root,
                format!(
                    "no image file (.{}) for the classes {}",
                    EXTENSIONS.join(", ."),
                    empty.join(", ")
                ),
            ));
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            classes: classes.into_iter().map(|(n, _)| n).collect(),
            samples,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Class names (directory names) in index order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The index of class `name` (torchvision's `class_to_idx[name]`).
    pub fn class_index(&self, name: &str) -> Option<usize> {
        self.classes.binary_search_by(|c| c.as_str().cmp(name)).ok()
    }

    /// Relabels the samples with ImageNet-1k class indices by the synset id of their class
    /// folder, so a set holding only some of the 1000 synset folders (a few classes of the
    /// validation set) still carries the labels an ImageNet model predicts. Without this the
    /// labels are the folder's position among the folders present, torchvision's rule, which
    /// equals the ImageNet index only when all 1000 are there. Errors: a class folder whose
    /// name is not an ImageNet-1k synset (all such folders are named).
    pub fn with_imagenet_labels(mut self) -> Result<ImageFolder> {
        let mut index = Vec::with_capacity(self.classes.len());
        let mut unknown = Vec::new();
        for c in &self.classes {
            match imagenet_index(c) {
                Some(i) => index.push(i),
                None => {
                    unknown.push(c.clone());
                    index.push(0);
                }
            }
        }
        if !unknown.is_empty() {
            let shown: Vec<&str> = unknown.iter().take(5).map(String::as_str).collect();
            return Err(folder_err(
                &self.root,
                format!(
                    "{} class folder(s) are not ImageNet-1k synset ids (like n01440764): {}{}",
                    unknown.len(),
                    shown.join(", "),
                    if unknown.len() > 5 { ", …" } else { "" }
                ),
            ));
        }
        for s in &mut self.samples {
            s.label = index[s.label];
        }
        Ok(self)
    }

    /// Whether every class folder is named by an ImageNet-1k synset id.
    pub fn has_imagenet_synsets(&self) -> bool {
        self.classes.iter().all(|c| imagenet_index(c).is_some())
    }

    /// The samples, in torchvision's order.
    pub fn samples(&self) -> &[ImageSample] {
        &self.samples
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is no sample (only after [`limit`](ImageFolder::limit)`(0)`).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The first `n` samples (all when there are fewer). On a set sorted by class these are
    /// the first classes only; [`spread`](ImageFolder::spread) samples all of them.
    pub fn limit(mut self, n: usize) -> ImageFolder {
        self.samples.truncate(n);
        self
    }

    /// `n` samples spread evenly over the set (sample `⌊i · len / n⌋` for `i` in `0..n`), in
    /// order; all when there are at most `n`.
    pub fn spread(mut self, n: usize) -> ImageFolder {
        let len = self.samples.len();
        if n < len {
            self.samples = (0..n).map(|i| self.samples[i * len / n].clone()).collect();
        }
        self
    }

    /// Batches of `batch_size` samples in order (the last may be smaller), each decoded and
    /// transformed by `preprocess` when the iterator reaches it: images
    /// `[N, 3, crop, crop]` f32, labels `[N]` u32.
    pub fn batches(
        &self,
        batch_size: usize,
        preprocess: Preprocess,
        device: &Device,
    ) -> Result<ImageBatches<'_>> {
        if batch_size == 0 {
            return Err(ModelError::Invalid("batch size must be at least 1".into()));
        }
        Ok(ImageBatches {
            samples: &self.samples,
            pos: 0,
            batch_size,
            preprocess,
            device: device.clone(),
        })
    }
}

/// An iterator of [`Batch`]es over an [`ImageFolder`]; decodes one batch at a time.
#[derive(Debug)]
pub struct ImageBatches<'a> {
    samples: &'a [ImageSample],
    pos: usize,
    batch_size: usize,
    preprocess: Preprocess,
    device: Device,
}

impl ImageBatches<'_> {
    /// Number of batches in all (including those already taken).
    pub fn num_batches(&self) -> usize {
        self.samples.len().div_ceil(self.batch_size)
    }

    fn load(&self, chunk: &[ImageSample]) -> Result<Batch> {
        let side = self.preprocess.crop as usize;
        let mut data = Vec::with_capacity(chunk.len() * 3 * side * side);
        for s in chunk {
            data.extend(self.preprocess.apply(&load_rgb(&s.path)?)?);
        }
        let images = Tensor::from_vec(data, (chunk.len(), 3, side, side), &self.device)?;
        let labels: Vec<u32> = chunk.iter().map(|s| s.label as u32).collect();
        let labels = Tensor::from_vec(labels, chunk.len(), &self.device)?;
        Ok(Batch { images, labels })
    }
}

impl Iterator for ImageBatches<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.pos >= self.samples.len() {
            return None;
        }
        let end = (self.pos + self.batch_size).min(self.samples.len());
        let chunk = &self.samples[self.pos..end];
        self.pos = end;
        Some(self.load(chunk))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.samples.len() - self.pos).div_ceil(self.batch_size);
        (n, Some(n))
    }
}

impl ExactSizeIterator for ImageBatches<'_> {}
