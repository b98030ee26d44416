//! The fake-quant Candle op and its straight-through-estimator backward.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use lowbit_formats::Overflow;
use lowbit_quant::QuantSpec;
use serde::{Deserialize, Serialize};

/// How gradients pass through a quantizer in backprop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ste {
    /// Clipped straight-through estimator (TensorRT's quantizer): the gradient passes where
    /// the input lies inside the representable range of its group and is zero where the
    /// quantizer clamped it.
    #[default]
    Clipped,
    /// Plain straight-through estimator: the gradient passes everywhere.
    Plain,
}

/// Frozen scales a fake-quant op applies instead of computing them from its input.
pub type FrozenScales = std::sync::Arc<lowbit_quant::Scales>;

/// Candle op: fake-quantizes a tensor with a [`QuantSpec`], with dynamic scales (from the
/// tensor itself) or frozen ones. `f16`/`bf16` inputs are quantized through `f32` and return
/// in their own dtype. The backward pass is the [`Ste`].
#[derive(Clone, Debug)]
pub struct FakeQuant {
    /// The spec.
    pub spec: QuantSpec,
    /// Frozen scales, or `None` for dynamic ones.
    pub scales: Option<FrozenScales>,
    /// Gradient rule.
    pub ste: Ste,
    /// If set, the incoming gradient is itself fake-quantized with this spec (QAT with a
    /// backward format, e.g. E5M2 gradients).
    pub grad_spec: Option<QuantSpec>,
}

/// Reads an f32 copy of a (possibly strided) CPU tensor of dtype f32, f16 or bf16.
pub(crate) fn cpu_f32(storage: &CpuStorage, layout: &Layout) -> candle_core::Result<Vec<f32>> {
    fn gather<T: Copy>(v: &[T], layout: &Layout, f: impl Fn(T) -> f32) -> Vec<f32> {
        match layout.contiguous_offsets() {
            Some((a, b)) => v[a..b].iter().map(|&x| f(x)).collect(),
            None => strided_offsets(layout)
                .into_iter()
                .map(|i| f(v[i]))
                .collect(),
        }
    }
    Ok(match storage {
        CpuStorage::F32(v) => gather(v, layout, |x| x),
        CpuStorage::F16(v) => gather(v, layout, |x| x.to_f32()),
        CpuStorage::BF16(v) => gather(v, layout, |x| x.to_f32()),
        other => candle_core::bail!(
            "fake-quant supports f32, f16 and bf16 tensors, not {:?}",
            other.dtype()
        ),
    })
}

/// Storage offsets of every element of a strided layout, in row-major order.
fn strided_offsets(layout: &Layout) -> Vec<usize> {
    let dims = layout.dims();
    let stride = layout.stride();
    let n: usize = dims.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..n {
        out.push(layout.start_offset() + idx.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>());
        for d in (0..dims.len()).rev() {
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// The `cuda_fwd` of every op here: runs `job` on the device, errors prefixed by `what`.
#[cfg(feature = "cuda")]
pub(crate) fn cuda_fwd(
    job: &crate::kernel_plan::Job<'_>,
    storage: &candle_core::CudaStorage,
    layout: &Layout,
    what: impl Fn() -> String,
) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
    let out = crate::cuda::run(job, storage, layout)
        .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", what())))?;
    Ok((out, layout.shape().clone()))
}

pub(crate) fn to_storage(v: Vec<f32>, dtype: DType) -> CpuStorage {
    match dtype {
        DType::F16 => CpuStorage::F16(v.into_iter().map(half::f16::from_f32).collect()),
        DType::BF16 => CpuStorage::BF16(v.into_iter().map(half::bf16::from_f32).collect()),
        _ => CpuStorage::F32(v),
    }
}

impl FakeQuant {
    fn run(&self, x: &[f32], dims: &[usize]) -> candle_core::Result<Vec<f32>> {
        let mut out = vec![0f32; x.len()];
        let r = match &self.scales {
            Some(s) => self.spec.fake_quantize_with_scales(x, dims, s, &mut out),
            None => self.spec.fake_quantize(x, dims, &mut out),
        };
        r.map_err(|e| candle_core::Error::Msg(format!("fake-quant {}: {e}", self.spec)))?;
        Ok(out)
    }

    /// 1 where `x` lies inside the representable range of its group, 0 where the quantizer
    /// clamps it (and for NaN).
    ///
    /// The range of every element's group comes from the quantizer itself: the group's scales
    /// (frozen, or computed from `x` as the forward pass did) applied to ±`f32::MAX` under
    /// saturation give exactly `±max·scale` (or the asymmetric ends), element by element.
    fn mask(&self, x: &[f32], dims: &[usize]) -> candle_core::Result<Vec<f32>> {
        let err = |e: lowbit_quant::QuantError| {
            candle_core::Error::Msg(format!("clipped STE mask {}: {e}", self.spec))
        };
        let scales = match &self.scales {
            Some(s) => (**s).clone(),
            None => self.spec.compute_scales(x, dims).map_err(err)?,
        };
        let sat = self
            .spec
            .to_builder()
            .overflow(Overflow::Saturate)
            .build()
            .map_err(err)?;
        let edge = |v: f32| -> candle_core::Result<Vec<f32>> {
            let src = vec![v; x.len()];
            let mut out = vec![0f32; x.len()];
            sat.fake_quantize_with_scales(&src, dims, &scales, &mut out)
                .map_err(err)?;
            Ok(out)
        };
        let hi = edge(f32::MAX)?;
        let lo = edge(f32::MIN)?;
        Ok(x.iter()
            .zip(hi.iter().zip(&lo))
            .map(|(&v, (&h, &l))| f32::from(v >= l && v <= h))
            .collect())
    }
}

impl CustomOp1 for FakeQuant {
    fn name(&self) -> &'static str {
        "lowbit-fake-quant"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_f32(storage, layout)?;
        let out = self.run(&x, layout.dims())?;
        Ok((to_storage(out, storage.dtype()), layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda_fwd(
            &crate::kernel_plan::Job::Spec {
                spec: &self.spec,
                frozen: self.scales.as_deref(),
                output: crate::kernel_plan::Output::Fake,
            },
            storage,
            layout,
            || format!("fake-quant {}", self.spec),
        )
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = match self.grad_spec {
            Some(g) => grad_res.apply_op1_no_bwd(&FakeQuant {
                spec: g,
                scales: None,
                ste: Ste::Plain,
                grad_spec: None,
            })?,
            None => grad_res.clone(),
        };
        match self.ste {
            Ste::Plain => Ok(Some(grad)),
            Ste::Clipped => {
                let mask = arg.apply_op1_no_bwd(&ClipMask(self.clone()))?;
                Ok(Some(grad.mul(&mask.to_dtype(grad.dtype())?)?))
            }
        }
    }
}

/// The clipped-STE mask of a [`FakeQuant`]: 1 where the input is inside its group's range.
struct ClipMask(FakeQuant);

impl CustomOp1 for ClipMask {
    fn name(&self) -> &'static str {
        "lowbit-clip-mask"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_f32(storage, layout)?;
        let m = self.0.mask(&x, layout.dims())?;
        Ok((to_storage(m, storage.dtype()), layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda_fwd(
            &crate::kernel_plan::Job::Spec {
                spec: &self.0.spec,
                frozen: self.0.scales.as_deref(),
                output: crate::kernel_plan::Output::Mask,
            },
            storage,
            layout,
            || format!("clipped STE mask {}", self.0.spec),
        )
    }
}

/// Candle op: the bare element cast `decode(encode(x))` of any
/// [`Format`](lowbit_formats::Format) under a [`Conversion`](lowbit_formats::Conversion), with
/// no scale (ml_dtypes' `x.astype(fmt).astype(float32)`, or the saturating/stochastic
/// variants). Stochastic rounding numbers the elements from 0 in
/// row-major order. No gradient (use [`FakeQuant`] for training).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use lowbit_formats::{Conversion, Format};
/// use lowbit_nn::ElementQuant;
/// let x = Tensor::new(&[0.3f32, 500.0, -1e-9], &Device::Cpu)?;
/// let op = ElementQuant { format: Format::E4M3FN, conversion: Conversion::SATURATE };
/// let q = x.apply_op1_no_bwd(&op)?.to_vec1::<f32>()?;
/// assert_eq!(q, vec![0.3125, 448.0, -0.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElementQuant {
    /// The element format (any width).
    pub format: lowbit_formats::Format,
    /// Rounding and overflow.
    pub conversion: lowbit_formats::Conversion,
}

impl CustomOp1 for ElementQuant {
    fn name(&self) -> &'static str {
        "lowbit-element-quant"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_f32(storage, layout)?;
        let mut out = vec![0f32; x.len()];
        lowbit_formats::Codec::new(self.format, self.conversion)
            .quantize_slice(&x, &mut out)
            .map_err(|e| candle_core::Error::Msg(format!("element cast {}: {e}", self.format)))?;
        Ok((to_storage(out, storage.dtype()), layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda_fwd(
            &crate::kernel_plan::Job::Element {
                format: self.format,
                conv: self.conversion,
            },
            storage,
            layout,
            || format!("element cast {}", self.format),
        )
    }
}
