//! The IDX reader and the Fashion-MNIST loader: the committed test split, batches,
//! normalisation, shuffling, and the errors for bad, truncated and missing files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::PathBuf;

use candle_core::{DType, Device};
use flate2::Compression;
use flate2::write::GzEncoder;
use lowbit_models::data::{self, FETCH_SCRIPT};
use lowbit_models::{FashionMnist, ModelError, Split, read_idx};

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lowbit-models-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_bytes(magic: [u8; 4], dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = magic.to_vec();
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend(data);
    v
}

#[test]
fn committed_test_split_loads() {
    let t = FashionMnist::committed_test(None).unwrap();
    assert_eq!(t.len(), 10_000);
    assert_eq!(t.split(), Split::Test);
    let mut counts = [0usize; 10];
    for i in 0..t.len() {
        counts[usize::from(t.label(i).unwrap())] += 1;
    }
    // The test split is balanced: 1000 images per class.
    assert_eq!(counts, [1000; 10]);
    // Known first labels of t10k (Ankle boot, Pullover, Trouser, Trouser, Shirt).
    let first: Vec<u8> = (0..5).map(|i| t.label(i).unwrap()).collect();
    assert_eq!(first, [9, 2, 1, 1, 6]);
    assert_eq!(t.image(0).unwrap().len(), 784);
    assert!(t.image(10_000).is_none());
}

#[test]
fn limit_reads_only_the_first_items() {
    let t = FashionMnist::committed_test(Some(123)).unwrap();
    assert_eq!(t.len(), 123);
    let full = FashionMnist::committed_test(None).unwrap();
    assert_eq!(t.image(122), full.image(122));
}

#[test]
fn batches_are_normalised_and_bounded() {
    let t = FashionMnist::committed_test(Some(250)).unwrap();
    let batches = t.batches(100, &Device::Cpu).unwrap();
    assert_eq!(batches.len(), 3);
    let all: Vec<_> = batches.map(|b| b.unwrap()).collect();
    assert_eq!(all[0].images.dims(), &[100, 1, 28, 28]);
    assert_eq!(all[2].images.dims(), &[50, 1, 28, 28]);
    assert_eq!(all[0].images.dtype(), DType::F32);
    assert_eq!(all[0].labels.dtype(), DType::U32);
    let px: Vec<f32> = all[0].images.flatten_all().unwrap().to_vec1().unwrap();
    assert!(px.iter().all(|&p| (0.0..=1.0).contains(&p)));
    // pixel / 255 exactly.
    let raw = t.image(0).unwrap();
    for (k, &p) in raw.iter().enumerate() {
        assert_eq!(px[k], f32::from(p) / 255.0);
    }
    assert!(px.contains(&1.0));
    assert!(t.batches(0, &Device::Cpu).is_err());
}

#[test]
fn shuffling_is_deterministic_per_seed() {
    let t = FashionMnist::committed_test(Some(300)).unwrap();
    let labels = |seed| -> Vec<u32> {
        t.shuffled_batches(300, seed, &Device::Cpu)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .labels
            .to_vec1()
            .unwrap()
    };
    let in_order: Vec<u32> = (0..300).map(|i| u32::from(t.label(i).unwrap())).collect();
    assert_eq!(labels(7), labels(7));
    assert_ne!(labels(7), labels(8));
    assert_ne!(labels(7), in_order);
    let mut a = labels(7);
    let mut b = in_order.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "a shuffle is a permutation");
}

#[test]
fn missing_file_names_the_fetch_script() {
    let dir = tmp_dir("missing");
    let e = FashionMnist::load(&dir, Split::Train, None).unwrap_err();
    assert!(matches!(e, ModelError::MissingFile { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("train-images-idx3-ubyte.gz"), "{msg}");
    assert!(msg.contains(FETCH_SCRIPT), "{msg}");
    assert_eq!(FETCH_SCRIPT, "scripts/fetch-fashion-mnist.sh");
    assert!(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(FETCH_SCRIPT)
            .exists()
    );
}

#[test]
fn bad_magic_is_an_error_naming_the_file() {
    let dir = tmp_dir("magic");
    let p = dir.join("bad.gz");
    std::fs::write(
        &p,
        gz(&idx_bytes([0x12, 0x34, 0x08, 0x01], &[3], &[0, 1, 2])),
    )
    .unwrap();
    let e = read_idx(&p, 1, None, FETCH_SCRIPT).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ModelError::Idx { .. }), "{e:?}");
    assert!(
        msg.contains("bad.gz") && msg.contains("bad magic number 12340801"),
        "{msg}"
    );

    // Images where labels are expected: 3 dimensions, not 1.
    let p = dir.join("dims.gz");
    std::fs::write(&p, gz(&idx_bytes([0, 0, 8, 3], &[1, 1, 1], &[0]))).unwrap();
    let msg = read_idx(&p, 1, None, FETCH_SCRIPT).unwrap_err().to_string();
    assert!(
        msg.contains("dims.gz") && msg.contains("3 dimensions, expected 1"),
        "{msg}"
    );

    // Element type f32 (0x0d).
    let p = dir.join("f32.gz");
    std::fs::write(&p, gz(&idx_bytes([0, 0, 0x0d, 1], &[1], &[0; 4]))).unwrap();
    let msg = read_idx(&p, 1, None, FETCH_SCRIPT).unwrap_err().to_string();
    assert!(msg.contains("element type 0x0d"), "{msg}");
}

#[test]
fn truncated_files_are_errors_naming_the_file() {
    let dir = tmp_dir("trunc");
    // The header promises 10 labels, the data holds 4.
    let p = dir.join("short.gz");
    std::fs::write(&p, gz(&idx_bytes([0, 0, 8, 1], &[10], &[1, 2, 3, 4]))).unwrap();
    let msg = read_idx(&p, 1, None, FETCH_SCRIPT).unwrap_err().to_string();
    assert!(
        msg.contains("short.gz") && msg.contains("truncated"),
        "{msg}"
    );
    // …but the first 4 can be read with a limit.
    let a = read_idx(&p, 1, Some(4), FETCH_SCRIPT).unwrap();
    assert_eq!((a.dims, a.data), (vec![4], vec![1, 2, 3, 4]));

    // Trailing bytes after the declared items.
    let p = dir.join("long.gz");
    std::fs::write(&p, gz(&idx_bytes([0, 0, 8, 1], &[2], &[1, 2, 3]))).unwrap();
    let msg = read_idx(&p, 1, None, FETCH_SCRIPT).unwrap_err().to_string();
    assert!(
        msg.contains("long.gz") && msg.contains("trailing bytes"),
        "{msg}"
    );

    // A gzip stream cut in the middle (the committed labels file, first half).
    let whole = std::fs::read(data::committed_dir().join(Split::Test.labels_file())).unwrap();
    let p = dir.join("cut.gz");
    std::fs::write(&p, &whole[..whole.len() / 2]).unwrap();
    let e = read_idx(&p, 1, None, FETCH_SCRIPT).unwrap_err();
    assert!(matches!(e, ModelError::Idx { .. }), "{e:?}");
    assert!(e.to_string().contains("cut.gz"), "{e}");

    // A header shorter than the magic number.
    let p = dir.join("tiny");
    std::fs::write(&p, [0u8, 0]).unwrap();
    let msg = read_idx(&p, 1, None, FETCH_SCRIPT).unwrap_err().to_string();
    assert!(msg.contains("tiny") && msg.contains("truncated"), "{msg}");
}

#[test]
fn uncompressed_files_and_mismatched_counts() {
    let dir = tmp_dir("plain");
    let split = Split::Test;
    // Plain (not gzip) IDX files are read too.
    std::fs::write(
        dir.join(split.images_file()),
        idx_bytes([0, 0, 8, 3], &[2, 28, 28], &[7; 2 * 784]),
    )
    .unwrap();
    std::fs::write(
        dir.join(split.labels_file()),
        idx_bytes([0, 0, 8, 1], &[2], &[3, 4]),
    )
    .unwrap();
    let t = FashionMnist::load(&dir, split, None).unwrap();
    assert_eq!((t.len(), t.label(1)), (2, Some(4)));

    // 3 labels for 2 images.
    std::fs::write(
        dir.join(split.labels_file()),
        idx_bytes([0, 0, 8, 1], &[3], &[3, 4, 5]),
    )
    .unwrap();
    let msg = FashionMnist::load(&dir, split, None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("3 labels for 2 images"), "{msg}");

    // A label that is not a class.
    std::fs::write(
        dir.join(split.labels_file()),
        idx_bytes([0, 0, 8, 1], &[2], &[3, 10]),
    )
    .unwrap();
    let msg = FashionMnist::load(&dir, split, None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("label 10 of item 1"), "{msg}");

    // Images of the wrong size.
    std::fs::write(
        dir.join(split.images_file()),
        idx_bytes([0, 0, 8, 3], &[2, 27, 29], &[7; 2 * 27 * 29]),
    )
    .unwrap();
    let msg = FashionMnist::load(&dir, split, None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("[27, 29]"), "{msg}");
}
