"""Writing the golden files of the reference tests (tests/golden_io of lowbit-quant reads
them): lines of hex words under a one-letter tag, one line per row."""

import numpy as np


def hex32(a):
    """The f32 / u32 values of `a` as space-separated 8-digit hex words."""
    return " ".join(f"{int(v):08x}" for v in np.asarray(a).reshape(-1).view(np.uint32))


def f32_rows(lines, tag, a):
    """One `tag` line of hex words per row of the 2-D f32 array (or tensor) `a`."""
    a = np.asarray(a, dtype=np.float32)
    for row in a:
        lines.append(f"{tag} " + hex32(row))


def write(out, lines):
    """Writes `lines` to the path `out` (its folder created) and says so."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out} ({len(lines)} lines)")
