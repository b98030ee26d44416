//! A trained model as real low-bit tensors: every weight whose quantizer is on as a
//! lowbit-quant [`QuantizedTensor`](lowbit_quant::QuantizedTensor) (packed codes, scales in
//! their own dtype, the spec in the metadata), the other parameters in FP32; and the way back,
//! for evaluation. A model trained with `--bn fold` is saved folded (`folding.json` lists the
//! conv → batch norm pairs; the convolutions carry the folded weights and biases, the batch
//! norms are gone) and reloads as such.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use lowbit_models::FashionCnn;
use lowbit_nn::{QBuilder, QuantConfig, QuantModel, Quantizer, Registry};
use lowbit_quant::Scales;
use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};
use crate::models::model_err;
use crate::qat::fold::{Pair, deployed_registry};

/// The file of the FP32 remainder of a quantized checkpoint.
pub(crate) const FP32_REST: &str = "fp32.safetensors";

/// The file that marks a folded checkpoint.
const FOLDING: &str = "folding.json";

/// The names of the weights stored in their layer's rotated basis.
const ROTATED: &str = "rotated.json";

/// Parameters by checkpoint name.
pub(crate) type Params = BTreeMap<String, Tensor>;

/// `folding.json`.
#[derive(Debug, Serialize, Deserialize)]
struct FoldingFile {
    /// Always `fold`.
    bn: String,
    /// The folded pairs.
    pairs: Vec<Pair>,
}

/// The variables of `vm` by name.
pub(crate) fn vm_params(vm: &VarMap) -> Result<Params> {
    Ok(vm
        .data()
        .lock()
        .map_err(|_| CliError::Other("the model's parameters are poisoned".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect())
}

/// A parameter (weight or bias) whose quantizer is on, with its current values.
pub(crate) struct QuantizedParam<'a> {
    /// The layer's name.
    pub layer: &'a str,
    /// `weight` or `bias`.
    pub role: &'static str,
    /// The quantizer.
    pub quantizer: &'a Quantizer,
    /// Whether the values are in the layer's rotated basis (`W R`).
    pub rotated: bool,
    /// The values, flattened, and the tensor's dims (a rotating layer's weight: `W R`, the
    /// tensor its quantizer sees).
    pub values: Vec<f32>,
    pub dims: Vec<usize>,
}

impl QuantizedParam<'_> {
    /// `<layer>.<role>`, the parameter's name in the checkpoint.
    pub fn name(&self) -> String {
        format!("{}.{}", self.layer, self.role)
    }

    /// The scales the quantizer applies now: learned (LSQ), else frozen, else computed from
    /// the values (dynamic).
    pub fn scales(&self) -> Result<Scales> {
        if let Some(var) = self.quantizer.learned_scale() {
            return Ok(Scales {
                shape: var.as_tensor().dims().to_vec(),
                values: var.as_tensor().to_vec1::<f32>()?,
                zero_points: None,
                tensor_scale: None,
            });
        }
        if let Some(f) = self.quantizer.frozen() {
            return Ok((*f).clone());
        }
        self.quantizer
            .spec()
            .compute_scales(&self.values, &self.dims)
            .map_err(|e| CliError::Other(format!("{}: {e}", self.name())))
    }
}

/// The parameters of `model` (`params`: the deployed model's, by name) whose quantizer is
/// on: the weights, and the biases too when `biases` is set.
pub(crate) fn quantized_params<'a>(
    model: &'a FashionCnn,
    params: &Params,
    biases: bool,
) -> Result<Vec<QuantizedParam<'a>>> {
    let mut out = Vec::new();
    for l in model.layers().layers() {
        let q = l.op.quant();
        let roles = [("weight", &q.weight), ("bias", &q.bias)];
        for (role, quant) in roles.into_iter().take(if biases { 2 } else { 1 }) {
            let Some(quantizer) = quant.as_ref().filter(|q| q.is_enabled()) else {
                continue;
            };
            let Some(t) = params.get(&format!("{}.{role}", l.name)) else {
                continue;
            };
            if q.enabled_smoothing().is_some() {
                return Err(CliError::Other(format!(
                    "layer `{}` smooths (SmoothQuant): low-bit checkpoints of smoothing layers are not supported; \
                     export without `smoothing` in the config",
                    l.name
                )));
            }
            // A rotating layer's weight quantizer sees W R (docs/config.md, rotations).
            let turned = match q.enabled_rotation() {
                Some(r) if role == "weight" => Some(r.rotate(t)?),
                _ => None,
            };
            let rotated = turned.is_some();
            let t = turned.as_ref().unwrap_or(t);
            out.push(QuantizedParam {
                rotated,
                layer: &l.name,
                role,
                quantizer,
                values: t.flatten_all()?.to_vec1::<f32>()?,
                dims: t.dims().to_vec(),
            });
        }
    }
    Ok(out)
}

/// Writes `model`'s parameters `params` (the deployed model's: see
/// [`Folding::deploy`](crate::qat::fold::Folding::deploy)) as a low-bit checkpoint in `qdir`:
/// every weight whose quantizer is on as a [`lowbit_quant::QuantizedTensor`]
/// (`<name>.safetensors`: packed codes, scales in their own dtype, the spec in the metadata),
/// every other parameter (biases, batch norm, running statistics) in `fp32.safetensors`, and
/// with `folded` pairs `folding.json`. Returns the weights' storage in bits per element.
pub fn save_quantized(
    model: &FashionCnn,
    params: &Params,
    qdir: &Path,
    folded: &[Pair],
) -> Result<f64> {
    std::fs::create_dir_all(qdir)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", qdir.display())))?;
    let mut done = std::collections::BTreeSet::new();
    let mut rotated = Vec::new();
    let (mut bits, mut elems) = (0.0f64, 0usize);
    for p in quantized_params(model, params, false)? {
        let name = p.name();
        if p.rotated {
            rotated.push(name.clone());
        }
        let qt = p
            .quantizer
            .spec()
            .quantize_with_scales(&p.values, &p.dims, &p.scales()?)
            .map_err(|e| CliError::Other(format!("{name}: {e}")))?;
        bits += qt.bits_per_element() * p.values.len() as f64;
        elems += p.values.len();
        qt.save(qdir.join(format!("{name}.safetensors")))
            .map_err(|e| CliError::Other(format!("{name}: {e}")))?;
        done.insert(name);
    }
    let rest: std::collections::HashMap<String, Tensor> = params
        .iter()
        .filter(|(k, _)| !done.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    candle_core::safetensors::save(&rest, qdir.join(FP32_REST))?;
    // Weights stored in their layer's rotated basis (`Q(W R)`, as deployed): loading must not
    // turn them again.
    write_marker(
        &qdir.join(ROTATED),
        (!rotated.is_empty()).then_some(&rotated),
    )?;
    let folding = (!folded.is_empty()).then(|| FoldingFile {
        bn: "fold".into(),
        pairs: folded.to_vec(),
    });
    write_marker(&qdir.join(FOLDING), folding.as_ref())?;
    Ok(if elems == 0 {
        32.0
    } else {
        bits / elems as f64
    })
}

/// Writes `value` as JSON to `path`, or removes `path` when there is nothing to mark (a
/// checkpoint directory written again must not keep a stale marker).
fn write_marker<T: serde::Serialize>(path: &Path, value: Option<&T>) -> Result<()> {
    match value {
        Some(v) => {
            let text =
                serde_json::to_string_pretty(v).map_err(|e| CliError::Other(e.to_string()))?;
            Ok(lowbit_eval::write_atomic(path, text.as_bytes())?)
        }
        None if path.exists() => std::fs::remove_file(path)
            .map_err(|e| CliError::Other(format!("cannot remove {}: {e}", path.display()))),
        None => Ok(()),
    }
}

/// Loads a checkpoint written by [`save_quantized`] for evaluation: the low-bit weights are
/// dequantized (they are on their grid already, so their weight quantizers are switched off;
/// the other quantizers of `config` stay as configured); a folded one (`folding.json`) is
/// built folded.
pub fn load_quantized(qdir: &Path, config: &QuantConfig, dev: &Device) -> Result<FashionCnn> {
    let rest = qdir.join(FP32_REST);
    let mut tensors = candle_core::safetensors::load(&rest, dev)
        .map_err(|e| CliError::Other(format!("cannot load {}: {e}", rest.display())))?;
    let mut quantized = Vec::new();
    let entries = std::fs::read_dir(qdir)
        .map_err(|e| CliError::Other(format!("cannot read {}: {e}", qdir.display())))?;
    for e in entries {
        let path = e
            .map_err(|e| CliError::Other(format!("{}: {e}", qdir.display())))?
            .path();
        let Some(file) = path.file_name().map(|f| f.to_string_lossy().into_owned()) else {
            continue;
        };
        let Some(name) = file.strip_suffix(".safetensors") else {
            continue;
        };
        if file == FP32_REST {
            continue;
        }
        let qt = lowbit_quant::QuantizedTensor::load(&path)
            .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?;
        let v = qt
            .dequantize()
            .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?;
        tensors.insert(
            name.to_string(),
            candle_core::Tensor::from_vec(v, qt.shape(), dev)?,
        );
        quantized.push(name.to_string());
    }
    let folding = qdir.join(FOLDING);
    let registry = if folding.exists() {
        let text = std::fs::read_to_string(&folding)
            .map_err(|e| CliError::Other(format!("cannot read {}: {e}", folding.display())))?;
        let f: FoldingFile = serde_json::from_str(&text)
            .map_err(|e| CliError::Other(format!("{}: {e}", folding.display())))?;
        deployed_registry(&f.pairs)?
    } else {
        Registry::default()
    };
    let vb = candle_nn::VarBuilder::from_tensors(tensors, candle_core::DType::F32, dev);
    let model = FashionCnn::build(QBuilder::new(vb, config, registry)?).map_err(model_err)?;
    let rotated_file = qdir.join(ROTATED);
    let rotated: Vec<String> = if rotated_file.exists() {
        let text = std::fs::read_to_string(&rotated_file)
            .map_err(|e| CliError::Other(format!("cannot read {}: {e}", rotated_file.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| CliError::Other(format!("{}: {e}", rotated_file.display())))?
    } else {
        Vec::new()
    };
    for l in model.layers().layers() {
        let name = format!("{}.weight", l.name);
        if quantized.contains(&name)
            && let Some(wq) = &l.op.quant().weight
        {
            wq.set_enabled(false);
        }
        if rotated.contains(&name) {
            l.op.quant().set_weight_rotated(true);
        }
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use lowbit_models::FashionMnist;

    #[test]
    fn low_bit_checkpoint_save_load_evaluates_identically() {
        let cfg = QuantConfig::from_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../configs/qat/w4a8_int4.yaml"
        ))
        .unwrap();
        save_load_identical(&cfg, false);
        // A rotating layer's weight is stored as Q(W R) and not turned again when loaded.
        let mut rotating = cfg.clone();
        rotating.layers.push(
            serde_yaml_ng::from_str("{ pattern: fc, rotation: { size: 32, seed: 4 } }").unwrap(),
        );
        save_load_identical(&rotating, true);
    }

    fn save_load_identical(cfg: &QuantConfig, rotated: bool) {
        let dev = Device::Cpu;
        let (model, mut vm) = FashionCnn::new_trainable(cfg, 0, &dev).unwrap();
        vm.load(lowbit_models::fashion::weights_path()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let bits = save_quantized(&model, &vm_params(&vm).unwrap(), tmp.path(), &[]).unwrap();
        assert!(bits > 4.0 && bits < 5.0, "{bits} bits per weight");
        assert_eq!(tmp.path().join(ROTATED).exists(), rotated);
        let reloaded = load_quantized(tmp.path(), cfg, &dev).unwrap();
        let test = FashionMnist::committed_test(Some(200)).unwrap();
        let (x, _) = test
            .batches(200, &dev)
            .unwrap()
            .next()
            .unwrap()
            .map(|b| (b.images, b.labels))
            .unwrap();
        let a = model
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = reloaded
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let bits_of = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits_of(&a),
            bits_of(&b),
            "fake-quant model vs reloaded low-bit checkpoint"
        );
    }
}
