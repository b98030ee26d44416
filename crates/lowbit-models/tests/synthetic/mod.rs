//! Synthetic checkpoints for the ResNet and ViT forward tests: every parameter is the formula
//! of `scripts/golden/torchvision_timm_keys.py` (`fill`, `input_tensor`), reproduced here bit
//! for bit, so the Rust model and PyTorch run on identical tensors without committing them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use lowbit_models::TensorSpec;
use serde_json::Value;

/// The committed fixture `tests/data/<name>`.
pub fn golden(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// `{name: shape}` of a `*_keys.json` fixture (every key of the state dict).
pub fn golden_keys(name: &str) -> BTreeMap<String, Vec<usize>> {
    let v = golden(name);
    v["keys"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, s)| {
            let shape = s
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (k.clone(), shape)
        })
        .collect()
}

/// `{name: shape}` of specs, checking that no name is asked for twice.
pub fn spec_map(specs: &[TensorSpec]) -> BTreeMap<String, Vec<usize>> {
    let m: BTreeMap<String, Vec<usize>> = specs
        .iter()
        .map(|s| (s.name.clone(), s.shape.clone()))
        .collect();
    assert_eq!(m.len(), specs.len(), "a tensor asked for twice");
    m
}

/// The value of every element of tensor `name`, index `k` in sorted name order (the Python
/// `fill`): `s = sin(0.37·i + 0.11·k)`, then by role, in f64, then rounded to f32.
pub fn fill(name: &str, k: usize, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let s = (0..n).map(|i| (0.37 * i as f64 + 0.11 * k as f64).sin());
    let v: Vec<f64> = if name.ends_with("running_var") {
        s.map(|x| 1.0 + 0.1 * x.abs()).collect()
    } else if name.ends_with("running_mean") || name.ends_with("bias") {
        s.map(|x| 0.1 * x).collect()
    } else if name.ends_with("weight") && shape.len() >= 2 {
        let fan_in: usize = shape[1..].iter().product();
        let a = 2.0 / (fan_in as f64).sqrt();
        s.map(|x| x * a).collect()
    } else if name.ends_with("weight") {
        s.map(|x| 1.0 + 0.1 * x).collect()
    } else {
        s.map(|x| 0.5 * x).collect()
    };
    v.into_iter().map(|x| x as f32).collect()
}

/// The input: `x_j = sin(0.013·j + 0.5)`, f64 then f32.
pub fn input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|j| (0.013 * j as f64 + 0.5).sin() as f32)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Exact-ish f64 sum (Neumaier) of f32 values.
pub fn sum(v: &[f32]) -> f64 {
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for &x in v {
        let x = f64::from(x);
        let t = s + x;
        c += if s.abs() >= x.abs() {
            (s - t) + x
        } else {
            (x - t) + s
        };
        s = t;
    }
    s + c
}

/// A checkpoint for `specs` filled by [`fill`] (k = index in sorted name order), checked
/// against the fixture's per-tensor sums, plus an I64 `num_batches_tracked` scalar for every
/// batch norm when `bookkeeping` (as PyTorch saves them).
pub fn checkpoint(
    specs: &[TensorSpec],
    sums: Option<&Value>,
    bookkeeping: bool,
) -> HashMap<String, Tensor> {
    let mut names: Vec<&TensorSpec> = specs.iter().collect();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = HashMap::new();
    for (k, s) in names.into_iter().enumerate() {
        let v = fill(&s.name, k, &s.shape);
        if let Some(sums) = sums {
            let want = sums[&s.name]
                .as_f64()
                .unwrap_or_else(|| panic!("no sum for {}", s.name));
            let got = sum(&v);
            assert!(
                (got - want).abs() <= 1e-6,
                "{}: sum {got} but PyTorch's tensor sums to {want}",
                s.name
            );
        }
        out.insert(
            s.name.clone(),
            Tensor::from_vec(v, s.shape.as_slice(), &Device::Cpu).unwrap(),
        );
        if bookkeeping && let Some(prefix) = s.name.strip_suffix(".running_mean") {
            out.insert(
                format!("{prefix}.num_batches_tracked"),
                Tensor::new(0i64, &Device::Cpu).unwrap(),
            );
        }
    }
    if let Some(sums) = sums {
        assert_eq!(
            sums.as_object().unwrap().len(),
            specs.len(),
            "the fixture fills as many tensors as the model has"
        );
    }
    out
}

/// Writes `tensors` as safetensors to `dir/name`.
pub fn save(tensors: &HashMap<String, Tensor>, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    candle_core::safetensors::save(tensors, &p).unwrap();
    p
}

/// Largest |a − b| / (1 + |b|) and largest |a − b|.
pub fn compare(got: &[f32], want: &[f64]) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(&a, &b)| {
            let d = (f64::from(a) - b).abs();
            (d / (1.0 + b.abs()), d)
        })
        .fold((0.0f64, 0.0f64), |(r, m), (x, d)| (r.max(x), m.max(d)))
}

/// A `Vec<f64>` from a JSON array.
pub fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// A `Vec<usize>` from a JSON array.
pub fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// The error of loading (with `load`) the checkpoint `tensors` after `edit`, saved to a
/// temporary file.
pub fn load_edited<T>(
    mut tensors: HashMap<String, Tensor>,
    edit: impl FnOnce(&mut HashMap<String, Tensor>),
    load: impl FnOnce(&Path) -> Result<T, lowbit_models::ModelError>,
) -> lowbit_models::ModelError {
    edit(&mut tensors);
    let dir = tempfile::tempdir().unwrap();
    let file = save(&tensors, dir.path(), "edited.safetensors");
    match load(&file) {
        Ok(_) => panic!("the edited checkpoint loaded"),
        Err(e) => e,
    }
}

/// Checks that `e` is a missing tensor `name` of shape `expected`.
pub fn assert_missing(e: &lowbit_models::ModelError, name: &str, expected: &[usize]) {
    match e {
        lowbit_models::ModelError::MissingTensor {
            name: n,
            expected: x,
            ..
        } => assert_eq!((n.as_str(), x.as_slice()), (name, expected), "{e}"),
        e => panic!("{e}"),
    }
}

/// Checks that `e` is a tensor `name` of shape `got` where the model expects `expected`.
pub fn assert_misshaped(
    e: &lowbit_models::ModelError,
    name: &str,
    expected: &[usize],
    got: &[usize],
) {
    match e {
        lowbit_models::ModelError::TensorShape {
            name: n,
            expected: x,
            got: g,
            ..
        } => assert_eq!(
            (n.as_str(), x.as_slice(), g.as_slice()),
            (name, expected, got),
            "{e}"
        ),
        e => panic!("{e}"),
    }
}

/// Checks that `e` is an unused tensor `name`.
pub fn assert_unused(e: &lowbit_models::ModelError, name: &str) {
    match e {
        lowbit_models::ModelError::UnusedTensor { name: n, .. } => assert_eq!(n, name, "{e}"),
        e => panic!("{e}"),
    }
}

/// The largest `|a − b|` of two F32 tensors of one shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
