//! The CUDA path (feature `cuda`): launches the kernels of `kernels/fake_quant.cu`, compiled
//! to PTX by `build.rs` and embedded here.
//!
//! The kernels mirror the CPU engine of lowbit-quant bit for bit: the same groups, the same
//! scale rules (computed from the group's statistics on the device), the same element codec
//! (`kernels/codec.cuh`, a line-by-line transcription of the Rust scalar reference), the same
//! stochastic-rounding counter (`stochastic_bits(seed, work index)`). Paths:
//!
//! - dynamic symmetric blocks of 4..128 contiguous elements (MX, NVFP4, int4 groups along the
//!   last axis): one fused kernel, one read and one write per element (NVFP4 adds one read for
//!   the tensor amax);
//! - every other dynamic spec: a reduction kernel (abs-max, or min/max for asymmetric specs),
//!   a scale kernel, then the element kernel;
//! - frozen scales: uploaded, then the element kernel.

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cuda_backend::WrapErr;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::{CudaDevice, CudaStorage, DType, Layout};
use lowbit_formats::{Conversion, Encoding, Format, Overflow, Rounding};
use lowbit_quant::{
    E4m3Rounding, E8m0Rounding, Granularity, Po2Rounding, QuantSpec, ScaleKind, Scales,
};

/// The PTX of `kernels/fake_quant.cu`.
pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fake_quant.ptx"));
const MODULE: &str = "lowbit_fake_quant";
const THREADS: u32 = 256;

/// `LbFormat` in `kernels/codec.cuh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct DevFormat {
    is_int: i32,
    exp_bits: i32,
    man_bits: i32,
    bias: i32,
    encoding: i32,
    int_bits: i32,
    int_min: i32,
    int_max: i32,
    rounding: i32,
    saturate: i32,
    seed: u64,
    fast: i32,
    sh: u32,
    m_zero: u32,
    min_normal_bits: u32,
    max_bits: u32,
    magic: f32,
    fnuz: i32,
    ovf: [u32; 2],
    inf: [u32; 2],
    nan: [u32; 2],
}
// SAFETY: plain `#[repr(C)]` data with the layout of the C struct.
unsafe impl DeviceRepr for DevFormat {}

/// `LbScale` in `kernels/codec.cuh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct DevScale {
    kind: i32,
    rounding: i32,
    emax: i32,
    man_bits: i32,
    max: f32,
    unit: f32,
    nvfp4_div: f32,
    asym: i32,
}
// SAFETY: plain `#[repr(C)]` data with the layout of the C struct.
unsafe impl DeviceRepr for DevScale {}

/// `LbGroups` in `kernels/fake_quant.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct DevGroups {
    n: i64,
    outer: i64,
    len: i64,
    inner: i64,
    size: i64,
    nb: i64,
    n_groups: i64,
    gran: i32,
    pad: i32,
}
// SAFETY: plain `#[repr(C)]` data with the layout of the C struct.
unsafe impl DeviceRepr for DevGroups {}

impl DevFormat {
    fn new(format: Format, conv: Conversion) -> DevFormat {
        let (rounding, seed) = match conv.rounding {
            Rounding::NearestEven => (0, 0),
            Rounding::NearestAway => (1, 0),
            Rounding::TowardZero => (2, 0),
            Rounding::Stochastic { seed } => (3, seed),
        };
        let saturate = i32::from(conv.overflow == Overflow::Saturate);
        match format {
            Format::Float(m) => DevFormat {
                is_int: 0,
                exp_bits: m.exp_bits() as i32,
                man_bits: m.man_bits() as i32,
                bias: m.bias(),
                encoding: match m.encoding() {
                    Encoding::Ieee => 0,
                    Encoding::Fn => 1,
                    Encoding::Fnuz => 2,
                    Encoding::Finite => 3,
                    Encoding::Fnu => 4,
                },
                rounding,
                saturate,
                seed,
                ..DevFormat::fast_path(&m, conv)
            },
            Format::Int(i) => DevFormat {
                is_int: 1,
                int_bits: i.bits() as i32,
                int_min: i.min_value(),
                int_max: i.max_value(),
                rounding,
                saturate,
                seed,
                ..DevFormat::default()
            },
        }
    }
}

/// `f32` bits of `2^k`, `−149 ≤ k ≤ 127`.
fn pow2_bits(k: i32) -> u32 {
    if k >= -126 {
        ((k + 127) as u32) << 23
    } else {
        1u32 << (k + 149)
    }
}

impl DevFormat {
    /// The constants of lowbit-formats' lane fast path (`FloatLane::quantize_fast`), enabled
    /// under the same conditions: nearest-even, bias ≤ 127, not E8M0 style, the magic constant
    /// `2^(emin − m + 23)` a normal f32.
    fn fast_path(f: &lowbit_formats::MiniFloat, conv: Conversion) -> DevFormat {
        let m = f.man_bits();
        let emin = f.min_exponent();
        let magic_exp = emin - m as i32 + 23;
        let fast = conv.rounding == Rounding::NearestEven
            && f.bias() <= 127
            && f.encoding() != Encoding::Fnu
            && (-126..=127).contains(&magic_exp);
        if !fast {
            return DevFormat::default();
        }
        let special = |x: f32| {
            [
                f.decode(f.encode_with(x, conv, 0)).to_bits(),
                f.decode(f.encode_with(-x, conv, 0)).to_bits(),
            ]
        };
        DevFormat {
            fast: 1,
            sh: 23 - m,
            m_zero: u32::from(m == 0),
            min_normal_bits: pow2_bits(emin.max(-126)),
            max_bits: f.decode(f.max_magnitude_code()).to_bits(),
            magic: f32::from_bits(pow2_bits(magic_exp)),
            fnuz: i32::from(f.encoding() == Encoding::Fnuz),
            ovf: special(f32::MAX),
            inf: special(f32::INFINITY),
            nan: special(f32::NAN),
            ..DevFormat::default()
        }
    }
}

impl DevScale {
    fn new(spec: &QuantSpec) -> DevScale {
        let (kind, rounding) = match spec.scale() {
            ScaleKind::F32 => (0, 0),
            ScaleKind::PowerOfTwo { rounding } => (
                1,
                match rounding {
                    Po2Rounding::Floor => 0,
                    Po2Rounding::Ceil => 1,
                    Po2Rounding::Nearest => 2,
                },
            ),
            ScaleKind::E8M0 { rounding } => (
                2,
                match rounding {
                    E8m0Rounding::Floor => 0,
                    E8m0Rounding::Ceil => 1,
                    E8m0Rounding::Even => 2,
                    E8m0Rounding::RCeil => 3,
                },
            ),
            ScaleKind::Nvfp4 { block_rounding } => (
                3,
                match block_rounding {
                    E4m3Rounding::Nearest => 0,
                    E4m3Rounding::Up => 1,
                },
            ),
        };
        DevScale {
            kind,
            rounding,
            emax: spec.element_emax(),
            man_bits: spec.element_man_bits() as i32,
            max: spec.element_max(),
            unit: spec.element_unit(),
            nvfp4_div: lowbit_quant::E4M3_MAX * spec.format().max_value(),
            asym: i32::from(spec.is_asymmetric()),
        }
    }

    /// The raw element cast: no scale at all.
    fn unit() -> DevScale {
        DevScale {
            kind: 4,
            ..DevScale::default()
        }
    }
}

fn resolve_axis(axis: isize, dims: &[usize]) -> candle_core::Result<usize> {
    let rank = dims.len() as isize;
    let a = if axis < 0 { axis + rank } else { axis };
    if a < 0 || a >= rank {
        candle_core::bail!("quantizer axis {axis} is out of range for a tensor of shape {dims:?}");
    }
    Ok(a as usize)
}

impl DevGroups {
    /// The groups of `spec` on a tensor of shape `dims`, and the shape of its scales (the CPU
    /// engine's `Plan`).
    fn new(spec: &QuantSpec, dims: &[usize]) -> candle_core::Result<(DevGroups, Vec<usize>)> {
        let n: usize = dims.iter().product();
        let split = |axis: isize| -> candle_core::Result<(usize, i64, i64, i64)> {
            let a = resolve_axis(axis, dims)?;
            Ok((
                a,
                dims[..a].iter().product::<usize>() as i64,
                dims[a] as i64,
                dims[a + 1..].iter().product::<usize>() as i64,
            ))
        };
        Ok(match spec.granularity() {
            Granularity::PerTensor => (DevGroups::per_tensor(n), vec![1]),
            Granularity::PerChannel { axis } => {
                let (_, outer, len, inner) = split(axis)?;
                let g = DevGroups {
                    n: n as i64,
                    outer,
                    len,
                    inner,
                    size: outer * inner,
                    nb: 1,
                    n_groups: len,
                    gran: 1,
                    pad: 0,
                };
                (g, vec![len as usize])
            }
            Granularity::PerBlock { axis, .. } | Granularity::WholeAxis { axis } => {
                let (a, outer, len, inner) = split(axis)?;
                let size = match spec.granularity() {
                    Granularity::PerBlock { size, .. } => size as i64,
                    _ => len.max(1),
                };
                let nb = (len + size - 1) / size;
                let mut shape = dims.to_vec();
                shape[a] = nb as usize;
                let g = DevGroups {
                    n: n as i64,
                    outer,
                    len,
                    inner,
                    size,
                    nb,
                    n_groups: outer * inner * nb,
                    gran: 2,
                    pad: 0,
                };
                (g, shape)
            }
        })
    }

    fn per_tensor(n: usize) -> DevGroups {
        DevGroups {
            n: n as i64,
            outer: 1,
            len: n as i64,
            inner: 1,
            size: n as i64,
            nb: 1,
            n_groups: 1,
            gran: 0,
            pad: 0,
        }
    }
}

/// What the element kernel writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    /// The fake-quantized values.
    Fake,
    /// The clipped-STE mask (1 inside the group's range, 0 outside).
    Mask,
}

/// What to apply: a quantizer spec with dynamic or frozen scales, or a bare element cast.
pub(crate) enum Job<'a> {
    Spec {
        spec: &'a QuantSpec,
        frozen: Option<&'a Scales>,
        output: Output,
    },
    Element {
        format: Format,
        conv: Conversion,
    },
}

fn launch_cfg(blocks: u64) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks.clamp(1, u32::MAX as u64 / 2) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

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
    match storage.dtype() {
        DType::F32 => {
            let s = storage.as_cuda_slice::<f32>()?.slice(a..b);
            let out = run_typed(job, &dev, &s, a, dims, "f32")?;
            Ok(CudaStorage::wrap_cuda_slice(out, dev))
        }
        DType::F16 => {
            let s = storage.as_cuda_slice::<half::f16>()?.slice(a..b);
            let out = run_typed(job, &dev, &s, a, dims, "f16")?;
            Ok(CudaStorage::wrap_cuda_slice(out, dev))
        }
        DType::BF16 => {
            let s = storage.as_cuda_slice::<half::bf16>()?.slice(a..b);
            let out = run_typed(job, &dev, &s, a, dims, "bf16")?;
            Ok(CudaStorage::wrap_cuda_slice(out, dev))
        }
        other => candle_core::bail!("fake-quant supports f32, f16 and bf16 tensors, not {other:?}"),
    }
}

/// Whether the fused dynamic block kernel applies: symmetric blocks of 4..128 (a power of two)
/// along the last axis, whole blocks only, a 4-element-aligned start.
fn fused_lanes(spec: &QuantSpec, g: &DevGroups, start: usize) -> Option<i32> {
    let ok = g.gran == 2
        && g.inner == 1
        && !spec.is_asymmetric()
        && g.size >= 4
        && g.size <= 128
        && (g.size as u64).is_power_of_two()
        && g.len % g.size == 0
        && start.is_multiple_of(4);
    ok.then_some((g.size / 4) as i32)
}

fn run_typed<T: DeviceRepr + candle_core::cuda_backend::CudaDType>(
    job: &Job<'_>,
    dev: &CudaDevice,
    x: &CudaView<'_, T>,
    start: usize,
    dims: &[usize],
    suffix: &str,
) -> candle_core::Result<CudaSlice<T>> {
    let n: usize = dims.iter().product();
    // SAFETY: every element is written by the kernels below before it is read.
    let mut y = unsafe { dev.alloc::<T>(n.max(1))? };
    if n == 0 {
        return Ok(y);
    }
    let idx = if n < (1usize << 31) { "u32" } else { "u64" };
    // x + 4k is 16-byte aligned (allocations are 256-byte aligned).
    let vec = i32::from(start.is_multiple_of(4));
    // Every aligned run of 4 elements in one group, with consecutive work indices.
    let quad_groups = |g: &DevGroups| match g.gran {
        0 => true,
        1 => g.inner % 4 == 0,
        _ => g.inner == 1 && g.size % 4 == 0 && g.len % 4 == 0,
    };
    let amax = |st: &mut CudaSlice<u32>| -> candle_core::Result<()> {
        let func = dev.get_or_load_custom_func(&format!("lb_amax_{suffix}"), MODULE, PTX)?;
        let mut b = func.builder();
        let n64 = n as i64;
        b.arg(x).arg(&n64).arg(st).arg(&vec);
        let blocks = (n as u64).div_ceil(4 * THREADS as u64).min(132 * 16);
        // SAFETY: argument types and order match `lb_amax_*`; `st` holds one entry.
        unsafe { b.launch(launch_cfg(blocks)) }.w()?;
        Ok(())
    };
    let apply = |y: &mut CudaSlice<T>,
                 g: &DevGroups,
                 f: &DevFormat,
                 s: &DevScale,
                 scales: &CudaSlice<f32>,
                 zeros: &CudaSlice<f32>,
                 ts: &CudaSlice<f32>,
                 mode: i32|
     -> candle_core::Result<()> {
        let quad = i32::from(vec == 1 && (s.kind == 4 || quad_groups(g)));
        let func = dev.get_or_load_custom_func(&format!("lb_apply_{suffix}_{idx}"), MODULE, PTX)?;
        let mut b = func.builder();
        b.arg(x)
            .arg(y)
            .arg(g)
            .arg(f)
            .arg(s)
            .arg(scales)
            .arg(zeros)
            .arg(ts)
            .arg(&mode)
            .arg(&quad);
        let blocks = (n as u64).div_ceil(4 * THREADS as u64).min(1 << 20);
        // SAFETY: argument types and order match `lb_apply_*`; buffers hold n elements
        // (x, y) and one entry per group (scales, zeros), or one (ts).
        unsafe { b.launch(launch_cfg(blocks)) }.w()?;
        Ok(())
    };
    let (spec, frozen, output) = match job {
        Job::Element { format, conv } => {
            let g = DevGroups::per_tensor(n);
            let f = DevFormat::new(*format, *conv);
            let one = dev.clone_htod(&[1.0f32])?;
            apply(&mut y, &g, &f, &DevScale::unit(), &one, &one, &one, 0)?;
            return Ok(y);
        }
        Job::Spec {
            spec,
            frozen,
            output,
        } => (*spec, *frozen, *output),
    };
    let (g, scale_shape) = DevGroups::new(spec, dims)?;
    let mut conv = spec.conversion();
    if output == Output::Mask {
        conv.overflow = Overflow::Saturate;
    }
    let f = DevFormat::new(spec.format(), conv);
    let s = DevScale::new(spec);
    let nvfp4 = matches!(spec.scale(), ScaleKind::Nvfp4 { .. });
    let reduce = |groups: &DevGroups, st: &mut CudaSlice<u32>| -> candle_core::Result<()> {
        let quad = i32::from(vec == 1 && n.is_multiple_of(4) && quad_groups(groups));
        let step = if quad == 1 { 128 } else { 32 };
        let warps = (n as u64).div_ceil(4096).clamp(1, 1 << 15);
        let per_warp = (n as u64).div_ceil(warps).div_ceil(step) * step;
        let warps = (n as u64).div_ceil(per_warp);
        let func =
            dev.get_or_load_custom_func(&format!("lb_reduce_{suffix}_{idx}"), MODULE, PTX)?;
        let mut b = func.builder();
        let asym = i32::from(spec.is_asymmetric());
        let per_warp = per_warp as i64;
        b.arg(x)
            .arg(groups)
            .arg(st)
            .arg(&asym)
            .arg(&per_warp)
            .arg(&quad);
        // SAFETY: argument types and order match `lb_reduce_*`; `st` holds one entry per
        // group (three when asymmetric).
        unsafe { b.launch(launch_cfg(warps.div_ceil(THREADS as u64 / 32))) }.w()?;
        Ok(())
    };
    match frozen {
        None => {
            let mut tensor_amax = dev.alloc_zeros::<u32>(1)?;
            if nvfp4 {
                amax(&mut tensor_amax)?;
            }
            if output == Output::Fake
                && let Some(lanes) = fused_lanes(spec, &g, start)
            {
                let func =
                    dev.get_or_load_custom_func(&format!("lb_fused_block_{suffix}"), MODULE, PTX)?;
                let mut b = func.builder();
                let n64 = n as i64;
                b.arg(x)
                    .arg(&mut y)
                    .arg(&n64)
                    .arg(&lanes)
                    .arg(&f)
                    .arg(&s)
                    .arg(&tensor_amax);
                let threads = (n as u64).div_ceil(4);
                // SAFETY: argument types and order match `lb_fused_block_*`; n is a multiple
                // of the block size (≥ 4) and x, y are 4-element aligned.
                unsafe { b.launch(launch_cfg(threads.div_ceil(THREADS as u64).min(4096))) }.w()?;
                return Ok(y);
            }
            let ng = g.n_groups as usize;
            let asym = spec.is_asymmetric();
            let mut st = dev.alloc_zeros::<u32>(if asym { 3 * ng } else { ng }.max(1))?;
            if asym {
                let func = dev.get_or_load_custom_func("lb_stats_init", MODULE, PTX)?;
                let mut b = func.builder();
                let count = (3 * ng) as i64;
                let one = 1i32;
                b.arg(&mut st).arg(&count).arg(&one);
                // SAFETY: `st` holds `count` entries.
                unsafe { b.launch(launch_cfg((count as u64).div_ceil(THREADS as u64))) }.w()?;
            }
            if g.gran == 0 && !asym {
                amax(&mut st)?;
            } else {
                reduce(&g, &mut st)?;
            }
            let mut scales = dev.alloc_zeros::<f32>(ng.max(1))?;
            let mut zeros = dev.alloc_zeros::<f32>(ng.max(1))?;
            let mut ts = dev.alloc_zeros::<f32>(1)?;
            let func = dev.get_or_load_custom_func("lb_scales", MODULE, PTX)?;
            let mut b = func.builder();
            b.arg(&st)
                .arg(&g)
                .arg(&f)
                .arg(&s)
                .arg(&tensor_amax)
                .arg(&mut scales)
                .arg(&mut zeros)
                .arg(&mut ts);
            // SAFETY: argument types and order match `lb_scales`; one entry per group.
            unsafe { b.launch(launch_cfg((ng as u64).div_ceil(THREADS as u64))) }.w()?;
            let mode = i32::from(output == Output::Mask);
            apply(&mut y, &g, &f, &s, &scales, &zeros, &ts, mode)?;
        }
        Some(sc) => {
            let count: usize = sc.shape.iter().product();
            if sc.shape != scale_shape || sc.values.len() != count {
                candle_core::bail!(
                    "fake-quant {spec}: frozen scales of shape {:?} do not fit a tensor of shape {dims:?} (expected {scale_shape:?})",
                    sc.shape
                );
            }
            let zeros_host = match &sc.zero_points {
                Some(z) if z.len() == count => z.clone(),
                Some(z) => candle_core::bail!(
                    "fake-quant {spec}: {} zero points for {count} scales",
                    z.len()
                ),
                None if spec.is_asymmetric() => {
                    candle_core::bail!(
                        "fake-quant {spec}: asymmetric frozen scales need zero points"
                    )
                }
                None => vec![0.0; count],
            };
            if nvfp4 && sc.tensor_scale.is_none() {
                candle_core::bail!("fake-quant {spec}: nvfp4 scales need a tensor scale");
            }
            let scales = dev.clone_htod(&sc.values)?;
            let zeros = dev.clone_htod(&zeros_host)?;
            let ts = dev.clone_htod(&[sc.tensor_scale.unwrap_or(1.0)])?;
            let mode = i32::from(output == Output::Mask);
            apply(&mut y, &g, &f, &s, &scales, &zeros, &ts, mode)?;
        }
    }
    Ok(y)
}
