//! Fashion-MNIST (Zalando, MIT): 28×28 grey images of 10 clothing classes, 60 000 for
//! training and 10 000 for test, in IDX files.
//!
//! The test split is committed in this crate (`data/fashion-mnist/`, 4.4 MB gz); the training
//! split is fetched by `scripts/fetch-fashion-mnist.sh` into `assets/fashion-mnist/` (both from
//! the Debian package `dataset-fashion-mnist`, pinned and checked).
//!
//! Memory: a split is held as its raw bytes (784 B per image: 47 MB for training, 7.8 MB for
//! test); [`Batches`] turns one batch at a time into `f32`, so memory does not grow with the
//! number of batches.
//!
//! Normalisation: pixel `p ∈ 0..=255` becomes `p / 255` in `[0, 1]` (0 = background, as
//! stored); no mean/std shift — the network's first batch norm does that.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};
use crate::idx::read_idx;
use crate::rng::SplitMix64;

/// The setup command that provides the Fashion-MNIST files.
pub const FETCH_SCRIPT: &str = "scripts/fetch-fashion-mnist.sh";

/// Where [`FETCH_SCRIPT`] puts the files, relative to the repository root.
pub const ASSETS_DIR: &str = "assets/fashion-mnist";

/// Image height and width.
pub const IMAGE_SIDE: usize = 28;

/// Bytes (pixels) per image.
pub const IMAGE_BYTES: usize = IMAGE_SIDE * IMAGE_SIDE;

/// The class names, by label.
pub const CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The directory of the committed test split (`crates/lowbit-models/data/fashion-mnist`).
pub fn committed_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/fashion-mnist"))
}

/// A split of the data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// 60 000 training images (`train-*`).
    Train,
    /// 10 000 test images (`t10k-*`).
    Test,
}

impl Split {
    /// The file-name stem: `train` or `t10k`.
    pub fn stem(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
    /// The images file name, e.g. `t10k-images-idx3-ubyte.gz`.
    pub fn images_file(self) -> String {
        format!("{}-images-idx3-ubyte.gz", self.stem())
    }
    /// The labels file name, e.g. `t10k-labels-idx1-ubyte.gz`.
    pub fn labels_file(self) -> String {
        format!("{}-labels-idx1-ubyte.gz", self.stem())
    }
}

/// One split (or its first `limit` images) in memory as raw bytes.
#[derive(Clone, Debug)]
pub struct FashionMnist {
    images: Vec<u8>,
    labels: Vec<u8>,
    split: Split,
}

/// One batch: images `[N, 1, 28, 28]` f32 in `[0, 1]` and labels `[N]` u32.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[N, 1, 28, 28]`, f32, pixel / 255.
    pub images: Tensor,
    /// `[N]`, u32 in `0..10`.
    pub labels: Tensor,
}

impl FashionMnist {
    /// Loads `split` from `dir` (the two gz files named by [`Split::images_file`] and
    /// [`Split::labels_file`]), at most `limit` images. Checks magic numbers, sizes, that the
    /// image and label counts agree and that every label is below 10; a missing file is an
    /// error naming [`FETCH_SCRIPT`].
    pub fn load(dir: impl AsRef<Path>, split: Split, limit: Option<usize>) -> Result<FashionMnist> {
        let dir = dir.as_ref();
        let ip = dir.join(split.images_file());
        let lp = dir.join(split.labels_file());
        let images = read_idx(&ip, 3, limit, FETCH_SCRIPT)?;
        let labels = read_idx(&lp, 1, limit, FETCH_SCRIPT)?;
        if images.dims[1..] != [IMAGE_SIDE, IMAGE_SIDE] {
            return Err(ModelError::Idx {
                path: ip,
                message: format!(
                    "images are {:?}, expected {IMAGE_SIDE}×{IMAGE_SIDE}",
                    &images.dims[1..]
                ),
            });
        }
        if images.dims[0] != labels.dims[0] {
            return Err(ModelError::Idx {
                path: lp,
                message: format!(
                    "{} labels for {} images in {}",
                    labels.dims[0],
                    images.dims[0],
                    ip.display()
                ),
            });
        }
        if let Some(i) = labels
            .data
            .iter()
            .position(|&l| usize::from(l) >= CLASSES.len())
        {
            return Err(ModelError::Idx {
                path: lp,
                message: format!(
                    "label {} of item {i} is not a class (0..10)",
                    labels.data[i]
                ),
            });
        }
        Ok(FashionMnist {
            images: images.data,
            labels: labels.data,
            split,
        })
    }

    /// The committed test split ([`committed_dir`]), at most `limit` images.
    pub fn committed_test(limit: Option<usize>) -> Result<FashionMnist> {
        FashionMnist::load(committed_dir(), Split::Test, limit)
    }

    /// The split.
    pub fn split(&self) -> Split {
        self.split
    }
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Image `i`'s 784 pixels, row-major (`None` past the end).
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        self.images.get(i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES)
    }
    /// Label `i` (`None` past the end).
    pub fn label(&self, i: usize) -> Option<u8> {
        self.labels.get(i).copied()
    }

    /// Batches of `batch_size` in file order (the last one may be smaller).
    pub fn batches(&self, batch_size: usize, device: &Device) -> Result<Batches<'_>> {
        let order = (0..self.len()).collect();
        Batches::new(self, order, batch_size, device)
    }

    /// Batches of `batch_size` in an order shuffled by `seed` (the same seed, the same order).
    pub fn shuffled_batches(
        &self,
        batch_size: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Batches<'_>> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        SplitMix64::new(seed).shuffle(&mut order);
        Batches::new(self, order, batch_size, device)
    }
}

/// An iterator of [`Batch`]es over a [`FashionMnist`] split; converts one batch at a time.
#[derive(Debug)]
pub struct Batches<'a> {
    data: &'a FashionMnist,
    order: Vec<usize>,
    pos: usize,
    batch_size: usize,
    device: Device,
}

impl<'a> Batches<'a> {
    fn new(
        data: &'a FashionMnist,
        order: Vec<usize>,
        batch_size: usize,
        device: &Device,
    ) -> Result<Batches<'a>> {
        if batch_size == 0 {
            return Err(ModelError::Invalid("batch size must be at least 1".into()));
        }
        Ok(Batches {
            data,
            order,
            pos: 0,
            batch_size,
            device: device.clone(),
        })
    }

    /// Number of batches in all (including those already taken).
    pub fn num_batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    fn make(&self, idx: &[usize]) -> Result<Batch> {
        let mut pixels = Vec::with_capacity(idx.len() * IMAGE_BYTES);
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            let img = &self.data.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES];
            pixels.extend(img.iter().map(|&p| f32::from(p) / 255.0));
            labels.push(u32::from(self.data.labels[i]));
        }
        let n = idx.len();
        Ok(Batch {
            images: Tensor::from_vec(pixels, (n, 1, IMAGE_SIDE, IMAGE_SIDE), &self.device)?,
            labels: Tensor::from_vec(labels, n, &self.device)?,
        })
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.pos >= self.order.len() {
            return None;
        }
        let end = (self.pos + self.batch_size).min(self.order.len());
        let idx = &self.order[self.pos..end];
        let b = self.make(idx);
        self.pos = end;
        Some(b)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.order.len() - self.pos).div_ceil(self.batch_size);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batches<'_> {}
