//! Power-of-two scales as hardware shifts.

use serde::{Deserialize, Serialize};

use crate::engine::Scales;
use crate::error::{QuantError, Result};
use crate::spec::{QuantSpec, exponent_of};

/// One power-of-two scale `2^−k` described for hardware: multiplying by it is `x >> k`
/// (or `x << −k` when `k < 0`). Serializes to JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShiftReport {
    /// The scale.
    pub scale: f32,
    /// `k` with `scale = 2^−k`.
    pub k: i32,
    /// `"2^(-9)"`.
    pub power: String,
    /// `"x >> 9"` (or `"x << 3"`, `"x"` for k = 0).
    pub shift: String,
    /// Bit width of the element codes.
    pub bit_width: u32,
}

impl ShiftReport {
    /// The report of one scale; errors when it is not a power of two.
    pub fn new(scale: f32, bit_width: u32, index: usize) -> Result<ShiftReport> {
        let b = scale.to_bits();
        let pow2 = scale > 0.0
            && scale.is_finite()
            && if b >> 23 == 0 {
                b.is_power_of_two()
            } else {
                b & 0x007F_FFFF == 0
            };
        if !pow2 {
            return Err(QuantError::NotPowerOfTwo { scale, index });
        }
        let k = -exponent_of(scale);
        let shift = match k {
            0 => "x".to_string(),
            k if k > 0 => format!("x >> {k}"),
            k => format!("x << {}", -k),
        };
        Ok(ShiftReport {
            scale,
            k,
            power: format!("2^({})", -k),
            shift,
            bit_width,
        })
    }
}

/// The shift report of every effective scale of `scales` (stored scale × implied element unit;
/// the NVFP4 tensor scale is not a power of two and errors).
pub fn shift_report(spec: &QuantSpec, scales: &Scales) -> Result<Vec<ShiftReport>> {
    (0..scales.values.len())
        .map(|i| {
            ShiftReport::new(
                scales.effective(spec, i).unwrap_or(f32::NAN),
                spec.format().bits(),
                i,
            )
        })
        .collect()
}
