//! `ImageFolder` on a small synthetic set written to a temporary directory: torchvision's class
//! and file order, batch shapes and labels, one normalised pixel computed by hand, lazy
//! (per-batch) decoding, and the errors for a missing root, an empty root, an empty class and
//! an undecodable file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use candle_core::Device;
use lowbit_models::image::{Normalization, Preprocess};
use lowbit_models::{ImageFolder, ModelError};

/// A `w × h` PNG of one colour.
fn solid_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

/// A `w × h` JPEG (content irrelevant).
fn jpeg(path: &Path, w: u32, h: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb([10, 20, 30]))
        .save_with_format(path, image::ImageFormat::Jpeg)
        .unwrap();
}

/// The set used by most tests:
///
/// ```text
/// Apple/one.png
/// cat/b.png  cat/a.PNG  cat/c.jpg  cat/notes.txt
/// cat/a/x/deep.png  cat/a b/spaced.png  cat/a/top.png
/// zebra/z.jpeg
/// ```
fn make_set(root: &Path) {
    solid_png(&root.join("Apple/one.png"), 6, 4, [200, 100, 50]);
    solid_png(&root.join("cat/b.png"), 4, 4, [1, 2, 3]);
    solid_png(&root.join("cat/a.PNG"), 5, 4, [4, 5, 6]);
    jpeg(&root.join("cat/c.jpg"), 8, 8);
    fs::write(root.join("cat/notes.txt"), "not an image").unwrap();
    solid_png(&root.join("cat/a/x/deep.png"), 4, 4, [7, 8, 9]);
    solid_png(&root.join("cat/a b/spaced.png"), 4, 4, [7, 8, 9]);
    solid_png(&root.join("cat/a/top.png"), 4, 4, [7, 8, 9]);
    jpeg(&root.join("zebra/z.jpeg"), 4, 6);
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap().to_string_lossy().into_owned()
}

#[test]
fn classes_and_files_in_torchvision_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_set(root);
    let set = ImageFolder::open(root).unwrap();
    // Sorted by name, byte order: upper case before lower case.
    assert_eq!(set.classes(), ["Apple", "cat", "zebra"]);
    assert_eq!(set.class_index("cat"), Some(1));
    assert_eq!(set.class_index("dog"), None);
    let got: Vec<(String, usize)> = set
        .samples()
        .iter()
        .map(|s| (rel(root, &s.path), s.label))
        .collect();
    // Directories in the sorted order of their full paths ("cat/a" < "cat/a b" < "cat/a/x",
    // as Python sorts os.walk's roots; ' ' < '/'), files sorted in each; extensions
    // case-insensitive; other files skipped. torchvision 0.20.1's ImageFolder on the same
    // layout gives exactly this list (checked once by hand).
    let want: Vec<(String, usize)> = [
        ("Apple/one.png", 0),
        ("cat/a.PNG", 1),
        ("cat/b.png", 1),
        ("cat/c.jpg", 1),
        ("cat/a/top.png", 1),
        ("cat/a b/spaced.png", 1),
        ("cat/a/x/deep.png", 1),
        ("zebra/z.jpeg", 2),
    ]
    .iter()
    .map(|&(p, l)| (p.to_string(), l))
    .collect();
    assert_eq!(got, want);
    assert_eq!(set.len(), 8);
}

#[test]
fn batches_have_the_shapes_labels_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_set(root);
    let set = ImageFolder::open(root).unwrap();
    let pre = Preprocess {
        resize: Some(4),
        crop: 4,
        normalization: Normalization::IMAGENET,
    };
    let batches = set.batches(3, pre, &Device::Cpu).unwrap();
    assert_eq!(batches.num_batches(), 3);
    let mut labels = Vec::new();
    let mut sizes = Vec::new();
    let mut first = None;
    for b in batches {
        let b = b.unwrap();
        sizes.push(b.images.dims().to_vec());
        labels.extend(b.labels.to_vec1::<u32>().unwrap());
        first.get_or_insert(b.images);
    }
    assert_eq!(
        sizes,
        [vec![3, 3, 4, 4], vec![3, 3, 4, 4], vec![2, 3, 4, 4]]
    );
    assert_eq!(labels, [0, 1, 1, 1, 1, 1, 1, 2]);
    // Apple/one.png is solid (200, 100, 50): resizing keeps a solid image solid, and the red
    // channel normalises to (200/255 − 0.485) / 0.229 = 1.3070468…, green to
    // (100/255 − 0.456) / 0.224 = −0.2850840…, blue to (50/255 − 0.406) / 0.225 = −0.9330719….
    let img = first.unwrap().get(0).unwrap();
    let v = img.to_vec3::<f32>().unwrap();
    let hand = [
        (200.0 / 255.0 - 0.485) / 0.229,
        (100.0 / 255.0 - 0.456) / 0.224,
        (50.0 / 255.0 - 0.406) / 0.225,
    ];
    for (c, &want) in hand.iter().enumerate() {
        for row in &v[c] {
            for &x in row {
                assert!(
                    (f64::from(x) - want).abs() < 1e-6,
                    "channel {c}: {x} vs {want}"
                );
            }
        }
    }
    assert!((hand[0] - 1.307_046_8).abs() < 1e-7);
}

#[test]
fn limit_and_spread() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_set(root);
    let all = ImageFolder::open(root).unwrap();
    let names = |s: &ImageFolder| -> Vec<String> {
        s.samples().iter().map(|x| rel(root, &x.path)).collect()
    };
    assert_eq!(names(&all.clone().limit(2)), ["Apple/one.png", "cat/a.PNG"]);
    assert_eq!(all.clone().limit(100).len(), 8);
    assert!(all.clone().limit(0).is_empty());
    // ⌊i · 8 / 3⌋ = 0, 2, 5
    assert_eq!(
        names(&all.clone().spread(3)),
        ["Apple/one.png", "cat/b.png", "cat/a b/spaced.png"]
    );
    assert_eq!(all.clone().spread(50).len(), 8);
    // The classes stay whatever the selection.
    assert_eq!(all.limit(1).classes().len(), 3);
}

#[test]
fn decoding_is_per_batch_and_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    solid_png(&root.join("a/1.png"), 4, 4, [0, 0, 0]);
    solid_png(&root.join("a/2.png"), 4, 4, [0, 0, 0]);
    fs::create_dir_all(root.join("b")).unwrap();
    fs::write(root.join("b/broken.png"), b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let set = ImageFolder::open(root).unwrap();
    let pre = Preprocess {
        resize: None,
        crop: 4,
        normalization: Normalization::EFFICIENTNET_LITE,
    };
    let mut it = set.batches(2, pre, &Device::Cpu).unwrap();
    // The first batch decodes although the set holds a broken file (not read yet).
    let first = it.next().unwrap().unwrap();
    assert_eq!(first.images.dims(), &[2, 3, 4, 4]);
    let err = it.next().unwrap().unwrap_err();
    assert!(matches!(err, ModelError::Image { .. }), "{err}");
    assert!(err.to_string().contains("broken.png"), "{err}");
    assert!(it.next().is_none());
    assert!(matches!(
        set.batches(0, pre, &Device::Cpu).unwrap_err(),
        ModelError::Invalid(_)
    ));
}

#[test]
fn missing_empty_and_classless_roots_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let missing: PathBuf = root.join("nope");
    let e = ImageFolder::open(&missing).unwrap_err();
    assert!(matches!(e, ModelError::ImageFolder { .. }), "{e}");
    assert!(
        e.to_string().contains("nope") && e.to_string().contains("not found"),
        "{e}"
    );

    let empty = root.join("empty");
    fs::create_dir_all(&empty).unwrap();
    fs::write(empty.join("stray.png"), b"x").unwrap();
    let e = ImageFolder::open(&empty).unwrap_err();
    assert!(e.to_string().contains("no class directory"), "{e}");

    let file = root.join("file.txt");
    fs::write(&file, b"x").unwrap();
    assert!(
        ImageFolder::open(&file)
            .unwrap_err()
            .to_string()
            .contains("not a directory")
    );

    let partial = root.join("partial");
    solid_png(&partial.join("full/x.png"), 2, 2, [0, 0, 0]);
    fs::create_dir_all(partial.join("hollow/sub")).unwrap();
    fs::create_dir_all(partial.join("void")).unwrap();
    fs::write(partial.join("void/readme.md"), b"x").unwrap();
    let e = ImageFolder::open(&partial).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("hollow, void"), "{msg}");
    assert!(!msg.contains("full"), "{msg}");
}

#[test]
fn imagenet_synsets_are_the_class_order_of_imagenet_1k() {
    let s = lowbit_models::imagenet_synsets();
    assert_eq!(s.len(), 1000);
    assert!(s.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    let names = lowbit_models::imagenet_classes();
    // Synset and torchvision name of the same index (WordNet lemmas).
    for (i, wnid, name) in [
        (0, "n01440764", "tench"),
        (1, "n01443537", "goldfish"),
        (282, "n02123159", "tiger cat"),
        (967, "n07920052", "espresso"),
        (999, "n15075141", "toilet tissue"),
    ] {
        assert_eq!(s[i], wnid);
        assert_eq!(names[i], name);
        assert_eq!(lowbit_models::imagenet_index(wnid), Some(i));
    }
    assert_eq!(lowbit_models::imagenet_index("n99999999"), None);
}

#[test]
fn a_subset_of_synset_folders_keeps_imagenet_labels() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    solid_png(&root.join("n01443537/a.png"), 4, 4, [1, 2, 3]);
    solid_png(&root.join("n02123159/b.png"), 4, 4, [1, 2, 3]);
    solid_png(&root.join("n02123159/c.png"), 4, 4, [1, 2, 3]);
    solid_png(&root.join("n15075141/d.png"), 4, 4, [1, 2, 3]);
    let set = ImageFolder::open(root).unwrap();
    assert!(set.has_imagenet_synsets());
    let folder_labels: Vec<usize> = set.samples().iter().map(|s| s.label).collect();
    assert_eq!(folder_labels, [0, 1, 1, 2]);
    let set = set.with_imagenet_labels().unwrap();
    let labels: Vec<usize> = set.samples().iter().map(|s| s.label).collect();
    assert_eq!(labels, [1, 282, 282, 999]);
    // The batches carry them.
    let b = set
        .batches(4, Preprocess::imagenet(), &Device::Cpu)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(b.labels.to_vec1::<u32>().unwrap(), [1, 282, 282, 999]);
    // A folder that is not a synset: an error naming it.
    solid_png(&root.join("cats/e.png"), 4, 4, [1, 2, 3]);
    let set = ImageFolder::open(root).unwrap();
    assert!(!set.has_imagenet_synsets());
    let e = set.with_imagenet_labels().unwrap_err().to_string();
    assert!(
        e.contains("cats") && e.contains("not ImageNet-1k synset"),
        "{e}"
    );
}
