//! [`QuantizedTensor`]: real low-bit storage (packed codes + scales + spec), its
//! dequantization and its safetensors form.

use std::collections::HashMap;
use std::path::Path;

use lowbit_formats::pack::{pack_to_vec, unpack_to_vec};
use lowbit_formats::{Codec, Format};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::engine::{Plan, Scales, for_each_block};
use crate::error::{QuantError, Result};
use crate::scale::{Param, effective};
use crate::spec::{QuantSpec, ScaleKind};

/// Metadata key holding the spec as JSON.
pub const META_SPEC: &str = "lowbit.spec";
/// Metadata key holding the tensor shape as JSON.
pub const META_SHAPE: &str = "lowbit.shape";

/// A quantized tensor: packed codes, scales (and zero points), shape and spec.
///
/// Codes are packed with [`lowbit_formats::pack`] (FP4/INT4 two per byte, element `2i` in the
/// low nibble; FP6 four in three bytes; 8-bit formats one per byte), in the tensor's row-major
/// order.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedTensor {
    spec: QuantSpec,
    shape: Vec<usize>,
    codes: Vec<u8>,
    scales: Scales,
}

impl QuantSpec {
    /// Quantizes `src` (of `shape`) to codes with dynamic scales.
    pub fn quantize(&self, src: &[f32], shape: &[usize]) -> Result<QuantizedTensor> {
        let (codes, scales) = self.encode_codes(src, shape, None)?;
        QuantizedTensor::from_parts(
            *self,
            shape.to_vec(),
            pack_to_vec(self.format().bits(), &codes)?,
            scales,
        )
    }

    /// Quantizes `src` with frozen `scales`.
    pub fn quantize_with_scales(
        &self,
        src: &[f32],
        shape: &[usize],
        scales: &Scales,
    ) -> Result<QuantizedTensor> {
        let (codes, scales) = self.encode_codes(src, shape, Some(scales))?;
        QuantizedTensor::from_parts(
            *self,
            shape.to_vec(),
            pack_to_vec(self.format().bits(), &codes)?,
            scales,
        )
    }
}

impl QuantizedTensor {
    /// Assembles a tensor from its parts, checking that they fit together.
    pub fn from_parts(
        spec: QuantSpec,
        shape: Vec<usize>,
        packed_codes: Vec<u8>,
        scales: Scales,
    ) -> Result<QuantizedTensor> {
        let plan = Plan::new(&spec, &shape)?;
        let want = lowbit_formats::pack::packed_len(spec.format().bits(), plan.n);
        if packed_codes.len() != want {
            return Err(QuantError::LengthMismatch {
                op: "QuantizedTensor::from_parts",
                what: "packed codes",
                expected: want,
                got: packed_codes.len(),
            });
        }
        if scales.shape != plan.scale_shape || scales.values.len() != plan.n_groups {
            return Err(QuantError::ScaleShape {
                op: "QuantizedTensor::from_parts",
                expected: plan.scale_shape,
                got: scales.shape,
            });
        }
        Ok(QuantizedTensor {
            spec,
            shape,
            codes: packed_codes,
            scales,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &QuantSpec {
        &self.spec
    }
    /// The tensor's shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The packed codes.
    pub fn packed_codes(&self) -> &[u8] {
        &self.codes
    }
    /// The scales.
    pub fn scales(&self) -> &Scales {
        &self.scales
    }
    /// One code per byte, in row-major order.
    pub fn codes(&self) -> Result<Vec<u8>> {
        Ok(unpack_to_vec(
            self.spec.format().bits(),
            &self.codes,
            self.len(),
        )?)
    }

    /// Storage cost per element in bits, scales included: element bits, plus per group the scale
    /// (8 for E8M0, E4M3 and power-of-two exponents, 32 for f32) and the zero point (element
    /// bits), plus 32 for NVFP4's tensor scale, divided by the element count.
    pub fn bits_per_element(&self) -> f64 {
        let n = self.len().max(1) as f64;
        let eb = self.spec.format().bits() as f64;
        let groups = self.scales.values.len() as f64;
        let sb = f64::from(self.spec.scale().storage_bits());
        let zb = if self.spec.is_asymmetric() { eb } else { 0.0 };
        let ts = if self.scales.tensor_scale.is_some() {
            32.0
        } else {
            0.0
        };
        eb + (groups * (sb + zb) + ts) / n
    }

    /// Decodes back to f32: `decode(code) · s` (or `(decode(code) − z) · s`) group by group.
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        let spec = self.spec;
        let plan = Plan::new(&spec, &self.shape)?;
        let codes = self.codes()?;
        let work_codes = plan.to_work(&codes);
        let p: Vec<Param> = self
            .scales
            .values
            .iter()
            .enumerate()
            .map(|(i, &scale)| Param {
                scale,
                zero: self
                    .scales
                    .zero_points
                    .as_ref()
                    .and_then(|z| z.get(i).copied())
                    .unwrap_or(0.0),
            })
            .collect();
        let mut params = plan.params_to_work_order(&p);
        let ts = self.scales.tensor_scale.unwrap_or(1.0);
        let codec = Codec::new(spec.format(), spec.conversion())
            .with_parallel(!plan.per_tensor || plan.n < (1 << 17));
        let format: Format = spec.format();
        let asym = spec.is_asymmetric();
        let f = |c: &[u8], d: &mut [f32], p: &mut Param, _: u64| -> Result<()> {
            if asym {
                for (d, &c) in d.iter_mut().zip(c) {
                    *d = (format.decode(c as u32) - p.zero) * p.scale;
                }
                Ok(())
            } else {
                Ok(codec.decode_scaled_slice(c, d, effective(&spec, p.scale, ts))?)
            }
        };
        let (row_len, block) = if plan.per_tensor {
            (plan.n.max(1), plan.n.max(1))
        } else {
            (plan.row_len, plan.block)
        };
        let mut out = vec![0.0f32; plan.n];
        if plan.is_direct() {
            // Work order is the tensor's order: decode straight into the output.
            for_each_block(&work_codes, &mut out, &mut params, row_len, block, &f)?;
        } else {
            let mut work = vec![0.0f32; plan.work_len()];
            for_each_block(&work_codes, &mut work, &mut params, row_len, block, &f)?;
            plan.scatter_work(&work, &mut out);
        }
        Ok(out)
    }

    /// The safetensors bytes: `codes` (U8, packed), `scales` (F8_E8M0 codes for E8M0, F8_E4M3
    /// codes for NVFP4 block scales, F32 otherwise), `zero_points` (F32) and `tensor_scale` (F32)
    /// when present; the spec and shape as JSON in the metadata.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let st = |e: safetensors::SafeTensorError| QuantError::Safetensors {
            reason: e.to_string(),
        };
        let (scale_dtype, scale_bytes): (Dtype, Vec<u8>) = match self.spec.scale() {
            ScaleKind::E8M0 { .. } => (
                Dtype::F8_E8M0,
                self.scales
                    .values
                    .iter()
                    .map(|&v| Format::E8M0.encode(v) as u8)
                    .collect(),
            ),
            ScaleKind::Nvfp4 { .. } | ScaleKind::E4M3 { .. } => (
                Dtype::F8_E4M3,
                self.scales
                    .values
                    .iter()
                    .map(|&v| Format::E4M3FN.encode(v) as u8)
                    .collect(),
            ),
            _ => (Dtype::F32, f32_bytes(&self.scales.values)),
        };
        let zp = self.scales.zero_points.as_ref().map(|z| f32_bytes(z));
        let ts = self.scales.tensor_scale.map(|t| f32_bytes(&[t]));
        let mut views = vec![
            (
                "codes".to_string(),
                TensorView::new(Dtype::U8, vec![self.codes.len()], &self.codes).map_err(st)?,
            ),
            (
                "scales".to_string(),
                TensorView::new(scale_dtype, self.scales.shape.clone(), &scale_bytes)
                    .map_err(st)?,
            ),
        ];
        if let Some(z) = &zp {
            views.push((
                "zero_points".to_string(),
                TensorView::new(Dtype::F32, self.scales.shape.clone(), z).map_err(st)?,
            ));
        }
        if let Some(t) = &ts {
            views.push((
                "tensor_scale".to_string(),
                TensorView::new(Dtype::F32, vec![1], t).map_err(st)?,
            ));
        }
        let mut meta = HashMap::new();
        meta.insert(META_SPEC.to_string(), serde_json::to_string(&self.spec)?);
        meta.insert(META_SHAPE.to_string(), serde_json::to_string(&self.shape)?);
        safetensors::serialize(views, Some(meta)).map_err(st)
    }

    /// Reads what [`to_safetensors`](Self::to_safetensors) wrote.
    pub fn from_safetensors(bytes: &[u8]) -> Result<QuantizedTensor> {
        let st = |e: safetensors::SafeTensorError| QuantError::Safetensors {
            reason: e.to_string(),
        };
        let missing = |what: &str| QuantError::Safetensors {
            reason: format!("missing {what}"),
        };
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(st)?;
        let info = meta
            .metadata()
            .as_ref()
            .ok_or_else(|| missing("metadata"))?;
        let spec: QuantSpec =
            serde_json::from_str(info.get(META_SPEC).ok_or_else(|| missing(META_SPEC))?)?;
        let shape: Vec<usize> =
            serde_json::from_str(info.get(META_SHAPE).ok_or_else(|| missing(META_SHAPE))?)?;
        let file = SafeTensors::deserialize(bytes).map_err(st)?;
        let codes = file.tensor("codes").map_err(st)?.data().to_vec();
        let sv = file.tensor("scales").map_err(st)?;
        let values: Vec<f32> = match sv.dtype() {
            Dtype::F8_E8M0 => sv
                .data()
                .iter()
                .map(|&c| Format::E8M0.decode(c as u32))
                .collect(),
            Dtype::F8_E4M3 => sv
                .data()
                .iter()
                .map(|&c| Format::E4M3FN.decode(c as u32))
                .collect(),
            Dtype::F32 => bytes_f32(sv.data()),
            other => {
                return Err(QuantError::Safetensors {
                    reason: format!(
                        "scales have dtype {other:?}; expected F8_E8M0, F8_E4M3 or F32"
                    ),
                });
            }
        };
        let zero_points = file.tensor("zero_points").ok().map(|t| bytes_f32(t.data()));
        let tensor_scale = file
            .tensor("tensor_scale")
            .ok()
            .and_then(|t| bytes_f32(t.data()).first().copied());
        let scales = Scales {
            shape: sv.shape().to_vec(),
            values,
            zero_points,
            tensor_scale,
        };
        QuantizedTensor::from_parts(spec, shape, codes, scales)
    }

    /// Writes the safetensors file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let p = path.as_ref();
        std::fs::write(p, self.to_safetensors()?).map_err(|source| QuantError::Io {
            path: p.display().to_string(),
            source,
        })
    }

    /// Reads a safetensors file written by [`save`](Self::save).
    pub fn load(path: impl AsRef<Path>) -> Result<QuantizedTensor> {
        let p = path.as_ref();
        let bytes = std::fs::read(p).map_err(|source| QuantError::Io {
            path: p.display().to_string(),
            source,
        })?;
        QuantizedTensor::from_safetensors(&bytes)
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
