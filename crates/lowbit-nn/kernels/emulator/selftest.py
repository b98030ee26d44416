#!/usr/bin/env python3
"""Self-test of the lowbit CUDA host emulator (kernels/emulator/). Python 3 standard library only.

Builds the emulator twice into a temporary directory under /tmp (the production build, with the
exact command the Rust tests use, which must compile without a warning; and the -DLB_EMU_SELFTEST
build with the test kernels of selftest_kernels.cuh), then runs job files written here with
struct.pack and checks the results against independent computations:

  * the registered kernels are exactly the `extern "C" __global__` functions of fake_quant.cu;
  * lb_amax_f32 (vec = 1 and 0) is the maximum of |x| over the bit patterns;
  * lb_apply_{f32,f16,bf16}_* as a bare e4m3fn cast (SK_UNIT) equals an exact-rational
    reference, hand-checked values included (1.0, 0.3, 448, the 464 tie, overflow to NaN);
  * lb_reduce_f32_u32 per channel (symmetric and asymmetric statistics, after lb_stats_init);
  * lb_fused_block_f32 on blocks whose scale is a power of two;
  * __half2float on all 65536 halves (against ldexp), __float2half_rn on a sweep of f32 bit
    patterns around every rounding boundary (against a double-based round-to-nearest-even);
  * the intrinsics' canonical NaNs, and every warp collective against a model of the CUDA rules;
  * the error paths: job errors exit 2, kernel faults exit 3, one "lowbit-cuda-emu:" line;
  * the time of one lb_apply launch over 1M elements (grid 1024 x 256).

Usage: python3 selftest.py [--cxx COMPILER] [--keep]
"""

import argparse
import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from fractions import Fraction

HERE = os.path.dirname(os.path.abspath(__file__))
CRATE = os.path.normpath(os.path.join(HERE, "..", ".."))  # crates/lowbit-nn: the build runs here

JOB_MAGIC = b"LBEMU\x01\x00\x00"
OUT_MAGIC = b"LBEMUOUT"


def build_command(cxx, exe, selftest=False):
    """The documented build command (run from crates/lowbit-nn)."""
    cmd = [cxx, "-std=c++17", "-O2", "-ffp-contract=off", "-fno-fast-math", "-Wall",
           "-Wno-unknown-pragmas", "-I", "kernels/emulator", "-I", "kernels",
           "-include", "cuda_host.h", "kernels/emulator/emulator.cpp", "-o", exe]
    if selftest:
        cmd.insert(1, "-DLB_EMU_SELFTEST")
    return cmd


# ---- bit helpers -------------------------------------------------------------------------------

def f2b(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def b2f(b):
    return struct.unpack("<f", struct.pack("<I", b & 0xFFFFFFFF))[0]


def is_nan_bits(b):
    return (b & 0x7FFFFFFF) > 0x7F800000


# ---- job files -----------------------------------------------------------------------------------

class Ptr:
    """A pointer argument: buffer index and byte offset."""

    def __init__(self, buf, off=0):
        self.buf, self.off = buf, off


def i32(v):
    return struct.pack("<i", v)


def u32(v):
    return struct.pack("<I", v)


def i64(v):
    return struct.pack("<q", v)


def groups(n, outer=1, length=None, inner=1, size=0, nb=0, n_groups=1, gran=0):
    """LbGroups (fake_quant.cu): 7 x i64, gran, pad."""
    return struct.pack("<7q2i", n, outer, n if length is None else length, inner, size, nb,
                       n_groups, gran, 0)


def fmt_e4m3fn():
    """LbFormat (codec.cuh) for OCP e4m3fn, nearest-even, non-saturating, slow reference path.

    Layout: 10 x int (40 bytes), u64 seed at 40, int fast, u32 sh, m_zero, min_normal_bits,
    max_bits, float magic, int fnuz, u32 ovf[2], inf[2], nan[2] = 100 bytes, padded to 104."""
    b = struct.pack("<10iQiIIIIfi6I4x", 0, 4, 3, 7, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0,
                    0, 0, 0, 0, 0, 0)
    assert len(b) == 104
    return b


def scale(kind, rounding=0, emax=0, man_bits=0, mx=0.0, unit=0.0, nvfp4_div=0.0, asym=0):
    """LbScale (codec.cuh): 4 x int, 3 x float, int."""
    return struct.pack("<4i3fi", kind, rounding, emax, man_bits, mx, unit, nvfp4_div, asym)


SK_F32, SK_UNIT = 0, 4


class Job:
    def __init__(self):
        self.buffers = []
        self.launches = []

    def buffer(self, data):
        self.buffers.append(bytes(data))
        return len(self.buffers) - 1

    def launch(self, name, grid, block, *args):
        self.launches.append((name, grid, block, args))
        return self

    def encode(self):
        out = [JOB_MAGIC, u32(len(self.buffers))]
        for b in self.buffers:
            out += [struct.pack("<Q", len(b)), b]
        out.append(u32(len(self.launches)))
        for name, grid, block, args in self.launches:
            nb = name.encode("ascii")
            out += [u32(len(nb)), nb, u32(grid), u32(block), u32(len(args))]
            for a in args:
                if isinstance(a, Ptr):
                    out.append(struct.pack("<BIQ", 0, a.buf, a.off))
                else:
                    out.append(struct.pack("<BI", 1, len(a)) + a)
        return b"".join(out)


class Emulator:
    def __init__(self, exe, tmp):
        self.exe, self.tmp, self.count = exe, tmp, 0

    def run_raw(self, job_bytes, env=None):
        """Runs a job; returns (exit code, stderr, result buffers or None)."""
        self.count += 1
        job_path = os.path.join(self.tmp, "job%d.bin" % self.count)
        out_path = os.path.join(self.tmp, "out%d.bin" % self.count)
        with open(job_path, "wb") as f:
            f.write(job_bytes)
        p = subprocess.run([self.exe, job_path, out_path], capture_output=True, text=True,
                           env=env)
        bufs = None
        if p.returncode == 0:
            with open(out_path, "rb") as f:
                data = f.read()
            assert data[:8] == OUT_MAGIC, "bad result magic"
            (n,) = struct.unpack_from("<I", data, 8)
            pos, bufs = 12, []
            for _ in range(n):
                (ln,) = struct.unpack_from("<Q", data, pos)
                bufs.append(data[pos + 8:pos + 8 + ln])
                pos += 8 + ln
            assert pos == len(data), "trailing bytes in the result file"
        return p.returncode, p.stderr, bufs

    def run(self, job):
        rc, err, bufs = self.run_raw(job.encode())
        if rc != 0:
            raise AssertionError("emulator failed (exit %d): %s" % (rc, err.strip()))
        return bufs

    def expect_error(self, job_or_bytes, code, *fragments):
        data = job_or_bytes if isinstance(job_or_bytes, bytes) else job_or_bytes.encode()
        rc, err, _ = self.run_raw(data)
        lines = err.strip().splitlines()
        assert rc == code, "expected exit %d, got %d: %s" % (code, rc, err.strip())
        assert len(lines) == 1 and lines[0].startswith("lowbit-cuda-emu: "), repr(err)
        for frag in fragments:
            assert frag in lines[0], "%r not in %r" % (frag, lines[0])
        return lines[0]


def words(b):
    return list(struct.unpack("<%dI" % (len(b) // 4), b))


def halves(b):
    return list(struct.unpack("<%dH" % (len(b) // 2), b))


# ---- independent references ----------------------------------------------------------------------

def e4m3fn_ref(xb):
    """f32 bits -> f32 bits of the nearest e4m3fn value (ties to even), by exact rationals.

    Finite values past 448 after rounding, infinities and NaNs become NaN (non-saturating), which
    decodes to sign | 0x7FC00000."""
    sign = xb & 0x80000000
    if (xb & 0x7FFFFFFF) >= 0x7F800000:
        return sign | 0x7FC00000
    a = Fraction(abs(b2f(xb)))
    if a == 0:
        return sign
    e = math.frexp(float(a))[1] - 1  # a = 1.f x 2^e
    quantum = Fraction(2) ** (max(e, -6) - 3)
    v = round(a / quantum) * quantum  # Fraction round: half to even
    if v > 448:
        return sign | 0x7FC00000
    return sign | f2b(float(v))


def f16_value(h):
    """Value of f16 bits h via ldexp (None for NaN)."""
    s = -1.0 if h & 0x8000 else 1.0
    e, m = (h >> 10) & 0x1F, h & 0x3FF
    if e == 0x1F:
        return None if m else s * math.inf
    if e == 0:
        return s * math.ldexp(m, -24)
    return s * math.ldexp(1024 + m, e - 25)


def half_to_float_ref(h):
    v = f16_value(h)
    return 0x7FFFFFFF if v is None else f2b(v)


def float_to_half_ref(xb):
    """f32 bits -> f16 bits: round to nearest even computed on doubles (exact here)."""
    if is_nan_bits(xb):
        return 0x7FFF
    sign = 0x8000 if xb & 0x80000000 else 0
    x = abs(b2f(xb))
    if math.isinf(x):
        return sign | 0x7C00
    if x == 0.0:
        return sign
    e = math.frexp(x)[1] - 1
    quantum = math.ldexp(1.0, max(e, -14) - 10)
    q = x / quantum  # exact: a power-of-two scaling
    n = math.floor(q)
    frac = q - n
    if frac > 0.5 or (frac == 0.5 and n % 2 == 1):
        n += 1
    v = n * quantum
    if v >= 65536.0:
        return sign | 0x7C00
    if v < math.ldexp(1.0, -14):
        return sign | int(v / math.ldexp(1.0, -24))
    ve = math.frexp(v)[1] - 1
    return sign | ((ve + 15) << 10) | int((v / math.ldexp(1.0, ve) - 1.0) * 1024)


def f16_bits_of(v):
    """Exact f16 encoding of a value representable in f16 (or NaN handled by the caller)."""
    return struct.unpack("<H", struct.pack("<e", v))[0]


def random_f32_bits(rng, n, specials=True):
    out = []
    for i in range(n):
        r = rng.random()
        if r < 0.6:
            out.append(f2b(rng.uniform(-600.0, 600.0)))
        elif r < 0.8:
            out.append(f2b(rng.uniform(-1.0, 1.0) * 2.0 ** rng.randint(-20, 20)))
        else:
            out.append(rng.getrandbits(32))
    if specials:
        out[:8] = [0x7F800000, 0xFF800000, 0x7FC00000, 0xFFA01234, 0x00000001, 0x80000000,
                   0x007FFFFF, 0x7F7FFFFF][:len(out)]
    return out


# ---- tests -------------------------------------------------------------------------------------

def test_kernel_list(cxx, prod_exe, tmp):
    """--list names exactly the extern "C" __global__ functions of fake_quant.cu (preprocessed)."""
    stub_dir = os.path.join(tmp, "nostub")
    os.makedirs(stub_dir, exist_ok=True)
    open(os.path.join(stub_dir, "cuda_fp16.h"), "w").close()
    pre = subprocess.run([cxx, "-E", "-P", "-x", "c++", "-I", stub_dir, "-I", "kernels",
                          "kernels/fake_quant.cu"], cwd=CRATE, capture_output=True, text=True,
                         check=True).stdout
    # An optional launch-bounds qualifier may sit between `void` and the name.
    defined = set(re.findall(
        r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)', pre))
    listed = subprocess.run([prod_exe, "--list"], capture_output=True, text=True,
                            check=True).stdout
    registered = {line.split("(")[0] for line in listed.splitlines() if line}
    assert defined, "no kernels found in fake_quant.cu"
    assert defined == registered, "kernel list mismatch: only in fake_quant.cu %s, only " \
        "registered %s" % (sorted(defined - registered), sorted(registered - defined))
    return "%d kernels" % len(defined)


def test_amax(emu, rng):
    n = 100003
    xs = random_f32_bits(rng, n)
    expect = max(b & 0x7FFFFFFF for b in xs)
    for vec in (1, 0):
        job = Job()
        x = job.buffer(struct.pack("<%dI" % n, *xs))
        st = job.buffer(u32(0))
        job.launch("lb_amax_f32", 7, 128, Ptr(x), i64(n), Ptr(st), i32(vec))
        got = words(emu.run(job)[st])[0]
        assert got == expect, "vec=%d: %#x != %#x" % (vec, got, expect)
    return "n=%d max bits %#x" % (n, expect)


def apply_job(name, xbytes, n, quad, elem_bytes):
    job = Job()
    x = job.buffer(xbytes)
    y = job.buffer(b"\0" * (n * elem_bytes))
    sc = job.buffer(struct.pack("<f", 1.0))
    zr = job.buffer(struct.pack("<f", 0.0))
    ts = job.buffer(struct.pack("<f", 1.0))
    st = job.buffer(struct.pack("<I", 0))
    # Frozen source (from_stats 0), fake mode, the quad flag.
    job.launch(name, 5, 64, Ptr(x), Ptr(y), groups(n), fmt_e4m3fn(), scale(SK_UNIT), Ptr(sc),
               Ptr(zr), Ptr(ts), Ptr(st), Ptr(st), i32(0), i32(0), i32(quad))
    return job, y


def test_apply_f32(emu, rng):
    hand = [(1.0, 0x3F800000), (0.3, f2b(0.3125)), (448.0, f2b(448.0)),
            (464.0, f2b(448.0)),            # a tie between 448 and 480: even mantissa, 448
            (465.0, 0x7FC00000),            # rounds to 480 > 448: overflow, non-saturating NaN
            (1000.0, 0x7FC00000), (-1000.0, 0xFFC00000),
            (2.0 ** -9, f2b(2.0 ** -9)),    # smallest subnormal
            (2.0 ** -10, 0),                # tie between 0 and 2^-9: even, 0
            (-0.0, 0x80000000), (math.inf, 0x7FC00000), (-math.inf, 0xFFC00000)]
    xs = [f2b(v) for v, _ in hand] + random_f32_bits(rng, 20000)
    xs += [f2b(-b2f(b)) if not is_nan_bits(b) else b for b in xs[:5]]
    n = len(xs)  # not a multiple of 4: the quad path's tail runs too
    expect = [e4m3fn_ref(b) for b in xs]
    for (v, want), got in zip(hand, expect):
        assert got == want, "reference disagrees with the hand value for %r" % v
    for name in ("lb_apply_f32_u32", "lb_apply_f32_u64"):
        for quad in (0, 1):
            job, y = apply_job(name, struct.pack("<%dI" % n, *xs), n, quad, 4)
            got = words(emu.run(job)[y])
            for i, (a, b) in enumerate(zip(got, expect)):
                assert a == b, "%s quad=%d x=%#x: %#x != %#x" % (name, quad, xs[i], a, b)
    return "%d elements, %d hand values" % (n, len(hand))


def test_apply_half(emu, rng):
    n = 5003
    hs = [rng.getrandbits(16) for _ in range(n)]
    hs[:6] = [0x3C00, 0x7C00, 0xFC00, 0x7E01, 0x5F80, 0x0001]  # 1, inf, -inf, NaN, 480, tiny
    # f16: quantize the exact value, store as f16 (NaN -> sign | 0x7E00).
    exp16 = []
    for h in hs:
        xb = half_to_float_ref(h) if f16_value(h) is not None else (
            ((h & 0x8000) << 16) | 0x7FC00000 | ((h & 0x3FF) << 13))
        q = e4m3fn_ref(xb)
        exp16.append(((q >> 16) & 0x8000) | 0x7E00 if is_nan_bits(q) else f16_bits_of(b2f(q)))
    # bf16: bits << 16; quantized values are exact in bf16; NaN -> (bits >> 16) | 0x40.
    exp_bf = []
    for h in hs:
        xb = h << 16
        if is_nan_bits(xb):
            xb |= 0x00400000
        q = e4m3fn_ref(xb)
        exp_bf.append((q >> 16) | 0x40 if is_nan_bits(q) else q >> 16)
    for name, expect in (("lb_apply_f16_u32", exp16), ("lb_apply_bf16_u64", exp_bf)):
        for quad in (0, 1):
            job, y = apply_job(name, struct.pack("<%dH" % n, *hs), n, quad, 2)
            got = halves(emu.run(job)[y])
            for i, (a, b) in enumerate(zip(got, expect)):
                assert a == b, "%s quad=%d x=%#06x: %#06x != %#06x" % (name, quad, hs[i], a, b)
    return "%d halves, f16 and bf16" % n


def key_of(b):
    return (~b & 0xFFFFFFFF) if b & 0x80000000 else (b | 0x80000000)


def test_reduce(emu, rng):
    outer, length, inner = 3, 5, 37
    n = outer * length * inner
    xs = random_f32_bits(rng, n, specials=False)
    xs[100] = 0x7FC00000  # a NaN in channel (100 // 37) % 5 = 2
    G = groups(n, outer, length, inner, 0, 0, length, 1)
    chan = [(i // inner) % length for i in range(n)]
    sym = [0] * length
    kmax, kmin, nan = [0] * length, [0xFFFFFFFF] * length, [0] * length
    for i, b in enumerate(xs):
        g = chan[i]
        sym[g] = max(sym[g], b & 0x7FFFFFFF)
        if is_nan_bits(b):
            nan[g] = 1
        else:
            kmax[g], kmin[g] = max(kmax[g], key_of(b)), min(kmin[g], key_of(b))
    asym = []
    for g in range(length):
        asym += [kmax[g], kmin[g], nan[g]]
    for per_warp in (32, 64, 96):
        job = Job()
        x = job.buffer(struct.pack("<%dI" % n, *xs))
        st = job.buffer(b"\xEE" * (4 * length))
        st3 = job.buffer(b"\xEE" * (12 * length))
        job.launch("lb_stats_init", 1, 32, Ptr(st), i64(length), i32(0))
        job.launch("lb_stats_init", 2, 32, Ptr(st3), i64(3 * length), i32(1))
        warps = -(-n // per_warp)
        job.launch("lb_reduce_f32_u32", -(-warps // 2), 64, Ptr(x), G, Ptr(st), i32(0),
                   i64(per_warp), i32(0))
        job.launch("lb_reduce_f32_u64", -(-warps // 2), 64, Ptr(x), G, Ptr(st3), i32(1),
                   i64(per_warp), i32(0))
        out = emu.run(job)
        assert words(out[st]) == sym, "symmetric per_warp=%d" % per_warp
        assert words(out[st3]) == asym, "asymmetric per_warp=%d" % per_warp
    return "per channel %dx%dx%d, sym + asym" % (outer, length, inner)


def test_fused_block(emu, rng):
    for lanes in (1, 8, 32):
        size = 4 * lanes
        nblocks = 37
        xs, expect = [], []
        for _ in range(nblocks):
            k = rng.randint(-10, 10)
            top = 448.0 * 2.0 ** k
            blk = [rng.uniform(-top, top) * 0.999 for _ in range(size)]
            blk = [b2f(f2b(v)) for v in blk]  # round to f32
            at = rng.randrange(size)
            blk[at] = top if rng.random() < 0.5 else -top
            for v in blk:
                xb = f2b(v)
                q = e4m3fn_ref(f2b(v / 2.0 ** k))  # scale = amax / 448 = 2^k exactly
                expect.append(f2b(b2f(q) * 2.0 ** k))
                xs.append(xb)
        n = len(xs)
        job = Job()
        x = job.buffer(struct.pack("<%dI" % n, *xs))
        y = job.buffer(b"\0" * (4 * n))
        ta = job.buffer(u32(0))
        job.launch("lb_fused_block_f32", 3, 64, Ptr(x), Ptr(y), i64(n), i32(lanes), fmt_e4m3fn(),
                   scale(SK_F32, 0, 8, 3, 448.0, 1.0, 0.0, 0), Ptr(ta))
        got = words(emu.run(job)[y])
        for i, (a, b) in enumerate(zip(got, expect)):
            assert a == b, "lanes=%d element %d x=%#x: %#x != %#x" % (lanes, i, xs[i], a, b)
    return "lanes 1, 8, 32"


def test_f16_conversions(emu):
    # f16 -> f32: every half.
    n = 65536
    job = Job()
    src = job.buffer(struct.pack("<%dH" % n, *range(n)))
    dst = job.buffer(b"\0" * (4 * n))
    job.launch("lbt_f16_to_f32", 64, 256, Ptr(src), Ptr(dst), i64(n))
    got = words(emu.run(job)[dst])
    for h in range(n):
        assert got[h] == half_to_float_ref(h), "__half2float(%#06x) = %#x" % (h, got[h])
    # f32 -> f16: around every boundary between halves (the exact value, the midpoint and the
    # f32 neighbours of both), plus a stride through all 2^32 patterns.
    pats = set()
    for h in range(0x7C01):
        lo = math.ldexp(h, -24) if h < 0x400 else f16_value(h)
        hi = f16_value(h + 1) if h + 1 < 0x7C00 else 65536.0
        for c in (f2b(lo), f2b((lo + hi) / 2)):
            for d in (-2, -1, 0, 1, 2):
                if 0 <= c + d <= 0x7FFFFFFF:
                    pats.add(c + d)
    for b in range(0, 1 << 32, 4099):
        pats.add(b)
    pats |= {0x7F800000, 0x7F800001, 0x7FC00000, 0x33000000, 0x33000001, 0x477FEFFF,
             0x477FF000, 0x387FFFFF, 0x38800000}
    pats = sorted(pats | {p | 0x80000000 for p in pats if p < 0x80000000})
    n = len(pats)
    job = Job()
    src = job.buffer(struct.pack("<%dI" % n, *pats))
    dst = job.buffer(b"\0" * (2 * n))
    job.launch("lbt_f32_to_f16", 256, 256, Ptr(src), Ptr(dst), i64(n))
    got = halves(emu.run(job)[dst])
    for p, g in zip(pats, got):
        assert g == float_to_half_ref(p), "__float2half_rn(%#010x) = %#06x, expected %#06x" % (
            p, g, float_to_half_ref(p))
    return "65536 halves, %d f32 patterns" % n


def test_intrinsics(emu):
    job = Job()
    inp = job.buffer(struct.pack("<7I", 0x7F800000, 0, 0x3F800000, 0xFFC01234, 0x00800000,
                                 f2b(2.0 ** -24), f2b(2.5)))
    out = job.buffer(b"\0" * (4 * 28))
    job.launch("lbt_intrinsics", 1, 32, Ptr(inp), Ptr(out))
    got = words(emu.run(job)[out])
    expect = [0x7FFFFFFF, 0x7FFFFFFF, 0x7FFFFFFF, 0x7FFFFFFF, 0x7FFFFFFF,
              0x00400000,                    # subnormal kept
              0x3F800000, 0x3F800002,        # ties to even
              0xFFFFFFFF, 0x7FFFFFFF,        # f64 canonical NaN
              32, 31, 8, 0, 9,               # __clz(0), __clz(1), __popc, __ffs(0), __ffs(0x100)
              0x7FFFFFFF, f2b(2.0),          # fminf(NaN, NaN), fminf(NaN, 2)
              f2b(2.0), 0x7FFFFFFF,          # rintf(2.5), rintf(NaN)
              0, 0x7FFFFFFF, 0,              # __float2int_rn(NaN), saturation
              5, 0xFFFFFFFD,                 # max(3u, 5u), min(-3, 2)
              0x7FFF, 0x7FFFFFFF,            # f16 NaNs
              0x7FFFFFFF, 509]               # __ddiv_rn(0, 0) high word, atomicMax
    for i, (a, b) in enumerate(zip(got, expect)):
        assert a == b, "lbt_intrinsics out[%d] = %#x, expected %#x" % (i, a, b)
    return "%d checks" % len(expect)


def warp_model(vals):
    """The CUDA rules for one warp of lbt_warp_ops (CUDA programming guide wording)."""
    def idx(l, src, w):
        return (l // w) * w + src % w

    def up(l, d, w):
        return l - d if l - d >= (l // w) * w else l

    def down(l, d, w):
        return l + d if l + d < (l // w + 1) * w else l

    def xor(l, m, w):
        return l ^ m if (l ^ m) < (l // w + 1) * w else l

    def s32(v):
        return v - (1 << 32) if v & 0x80000000 else v

    out = []
    accs = [0] * 32
    for k in range(4):
        accs = [accs[l] + sum(range(vals[l] & 7)) for l in range(32)]
        accs = [(accs[l] + accs[down(l, 1, 32)]) & 0xFFFFFFFF for l in range(32)]
    for l in range(32):
        v = vals[l]
        o = [vals[idx(l, l * 7 + 3, 32)], vals[idx(l, -1 - l, 32)], vals[xor(l, 5, 32)],
             vals[down(l, 3, 32)], vals[up(l, 3, 32)], vals[down(l, 3, 8)], vals[up(l, 2, 16)],
             vals[idx(l, 5, 16)], vals[xor(l, 16, 16)],
             sum(1 << i for i in range(32) if vals[i] & 1),
             int(all(x != 0 for x in vals)), int(any(x == 7 for x in vals)),
             max(vals), min(vals), 0, sum(vals) & 0xFFFFFFFF,
             max(vals, key=s32), min(vals, key=s32)]
        for x in vals:
            o[14] |= x
        partner = l ^ 1
        o += [partner, vals[partner], vals[0]]  # 64-bit xor shuffle; float shuffle moves bits
        out.append(o)
    return out, accs


def test_warp_ops(emu, rng):
    nwarps = 6
    vals = [rng.getrandbits(32) for _ in range(32 * nwarps)]
    for l in range(32):
        vals[32 + l] = rng.randint(1, 9)  # warp 1: all nonzero, has a 7 maybe
    vals[2 * 32 + 3] = 7
    vals[3 * 32 + 0] = 0x7FA00001      # a signalling-NaN pattern moved by a float shuffle
    job = Job()
    inp = job.buffer(struct.pack("<%dI" % len(vals), *vals))
    out = job.buffer(b"\0" * (4 * 24 * len(vals)))
    job.launch("lbt_warp_ops", 3, 64, Ptr(inp), Ptr(out))
    got = words(emu.run(job)[out])
    for w in range(nwarps):
        wv = vals[32 * w:32 * w + 32]
        model, accs = warp_model(wv)
        for l in range(32):
            t = 32 * w + l
            g = got[24 * t:24 * t + 24]
            e = model[l] + [t % 64, t // 64, accs[l]]  # threadIdx.x, blockIdx.x, the loop
            for k in range(24):
                assert g[k] == e[k], "warp %d lane %d out[%d] = %#x, expected %#x" % (
                    w, l, k, g[k], e[k])
    return "%d warps x 24 results" % nwarps


def test_errors(emu):
    # Job errors (exit 2).
    good = Job()
    b0 = good.buffer(b"\0" * 64)
    good.launch("lbt_early_exit", 1, 32, Ptr(b0))
    enc = good.encode()
    emu.expect_error(b"LBEMU\x02\x00\x00" + enc[8:], 2, "bad magic")
    emu.expect_error(enc[:-5], 2, "truncated")
    emu.expect_error(enc + b"\0", 2, "unexpected bytes")
    emu.expect_error(Job().launch("lb_nope", 1, 32), 2, "unknown kernel lb_nope")

    def one(name, grid, block, *args, bufs=(64,)):
        j = Job()
        for n in bufs:
            j.buffer(b"\0" * n)
        return j.launch(name, grid, block, *args)

    emu.expect_error(one("lbt_store", 1, 32, Ptr(0)), 2, "1 argument(s) given, the kernel takes 3")
    emu.expect_error(one("lbt_store", 1, 32, Ptr(0), Ptr(0), u32(1)), 2, "argument 1 is a pointer")
    emu.expect_error(one("lbt_store", 1, 32, i64(0), i64(0), u32(1)), 2, "argument 0 is a value")
    emu.expect_error(one("lbt_store", 1, 32, Ptr(0), i32(0), u32(1)), 2, "argument 1 is 4 bytes")
    emu.expect_error(one("lbt_store", 1, 32, Ptr(1), i64(0), u32(1)), 2, "names buffer 1 of 1")
    emu.expect_error(one("lbt_store", 1, 32, Ptr(0, 68), i64(0), u32(1)), 2, "past the end")
    emu.expect_error(one("lbt_store", 1, 32, Ptr(0, 2), i64(0), u32(1)), 2, "not a multiple of 4")
    emu.expect_error(one("lbt_store", 1, 48, Ptr(0), i64(0), u32(1)), 2, "block_x 48")
    emu.expect_error(one("lbt_store", 0, 32, Ptr(0), i64(0), u32(1)), 2, "grid_x 0")
    # Kernel faults (exit 3).
    emu.expect_error(one("lbt_early_exit", 1, 32, Ptr(0), bufs=(128,)), 3,
                     "kernel lbt_early_exit block 0 warp 0", "16 lanes (mask 0xaaaaaaaa) returned",
                     "wait at __shfl_sync (selftest_kernels.cuh:")
    emu.expect_error(one("lbt_mixed_ops", 2, 64, Ptr(0), bufs=(1024,)), 3,
                     "kernel lbt_mixed_ops block 0 warp 0", "different warp collectives",
                     "lane 16 at __ballot_sync")
    emu.expect_error(one("lbt_partial_mask", 1, 32, Ptr(0), bufs=(128,)), 3,
                     "lane 0 (threadIdx.x 0)", "mask 0x0000ffff")
    emu.expect_error(one("lbt_syncthreads", 1, 32, Ptr(0), bufs=(128,)), 3, "__syncthreads")
    # Out of bounds: a write into the canary, into the guard page, before the buffer; a read
    # past the end.
    emu.expect_error(one("lbt_store", 2, 64, Ptr(0), i64(16), u32(7)), 3,
                     "kernel lbt_store wrote past the end of buffer 0")
    emu.expect_error(one("lbt_store", 2, 64, Ptr(0), i64(1030), u32(7), bufs=(64, 64)), 3,
                     "kernel lbt_store block 1 warp 1 lane 5 (threadIdx.x 37)",
                     "bytes past the end of buffer 0")
    emu.expect_error(one("lbt_store", 2, 64, Ptr(1), i64(-1), u32(7), bufs=(64, 64)), 3,
                     "4 bytes before the start of buffer 1")
    emu.expect_error(one("lbt_load", 2, 64, Ptr(0), i64(1024), Ptr(1), bufs=(4096, 4)), 3,
                     "block 1 warp 1 lane 5", "0 bytes past the end of buffer 0")
    emu.expect_error(one("lbt_recursion", 1, 32, Ptr(0), i32(1000), bufs=(128,)), 3,
                     "lane stack overflow")
    # And a recursion that fits.
    j = one("lbt_recursion", 1, 32, Ptr(0), i32(8), bufs=(128,))
    assert emu.run(j) is not None
    return "13 job errors, 9 kernel faults"


def test_speed(emu, rng):
    n = 1 << 20
    xs = [f2b(rng.uniform(-500.0, 500.0)) for _ in range(n)]
    job, y = apply_job("lb_apply_f32_u32", struct.pack("<%dI" % n, *xs), n, 0, 4)
    grid = list(job.launches[0])
    grid[1], grid[2] = 1024, 256
    job.launches[0] = tuple(grid)
    env = dict(os.environ, LB_EMU_VERBOSE="1")
    t0 = time.time()
    rc, err, bufs = emu.run_raw(job.encode(), env=env)
    wall = time.time() - t0
    assert rc == 0, err
    got = words(bufs[y])
    for i in random.Random(7).sample(range(n), 3000):
        assert got[i] == e4m3fn_ref(xs[i]), "element %d" % i
    launch = err.strip().splitlines()[-1].split(": ")[-1]
    return "1M elements, grid 1024 x 256: launch %s, whole process %.2f s" % (launch, wall)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cxx", default=os.environ.get("CXX", "c++"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="lowbit-emu-selftest-", dir="/tmp")
    ok = False
    try:
        prod = os.path.join(tmp, "lowbit-cuda-emu")
        test = os.path.join(tmp, "lowbit-cuda-emu-selftest")
        for exe, st in ((prod, False), (test, True)):
            t0 = time.time()
            p = subprocess.run(build_command(args.cxx, exe, st), cwd=CRATE, capture_output=True,
                               text=True)
            if p.returncode != 0 or p.stderr.strip():
                print(p.stderr)
                raise SystemExit("FAIL build%s: %s" % (" (selftest)" if st else "",
                                                        "errors" if p.returncode else "warnings"))
            print("ok   build%s (%.1f s, no warnings)" % (" -DLB_EMU_SELFTEST" if st else "",
                                                           time.time() - t0))
        emu = Emulator(test, tmp)
        rng = random.Random(20240601)
        tests = [
            ("kernel list", lambda: test_kernel_list(args.cxx, prod, tmp)),
            ("lb_amax_f32", lambda: test_amax(emu, rng)),
            ("lb_apply_f32 e4m3fn cast", lambda: test_apply_f32(emu, rng)),
            ("lb_apply_f16/bf16 e4m3fn cast", lambda: test_apply_half(emu, rng)),
            ("lb_reduce_f32 per channel", lambda: test_reduce(emu, rng)),
            ("lb_fused_block_f32", lambda: test_fused_block(emu, rng)),
            ("f16 conversions", lambda: test_f16_conversions(emu)),
            ("intrinsics", lambda: test_intrinsics(emu)),
            ("warp collectives", lambda: test_warp_ops(emu, rng)),
            ("error reports", lambda: test_errors(emu)),
            ("speed", lambda: test_speed(Emulator(prod, tmp), rng)),
        ]
        failed = 0
        for name, fn in tests:
            t0 = time.time()
            try:
                info = fn()
                print("ok   %-30s %s (%.1f s)" % (name, info, time.time() - t0))
            except AssertionError as e:
                failed += 1
                print("FAIL %-30s %s" % (name, e))
        ok = failed == 0
        print("all passed" if ok else "%d failed" % failed)
    finally:
        if args.keep or not ok:
            print("files kept in", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
