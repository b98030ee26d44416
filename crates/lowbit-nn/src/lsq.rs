//! Learned step size (LSQ, Esser et al. 2020): the fake-quant op whose scale is a trainable
//! tensor, with gradients for the input and for the scale through the straight-through
//! estimator.
//!
//! Forward: `y = Q(x · (1/s)) · s` with the spec's element format, `s` one scale per group
//! (per tensor, or per channel along axis 0); the same engine as [`crate::FakeQuant`] with
//! those scales frozen. Backward, with `v = x/s` and the element grid `[lo, hi]`:
//!
//! - `∂y/∂x = 1` where `lo ≤ v ≤ hi`, else 0 (clipped STE);
//! - `∂y/∂s = Q(v) − v` inside, `lo` or `hi` outside, summed over the group and multiplied
//!   by LSQ's gradient scale `1/√(N · hi)` (`N` elements per group).

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use lowbit_formats::{Conversion, Format, Overflow};
use lowbit_quant::{Granularity, QuantSpec, ScaleKind, Scales};

use crate::fake_quant::cpu_f32;

/// The LSQ fake-quant op: `x.apply_op2(&scale, LsqFakeQuant { spec })`.
#[derive(Clone, Copy, Debug)]
pub struct LsqFakeQuant {
    /// The spec (f32 scales, symmetric, per tensor or per channel along axis 0).
    pub spec: QuantSpec,
}

impl LsqFakeQuant {
    /// Checks that `spec` can have a learned scale.
    pub fn check(spec: &QuantSpec) -> std::result::Result<(), String> {
        if spec.scale() != ScaleKind::F32 || spec.is_asymmetric() {
            return Err(format!(
                "learned scales need a symmetric spec with f32 scales, not `{spec}`"
            ));
        }
        match spec.granularity() {
            Granularity::PerTensor | Granularity::PerChannel { axis: 0 } => Ok(()),
            g => Err(format!(
                "learned scales support per-tensor and per-channel (axis 0) granularity, not {g}"
            )),
        }
    }

    /// Groups (`n_groups`, elements per group) of a tensor of `dims`.
    fn groups(&self, dims: &[usize]) -> (usize, usize) {
        let n: usize = dims.iter().product();
        match self.spec.granularity() {
            Granularity::PerTensor => (1, n),
            _ => {
                let c = dims.first().copied().unwrap_or(1).max(1);
                (c, n / c)
            }
        }
    }

    /// The element grid `[lo, hi]` in units of the scale.
    fn bounds(&self) -> (f32, f32) {
        match self.spec.format() {
            Format::Int(i) => (i.min_value() as f32, i.max_value() as f32),
            f => (-f.max_value(), f.max_value()),
        }
    }

    /// The learned scale values `s` as the frozen scales of a tensor of `dims`; an error when
    /// their number is not the tensor's number of groups.
    fn scales(&self, dims: &[usize], s: Vec<f32>) -> candle_core::Result<Scales> {
        let (groups, _) = self.groups(dims);
        if s.len() != groups {
            candle_core::bail!(
                "learned scale of {} values for {groups} groups of a tensor of shape {dims:?}",
                s.len()
            );
        }
        let shape = match self.spec.granularity() {
            Granularity::PerTensor => vec![1],
            _ => vec![dims.first().copied().unwrap_or(1)],
        };
        Ok(Scales {
            shape,
            values: s,
            zero_points: None,
            tensor_scale: None,
        })
    }
}

impl CustomOp2 for LsqFakeQuant {
    fn name(&self) -> &'static str {
        "lowbit-lsq-fake-quant"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s1, l1)?;
        let dims = l1.dims();
        let scales = self.scales(dims, cpu_f32(s2, l2)?)?;
        let mut out = vec![0f32; x.len()];
        self.spec
            .fake_quantize_with_scales(&x, dims, &scales, &mut out)
            .map_err(|e| candle_core::Error::Msg(format!("LSQ fake-quant {}: {e}", self.spec)))?;
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    /// The forward on the GPU: the learned scales (one per group, a few values) read back to
    /// the host, then the fake-quant kernels with those scales frozen — the same plan and bits
    /// as [`crate::FakeQuant`] with static scales (docs/cuda.md). The output keeps the input's
    /// dtype.
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let dims = l1.dims();
        let scales = self.scales(dims, cpu_f32(&s2.to_cpu_storage()?, l2)?)?;
        let job = crate::kernel_plan::Job::Spec {
            spec: &self.spec,
            frozen: Some(&scales),
            output: crate::kernel_plan::Output::Fake,
        };
        crate::fake_quant::cuda_fwd(&job, s1, l1, || format!("LSQ fake-quant {}", self.spec))
    }

    fn bwd(
        &self,
        arg1: &Tensor,
        arg2: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dims = arg1.dims().to_vec();
        let x = arg1.flatten_all()?.to_vec1::<f32>()?;
        let s = arg2.flatten_all()?.to_vec1::<f32>()?;
        let g = grad_res.flatten_all()?.to_vec1::<f32>()?;
        let (groups, per) = self.groups(&dims);
        let (lo, hi) = self.bounds();
        let conv = Conversion {
            rounding: self.spec.conversion().rounding,
            overflow: Overflow::Saturate,
        };
        let format = self.spec.format();
        let grad_scale = 1.0 / ((per.max(1) as f64) * f64::from(hi)).sqrt();
        let mut dx = vec![0f32; x.len()];
        let mut ds = vec![0f64; groups];
        for k in 0..groups {
            let inv = 1.0 / s[k];
            for i in k * per..(k + 1) * per {
                let v = x[i] * inv;
                let gi = f64::from(g[i]);
                if v >= lo && v <= hi {
                    dx[i] = g[i];
                    ds[k] += gi * f64::from(format.quantize_with(v, conv, 0) - v);
                } else if v < lo {
                    ds[k] += gi * f64::from(lo);
                } else if v > hi {
                    ds[k] += gi * f64::from(hi);
                }
            }
        }
        let ds: Vec<f32> = ds.iter().map(|d| (d * grad_scale) as f32).collect();
        let dx = Tensor::from_vec(dx, dims.as_slice(), arg1.device())?;
        let ds = Tensor::from_vec(ds, arg2.dims(), arg2.device())?;
        Ok((Some(dx), Some(ds)))
    }
}
