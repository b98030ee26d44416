//! The CUDA path (feature `cuda`): runs the [`crate::kernel_plan`] of an op with cudarc on
//! candle's CUDA device. The kernels of `kernels/fake_quant.cu` are compiled to PTX by
//! `build.rs` and embedded here.

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cuda_backend::WrapErr;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::{CudaDevice, CudaStorage, DType, Layout};

use crate::kernel_plan::{
    Arg, Buffer, DevFormat, DevGroups, DevScale, Job, KernelDType, THREADS, plan_with,
};

/// The PTX of `kernels/fake_quant.cu`.
pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fake_quant.ptx"));
const MODULE: &str = "lowbit_fake_quant";

/// Kernel development knobs, read once (docs/cuda.md, "Tuning the kernels"): the PTX to load
/// instead of the embedded one (`LOWBIT_CUDA_PTX`, a file compiled from this build's
/// `kernels/` with other `LB_*` macros: the same entry points and parameters), and a grid
/// limit for every launch (`LOWBIT_CUDA_MAX_BLOCKS`). Neither changes a result.
struct Knobs {
    module: &'static str,
    ptx: std::borrow::Cow<'static, str>,
    options: crate::kernel_plan::PlanOptions,
}

fn knobs() -> candle_core::Result<&'static Knobs> {
    static KNOBS: std::sync::OnceLock<std::result::Result<Knobs, String>> =
        std::sync::OnceLock::new();
    let k = KNOBS.get_or_init(|| {
        let mut options = crate::kernel_plan::PlanOptions::default();
        if let Some(v) = std::env::var_os("LOWBIT_CUDA_MAX_BLOCKS") {
            let v = v.to_string_lossy();
            options.max_blocks = v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|b| *b >= 1)
                .ok_or_else(|| {
                    format!("LOWBIT_CUDA_MAX_BLOCKS={v:?}: expected a block count ≥ 1")
                })?;
        }
        match std::env::var_os("LOWBIT_CUDA_PTX") {
            Some(path) => {
                let ptx = std::fs::read_to_string(&path).map_err(|e| {
                    format!("LOWBIT_CUDA_PTX={}: cannot read it: {e}", path.display())
                })?;
                Ok(Knobs {
                    module: "lowbit_fake_quant_override",
                    ptx: ptx.into(),
                    options,
                })
            }
            None => Ok(Knobs {
                module: MODULE,
                ptx: PTX.into(),
                options,
            }),
        }
    });
    k.as_ref().map_err(|e| candle_core::Error::Msg(e.clone()))
}

// SAFETY: plain `#[repr(C)]` data with the layout of the C struct `LbFormat`.
unsafe impl DeviceRepr for DevFormat {}
// SAFETY: plain `#[repr(C)]` data with the layout of the C struct `LbScale`.
unsafe impl DeviceRepr for DevScale {}
// SAFETY: plain `#[repr(C)]` data with the layout of the C struct `LbGroups`.
unsafe impl DeviceRepr for DevGroups {}

/// Runs `job` on a CUDA tensor of dtype f32, f16 or bf16 (any layout); returns a contiguous
/// tensor of the same dtype and shape.
pub(crate) fn run(
    job: &Job<'_>,
    storage: &CudaStorage,
    layout: &Layout,
) -> candle_core::Result<CudaStorage> {
    let dev = storage.device().clone();
    if !layout.is_contiguous() {
        let mut dst = dev.zeros_impl(layout.shape(), storage.dtype())?;
        storage.copy_strided_src(&mut dst, 0, layout)?;
        let l = Layout::contiguous(layout.shape().clone());
        return run(job, &dst, &l);
    }
    let Some((a, b)) = layout.contiguous_offsets() else {
        candle_core::bail!("lowbit cuda: internal: contiguous layout without offsets");
    };
    let dims = layout.dims();
    let options = knobs()?.options;
    let plan_for = |dtype| {
        plan_with(job, dims, a, dtype, options).map_err(|e| candle_core::Error::Msg(e.to_string()))
    };
    match storage.dtype() {
        DType::F32 => {
            let s = storage.as_cuda_slice::<f32>()?.slice(a..b);
            let out = execute(&plan_for(KernelDType::F32)?, &dev, &s)?;
            Ok(CudaStorage::wrap_cuda_slice(out, dev))
        }
        DType::F16 => {
            let s = storage.as_cuda_slice::<half::f16>()?.slice(a..b);
            let out = execute(&plan_for(KernelDType::F16)?, &dev, &s)?;
            Ok(CudaStorage::wrap_cuda_slice(out, dev))
        }
        DType::BF16 => {
            let s = storage.as_cuda_slice::<half::bf16>()?.slice(a..b);
            let out = execute(&plan_for(KernelDType::Bf16)?, &dev, &s)?;
            Ok(CudaStorage::wrap_cuda_slice(out, dev))
        }
        other => candle_core::bail!("fake-quant supports f32, f16 and bf16 tensors, not {other:?}"),
    }
}

/// A temporary buffer of a plan on the device.
enum Temp {
    /// Input or output: held elsewhere.
    None,
    U32(CudaSlice<u32>),
    F32(CudaSlice<f32>),
}

/// How a launch borrows a temporary: shared, or uniquely where the kernel writes it.
enum Slot<'a> {
    Shared(&'a Temp),
    Unique(Option<&'a mut Temp>),
}

/// Runs `plan` with `x` as its input; returns the output.
fn execute<T: DeviceRepr + candle_core::cuda_backend::CudaDType>(
    plan: &crate::kernel_plan::Plan,
    dev: &CudaDevice,
    x: &CudaView<'_, T>,
) -> candle_core::Result<CudaSlice<T>> {
    // SAFETY: every element is written by the plan's launches before it is read.
    let mut y = unsafe { dev.alloc::<T>(plan.n.max(1))? };
    let mut temps = Vec::with_capacity(plan.buffers.len());
    for b in &plan.buffers {
        temps.push(match b {
            Buffer::Input | Buffer::Output => Temp::None,
            Buffer::U32Zeros(len) => Temp::U32(dev.alloc_zeros::<u32>(*len)?),
            Buffer::F32Zeros(len) => Temp::F32(dev.alloc_zeros::<f32>(*len)?),
            Buffer::F32Values(v) => Temp::F32(dev.clone_htod(v)?),
        });
    }
    for l in &plan.launches {
        let k = knobs()?;
        let func = dev.get_or_load_custom_func(&l.kernel, k.module, &k.ptx)?;
        let written: Vec<usize> = l
            .args
            .iter()
            .filter_map(|a| match a {
                Arg::Buffer {
                    index,
                    written: true,
                } => Some(*index),
                _ => None,
            })
            .collect();
        let mut slots: Vec<Slot<'_>> = temps
            .iter_mut()
            .enumerate()
            .map(|(i, t)| {
                if written.contains(&i) {
                    Slot::Unique(Some(t))
                } else {
                    Slot::Shared(&*t)
                }
            })
            .collect();
        let mut y_slot = Some(&mut y);
        let mut b = func.builder();
        for a in &l.args {
            match a {
                Arg::Buffer { index, .. } => match plan.buffers.get(*index) {
                    Some(Buffer::Input) => {
                        b.arg(x);
                    }
                    Some(Buffer::Output) => {
                        let Some(y) = y_slot.take() else {
                            candle_core::bail!("lowbit cuda: internal: output passed twice");
                        };
                        b.arg(y);
                    }
                    _ => match slots.get_mut(*index) {
                        Some(Slot::Shared(t)) => {
                            let t: &Temp = t;
                            match t {
                                Temp::U32(s) => {
                                    b.arg(s);
                                }
                                Temp::F32(s) => {
                                    b.arg(s);
                                }
                                Temp::None => candle_core::bail!(
                                    "lowbit cuda: internal: buffer {index} of {} is not a temporary",
                                    l.kernel
                                ),
                            }
                        }
                        Some(Slot::Unique(t)) => match t.take() {
                            Some(Temp::U32(s)) => {
                                b.arg(s);
                            }
                            Some(Temp::F32(s)) => {
                                b.arg(s);
                            }
                            _ => candle_core::bail!(
                                "lowbit cuda: internal: buffer {index} of {} written twice",
                                l.kernel
                            ),
                        },
                        _ => candle_core::bail!(
                            "lowbit cuda: internal: no buffer {index} for {}",
                            l.kernel
                        ),
                    },
                },
                Arg::I32(v) => {
                    b.arg(v);
                }
                Arg::I64(v) => {
                    b.arg(v);
                }
                Arg::Format(f) => {
                    b.arg(f);
                }
                Arg::Scale(s) => {
                    b.arg(s);
                }
                Arg::Groups(g) => {
                    b.arg(g);
                }
            }
        }
        let cfg = LaunchConfig {
            grid_dim: (l.blocks, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the plan passes the arguments in the kernel's parameter order and types
        // (kernel_plan mirrors the signatures of kernels/fake_quant.cu; the host emulator's
        // tests check every launch's argument kinds and sizes against them), with buffers of
        // the sizes the kernel indexes.
        unsafe { b.launch(cfg) }.w()?;
    }
    Ok(y)
}
