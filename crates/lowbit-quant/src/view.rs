//! ndarray entry points: the same kernels on array views (copied to standard layout when the
//! view is not contiguous).

use ndarray::{ArrayD, ArrayViewD};

use crate::engine::Scales;
use crate::error::Result;
use crate::spec::QuantSpec;
use crate::tensor::QuantizedTensor;

impl QuantSpec {
    /// [`fake_quantize`](Self::fake_quantize) on an ndarray view; returns a new array.
    pub fn fake_quantize_view(&self, x: ArrayViewD<'_, f32>) -> Result<ArrayD<f32>> {
        let shape = x.shape().to_vec();
        let std = x.as_standard_layout();
        let src = std
            .as_slice()
            .map(<[f32]>::to_vec)
            .unwrap_or_else(|| std.iter().copied().collect());
        let mut dst = vec![0.0f32; src.len()];
        self.fake_quantize(&src, &shape, &mut dst)?;
        ArrayD::from_shape_vec(shape, dst)
            .map_err(|e| crate::error::invalid("shape", e.to_string()))
    }

    /// [`compute_scales`](Self::compute_scales) on an ndarray view.
    pub fn compute_scales_view(&self, x: ArrayViewD<'_, f32>) -> Result<Scales> {
        let shape = x.shape().to_vec();
        let src: Vec<f32> = x.as_standard_layout().iter().copied().collect();
        self.compute_scales(&src, &shape)
    }

    /// [`quantize`](Self::quantize) on an ndarray view.
    pub fn quantize_view(&self, x: ArrayViewD<'_, f32>) -> Result<QuantizedTensor> {
        let shape = x.shape().to_vec();
        let src: Vec<f32> = x.as_standard_layout().iter().copied().collect();
        self.quantize(&src, &shape)
    }
}
