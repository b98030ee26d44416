#!/usr/bin/env python3
"""Converts a PyTorch checkpoint in the legacy (pre-1.6, non-zip) serialization to safetensors,
with the Python standard library only (no torch, no numpy).

    python3 scripts/assets/pth_to_safetensors.py IN.pth OUT.safetensors

The legacy format is a stream of pickles: a magic number, the protocol version, system info, the
state dict (tensors point at storages through pickle persistent ids), the list of storage keys,
then each storage's raw bytes preceded by its element count (int64, little endian). Tensors are
written contiguous, in their storage dtype, under their state-dict names; `num_batches_tracked`
counters are kept (int64) so the file is a faithful copy.
"""
import collections
import json
import pickle
import struct
import sys

MAGIC = 0x1950A86A20F9469CFC6C

# storage class name -> (safetensors dtype, element size, struct code)
DTYPES = {
    "FloatStorage": ("F32", 4),
    "DoubleStorage": ("F64", 8),
    "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2),
    "LongStorage": ("I64", 8),
    "IntStorage": ("I32", 4),
    "ShortStorage": ("I16", 2),
    "CharStorage": ("I8", 1),
    "ByteStorage": ("U8", 1),
    "BoolStorage": ("BOOL", 1),
}


class StorageType:
    def __init__(self, name):
        if name not in DTYPES:
            raise ValueError(f"unsupported storage type torch.{name}")
        self.name = name


class Storage:
    def __init__(self, key, stype, numel):
        self.key = key
        self.dtype, self.itemsize = DTYPES[stype.name]
        self.numel = numel
        self.data = None


class TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)

    def contiguous_bytes(self):
        s, n = self.storage, self.storage.itemsize
        numel = 1
        for d in self.size:
            numel *= d
        # contiguous strides of self.size
        expect, acc = [], 1
        for d in reversed(self.size):
            expect.append(acc)
            acc *= d
        expect = tuple(reversed(expect))
        if numel == 0:
            return b""
        if self.stride == expect or len(self.size) == 0:
            return s.data[self.offset * n:(self.offset + numel) * n]
        out = bytearray()
        idx = [0] * len(self.size)
        for _ in range(numel):
            off = self.offset + sum(i * st for i, st in zip(idx, self.stride))
            out += s.data[off * n:(off + 1) * n]
            for k in reversed(range(len(idx))):
                idx[k] += 1
                if idx[k] < self.size[k]:
                    break
                idx[k] = 0
        return bytes(out)


def rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    return TensorRef(storage, offset, size, stride)


def rebuild_parameter(data, requires_grad=False, hooks=None, *rest):
    return data


class Unpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return rebuild_parameter
        if module == "torch" and name.endswith("Storage"):
            return StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        kind, stype, key, _location, numel = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        if key not in self.storages:
            self.storages[key] = Storage(key, stype, numel)
        return self.storages[key]


def flatten(obj, prefix=""):
    """Yields (name, TensorRef) of a (possibly nested) state dict."""
    if isinstance(obj, TensorRef):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    storages = {}
    with open(src, "rb") as f:
        magic = pickle.load(f)
        if magic != MAGIC:
            sys.exit(f"{src}: not a legacy PyTorch checkpoint (magic {magic!r}); zip-format files "
                     "can be read with candle's pickle module directly")
        pickle.load(f)  # protocol version
        pickle.load(f)  # sys info
        state = Unpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            (numel,) = struct.unpack("<q", f.read(8))
            s = storages[key]
            s.data = f.read(numel * s.itemsize)
            if len(s.data) != numel * s.itemsize:
                sys.exit(f"{src}: storage {key} truncated")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    header, blobs, offset = {}, [], 0
    for name, t in sorted(flatten(state)):
        data = t.contiguous_bytes()
        header[name] = {"dtype": t.storage.dtype, "shape": list(t.size),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt", "converted_from": src.rsplit("/", 1)[-1]}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(dst + ".tmp", "wb") as out:
        out.write(struct.pack("<Q", len(h)))
        out.write(h)
        for b in blobs:
            out.write(b)
    import os
    os.replace(dst + ".tmp", dst)
    print(f"{dst}: {len(blobs)} tensors, {offset} bytes")


if __name__ == "__main__":
    main()
