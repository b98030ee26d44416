//! Slice kernels: the scalar lane algorithm and its SIMD twins, chosen at run time.
//!
//! Every kernel computes, element by element, exactly what the scalar reference
//! (`MiniFloat::encode_with` / `IntFormat::encode_with` then `decode`) computes; `lane.rs` is
//! the same algorithm written once per element in plain Rust (the [`Isa::Scalar`] level), and
//! `avx2.rs` / `avx512.rs` run it on 8 / 16 lanes; `stochastic.rs` runs stochastic rounding,
//! whose random words it generates in registers; `decode.rs` decodes byte codes by arithmetic
//! (the scalar twin of `avx2/decode.rs`, `avx512/decode.rs`). Tests force every level and
//! compare them with the reference bit for bit.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub(crate) mod decode;
pub(crate) mod lane;
pub(crate) mod stochastic;

use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::{FormatError, Result};

/// An instruction-set level a kernel can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isa {
    /// Portable Rust, one element at a time (the lane algorithm's scalar twin).
    Scalar,
    /// x86-64 AVX2 (8 lanes).
    Avx2,
    /// x86-64 AVX-512 F/BW/VL/DQ (16 lanes; DQ for the 64-bit multiplies of the stochastic
    /// rounding generator: every AVX-512 CPU but the Xeon Phi has it).
    Avx512,
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        })
    }
}

impl Isa {
    /// Every level, slowest first.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    /// Whether this CPU can run the level (checked at run time, never by `target-cpu`).
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The levels this CPU has, slowest first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// The best level this CPU has, detected once and cached. The environment variable
    /// `LOWBIT_ISA` (`scalar`, `avx2`, `avx512`) caps it, for benchmarks and debugging.
    pub fn detect() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let best = Isa::available().into_iter().max().unwrap_or(Isa::Scalar);
            match std::env::var("LOWBIT_ISA")
                .ok()
                .and_then(|v| v.parse::<Isa>().ok())
            {
                Some(cap) if cap.is_available() => cap.min(best),
                _ => best,
            }
        })
    }

    /// `Ok(self)` if available, otherwise an error listing what is.
    pub fn require(self) -> Result<Isa> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(FormatError::IsaUnavailable {
                isa: self.to_string(),
                available: Isa::available()
                    .iter()
                    .map(Isa::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }
}

impl std::str::FromStr for Isa {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Ok(Isa::Scalar),
            "avx2" => Ok(Isa::Avx2),
            "avx512" | "avx-512" => Ok(Isa::Avx512),
            other => Err(FormatError::IsaUnavailable {
                isa: other.to_string(),
                available: "scalar, avx2, avx512".into(),
            }),
        }
    }
}
