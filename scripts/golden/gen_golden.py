#!/usr/bin/env python3
"""Generate golden reference data for the lowbit low-precision float codecs.

Reference implementation: the Python package ml_dtypes.
Pinned versions (see scripts/golden/requirements.txt):

    ml_dtypes == 0.6.0
    numpy     == 2.4.6
    (generated with CPython 3.11.7)

For each format T below this writes, into crates/lowbit-formats/tests/golden/:

  <short>.runs    Run-length encoding of the total map
                      u (f32 bit pattern, 0..2^32) -> code
                  where code = np.array(u, np.uint32).view(np.float32)
                               .astype(T).view(np.uint8)
                  (ml_dtypes' astype with default semantics).
                  One line per run: "<start:08x> <code:02x>", ascending by
                  start, first line starts at 00000000. A run lasts until the
                  next line's start - 1 (the last one until ffffffff).

  <short>.decode  For every code c in 0..2^bits:
                  "<c:02x> <f32 bits:08x>" where the f32 bits are those of
                  np.array(c, np.uint8).view(T).astype(np.float32).

Lines starting with '#' are comments/headers.

Usage (from the repository root):

    /tmp/venv/bin/python scripts/golden/gen_golden.py            # every format
    /tmp/venv/bin/python scripts/golden/gen_golden.py e3m4 ...   # only these short names

Deterministic: the output depends only on the ml_dtypes/numpy versions.
Memory: one 2^26-element chunk at a time (well under 4 GB).
"""

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import ml_dtypes

EXPECTED_VERSIONS = {"ml_dtypes": "0.6.0", "numpy": "2.4.6"}

SCRIPT_REL = "scripts/golden/gen_golden.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = REPO_ROOT / "crates" / "lowbit-formats" / "tests" / "golden"

# (ml_dtypes name, short name, bit width)
FORMATS = [
    ("float8_e4m3fn", "e4m3fn", 8),
    ("float8_e4m3", "e4m3", 8),
    ("float8_e5m2", "e5m2", 8),
    ("float8_e4m3fnuz", "e4m3fnuz", 8),
    ("float8_e5m2fnuz", "e5m2fnuz", 8),
    ("float6_e2m3fn", "e2m3fn", 6),
    ("float6_e3m2fn", "e3m2fn", 6),
    ("float4_e2m1fn", "e2m1fn", 4),
    ("float8_e8m0fnu", "e8m0fnu", 8),
    # ml_dtypes' two other 8-bit floats (beyond the nine the formats issue names).
    ("float8_e3m4", "e3m4", 8),
    ("float8_e4m3b11fnuz", "e4m3b11fnuz", 8),
]

CHUNK_LOG2 = 26
CHUNK = 1 << CHUNK_LOG2
TOTAL = 1 << 32

# Spot checks: (short, f32 value, expected code). Checked against the runs
# table (not only against ml_dtypes directly), so they validate the RLE too.
SANITY = {
    "e4m3fn": [(448.0, 0x7E), (464.0, 0x7E), (465.0, 0x7F), (-465.0, 0xFF),
               (1.0, 0x38), (-0.0, 0x80), (float("inf"), 0x7F)],
    "e4m3": [(240.0, 0x77), (1.0, 0x38), (float("inf"), 0x78),
             (float("-inf"), 0xF8)],
    "e5m2": [(57344.0, 0x7B), (1.0, 0x3C), (float("inf"), 0x7C),
             (float("-inf"), 0xFC)],
    "e4m3fnuz": [(1.0, 0x40), (240.0, 0x7F), (-0.0, 0x00)],
    "e5m2fnuz": [(1.0, 0x40), (57344.0, 0x7F), (-0.0, 0x00)],
    "e2m3fn": [(1.0, 0x08), (7.5, 0x1F), (-7.5, 0x3F)],
    "e3m2fn": [(1.0, 0x0C), (28.0, 0x1F), (-28.0, 0x3F)],
    "e2m1fn": [(1.0, 0x2), (6.0, 0x7), (-6.0, 0xF), (0.25, 0x0),
               (0.26, 0x1)],
    "e8m0fnu": [(1.0, 0x7F), (2.0, 0x80), (3.0, 0x81), (0.5, 0x7E)],
    "e3m4": [(1.0, 0x30), (15.5, 0x6F), (16.0, 0x70), (float("inf"), 0x70),
             (-0.0, 0x80)],
    "e4m3b11fnuz": [(1.0, 0x58), (30.0, 0x7F), (-0.0, 0x00),
                    (float("inf"), 0x80)],
}


def f32_bits(x: float) -> int:
    return int(np.array(x, dtype=np.float32).view(np.uint32))


def compute_runs(T):
    """Return (starts: np.ndarray[uint64], codes: np.ndarray[uint8])."""
    base = np.arange(CHUNK, dtype=np.uint32)
    u = np.empty(CHUNK, dtype=np.uint32)
    starts_parts = []
    codes_parts = []
    prev_code = None
    for lo in range(0, TOTAL, CHUNK):
        np.add(base, np.uint32(lo), out=u)
        codes = u.view(np.float32).astype(T).view(np.uint8)
        idx = np.flatnonzero(codes[1:] != codes[:-1]) + 1
        if prev_code is None or codes[0] != prev_code:
            idx = np.concatenate(([0], idx))
        if idx.size:
            starts_parts.append(idx.astype(np.uint64) + np.uint64(lo))
            codes_parts.append(codes[idx].copy())
        prev_code = codes[-1]
        del codes
    starts = np.concatenate(starts_parts)
    codes = np.concatenate(codes_parts)
    return starts, codes


def lookup(starts, codes, u):
    """Decode the RLE at f32 bit patterns u (array of uint32)."""
    i = np.searchsorted(starts, np.asarray(u, dtype=np.uint64), side="right") - 1
    return codes[i]


def header(kind, name, short, bits, n_lines, line_fmt):
    return [
        f"# lowbit golden data: {short}.{kind}",
        f"# generator: {SCRIPT_REL}",
        f"# ml_dtypes {ml_dtypes.__version__}, numpy {np.__version__}",
        f"# format: ml_dtypes.{name} ({bits} bits)",
        f"# {'runs' if kind == 'runs' else 'codes'}: {n_lines}",
        f"# line format: {line_fmt}",
    ]


def write_runs(name, short, bits, starts, codes):
    lines = header(
        "runs", name, short, bits, len(starts),
        "<start f32 bits, 8 hex> <code, 2 hex>; run covers f32 bit patterns "
        "[start, next start) (last run through ffffffff); code = "
        f"np.float32 value .astype(ml_dtypes.{name}).view(np.uint8)",
    )
    lines += [f"{int(s):08x} {int(c):02x}" for s, c in zip(starts, codes)]
    path = OUT_DIR / f"{short}.runs"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_decode(name, short, bits, T):
    c = np.arange(1 << bits, dtype=np.uint8)
    f = c.view(T).astype(np.float32).view(np.uint32)
    lines = header(
        "decode", name, short, bits, len(c),
        "<code, 2 hex> <f32 bits, 8 hex>; f32 = "
        f"np.uint8 code .view(ml_dtypes.{name}).astype(np.float32)",
    )
    lines += [f"{int(a):02x} {int(b):08x}" for a, b in zip(c, f)]
    path = OUT_DIR / f"{short}.decode"
    path.write_text("\n".join(lines) + "\n")
    return path, f


def main():
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    for mod, want in EXPECTED_VERSIONS.items():
        have = {"ml_dtypes": ml_dtypes.__version__, "numpy": np.__version__}[mod]
        if have != want:
            print(f"WARNING: {mod} {have} installed, script pinned to {want}",
                  file=sys.stderr)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12345)
    failures = 0
    summary = []
    t_all = time.time()
    only = set(sys.argv[1:])
    unknown = only - {short for _, short, _ in FORMATS}
    if unknown:
        print(f"unknown short name(s): {sorted(unknown)}", file=sys.stderr)
        return 2
    for name, short, bits in FORMATS:
        if only and short not in only:
            continue
        T = getattr(ml_dtypes, name)
        t0 = time.time()
        starts, codes = compute_runs(T)
        runs_path = write_runs(name, short, bits, starts, codes)
        dec_path, dec = write_decode(name, short, bits, T)
        dt = time.time() - t0

        # Structural checks.
        ok = starts[0] == 0 and np.all(np.diff(starts) > 0) and \
            np.all(codes[1:] != codes[:-1]) and int(codes.max()) < (1 << bits)
        if not ok:
            failures += 1
            print(f"FAIL {short}: structural check of runs table")

        # Random cross-check of the RLE against ml_dtypes directly.
        samp = rng.integers(0, 1 << 32, size=1 << 20, dtype=np.uint64)
        samp = np.concatenate((samp, starts, starts - 1)).astype(np.uint32)
        direct = samp.view(np.float32).astype(T).view(np.uint8)
        if not np.array_equal(direct, lookup(starts, codes, samp)):
            failures += 1
            print(f"FAIL {short}: RLE disagrees with ml_dtypes on samples")

        # Named sanity facts.
        facts = []
        for val, want in SANITY.get(short, []):
            got = int(lookup(starts, codes, [f32_bits(val)])[0])
            status = "ok" if got == want else "FAIL"
            if got != want:
                failures += 1
            facts.append(f"{val!r}->{got:#04x}({status})")
        # NaN / signed-zero behaviour, for the report.
        qnan, nqnan = 0x7FC00000, 0xFFC00000
        z, nz = 0x00000000, 0x80000000
        ninf, neg1 = f32_bits(float("-inf")), f32_bits(-1.0)
        sp = lookup(starts, codes, [qnan, nqnan, z, nz, ninf, neg1])
        facts.append("+qNaN->%#04x -qNaN->%#04x +0->%#04x -0->%#04x "
                     "-inf->%#04x -1.0->%#04x" % tuple(int(x) for x in sp))
        summary.append(
            f"{short:9s} runs={len(starts):6d} time={dt:6.1f}s  "
            + " ".join(facts))
        print(summary[-1], flush=True)
        print(f"          wrote {runs_path.relative_to(REPO_ROOT)} and "
              f"{dec_path.relative_to(REPO_ROOT)}", flush=True)

    print(f"\nTotal time: {time.time() - t_all:.1f}s")
    if failures:
        print(f"{failures} sanity check(s) FAILED")
        return 1
    print("All sanity checks passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
