//! Checkpoints checked against the model that loads them: every tensor the model asks for
//! must be there with its shape, and every tensor of the file must be used.
//!
//! The expected tensors are not written down by hand: [`record_specs`] runs a model's own
//! build code over a recording `VarBuilder`, so the list cannot drift from the model.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;

use crate::error::{ModelError, Result};

/// A tensor a model asks for: its full name and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Full name, e.g. `layer1.0.conv1.weight` (torchvision style).
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
}

/// A `VarBuilder` backend that hands out zeros and records what was asked for.
struct Recorder(Arc<Mutex<Vec<TensorSpec>>>);

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Ok(mut v) = self.0.lock() {
            v.push(TensorSpec {
                name: name.to_string(),
                shape: s.dims().to_vec(),
            });
        }
        Tensor::zeros(s, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("tensor `{name}` asked for without a shape")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// The tensors that `build` asks of its `VarBuilder` (f32, CPU), in the order it asks.
pub fn record_specs(build: impl FnOnce(VarBuilder<'_>) -> Result<()>) -> Result<Vec<TensorSpec>> {
    let specs = Arc::new(Mutex::new(Vec::new()));
    let vb = VarBuilder::from_backend(Box::new(Recorder(specs.clone())), DType::F32, Device::Cpu);
    build(vb)?;
    let specs = specs
        .lock()
        .map(|v| v.clone())
        .map_err(|_| ModelError::Invalid("tensor recorder poisoned".into()))?;
    Ok(specs)
}

/// Checks `tensors` (read from `file`) against `specs`: a missing tensor is
/// [`ModelError::MissingTensor`], a mis-shaped one [`ModelError::TensorShape`] (both with the
/// expected shape), one that no spec names [`ModelError::UnusedTensor`].
pub fn check_tensors(
    file: &Path,
    tensors: &HashMap<String, Tensor>,
    specs: &[TensorSpec],
) -> Result<()> {
    for s in specs {
        let Some(t) = tensors.get(&s.name) else {
            return Err(ModelError::MissingTensor {
                file: file.to_path_buf(),
                name: s.name.clone(),
                expected: s.shape.clone(),
            });
        };
        if t.dims() != s.shape.as_slice() {
            return Err(ModelError::TensorShape {
                file: file.to_path_buf(),
                name: s.name.clone(),
                expected: s.shape.clone(),
                got: t.dims().to_vec(),
            });
        }
    }
    let used: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    if let Some(name) = names.into_iter().find(|n| !used.contains(n.as_str())) {
        return Err(ModelError::UnusedTensor {
            file: file.to_path_buf(),
            name: name.clone(),
        });
    }
    Ok(())
}

/// Reads the safetensors file `file` onto `device` (as f32) and checks it against `specs`
/// with [`check_tensors`]. A missing file is [`ModelError::MissingFile`] naming `setup`.
pub fn load_checked(
    file: &Path,
    specs: &[TensorSpec],
    device: &Device,
    setup: &str,
) -> Result<HashMap<String, Tensor>> {
    load_checked_ignoring(file, specs, device, setup, |_| false)
}

/// [`load_checked`] for checkpoints exported from Python with bookkeeping tensors that no
/// layer uses (`num_batches_tracked` of PyTorch's batch norm, BERT's `position_ids` buffer):
/// tensors for which `ignore(name)` is true are dropped before the check, and are not loaded.
pub fn load_checked_ignoring(
    file: &Path,
    specs: &[TensorSpec],
    device: &Device,
    setup: &str,
    ignore: impl Fn(&str) -> bool,
) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(file).map_err(|e| ModelError::io(file, e, setup))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device).map_err(|source| {
        ModelError::Checkpoint {
            file: file.to_path_buf(),
            source,
        }
    })?;
    let tensors = tensors
        .into_iter()
        .filter(|(k, _)| !ignore(k))
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    check_tensors(file, &tensors, specs)?;
    Ok(tensors)
}
