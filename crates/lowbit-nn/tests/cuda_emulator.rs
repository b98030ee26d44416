//! The CUDA kernels and their launch plans, run on the CPU by the host emulator
//! (`kernels/emulator/`): the same `.cu` source compiled with the C++ compiler, every warp's 32
//! lanes run as fibers in lock step at each shuffle/vote/reduce, buffers fenced by guard pages
//! and canaries, IEEE f32 with the GPU's NaN results. The test bodies are those the GPU runs
//! (`kernel_cases/`), against the same independent references. This needs no GPU, no CUDA
//! toolkit and no `cuda` feature, only Linux and a C++17 compiler (`$CXX`, else `c++`);
//! without one the tests say so and pass (`LOWBIT_REQUIRE_EMULATOR=1` makes a missing compiler
//! fail).
//!
//! What it cannot see: GPU timing, memory-model races between blocks (blocks run one after
//! another), and the cudarc glue in `cuda.rs` (a small interpreter of the same plan).
// The emulator's fibers are glibc/Linux ucontext, its guard pages mmap/mprotect.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kernel_cases;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::DType;
use kernel_cases::Runner;
use lowbit_formats::{Conversion, Format};
use lowbit_nn::FakeQuant;
use lowbit_nn::kernel_plan::{Buffer, Job, KernelDType, Output, Plan, PlanOptions, plan_with};

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// The emulator executable, compiled once per source version; `None` without a C++ compiler.
fn emulator() -> Option<&'static Path> {
    static EXE: OnceLock<Option<PathBuf>> = OnceLock::new();
    EXE.get_or_init(|| {
        let kernels = Path::new(MANIFEST).join("kernels");
        let mut sources = Vec::new();
        for dir in [kernels.clone(), kernels.join("emulator")] {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_file() {
                    sources.push(p);
                }
            }
        }
        sources.sort();
        // FNV-1a over the sources names the build.
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        for p in &sources {
            for b in std::fs::read(p).unwrap() {
                h = (h ^ b as u64).wrapping_mul(0x100_0000_01B3);
            }
        }
        let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lowbit-cuda-emu-{h:016x}"));
        if exe.exists() {
            return Some(exe);
        }
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let tmp = exe.with_extension(format!("tmp{}", std::process::id()));
        let out = Command::new(&cxx)
            .current_dir(MANIFEST)
            .args([
                "-std=c++17",
                "-O2",
                "-ffp-contract=off",
                "-fno-fast-math",
                "-Wall",
                "-Wno-unknown-pragmas",
                "-I",
                "kernels/emulator",
                "-I",
                "kernels",
                "-include",
                "cuda_host.h",
                "kernels/emulator/emulator.cpp",
                "-o",
            ])
            .arg(&tmp)
            .output();
        match out {
            Err(e) => {
                let msg = format!(
                    "no C++ compiler ({cxx}: {e}): the CUDA kernel emulator tests are skipped"
                );
                if std::env::var_os("LOWBIT_REQUIRE_EMULATOR").is_some() {
                    panic!("{msg}");
                }
                eprintln!("{msg}");
                None
            }
            Ok(o) if !o.status.success() => panic!(
                "compiling the kernel emulator failed:\n{}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Ok(_) => {
                std::fs::rename(&tmp, &exe).unwrap();
                Some(exe)
            }
        }
    })
    .as_deref()
}

/// The emulator as a device, running plans made with `options`.
struct Emulator {
    exe: &'static Path,
    options: PlanOptions,
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn encode(x: &[f32], dtype: KernelDType) -> Vec<u8> {
    let mut b = Vec::with_capacity(x.len() * dtype.size());
    for &v in x {
        match dtype {
            KernelDType::F32 => b.extend_from_slice(&v.to_le_bytes()),
            KernelDType::F16 => b.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
            KernelDType::Bf16 => b.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
        }
    }
    b
}

fn decode(b: &[u8], dtype: KernelDType) -> Vec<u32> {
    match dtype {
        KernelDType::F32 => b
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        KernelDType::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32().to_bits())
            .collect(),
        KernelDType::Bf16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32().to_bits())
            .collect(),
    }
}

fn kernel_dtype(d: DType) -> KernelDType {
    match d {
        DType::F32 => KernelDType::F32,
        DType::F16 => KernelDType::F16,
        DType::BF16 => KernelDType::Bf16,
        other => panic!("no kernels for {other:?}"),
    }
}

impl Emulator {
    /// Runs `plan` on `storage` (the input's whole buffer, the tensor `plan.start` elements
    /// in); returns the output buffer's bytes.
    fn execute(&self, plan: &Plan, storage: &[u8]) -> Vec<u8> {
        let size = plan.dtype.size();
        let mut job = b"LBEMU\x01\x00\x00".to_vec();
        put_u32(&mut job, plan.buffers.len() as u32);
        for buf in &plan.buffers {
            let bytes: Vec<u8> = match buf {
                Buffer::Input => storage.to_vec(),
                // Poison: an element the kernels fail to write shows as a NaN pattern.
                Buffer::Output => vec![0xA5; plan.n * size],
                Buffer::U32Zeros(len) | Buffer::F32Zeros(len) => vec![0; 4 * len],
                Buffer::F32Values(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            };
            put_u64(&mut job, bytes.len() as u64);
            job.extend_from_slice(&bytes);
        }
        put_u32(&mut job, plan.launches.len() as u32);
        for l in &plan.launches {
            put_u32(&mut job, l.kernel.len() as u32);
            job.extend_from_slice(l.kernel.as_bytes());
            put_u32(&mut job, l.blocks);
            put_u32(&mut job, lowbit_nn::kernel_plan::THREADS);
            put_u32(&mut job, l.args.len() as u32);
            for a in &l.args {
                match (a, a.value_bytes()) {
                    (lowbit_nn::kernel_plan::Arg::Buffer { index, .. }, _) => {
                        job.push(0);
                        put_u32(&mut job, *index as u32);
                        let offset = if *index == 0 { plan.start * size } else { 0 };
                        put_u64(&mut job, offset as u64);
                    }
                    (_, Some(v)) => {
                        job.push(1);
                        put_u32(&mut job, v.len() as u32);
                        job.extend_from_slice(&v);
                    }
                    (_, None) => unreachable!(),
                }
            }
        }
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        let k = CALLS.fetch_add(1, Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let job_path = dir.join(format!("emu-{}-{k}.job", std::process::id()));
        let out_path = job_path.with_extension("out");
        std::fs::write(&job_path, &job).unwrap();
        let o = Command::new(self.exe)
            .arg(&job_path)
            .arg(&out_path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&job_path);
        assert!(
            o.status.success(),
            "emulator failed ({}) on {:?}:\n{}",
            o.status,
            plan.launches.iter().map(|l| &l.kernel).collect::<Vec<_>>(),
            String::from_utf8_lossy(&o.stderr)
        );
        let r = std::fs::read(&out_path).unwrap();
        let _ = std::fs::remove_file(&out_path);
        assert_eq!(&r[..8], b"LBEMUOUT");
        // Skip to buffer 1 (the output).
        let mut pos = 12;
        let mut next = || {
            let len = u64::from_le_bytes(r[pos..pos + 8].try_into().unwrap()) as usize;
            let s = &r[pos + 8..pos + 8 + len];
            pos += 8 + len;
            s
        };
        let _input = next();
        next().to_vec()
    }

    fn run(
        &self,
        job: &Job<'_>,
        x: &[f32],
        shape: &[usize],
        dtype: DType,
        start: usize,
    ) -> Vec<u32> {
        let kd = kernel_dtype(dtype);
        let p = plan_with(job, shape, start, kd, self.options).unwrap();
        let mut storage = encode(&vec![0.0; start], kd);
        storage.extend(encode(x, kd));
        if x.is_empty() {
            return Vec::new();
        }
        decode(&self.execute(&p, &storage), kd)
    }
}

impl Runner for Emulator {
    fn cast(&self, x: &[f32], format: Format, conv: Conversion) -> Vec<u32> {
        self.run(&Job::Element { format, conv }, x, &[x.len()], DType::F32, 0)
    }

    fn fake_quant(
        &self,
        op: &FakeQuant,
        x: &[f32],
        shape: &[usize],
        dtype: DType,
        start: usize,
    ) -> Vec<u32> {
        let job = Job::Spec {
            spec: &op.spec,
            frozen: op.scales.as_deref(),
            output: Output::Fake,
        };
        self.run(&job, x, shape, dtype, start)
    }

    fn ste_mask(&self, op: &FakeQuant, x: &[f32], shape: &[usize]) -> Vec<u32> {
        let job = Job::Spec {
            spec: &op.spec,
            frozen: op.scales.as_deref(),
            output: Output::Mask,
        };
        self.run(&job, x, shape, DType::F32, 0)
    }
}

macro_rules! on_emulator {
    ($($name:ident => $body:expr;)*) => {$(
        #[test]
        fn $name() {
            if let Some(exe) = emulator() {
                let r = Emulator { exe, options: PlanOptions::default() };
                $body(&r);
            }
        }
    )*};
}

on_emulator! {
    element_cast_matches_ml_dtypes_golden_tables => kernel_cases::golden_casts;
    element_cast_matches_the_scalar_reference_for_every_format_and_rule =>
        |r: &Emulator| kernel_cases::scalar_reference_casts(r, Some(1 << 13));
    every_quantizer_matches_the_cpu_engine => |r: &Emulator| {
        let shapes: [&[usize]; 6] = [
            &[64, 256],
            &[4, 8, 12, 32],
            &[3, 100],
            &[4096],
            &[96, 520],
            &[7, 33],
        ];
        kernel_cases::every_quantizer(r, &shapes)
    };
    offset_inputs_match_the_cpu => kernel_cases::offset_inputs;
    hand_derived_mx_and_nvfp4_blocks => kernel_cases::hand_derived_blocks;
    adversarial_mx_and_nvfp4_blocks_match_the_cpu => kernel_cases::adversarial_blocks;
    ste_mask_matches_the_cpu => kernel_cases::ste_masks;
    rounding_conventions_match_the_cpu => kernel_cases::rounding_conventions;
    frozen_scales_on_special_values_match_the_cpu => kernel_cases::frozen_scales_on_specials;
}

/// The grid-stride loops (a warp taking several tiles, the reduction's longer ranges), which
/// the default grids reach only on tensors of millions of elements, on grids of 1 and 3
/// blocks; and the 64-bit-index kernels, which default plans take only from 2^31 elements.
#[test]
fn small_grids_and_wide_indices_give_the_same_bits() {
    let Some(exe) = emulator() else { return };
    for (max_blocks, wide_indices) in [(1, false), (3, true)] {
        let options = PlanOptions {
            max_blocks,
            wide_indices,
        };
        let r = Emulator { exe, options };
        let shapes: [&[usize]; 4] = [&[64, 256], &[4, 8, 12, 32], &[3, 100], &[7, 33]];
        kernel_cases::every_quantizer(&r, &shapes);
        kernel_cases::offset_inputs(&r);
        kernel_cases::ste_masks(&r);
    }
}
