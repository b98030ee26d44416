//! With the `cuda` feature, compiles `kernels/*.cu` to PTX with nvcc (embedded in the library
//! with `include_str!`; nothing is compiled at run time). Without it, does nothing.
//!
//! nvcc is `$NVCC`, else `$CUDA_HOME/bin/nvcc`, else `nvcc` on the PATH. The virtual
//! architecture is `compute_$CUDA_COMPUTE_CAP` (default 80, the oldest the kernels support:
//! they use `__reduce_max_sync`). PTX of an older architecture runs on newer GPUs (the driver
//! compiles it when the module loads).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels/fake_quant.cu");
    println!("cargo:rerun-if-changed=kernels/codec.cuh");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    if let Err(e) = compile() {
        println!("cargo:warning=lowbit-nn: {e}");
        std::process::exit(1);
    }
}

fn compile() -> Result<(), String> {
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?);
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| match std::env::var("CUDA_HOME") {
        Ok(h) => format!("{h}/bin/nvcc"),
        Err(_) => "nvcc".into(),
    });
    let cap: u32 = match std::env::var("CUDA_COMPUTE_CAP") {
        Ok(c) => c
            .trim()
            .parse()
            .map_err(|_| format!("CUDA_COMPUTE_CAP={c:?} is not a number like 80 or 90"))?,
        Err(_) => 80,
    };
    if cap < 80 {
        return Err(format!(
            "CUDA_COMPUTE_CAP={cap}: the kernels need compute capability 8.0 or newer"
        ));
    }
    let ptx = out.join("fake_quant.ptx");
    // No contraction of a*b+c into FMA, IEEE division and square root, denormals kept:
    // the CPU's f32 arithmetic, bit for bit.
    let status = Command::new(&nvcc)
        .args([
            "--ptx",
            &format!("-arch=compute_{cap}"),
            "-O3",
            "--fmad=false",
            "-prec-div=true",
            "-prec-sqrt=true",
            "-ftz=false",
            "-std=c++17",
            "-Ikernels",
            "kernels/fake_quant.cu",
            "-o",
        ])
        .arg(&ptx)
        .status()
        .map_err(|e| {
            format!("cannot run nvcc ({nvcc}): {e}; set CUDA_HOME or NVCC (see docs/cuda.md)")
        })?;
    if !status.success() {
        return Err(format!("nvcc failed on kernels/fake_quant.cu ({status})"));
    }
    Ok(())
}
