"""Capability probes: before a pathway's cases run, one tiny real operation on the device they
will use, so a backend that cannot run here becomes a precise skip reason (or, when the config
requires the pathway, a failure) instead of an error deep inside a suite.

Why: `unavailable()` only checks what is installed and the compute capability. On sm_120 (RTX
5090 class), row-wise FP8 `torch._scaled_mm` -- the kernel torchao's rowwise recipe calls -- has
failed with CUBLAS_STATUS_NOT_SUPPORTED in some torch builds (pytorch/pytorch#192707; per-tensor
scaling works) although torchao only checks capability >= 8.9.

Each pathway names its probe (`Pathway.probe_operation`), and the operation lives with its
runtime or pathway (harness/runtimes/onnxruntime.py `ort_session`, harness/pathways/tensorrt.py
`tensorrt_build`, harness/pathways/torchao_fp8.py `rowwise_scaled_mm`, ...). This module is only the
machinery: run a probe once per (pathway, device), the versions a failure depends on, the Probe
record. It imports no pathway. A probe costs milliseconds, except the TensorRT one (a one-layer
engine build, about a second).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from harness.core import Device

if TYPE_CHECKING:
    from harness.pathways.base import Pathway


@dataclass(frozen=True)
class Probe:
    pathway: str
    device: str  # Device.describe()
    operation: str  # what was tried, in words
    ok: bool
    detail: str  # the error (type: message) when not ok; what ran when ok
    versions: dict[str, str] = field(default_factory=dict)

    def skip_reason(self) -> str:
        versions = ", ".join(f"{key} {value}" for key, value in self.versions.items())
        return f"{self.pathway}: capability probe failed on {self.device}: {self.operation}: {self.detail} [{versions}]"

    def as_dict(self) -> dict:
        """For the report's environment section."""
        return asdict(self)


# -- versions ------------------------------------------------------------------------------------


def _distribution_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def driver_version() -> str | None:
    """The NVIDIA driver version nvidia-smi reports, or None where there is none."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else None


def versions(device: Device) -> dict[str, str]:
    """torch, CUDA, cuBLAS, TensorRT, ONNX Runtime, driver, compute capability: what a probe's
    failure depends on. Missing ones say so."""
    found: dict[str, str | None] = {}
    try:
        import torch

        found["torch"] = torch.__version__
        found["CUDA"] = torch.version.cuda or "none (CPU build)"
    except ImportError:
        found["torch"] = None
    # cuBLAS comes with torch's CUDA wheels as the nvidia-cublas distribution.
    found["cuBLAS"] = _distribution_version("nvidia-cublas", "nvidia-cublas-cu13", "nvidia-cublas-cu12")
    found["TensorRT"] = _distribution_version("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-bindings", "tensorrt-cu12-bindings") if importlib.util.find_spec("tensorrt") else None
    found["onnxruntime"] = _distribution_version("onnxruntime", "onnxruntime-gpu")
    if device.kind == "cuda":
        found["driver"] = driver_version()
        found["capability"] = f"sm_{device.capability[0]}{device.capability[1]}" if device.capability else None
    return {key: value or "not found" for key, value in found.items()}


# -- running -------------------------------------------------------------------------------------

_VERSIONS: dict[Device, dict[str, str]] = {}


def probe(pathway: "Pathway", device: Device) -> Probe | None:
    """Run `pathway`'s probe on `device` (the session runs each once); None when it has none."""
    operation = pathway.probe_operation(device)
    if operation is None:
        return None
    description, run = operation
    if device not in _VERSIONS:
        _VERSIONS[device] = versions(device)
    try:
        detail, ok = run(device), True
    except Exception as exc:  # any failure of the backend is the finding; it is reported, not raised
        detail, ok = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}", False
    return Probe(pathway.name, device.describe(), description, ok, detail, _VERSIONS[device])
