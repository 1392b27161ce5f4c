"""Capability probes: before a pathway's cases run, one tiny real operation on the device they
will use, so a backend that cannot run here becomes a precise skip reason (or, when the config
requires the pathway, a failure) instead of an error deep inside a suite.

Why: `unavailable()` only checks what is installed and the compute capability. On sm_120 (RTX
5090 class), row-wise FP8 `torch._scaled_mm` -- the kernel torchao's rowwise recipe calls -- has
failed with CUBLAS_STATUS_NOT_SUPPORTED in some torch builds (pytorch/pytorch#192707; per-tensor
scaling works) although torchao only checks capability >= 8.9.

Each pathway names its probe (`Pathway.probe_operation`); the session runs it at most once per
(pathway, device), and it costs milliseconds, except the TensorRT one (a one-layer engine build, about a second).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from harness.core import Device
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


# -- the operations ------------------------------------------------------------------------------


def _torch_device(device: Device) -> str:
    return "cuda" if device.kind == "cuda" else "cpu"


def rowwise_scaled_mm(device: Device) -> str:
    """The GEMM torchao's Float8 rowwise recipe runs: float8_e4m3fn operands, one float32 scale
    per row of A and per column of B, bf16 out, B column-major."""
    import torch

    where = _torch_device(device)
    a = torch.randn(16, 32, device=where).to(torch.float8_e4m3fn)
    w = torch.randn(16, 32, device=where).to(torch.float8_e4m3fn)
    scale_a = torch.full((16, 1), 0.5, device=where)
    scale_b = torch.full((1, 16), 2.0, device=where)
    out = torch._scaled_mm(a, w.t(), scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16)
    expected = a.float() @ w.float().t()
    if not torch.allclose(out.float(), expected, rtol=2e-2, atol=2e-2):
        raise RuntimeError(f"row-wise _scaled_mm returned wrong values (max error {(out.float() - expected).abs().max().item():.3g})")
    return f"16x32 @ 32x16 on {where}"


def float8_round_trip(device: Device) -> str:
    """INC's FP8 CPU emulation casts to torch's float8 dtypes and back."""
    import torch

    values = torch.tensor([0.5, -1.5, 448.0])
    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        back = values.to(dtype).float()
        if not torch.equal(back, values):
            raise RuntimeError(f"{dtype} round trip changed {values.tolist()} to {back.tolist()}")
    return "float8_e4m3fn and float8_e5m2 casts on cpu"


def ort_session(provider: str) -> Callable[[Device], str]:
    """A one-node graph (Relu) in an InferenceSession on `provider`, with the provider asserted."""

    def run(device: Device) -> str:
        import onnx
        from onnx import TensorProto, helper

        from harness.runtimes.onnxruntime import OrtQdqRunner

        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])]
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
        with tempfile.TemporaryDirectory(prefix="qconform-probe-") as tmp:
            path = Path(tmp) / "relu.onnx"
            onnx.save(model, str(path))
            runner = OrtQdqRunner(path, provider)  # raises when the provider is missing or ORT falls back
        y = runner({"x": np.array([-1, 0, 2, 3], np.float32)})["y"]
        if y.tolist() != [0, 0, 2, 3]:
            raise RuntimeError(f"Relu on {provider} returned {y.tolist()}")
        return f"Relu session on {provider}"

    return run


def tensorrt_build(device: Device) -> str:
    """A Builder builds a one-layer strongly typed network (ReLU) with the pathway's builder
    settings, and a Runtime (host code disallowed) deserializes it into an execution context."""
    import tensorrt as trt

    from harness.pathways.tensorrt import builder_config, strongly_typed_network
    from harness.runtimes.tensorrt import deserialize

    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = strongly_typed_network(trt, builder)
    tensor = network.add_input("x", trt.DataType.FLOAT, (1, 8))
    layer = network.add_activation(tensor, trt.ActivationType.RELU)
    network.mark_output(layer.get_output(0))
    config = builder_config(trt, builder, 64)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("Builder.build_serialized_network returned None for a one-layer network")
    engine = deserialize(trt, bytes(serialized), logger)
    engine.create_execution_context()
    return f"TensorRT {trt.__version__}: one-layer engine built and deserialized"


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


def probe(pathway: Pathway, device: Device) -> Probe | None:
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
