"""Golden store: the outputs each pathway produced when it was last approved, one folder per
model / pathway / device class (safetensors + meta.json), compared on every run."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from harness.artifacts import write_json_atomic

OUTPUTS = "outputs.safetensors"
META = "meta.json"


class GoldenError(Exception):
    """A golden record is missing, corrupt, or was recorded for other inputs."""


@dataclass(frozen=True)
class Golden:
    path: Path
    outputs: dict[str, np.ndarray]
    meta: dict[str, Any]


def inputs_sha256(inputs: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(inputs):
        array = np.ascontiguousarray(inputs[name])
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def golden_dir(root: Path, model_id: str, pathway: str, device_class: str) -> Path:
    return Path(root) / model_id / pathway / device_class


def write_golden(directory: Path, outputs: dict[str, np.ndarray], inputs: dict[str, np.ndarray], meta: dict[str, Any]) -> Golden:
    for name, array in outputs.items():
        if not np.isfinite(array).all():
            raise GoldenError(f"refusing to record a golden with non-finite values in output {name!r}")
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".safetensors.tmp")
    os.close(fd)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in outputs.items()}, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, directory / OUTPUTS)
    full_meta = {**meta, "inputs_sha256": inputs_sha256(inputs), "outputs": sorted(outputs)}
    write_json_atomic(directory / META, full_meta)
    return Golden(directory, outputs, full_meta)


def read_golden(directory: Path, inputs: dict[str, np.ndarray]) -> Golden:
    meta_path, out_path = directory / META, directory / OUTPUTS
    if not meta_path.is_file() or not out_path.is_file():
        raise GoldenError(f"{directory}: no golden record (run with --regen-golden to record one)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise GoldenError(f"{meta_path}: not valid JSON ({exc})") from exc
    try:
        outputs = load_file(str(out_path))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise GoldenError(f"{out_path}: unreadable safetensors file ({exc})") from exc
    for name, array in outputs.items():
        if not np.isfinite(array).all():
            raise GoldenError(f"{out_path}: output {name!r} holds NaN/Inf; a golden must be finite")
    if meta.get("inputs_sha256") != inputs_sha256(inputs):
        raise GoldenError(f"{meta_path}: recorded for different eval inputs; regenerate with --regen-golden")
    if sorted(outputs) != sorted(meta.get("outputs", [])):
        raise GoldenError(f"{out_path}: outputs {sorted(outputs)} differ from meta.json {meta.get('outputs')}")
    return Golden(directory, outputs, meta)


def describe_drift(meta: dict[str, Any], current: dict[str, Any]) -> str:
    """Which recorded tool versions differ from now: the first suspect when a golden check fails."""
    recorded = meta.get("tool_versions", {})
    moved = [f"{k} {recorded.get(k)} -> {v}" for k, v in sorted(current.items()) if recorded.get(k) != v]
    return "; ".join(moved) if moved else "no tool version changed"
