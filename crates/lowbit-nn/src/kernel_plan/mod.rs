//! The launch plan of the CUDA path: which kernels of `kernels/fake_quant.cu` run, in which
//! order, on which buffers, with which arguments, for one fake-quant op on one tensor.
//!
//! A [`Plan`] is plain data, built without a GPU. The `cuda` feature runs it with cudarc
//! (`cuda.rs`); the tests also run it through the host emulator of the kernels
//! (`kernels/emulator/`, which compiles the same `.cu` source with a C++ compiler and runs
//! its warps lane by lane), so the kernels and the launch logic are checked against the CPU
//! engine on any machine with a C++ compiler, GPU or not (docs/cuda.md).
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
//!   then the element kernel, which computes each group's scale from those statistics;
//! - frozen scales: uploaded, then the element kernel.

use lowbit_formats::{Conversion, Format, Overflow};
use lowbit_quant::{QuantSpec, ScaleKind, Scales};

use crate::error::{NnError, Result};

// The kernels' parameter structs (`LbFormat`, `LbScale`, `LbGroups`).
mod params;
pub use params::{DevFormat, DevGroups, DevScale};

macro_rules! plan_bail {
    ($($t:tt)*) => {
        return Err(NnError::Kernel(format!($($t)*)))
    };
}

/// Threads per block of every launch.
pub const THREADS: u32 = 256;

/// Quads (4 consecutive elements) a thread of an element kernel loads per step before it
/// computes (`LB_UNROLL` in `kernels/fake_quant.cu`).
pub const UNROLL: u64 = 4;

/// What the element kernel writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The fake-quantized values.
    Fake,
    /// The clipped-STE mask (1 inside the group's range, 0 outside).
    Mask,
}

/// What to apply: a quantizer spec with dynamic or frozen scales, or a bare element cast.
#[derive(Clone, Copy, Debug)]
pub enum Job<'a> {
    /// A quantizer.
    Spec {
        /// The spec.
        spec: &'a QuantSpec,
        /// Frozen scales, or `None` to compute them from the tensor.
        frozen: Option<&'a Scales>,
        /// Values or the STE mask.
        output: Output,
    },
    /// The bare element cast ([`crate::ElementQuant`]).
    Element {
        /// The element format.
        format: Format,
        /// Rounding and overflow.
        conv: Conversion,
    },
}

/// The element type of the tensor (computation is in f32 for all three).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelDType {
    /// f32.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

impl KernelDType {
    /// The kernel-name suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            KernelDType::F32 => "f32",
            KernelDType::F16 => "f16",
            KernelDType::Bf16 => "bf16",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            KernelDType::F32 => 4,
            _ => 2,
        }
    }
}

/// A device buffer of a plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Buffer {
    /// The input tensor's storage (the pointer is the storage plus the element offset
    /// [`Plan::start`]).
    Input,
    /// The output tensor: [`Plan::n`] elements of the input's dtype, every one written.
    Output,
    /// `u32` words, zeroed (statistics).
    U32Zeros(usize),
    /// `f32` values, zeroed (scales, zero points, the tensor scale).
    F32Zeros(usize),
    /// `f32` values uploaded from the host (frozen scales).
    F32Values(Vec<f32>),
}

/// One kernel argument.
#[derive(Clone, Debug)]
pub enum Arg {
    /// A pointer to buffer `index` of [`Plan::buffers`]; `written` when the kernel writes it.
    Buffer {
        /// Index into [`Plan::buffers`].
        index: usize,
        /// Whether the kernel writes it.
        written: bool,
    },
    /// An `int`.
    I32(i32),
    /// A `long long`.
    I64(i64),
    /// An `LbFormat`.
    Format(DevFormat),
    /// An `LbScale`.
    Scale(DevScale),
    /// An `LbGroups`.
    Groups(DevGroups),
}

impl Arg {
    /// The argument's bytes as the kernel receives them (`None` for a buffer).
    pub fn value_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Arg::Buffer { .. } => None,
            Arg::I32(v) => Some(v.to_le_bytes().to_vec()),
            Arg::I64(v) => Some(v.to_le_bytes().to_vec()),
            Arg::Format(f) => Some(f.to_le_bytes()),
            Arg::Scale(s) => Some(s.to_le_bytes()),
            Arg::Groups(g) => Some(g.to_le_bytes()),
        }
    }
}

/// One kernel launch: `blocks` blocks of [`THREADS`] threads.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The `extern "C"` name in `kernels/fake_quant.cu`.
    pub kernel: String,
    /// Grid size.
    pub blocks: u32,
    /// The arguments, in the kernel's parameter order.
    pub args: Vec<Arg>,
}

/// Everything the device does for one op on one contiguous tensor.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Elements of the tensor.
    pub n: usize,
    /// The element offset of the tensor in its storage.
    pub start: usize,
    /// The element type.
    pub dtype: KernelDType,
    /// Buffers; `buffers[0]` is [`Buffer::Input`], `buffers[1]` [`Buffer::Output`].
    pub buffers: Vec<Buffer>,
    /// Launches, run in order on one stream.
    pub launches: Vec<Launch>,
    /// The grid limit the plan was made with.
    max_blocks: u32,
}

/// The largest grid a plan launches by default.
pub const MAX_BLOCKS: u32 = u32::MAX / 2;

impl Plan {
    /// A plan with the input and output buffers and no launch yet.
    fn empty(n: usize, start: usize, dtype: KernelDType, options: PlanOptions) -> Plan {
        Plan {
            n,
            start,
            dtype,
            buffers: vec![Buffer::Input, Buffer::Output],
            launches: Vec::new(),
            max_blocks: options.max_blocks.clamp(1, MAX_BLOCKS),
        }
    }

    fn buffer(&mut self, b: Buffer) -> usize {
        self.buffers.push(b);
        self.buffers.len() - 1
    }

    fn launch(&mut self, kernel: String, grid: u64, args: Vec<Arg>) {
        self.launches.push(Launch {
            kernel,
            blocks: grid.clamp(1, self.max_blocks as u64) as u32,
            args,
        });
    }
}

fn read(index: usize) -> Arg {
    Arg::Buffer {
        index,
        written: false,
    }
}

fn write(index: usize) -> Arg {
    Arg::Buffer {
        index,
        written: true,
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

/// Where the element kernel takes its scales from (buffer indices).
#[derive(Clone, Copy)]
enum Source {
    /// Uploaded scales, zero points and tensor scale.
    Frozen {
        scales: usize,
        zeros: usize,
        ts: usize,
    },
    /// The reduction's statistics and the tensor amax (NVFP4): scales computed in the kernel.
    Stats { stats: usize, tensor_amax: usize },
}

/// Every aligned run of 4 elements lies in one group, with consecutive work indices.
fn quad_groups(g: &DevGroups) -> bool {
    match g.gran {
        0 => true,
        1 => g.inner % 4 == 0,
        _ => g.inner == 1 && g.size % 4 == 0 && g.len % 4 == 0,
    }
}

/// How a plan may depart from the default launch shapes (the results do not change: the
/// tests use this to run paths that default plans reach only on huge tensors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanOptions {
    /// Every grid cut to at most this many blocks (≥ 1). The kernels loop over what a smaller
    /// grid leaves (grid-stride loops; the reduction gives each warp a longer range).
    pub max_blocks: u32,
    /// The 64-bit-index kernels (`lb_*_u64`) whatever the size (by default only tensors of
    /// 2^31 elements or more take them).
    pub wide_indices: bool,
}

impl Default for PlanOptions {
    fn default() -> PlanOptions {
        PlanOptions {
            max_blocks: MAX_BLOCKS,
            wide_indices: false,
        }
    }
}

/// The plan of `job` on a contiguous tensor of shape `dims` and type `dtype` that starts
/// `start` elements into its storage (the storage is 256-byte aligned, as CUDA allocations
/// are). Errors: an axis out of range, frozen scales that do not fit.
pub fn plan(job: &Job<'_>, dims: &[usize], start: usize, dtype: KernelDType) -> Result<Plan> {
    plan_with(job, dims, start, dtype, PlanOptions::default())
}

/// [`plan`] with [`PlanOptions`].
pub fn plan_with(
    job: &Job<'_>,
    dims: &[usize],
    start: usize,
    dtype: KernelDType,
    options: PlanOptions,
) -> Result<Plan> {
    if let Job::Spec {
        spec,
        frozen,
        output,
    } = *job
    {
        let layout = spec.layout(dims)?;
        if let Some(grid) = layout.tiles {
            return plan_tiles(
                spec, frozen, output, dims, &layout, grid, start, dtype, options,
            );
        }
    }
    let n: usize = dims.iter().product();
    let mut p = Plan::empty(n, start, dtype, options);
    let max_warps = p.max_blocks as u64 * (THREADS as u64 / 32);
    if n == 0 {
        return Ok(p);
    }
    let sfx = dtype.suffix();
    let idx = if n < (1usize << 31) && !options.wide_indices {
        "u32"
    } else {
        "u64"
    };
    // x + 4k is 16-byte aligned.
    let vec = i32::from(start.is_multiple_of(4));
    let (x, y) = (0, 1);
    let amax = |p: &mut Plan, st: usize| {
        let grid = (n as u64).div_ceil(4 * THREADS as u64).min(132 * 16);
        p.launch(
            format!("lb_amax_{sfx}"),
            grid,
            vec![read(x), Arg::I64(n as i64), write(st), Arg::I32(vec)],
        );
    };
    let apply = |p: &mut Plan, g: DevGroups, f: DevFormat, s: DevScale, src: Source, mode: i32| {
        let quad = i32::from(vec == 1 && (s.is_unit() || quad_groups(&g)));
        // The pointers the source does not use point at one of its buffers (never read
        // through them): no allocation for them.
        let (scales, zeros, ts, stats, tensor_amax, from_stats) = match src {
            Source::Frozen { scales, zeros, ts } => (scales, zeros, ts, scales, scales, 0),
            Source::Stats { stats, tensor_amax } => {
                (tensor_amax, tensor_amax, tensor_amax, stats, tensor_amax, 1)
            }
        };
        // The entry point with only the code this job needs (its own register budget): the
        // bare cast on the lane fast path, symmetric fake-quant in quads, or everything
        // (masks, affine, unaligned tensors, the reference cast).
        let kernel = if quad == 1 && s.is_unit() && f.fast == 1 {
            "lb_cast"
        } else if quad == 1 && !s.is_unit() && s.asym == 0 && mode == 0 {
            "lb_apply_sym"
        } else {
            "lb_apply"
        };
        // One tile of UNROLL quads per thread; grid-stride beyond 2^20 blocks.
        let grid = (n as u64)
            .div_ceil(4 * UNROLL * THREADS as u64)
            .min(1 << 20);
        p.launch(
            format!("{kernel}_{sfx}_{idx}"),
            grid,
            vec![
                read(x),
                write(y),
                Arg::Groups(g),
                Arg::Format(f),
                Arg::Scale(s),
                read(scales),
                read(zeros),
                read(ts),
                read(stats),
                read(tensor_amax),
                Arg::I32(from_stats),
                Arg::I32(mode),
                Arg::I32(quad),
            ],
        );
    };
    let (spec, frozen, output) = match *job {
        Job::Element { format, conv } => {
            // No scale: the statistics source with nothing to read (not NVFP4, no groups).
            let none = p.buffer(Buffer::U32Zeros(1));
            apply(
                &mut p,
                DevGroups::per_tensor(n),
                DevFormat::new(format, conv),
                DevScale::unit(),
                Source::Stats {
                    stats: none,
                    tensor_amax: none,
                },
                0,
            );
            return Ok(p);
        }
        Job::Spec {
            spec,
            frozen,
            output,
        } => (spec, frozen, output),
    };
    let (g, scale_shape) = DevGroups::new(spec, dims)?;
    let mut conv = spec.conversion();
    if output == Output::Mask {
        conv.overflow = Overflow::Saturate;
    }
    let f = DevFormat::new(spec.format(), conv);
    let s = DevScale::new(spec);
    let nvfp4 = matches!(spec.scale(), ScaleKind::Nvfp4 { .. });
    let mode = i32::from(output == Output::Mask);
    match frozen {
        None => {
            // NVFP4's tensor amax; the kernels read it for NVFP4 only, so other specs pass a
            // buffer the plan has anyway in its place.
            let nvfp4_amax = nvfp4.then(|| p.buffer(Buffer::U32Zeros(1)));
            if let Some(a) = nvfp4_amax {
                amax(&mut p, a);
            }
            if output == Output::Fake
                && let Some(lanes) = fused_lanes(spec, &g, start)
            {
                // n is a multiple of the block size (≥ 4) and x, y are 4-element aligned.
                let grid = (n as u64).div_ceil(4 * UNROLL * THREADS as u64).min(4096);
                p.launch(
                    format!("lb_fused_block_{sfx}"),
                    grid,
                    vec![
                        read(x),
                        write(y),
                        Arg::I64(n as i64),
                        Arg::I32(lanes),
                        Arg::Format(f),
                        Arg::Scale(s),
                        // x: 4-element aligned here, so a valid (unread) u32 pointer.
                        read(nvfp4_amax.unwrap_or(x)),
                    ],
                );
                return Ok(p);
            }
            let ng = g.n_groups as usize;
            let asym = spec.is_asymmetric();
            let st = p.buffer(Buffer::U32Zeros(if asym { 3 * ng } else { ng }.max(1)));
            if asym {
                let count = 3 * ng as u64;
                p.launch(
                    "lb_stats_init".into(),
                    count.div_ceil(THREADS as u64),
                    vec![write(st), Arg::I64(count as i64), Arg::I32(1)],
                );
            }
            if g.gran == 0 && !asym {
                amax(&mut p, st);
            } else {
                let quad = i32::from(vec == 1 && n.is_multiple_of(4) && quad_groups(&g));
                let step = if quad == 1 { 128 } else { 32 };
                // Each warp reduces `per_warp` consecutive elements: no grid-stride loop, so
                // the grid limit lengthens the ranges.
                let warps = (n as u64).div_ceil(4096).clamp(1, (1 << 15).min(max_warps));
                let per_warp = (n as u64).div_ceil(warps).div_ceil(step) * step;
                let warps = (n as u64).div_ceil(per_warp);
                p.launch(
                    format!("lb_reduce_{sfx}_{idx}"),
                    warps.div_ceil(THREADS as u64 / 32),
                    vec![
                        read(x),
                        Arg::Groups(g),
                        write(st),
                        Arg::I32(i32::from(asym)),
                        Arg::I64(per_warp as i64),
                        Arg::I32(quad),
                    ],
                );
            }
            // The element kernel computes each group's scale from its statistics.
            apply(
                &mut p,
                g,
                f,
                s,
                Source::Stats {
                    stats: st,
                    tensor_amax: nvfp4_amax.unwrap_or(st),
                },
                mode,
            );
        }
        Some(sc) => {
            let count: usize = sc.shape.iter().product();
            if sc.shape != scale_shape || sc.values.len() != count {
                plan_bail!(
                    "fake-quant {spec}: frozen scales of shape {:?} do not fit a tensor of shape {dims:?} (expected {scale_shape:?})",
                    sc.shape
                );
            }
            let zeros_host = match &sc.zero_points {
                Some(z) if z.len() == count => z.clone(),
                Some(z) => plan_bail!(
                    "fake-quant {spec}: {} zero points for {count} scales",
                    z.len()
                ),
                None if spec.is_asymmetric() => {
                    plan_bail!("fake-quant {spec}: asymmetric frozen scales need zero points")
                }
                None => vec![0.0; count],
            };
            if nvfp4 && sc.tensor_scale.is_none() {
                plan_bail!("fake-quant {spec}: nvfp4 scales need a tensor scale");
            }
            let scales = p.buffer(Buffer::F32Values(sc.values.clone()));
            let zeros = p.buffer(Buffer::F32Values(zeros_host));
            let ts = p.buffer(Buffer::F32Values(vec![sc.tensor_scale.unwrap_or(1.0)]));
            apply(&mut p, g, f, s, Source::Frozen { scales, zeros, ts }, mode);
        }
    }
    Ok(p)
}

/// 2-D tiles: the tensor gathered into the tile-major work matrix `[tiles, rows · cols]` (f32,
/// zeros where edge tiles have no element), the plan of blocks of a whole tile on that
/// matrix, the results scattered back (as lowbit-quant's engine does on the CPU).
#[allow(clippy::too_many_arguments)]
fn plan_tiles(
    spec: &QuantSpec,
    frozen: Option<&Scales>,
    output: Output,
    dims: &[usize],
    layout: &lowbit_quant::GroupLayout,
    grid: lowbit_quant::TileGrid,
    start: usize,
    dtype: KernelDType,
    options: PlanOptions,
) -> Result<Plan> {
    let (n, tiles, tile_len) = (layout.n, layout.n_groups, grid.tile_len());
    let mut p = Plan::empty(n, start, dtype, options);
    if n == 0 {
        return Ok(p);
    }
    let frozen_rows = match frozen {
        Some(sc) if sc.shape != layout.scale_shape => plan_bail!(
            "fake-quant {spec}: frozen scales of shape {:?} do not fit a tensor of shape {:?} (expected {:?})",
            sc.shape,
            dims,
            layout.scale_shape
        ),
        Some(sc) => Some(Scales {
            shape: vec![tiles, 1],
            ..sc.clone()
        }),
        None => None,
    };
    let blocks = spec.to_builder().per_block(-1, tile_len).build()?;
    let inner = plan_with(
        &Job::Spec {
            spec: &blocks,
            frozen: frozen_rows.as_ref(),
            output,
        },
        &[tiles, tile_len],
        0,
        KernelDType::F32,
        options,
    )?;
    let work = p.buffer(Buffer::F32Zeros(tiles * tile_len));
    let result = p.buffer(Buffer::F32Zeros(tiles * tile_len));
    let base = p.buffers.len();
    p.buffers.extend(inner.buffers.into_iter().skip(2));
    let remap = |index: usize| match index {
        0 => work,
        1 => result,
        k => base + k - 2,
    };
    let args = [
        n,
        grid.m,
        grid.n,
        grid.rows,
        grid.cols,
        grid.grid_rows,
        grid.grid_cols,
    ]
    .map(|v| Arg::I64(v as i64));
    let blocks_of = (n as u64).div_ceil(THREADS as u64).min(1 << 20);
    let sfx = dtype.suffix();
    let wide = Arg::I32(i32::from(options.wide_indices));
    let mut gather = vec![read(0), write(work)];
    gather.extend(args.iter().cloned());
    gather.push(wide.clone());
    p.launch(format!("lb_tiles_gather_{sfx}"), blocks_of, gather);
    for l in inner.launches {
        let args = l
            .args
            .into_iter()
            .map(|a| match a {
                Arg::Buffer { index, written } => Arg::Buffer {
                    index: remap(index),
                    written,
                },
                other => other,
            })
            .collect();
        p.launches.push(Launch { args, ..l });
    }
    let mut scatter = vec![read(result), write(1)];
    scatter.extend(args.iter().cloned());
    scatter.push(wide);
    p.launch(format!("lb_tiles_scatter_{sfx}"), blocks_of, scatter);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernels(spec: &str, dims: &[usize], start: usize) -> Vec<String> {
        let spec: QuantSpec = spec.parse().unwrap_or_else(|e| panic!("{e}"));
        let job = Job::Spec {
            spec: &spec,
            frozen: None,
            output: Output::Fake,
        };
        let p = plan(&job, dims, start, KernelDType::F32).unwrap_or_else(|e| panic!("{e}"));
        p.launches.iter().map(|l| l.kernel.clone()).collect()
    }

    #[test]
    fn each_path_launches_what_the_docs_say() {
        // Blocks along the last axis: one fused pass (NVFP4: the tensor amax first).
        assert_eq!(kernels("mxfp4", &[8, 64], 0), ["lb_fused_block_f32"]);
        assert_eq!(
            kernels("nvfp4", &[8, 64], 0),
            ["lb_amax_f32", "lb_fused_block_f32"]
        );
        // Unaligned start: no fused kernel; reduction, then the element kernel (scales in it).
        assert_eq!(
            kernels("mxfp4", &[8, 64], 1),
            ["lb_reduce_f32_u32", "lb_apply_f32_u32"]
        );
        assert_eq!(
            kernels("fp8_e4m3", &[8, 64], 0),
            ["lb_amax_f32", "lb_apply_sym_f32_u32"]
        );
        assert_eq!(
            kernels("int8", &[8, 64], 0),
            ["lb_reduce_f32_u32", "lb_apply_sym_f32_u32"]
        );
        // Asymmetric integers take the general element kernel.
        let asym = "int8"
            .parse::<QuantSpec>()
            .and_then(|s| s.to_builder().asymmetric(true).build())
            .unwrap_or_else(|e| panic!("{e}"));
        let job = Job::Spec {
            spec: &asym,
            frozen: None,
            output: Output::Fake,
        };
        let p = plan(&job, &[8, 64], 0, KernelDType::F32).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = p.launches.iter().map(|l| l.kernel.as_str()).collect();
        assert_eq!(
            names,
            ["lb_stats_init", "lb_reduce_f32_u32", "lb_apply_f32_u32"]
        );
        // The bare cast on the lane fast path: its own entry point.
        let cast = Job::Element {
            format: Format::E4M3FN,
            conv: Conversion::SATURATE,
        };
        let p = plan(&cast, &[8, 64], 0, KernelDType::F32).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.launches[0].kernel, "lb_cast_f32_u32");
        let p = plan(&cast, &[8, 64], 1, KernelDType::F32).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.launches[0].kernel, "lb_apply_f32_u32");
        // 2-D tiles: gathered into the tile-major matrix, the block plan there, scattered back.
        assert_eq!(
            kernels("fp8_e4m3_tile128x128", &[256, 384], 0),
            [
                "lb_tiles_gather_f32",
                "lb_reduce_f32_u32",
                "lb_apply_sym_f32_u32",
                "lb_tiles_scatter_f32"
            ]
        );
        let mx_tiles = "mxfp4"
            .parse::<QuantSpec>()
            .unwrap_or_else(|e| panic!("{e}"));
        let mx_tiles = mx_tiles
            .to_builder()
            .per_tile(4, 8)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let job = Job::Spec {
            spec: &mx_tiles,
            frozen: None,
            output: Output::Fake,
        };
        let p = plan(&job, &[10, 20], 1, KernelDType::Bf16).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = p.launches.iter().map(|l| l.kernel.as_str()).collect();
        assert_eq!(
            names,
            [
                "lb_tiles_gather_bf16",
                "lb_fused_block_f32",
                "lb_tiles_scatter_bf16"
            ]
        );
        // 3 × 3 tiles of 32 (the edge ones padded): two work buffers of 288 f32.
        assert_eq!(
            p.buffers[2..],
            [Buffer::F32Zeros(288), Buffer::F32Zeros(288)]
        );
        // A per-channel dynamic spec allocates one statistics word per channel, nothing else.
        let spec: QuantSpec = "int8".parse().unwrap_or_else(|e| panic!("{e}"));
        let job = Job::Spec {
            spec: &spec,
            frozen: None,
            output: Output::Fake,
        };
        let p = plan(&job, &[8, 64], 0, KernelDType::F32).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.buffers,
            [Buffer::Input, Buffer::Output, Buffer::U32Zeros(8)]
        );
    }

    #[test]
    fn frozen_scales_that_do_not_fit_are_an_error() {
        let spec: QuantSpec = "int8".parse().unwrap_or_else(|e| panic!("{e}"));
        let sc = Scales {
            shape: vec![3],
            values: vec![1.0; 3],
            zero_points: None,
            tensor_scale: None,
        };
        let job = Job::Spec {
            spec: &spec,
            frozen: Some(&sc),
            output: Output::Fake,
        };
        let e = plan(&job, &[4, 4], 0, KernelDType::F32)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("do not fit"), "{e}");
    }
}
