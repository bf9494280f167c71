"""Minimal safetensors reader/writer with numpy only (no `safetensors` package needed).

Format: 8-byte little-endian header length N, N bytes of JSON
{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {str: str}},
then the little-endian data; offsets are relative to the start of the data and tile it exactly.
load() returns BF16 tensors as float32 (numpy has no bfloat16); save() writes numpy dtypes, or
raw 16-bit patterns as BF16 when asked via `dtypes`.
"""
import itertools
import json
import os
import struct

import numpy as np

# safetensors dtype name <-> numpy dtype (little-endian).
_TO_NUMPY = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_FROM_NUMPY = {v: k for k, v in _TO_NUMPY.items()}
_MAX_HEADER = 100 << 20


class SafetensorsError(ValueError):
    """A malformed file or an array that cannot be stored."""


def _st_dtype(name, arr, override):
    if override is not None:
        if override == "BF16":
            if arr.dtype != np.uint16:
                raise SafetensorsError(f"{name}: BF16 needs the raw bit patterns as uint16, "
                                       f"got {arr.dtype}")
            return "BF16"
        if override not in _TO_NUMPY or _TO_NUMPY[override] != arr.dtype.newbyteorder("<"):
            raise SafetensorsError(f"{name}: dtype {override} does not match array dtype {arr.dtype}")
        return override
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder in "<>=" else arr.dtype
    if dt not in _FROM_NUMPY:
        raise SafetensorsError(f"{name}: numpy dtype {arr.dtype} has no safetensors equivalent")
    return _FROM_NUMPY[dt]


def save(path, tensors, metadata=None, dtypes=None):
    """Writes {name: ndarray} (names sorted) atomically: a temp file beside `path`, fsync, rename.

    dtypes: optional {name: safetensors dtype} to store e.g. uint16 bit patterns as "BF16".
    """
    dtypes = dtypes or {}
    header = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise SafetensorsError("metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    blobs, offset = [], 0
    for name in sorted(tensors):
        if name == "__metadata__":
            raise SafetensorsError("'__metadata__' is reserved, not a tensor name")
        arr = np.asarray(tensors[name])
        st = _st_dtype(name, arr, dtypes.get(name))
        data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": st, "shape": [int(d) for d in arr.shape],
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # data start 8-byte aligned
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for b in blobs:
                f.write(b)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _create_temp(path):
    """A new file beside `path` (so that the rename is atomic), with the umask's permissions."""
    for i in itertools.count():
        tmp = f"{path}.tmp.{os.getpid()}.{i}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def load(path):
    """Returns ({name: ndarray}, metadata dict). BF16 comes back as float32 (exact)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise SafetensorsError(f"{path}: truncated ({len(blob)} bytes, no header length)")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8 or n > _MAX_HEADER:
        raise SafetensorsError(f"{path}: header length {n} exceeds the file size ({len(blob)})")

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise SafetensorsError(f"{path}: duplicate key in header")
        return dict(pairs)

    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    data = memoryview(blob)[8 + n:]
    metadata = header.pop("__metadata__", None) or {}
    out, spans = {}, []
    for name, info in header.items():
        try:
            st, shape, (begin, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise SafetensorsError(f"{path}: tensor '{name}': malformed header entry") from None
        if not (0 <= begin <= end <= len(data)):
            raise SafetensorsError(f"{path}: tensor '{name}': data_offsets [{begin}, {end}] "
                                   f"outside the data section ({len(data)} bytes)")
        size = 2 if st == "BF16" else _TO_NUMPY[st].itemsize if st in _TO_NUMPY else None
        if size is None:
            raise SafetensorsError(f"{path}: tensor '{name}': unknown dtype '{st}'")
        if int(np.prod(shape, dtype=np.int64)) * size != end - begin:
            raise SafetensorsError(f"{path}: tensor '{name}': shape {shape} of {st} does not "
                                   f"match data_offsets [{begin}, {end}]")
        raw = bytes(data[begin:end])
        if st == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=_TO_NUMPY[st]).copy()
        out[name] = arr.reshape(shape)
        spans.append((begin, end, name))
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            raise SafetensorsError(f"{path}: tensor '{name}' starts at byte {begin}, expected "
                                   f"{pos} (hole or overlap)")
        pos = end
    if pos != len(data):
        raise SafetensorsError(f"{path}: {len(data) - pos} bytes after the last tensor")
    return out, dict(metadata)
