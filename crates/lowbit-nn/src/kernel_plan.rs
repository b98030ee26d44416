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

use lowbit_formats::{Conversion, Encoding, Format, Overflow, Rounding};
use lowbit_quant::{
    E4m3Rounding, E8m0Rounding, GroupKind, Po2Rounding, QuantSpec, ScaleKind, Scales,
};

use crate::error::{NnError, Result};

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

/// `LbFormat` in `kernels/codec.cuh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DevFormat {
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

/// `LbScale` in `kernels/codec.cuh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DevScale {
    kind: i32,
    rounding: i32,
    emax: i32,
    man_bits: i32,
    max: f32,
    unit: f32,
    nvfp4_div: f32,
    asym: i32,
}

/// `LbGroups` in `kernels/fake_quant.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DevGroups {
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

impl DevGroups {
    /// The groups of `spec` on a tensor of shape `dims` (lowbit-quant's [`lowbit_quant::GroupLayout`], the
    /// layout the CPU engine uses), and the shape of its scales.
    fn new(spec: &QuantSpec, dims: &[usize]) -> Result<(DevGroups, Vec<usize>)> {
        let l = spec.layout(dims)?;
        let gran = match l.kind {
            GroupKind::PerTensor => return Ok((DevGroups::per_tensor(l.n), l.scale_shape)),
            GroupKind::PerChannel => 1,
            GroupKind::Blocks => 2,
        };
        let g = DevGroups {
            n: l.n as i64,
            outer: l.outer as i64,
            len: l.len as i64,
            inner: l.inner as i64,
            size: l.block as i64,
            nb: l.blocks_per_axis as i64,
            n_groups: l.n_groups as i64,
            gran,
            pad: 0,
        };
        Ok((g, l.scale_shape))
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

/// Little-endian bytes of `#[repr(C)]` structs, laid out as the C compiler lays them out
/// (the host emulator copies them into the kernels' parameters).
trait LeBytes {
    fn put(&self, out: &mut Vec<u8>);
}
macro_rules! le_bytes {
    ($($t:ty),*) => {$(
        impl LeBytes for $t {
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
le_bytes!(i32, u32, f32, i64, u64);

impl DevFormat {
    fn to_le_bytes(self) -> Vec<u8> {
        let mut b = Vec::with_capacity(std::mem::size_of::<Self>());
        for v in [
            self.is_int,
            self.exp_bits,
            self.man_bits,
            self.bias,
            self.encoding,
            self.int_bits,
            self.int_min,
            self.int_max,
            self.rounding,
            self.saturate,
        ] {
            v.put(&mut b);
        }
        self.seed.put(&mut b);
        self.fast.put(&mut b);
        for v in [self.sh, self.m_zero, self.min_normal_bits, self.max_bits] {
            v.put(&mut b);
        }
        self.magic.put(&mut b);
        self.fnuz.put(&mut b);
        for v in self.ovf.iter().chain(&self.inf).chain(&self.nan) {
            v.put(&mut b);
        }
        b.resize(std::mem::size_of::<Self>(), 0);
        b
    }
}

impl DevScale {
    fn to_le_bytes(self) -> Vec<u8> {
        let mut b = Vec::with_capacity(std::mem::size_of::<Self>());
        for v in [self.kind, self.rounding, self.emax, self.man_bits] {
            v.put(&mut b);
        }
        for v in [self.max, self.unit, self.nvfp4_div] {
            v.put(&mut b);
        }
        self.asym.put(&mut b);
        b
    }
}

impl DevGroups {
    fn to_le_bytes(self) -> Vec<u8> {
        let mut b = Vec::with_capacity(std::mem::size_of::<Self>());
        for v in [
            self.n,
            self.outer,
            self.len,
            self.inner,
            self.size,
            self.nb,
            self.n_groups,
        ] {
            v.put(&mut b);
        }
        self.gran.put(&mut b);
        self.pad.put(&mut b);
        b
    }
}

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
    let n: usize = dims.iter().product();
    let mut p = Plan {
        n,
        start,
        dtype,
        buffers: vec![Buffer::Input, Buffer::Output],
        launches: Vec::new(),
        max_blocks: options.max_blocks.clamp(1, MAX_BLOCKS),
    };
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
        let quad = i32::from(vec == 1 && (s.kind == 4 || quad_groups(&g)));
        // The pointers the source does not use point at one of its buffers (never read
        // through them): no allocation for them.
        let (scales, zeros, ts, stats, tensor_amax, from_stats) = match src {
            Source::Frozen { scales, zeros, ts } => (scales, zeros, ts, scales, scales, 0),
            Source::Stats { stats, tensor_amax } => {
                (tensor_amax, tensor_amax, tensor_amax, stats, tensor_amax, 1)
            }
        };
        // One tile of UNROLL quads per thread; grid-stride beyond 2^20 blocks.
        let grid = (n as u64)
            .div_ceil(4 * UNROLL * THREADS as u64)
            .min(1 << 20);
        p.launch(
            format!("lb_apply_{sfx}_{idx}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_bytes_have_the_c_layout() {
        assert_eq!(
            DevFormat::default().to_le_bytes().len(),
            std::mem::size_of::<DevFormat>()
        );
        assert_eq!(std::mem::size_of::<DevFormat>(), 104);
        assert_eq!(DevScale::default().to_le_bytes().len(), 32);
        assert_eq!(DevGroups::default().to_le_bytes().len(), 64);
        let f = DevFormat {
            seed: 0x0102_0304_0506_0708,
            nan: [7, 9],
            ..DevFormat::default()
        };
        let b = f.to_le_bytes();
        assert_eq!(&b[40..48], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&b[92..100], &[7, 0, 0, 0, 9, 0, 0, 0]);
    }

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
            ["lb_amax_f32", "lb_apply_f32_u32"]
        );
        assert_eq!(
            kernels("int8", &[8, 64], 0),
            ["lb_reduce_f32_u32", "lb_apply_f32_u32"]
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
