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
    from harness.pathways.base import Pathway

OUTPUTS = "outputs.safetensors"
META = "meta.json"
# 2: digests (integer arrays kept as int32). Format 1 stored full float32 outputs and no "format".
FORMAT = 2
MAX_BYTES = 5 * 1024 * 1024


class GoldenError(Exception):
    """A golden record is missing, corrupt, or was recorded for other inputs."""


class NoGolden(GoldenError):
    """No golden made the same way as the case exists: nothing to compare with yet (a first release,
    a new device kind or precision). Not a defect: goldens detect change; the other gates judge."""


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


def made_like(pathway: "Pathway", kind: str) -> dict[str, str]:
    """How a case's artifact is made, as its golden records it: the reference precision it is made
    from (Pathway.reference_precision) and the device kind it runs on. Goldens are compared only
    with goldens made the same way: a GPU bf16-made artifact differs from a CPU fp32-made one by
    more than the cross-context tolerance allows for drift (minilm-l6 torchao-int8-dynamic on an
    H100 against the cpu-x86 golden: 22.1 dB < 25 dB), and that is not a change to detect."""
    return {"made_from": str(pathway.reference_precision(kind)), "device_kind": kind}


def recorded_like(meta: dict[str, Any], pathway: "Pathway") -> dict[str, str]:
    """How a golden's artifact was made: as recorded; a golden from before these keys has it derived
    from its recorded device ("cuda: NVIDIA H100 ...") through the pathway, as it was made then."""
    kind = meta.get("device_kind") or str(meta.get("device", "cpu")).split(":")[0]
    return {"made_from": meta.get("made_from") or str(pathway.reference_precision(kind)), "device_kind": kind}


def _made(like: dict[str, str]) -> str:
    return f"made from {like['made_from']}, run on {like['device_kind']}"


def find_golden(root: Path, model_id: str, pathway: "Pathway", device: "Device", tools: dict[str, str], inputs: dict[str, np.ndarray]) -> GoldenMatch:
    """The golden of this device class; else the newest one of another class made the same way
    (made_like: same pathway, made-from precision and device kind), current format only. Raises
    NoGolden when there is none, GoldenError when this class's golden cannot be used."""
    wanted = made_like(pathway, device.kind)
    own = golden_dir(root, model_id, pathway.name, device.device_class)
    if (own / META).is_file():
        golden = read_golden(own, inputs)  # corrupt, old format, other inputs: errors, as a stale record must be re-recorded
        recorded = recorded_like(golden.meta, pathway)
        if recorded != wanted:
            raise GoldenError(f"{own}: recorded from an artifact {_made(recorded)}; this case's is {_made(wanted)}: re-record it with --regen-golden")
        return GoldenMatch(golden, tool_changes(golden.meta, tools))

    metas = {d: _meta(d) for d in sorted(own.parent.glob("*")) if (d / META).is_file()}
    comparable = [d for d, meta in metas.items() if meta.get("format") == FORMAT and recorded_like(meta, pathway) == wanted]
    if not comparable:
        others = [f"{d.name} ({_made(recorded_like(m, pathway)) if m.get('format') == FORMAT else 'old format'})" for d, m in metas.items()]
        elsewhere = f"; not comparable: {', '.join(others)}" if others else ""
        raise NoGolden(f"no golden of {pathway.name} ({_made(wanted)}) under {own.parent}{elsewhere}")
    nearest = min(comparable, key=lambda d: (-int(str(metas[d].get("created", "0")).replace("-", "") or 0), d.name))
    golden = read_golden(nearest, inputs)
    where = f"device class {device.device_class} has no golden yet; compared with {nearest.name}'s ({_made(wanted)})"
    return GoldenMatch(golden, [where, *tool_changes(golden.meta, tools)])


def _meta(directory: Path) -> dict[str, Any]:
    try:
        meta = json.loads((directory / META).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}
