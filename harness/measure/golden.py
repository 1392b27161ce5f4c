"""Golden store: what the gates compare of each pathway's outputs when it was last approved (the
model's golden_digest: full outputs of small models, top-k log-probabilities and generated token
ids of LLMs, pooled embeddings of encoders), one folder per model / pathway / device class
(safetensors + meta.json), compared on every run. Bounded: an 8B model with a 128k vocabulary on
512 evaluation tokens stores about 33 KB (tests/test_hf_models.py asserts <= 5 MB)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import load_file, save_file

from harness.artifacts.manifest import write_json_atomic

if TYPE_CHECKING:
    from harness.core import Device

OUTPUTS = "outputs.safetensors"
META = "meta.json"
# 2: digests (integer arrays kept as int32). Format 1 stored full float32 outputs and no "format".
FORMAT = 2
MAX_BYTES = 5 * 1024 * 1024


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
    stored = {k: np.ascontiguousarray(v, dtype=np.int32 if np.issubdtype(v.dtype, np.integer) else np.float32) for k, v in outputs.items()}
    size = sum(a.nbytes for a in stored.values())
    if size > MAX_BYTES:
        raise GoldenError(f"refusing to record a {size / 2**20:.1f} MiB golden (limit {MAX_BYTES / 2**20:.0f} MiB): the model's golden_digest must keep less")
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".safetensors.tmp")
    os.close(fd)
    save_file(stored, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, directory / OUTPUTS)
    full_meta = {**meta, "format": FORMAT, "inputs_sha256": inputs_sha256(inputs), "outputs": sorted(outputs)}
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
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GoldenError(f"{directory}: golden in an old format (full outputs, format {meta.get('format', 1) if isinstance(meta, dict) else '?'}); re-record it on this device class with --regen-golden")
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


def tool_changes(meta: dict[str, Any], current: dict[str, Any]) -> list[str]:
    recorded = meta.get("tool_versions", {})
    return [f"{k} {recorded.get(k)} -> {v}" for k, v in sorted(current.items()) if recorded.get(k) != v]


@dataclass(frozen=True)
class GoldenMatch:
    """The golden a case is compared with, and how its context differs from the run's: nothing
    changed (the strict threshold applies), or another device class / toolchain (the cross-context
    tolerance applies, and `changes` says what moved)."""

    golden: Golden
    changes: list[str]

    @property
    def same_context(self) -> bool:
        return not self.changes


def find_golden(root: Path, model_id: str, pathway: str, device: "Device", tools: dict[str, str], inputs: dict[str, np.ndarray]) -> GoldenMatch:
    """The golden of this device class; else the nearest one of the same pathway recorded on
    another class (same device kind first, then the newest). Raises GoldenError when there is none."""
    own = golden_dir(root, model_id, pathway, device.device_class)
    metas = {} if (own / META).is_file() else {d: _meta(d) for d in (Path(root) / model_id / pathway).glob("*") if (d / META).is_file()}
    if not metas:
        golden = read_golden(own, inputs)
        return GoldenMatch(golden, tool_changes(golden.meta, tools))

    def nearness(directory: Path) -> tuple:
        meta = metas[directory]
        kind = str(meta.get("device", "cpu")).split(":")[0]
        return (kind != device.kind, -int(str(meta.get("created", "0")).replace("-", "") or 0), directory.name)

    nearest = min(metas, key=nearness)
    golden = read_golden(nearest, inputs)
    where = f"device class {device.device_class} has no golden yet; compared with {nearest.name}'s"
    return GoldenMatch(golden, [where, *tool_changes(golden.meta, tools)])


def _meta(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / META).read_text())
    except (OSError, ValueError):
        return {}
