//! [`Rotation`]: an orthogonal block-Hadamard rotation of a linear layer's reduction axis,
//! applied to its input and its weight before they are quantized (or of a matmul's
//! contraction axis, applied to both operands: `(A R)(Rᵀ B) = A B`) (QuaRot / QuIP#-style
//! incoherence processing; with random signs, the randomized Hadamard transform of MXFP4 and
//! NVFP4 training recipes). Since `R Rᵀ = I`, `(x R)(W R)ᵀ = x Wᵀ`: in FP32 the layer is
//! unchanged up to rounding, and what is quantized are the rotated tensors, whose outliers
//! the rotation spreads over each block.
//!
//! `R` is block-diagonal: blocks of `size` (a power of two) along the reduction axis, each
//! `D · H / √size` with `H` Sylvester's Hadamard matrix (`H[i][j] = (−1)^popcount(i & j)`) and
//! `D` a diagonal of signs: all `+1`, or `±1` from `stochastic_bits(seed, i)` (its top bit)
//! when a seed is given.

use candle_core::{Device, Tensor};
use lowbit_formats::stochastic_bits;
use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};

/// A block-Hadamard rotation of the reduction axis (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// Block size: a power of two from 2 to 1024, dividing the layer's input width.
    pub size: usize,
    /// Seed of the random signs (`None`: no signs, the plain Hadamard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Rotation {
    /// Checks the block size.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(2..=1024).contains(&self.size) || !self.size.is_power_of_two() {
            return Err(format!(
                "rotation size {} must be a power of two from 2 to 1024",
                self.size
            ));
        }
        Ok(())
    }

    /// The `size × size` block `D · H / √size`, row-major.
    pub fn block(&self) -> Vec<f32> {
        let b = self.size;
        let norm = 1.0 / (b as f64).sqrt();
        let mut m = vec![0f32; b * b];
        for i in 0..b {
            let sign = match self.seed {
                Some(s) if stochastic_bits(s, i as u64) >> 31 == 1 => -1.0,
                _ => 1.0,
            };
            for j in 0..b {
                let h = if (i & j).count_ones() % 2 == 0 {
                    1.0
                } else {
                    -1.0
                };
                m[i * b + j] = (sign * h * norm) as f32;
            }
        }
        m
    }

    /// `x R` along the last axis of `x` (its width must be a multiple of the block size).
    /// Builds the matrix for this one call; a layer keeps a [`Rotator`] instead.
    pub fn rotate(&self, x: &Tensor) -> Result<Tensor> {
        Rotator::new(*self)?.rotate(x)
    }

    /// `x Rᵀ`: the inverse of [`rotate`](Self::rotate).
    pub fn unrotate(&self, x: &Tensor) -> Result<Tensor> {
        Rotator::new(*self)?.unrotate(x)
    }
}

impl std::fmt::Display for Rotation {
    /// `hadamard 32`, or `hadamard 32 (signs seed 7)`.
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(out, "hadamard {}", self.size)?;
        if let Some(seed) = self.seed {
            write!(out, " (signs seed {seed})")?;
        }
        Ok(())
    }
}

/// A [`Rotation`] with its matrix and transpose built once (f32, on the CPU; moved to a
/// tensor's dtype and device when applied).
#[derive(Clone, Debug)]
pub struct Rotator {
    rotation: Rotation,
    m: Tensor,
    mt: Tensor,
}

impl Rotator {
    /// Builds the block matrix of `rotation`.
    pub fn new(rotation: Rotation) -> Result<Rotator> {
        let b = rotation.size;
        let m = Tensor::from_vec(rotation.block(), (b, b), &Device::Cpu)?;
        let mt = m.t()?.contiguous()?;
        Ok(Rotator { rotation, m, mt })
    }

    /// The rotation.
    pub fn rotation(&self) -> Rotation {
        self.rotation
    }

    /// `x R` along the last axis of `x`.
    pub fn rotate(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, &self.m)
    }

    /// `x Rᵀ`.
    pub fn unrotate(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, &self.mt)
    }

    fn apply(&self, x: &Tensor, m: &Tensor) -> Result<Tensor> {
        let b = self.rotation.size;
        let width = x.dims().last().copied().unwrap_or(1);
        if width % b != 0 {
            return Err(NnError::Kernel(format!(
                "a Hadamard rotation of size {b} needs a width divisible by {b}; the tensor is {:?}",
                x.dims()
            )));
        }
        let m = m.to_dtype(x.dtype())?.to_device(x.device())?;
        let dims = x.dims().to_vec();
        let rows = x.elem_count() / b;
        let y = x.contiguous()?.reshape((rows, b))?.matmul(&m)?;
        Ok(y.reshape(dims)?)
    }
}
