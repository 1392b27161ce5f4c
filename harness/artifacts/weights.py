"""Source-weights identity: one sha256 a user can recompute without qconform (docs/artifacts.md
prints the ten lines that do it): every tensor sorted by name, each as the JSON text
[name, safetensors dtype, shape] followed by its raw little-endian bytes."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any, Iterable

Tensor = tuple[str, list[int], bytes]  # safetensors dtype name, shape, raw bytes

# numpy dtype name -> safetensors dtype name, for ONNX initializers.
NUMPY_TO_SAFETENSORS = {
    "float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}


def safetensors_tensors(data: bytes) -> dict[str, Tensor]:
    """The tensors of one safetensors blob, read from its header (no framework needed)."""
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    header.pop("__metadata__", None)
    body = 8 + size
    return {name: (info["dtype"], info["shape"], data[body + info["data_offsets"][0] : body + info["data_offsets"][1]]) for name, info in header.items()}


def digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        h.update(json.dumps([name, dtype, list(shape)]).encode())
        h.update(raw)
    return h.hexdigest()


def state_dict_sha256(state_dict: dict) -> str:
    """The hash of a torch state dict: the same as of the safetensors file it saves to."""
    from safetensors.torch import save

    # clone: safetensors refuses tensors that share storage (tied weights); each name is hashed.
    return digest(safetensors_tensors(save({k: v.detach().contiguous().cpu().clone() for k, v in state_dict.items()})))


def onnx_sha256(path: Path) -> str:
    """The hash of an ONNX graph's initializers (their ONNX names), the same scheme."""
    import onnx
    from onnx import numpy_helper

    tensors = {}
    for init in onnx.load(str(path)).graph.initializer:
        array = numpy_helper.to_array(init)
        dtype = NUMPY_TO_SAFETENSORS.get(array.dtype.name)
        if dtype is None:
            raise ValueError(f"{path}: initializer {init.name!r} has dtype {array.dtype}, which the weights hash does not cover")
        tensors[init.name] = (dtype, list(array.shape), array.astype(array.dtype.newbyteorder("<")).tobytes())
    return digest(tensors)


def safetensors_header(path: Path) -> dict[str, dict]:
    """A safetensors file's tensor table (name -> dtype, shape, data_offsets), read from its header
    alone: a release-size checkpoint is never read whole for it."""
    with open(path, "rb") as fh:
        size = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(size))
    header.pop("__metadata__", None)
    for info in header.values():
        info["body"] = 8 + size  # where the data offsets count from
    return header


def files_sha256(files: Iterable[Path], block: int = 1 << 24) -> str:
    """`digest` of the tensors of safetensors files (a later file's tensor replaces an earlier one of
    the same name), streamed: each tensor's bytes are read in blocks, never a whole file."""
    where: dict[str, tuple[Path, dict]] = {}
    for path in sorted(Path(f) for f in files):
        where.update({name: (path, info) for name, info in safetensors_header(path).items()})
    h = hashlib.sha256()
    handles: dict[Path, Any] = {}
    try:
        for name in sorted(where):
            path, info = where[name]
            fh = handles.get(path) or handles.setdefault(path, open(path, "rb"))
            start, end = (info["body"] + offset for offset in info["data_offsets"])
            h.update(json.dumps([name, info["dtype"], list(info["shape"])]).encode())
            fh.seek(start)
            while start < end:
                chunk = fh.read(min(block, end - start))
                h.update(chunk)
                start += len(chunk)
    finally:
        for fh in handles.values():
            fh.close()
    return h.hexdigest()


def hash_weights(path: Path) -> str:
    """`qconform hash-weights PATH`: a checkpoint directory (its *.safetensors), a .safetensors or an .onnx file."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise ValueError(f"{path}: no *.safetensors files in this directory")
        return files_sha256(files)
    if path.suffix == ".safetensors":
        return files_sha256([path])
    if path.suffix == ".onnx":
        return onnx_sha256(path)
    raise ValueError(f"{path}: expected a checkpoint directory, a .safetensors or an .onnx file")
