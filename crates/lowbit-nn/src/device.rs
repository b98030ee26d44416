//! Devices by name, as the CLI's `--device` and the examples take them.

use candle_core::Device;

use crate::error::{NnError, Result};

/// The device named `name`: `cpu`, `cuda` (GPU 0) or `cuda:N`. A CUDA device needs a build with
/// the `cuda` feature and a driver; otherwise the error says so (and where to read more).
///
/// ```
/// let cpu = lowbit_nn::parse_device("cpu")?;
/// assert!(cpu.is_cpu());
/// assert!(lowbit_nn::parse_device("tpu").is_err());
/// # Ok::<(), lowbit_nn::NnError>(())
/// ```
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim();
    let err = |message: String| NnError::Device {
        name: name.to_string(),
        message,
    };
    match name {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| err("expected cuda:N with N a GPU number".into()))?,
                None => 0,
            };
            if !cfg!(feature = "cuda") {
                return Err(err(
                    "this build has no GPU path: build with `--features cuda` (docs/cuda.md)"
                        .into(),
                ));
            }
            Device::new_cuda(ordinal).map_err(|e| {
                // Candle wraps errors with a backtrace when RUST_BACKTRACE is set: the cause
                // alone reads better.
                let e = match e {
                    candle_core::Error::WithBacktrace { inner, .. } => *inner,
                    e => e,
                };
                err(format!(
                    "cannot open GPU {ordinal}: {e} (needs an NVIDIA driver and a GPU; docs/cuda.md)"
                ))
            })
        }
        _ => Err(err("expected cpu, cuda or cuda:N".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_errors() {
        assert!(matches!(parse_device(" cpu "), Ok(Device::Cpu)));
        let e = parse_device("cuda:x").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("device `cuda:x`: expected cuda:N with N a GPU number")
        );
        let e = parse_device("gpu").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("device `gpu`: expected cpu, cuda or cuda:N")
        );
        #[cfg(not(feature = "cuda"))]
        {
            let e = parse_device("cuda:1").err().map(|e| e.to_string());
            assert_eq!(
                e.as_deref(),
                Some(
                    "device `cuda:1`: this build has no GPU path: build with `--features cuda` (docs/cuda.md)"
                )
            );
        }
    }
}
