#!/usr/bin/env python3
# Ratios of the GPU bench (benches/cuda.rs) to its device-to-device copy, from a criterion log:
#   python3 scripts/cuda/bench-ratios.py bench.log
import re, sys
# Criterion's bench log: a benchmark name line, then "time:   [lo mid hi]".
units = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
name, times = None, {}
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    m = re.match(r"^(gpu_fake_quant_256M/\S+)", line.strip())
    if m:
        name = m.group(1).split("/", 1)[1]
    m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
    if m and name:
        times[name] = float(m.group(1)) * units[m.group(2)]
        name = None
copy = times.get("copy_d2d")
if not copy:
    sys.exit("no copy_d2d figure in the bench log")
print(f"{'op':40s} {'time':>10s}  vs d2d copy")
for k, t in times.items():
    print(f"{k:40s} {t * 1e3:8.3f} ms  {copy / t:5.2f}x")
