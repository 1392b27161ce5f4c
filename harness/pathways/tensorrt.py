"""tensorrt: the INC INT8 QDQ graph executed by TensorRT, three ways behind one interface.

- `tensorrt`: an engine built with the `tensorrt` Python API (explicit quantization: the Q/DQ
  nodes decide precision), serialized into the artifact, run with torch CUDA tensors.
- `tensorrt-ort`: the same QDQ graph through ONNX Runtime's TensorrtExecutionProvider.
- `tensorrt-rtx-ort`: the same graph through the TensorRT-RTX plugin EP (RTX GPUs only).

Written against the TensorRT 10 API directly rather than through Polygraphy: the build is a
dozen calls, and qconform needs its own cache key (ONNX hash, TensorRT version, GPU), its own
skip reasons and its own artifact validation; Polygraphy's comparison tooling duplicates the
harness's metrics. An engine is only valid for the GPU and TensorRT version that built it, and
loading checks both before deserializing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from harness.artifacts import Artifact, ArtifactError
from harness.models.base import ModelSpec
from harness.core import Device, Runner, Tensors
from harness.pathways.base import Pathway, register
from harness.pathways.inc_int8_qdq import PAYLOAD as QDQ_PAYLOAD
from harness.pathways.inc_int8_qdq import IncInt8Qdq
from harness.qdq import load_model
from harness.runtimes.onnxruntime import OrtQdqRunner, ort_provider_missing
from harness.runtimes.tensorrt import TensorRTRunner, tensorrt_missing

ENGINE = "model.engine"
WORKSPACE_MIB = 2048
# The TensorRT-RTX EP runs on consumer RTX GPUs only (compute capability 8.6, 8.9, 12.0 and up).
RTX_CAPABILITIES = ((8, 6), (8, 9))
RTX_MIN_NEW = (12, 0)


def engine_mismatch(manifest: dict[str, Any], gpu_name: str, tensorrt_version: str) -> str | None:
    """An engine runs only on the GPU model and TensorRT version it was built with."""
    built_gpu = manifest.get("built_on", {}).get("name")
    built_trt = manifest.get("tool_versions", {}).get("tensorrt")
    if built_gpu != gpu_name:
        return f"engine built on {built_gpu!r}, this GPU is {gpu_name!r}: rebuild it here"
    if built_trt != tensorrt_version:
        return f"engine built with TensorRT {built_trt}, this is TensorRT {tensorrt_version}: rebuild it"
    return None


def _profile_shapes(model: ModelSpec) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) per input: dynamic axes from 1 up to twice the eval batch's size."""
    shapes = {}
    for name, array in model.eval_inputs().items():
        dynamic = model.dynamic_axes.get(name, {})
        low = tuple(1 if axis in dynamic else size for axis, size in enumerate(array.shape))
        high = tuple(2 * size if axis in dynamic else size for axis, size in enumerate(array.shape))
        shapes[name] = (low, tuple(array.shape), high)
    return shapes


def build_engine(onnx_path: Path, model: ModelSpec, workspace_mib: int) -> bytes:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"{onnx_path}: TensorRT cannot parse the QDQ graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    # Explicit quantization: INT8 where the graph has Q/DQ, FP16 allowed for the float remainder.
    config.set_flag(trt.BuilderFlag.INT8)
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in _profile_shapes(model).items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT {trt.__version__} failed to build an engine from {onnx_path}")
    return bytes(serialized)


class _FromQdq(Pathway):
    """Shared by the three runners: the artifact holds the INC QDQ graph (and maybe an engine)."""

    devices = ("cuda",)
    requires = {"onnxruntime": "pip install onnxruntime-gpu"}
    build_requires = IncInt8Qdq.build_requires
    tool_packages = ("onnx-neural-compressor", "onnxruntime", "onnx", "torch")

    def recipe(self, model: ModelSpec) -> dict[str, Any]:
        return {**IncInt8Qdq().recipe(model), "runtime": self.name}

    def build(self, model: ModelSpec, calib: list[Tensors], out_dir: Path) -> Artifact:
        with tempfile.TemporaryDirectory(prefix="qconform-qdq-") as tmp:
            source = IncInt8Qdq().build(model, calib, Path(tmp))
            for name in source.manifest["files"]:
                (out_dir / name).write_bytes((source.path / name).read_bytes())
        self.add_engine(model, out_dir)
        return self.finish(out_dir, model, Device.detect())

    def add_engine(self, model: ModelSpec, out_dir: Path) -> None:
        """Runners that execute the graph directly need nothing more."""


@register
class TensorRTEngine(_FromQdq):
    name = "tensorrt"
    description = "TensorRT engine built from the INC QDQ ONNX graph (explicit INT8 quantization)"
    tool_packages = ("tensorrt", *_FromQdq.tool_packages)

    def unavailable(self, device: Device) -> str | None:
        missing = tensorrt_missing()
        return f"{self.name}: {missing}" if missing else super().unavailable(device)

    def recipe(self, model: ModelSpec) -> dict[str, Any]:
        device = Device.detect()
        # The engine cache key: the QDQ recipe, TensorRT version (tool_packages) and the GPU.
        return {**super().recipe(model), "builder_flags": ["INT8", "FP16"], "workspace_mib": WORKSPACE_MIB, "gpu": device.name}

    def add_engine(self, model: ModelSpec, out_dir: Path) -> None:
        (out_dir / ENGINE).write_bytes(build_engine(out_dir / QDQ_PAYLOAD, model, WORKSPACE_MIB))

    def load(self, artifact: Artifact, device: Device, model: ModelSpec) -> Runner:
        import tensorrt as trt

        problem = engine_mismatch(artifact.manifest, device.name, trt.__version__)
        if problem:
            raise ArtifactError(f"{artifact.file(ENGINE)}: {problem}")
        return TensorRTRunner(artifact.file(ENGINE).read_bytes(), load_model(artifact.file(QDQ_PAYLOAD)), model.output_names)


@register
class TensorRTOrtEP(_FromQdq):
    name = "tensorrt-ort"
    description = "the INC QDQ graph through ONNX Runtime's TensorrtExecutionProvider"
    provider = "TensorrtExecutionProvider"

    def unavailable(self, device: Device) -> str | None:
        reason = super().unavailable(device)
        if reason:
            return reason
        missing = ort_provider_missing(self.provider)
        if missing:
            return f"{self.name}: {missing}"
        if tensorrt_missing():
            # ORT lists the EP whenever it was built with it, then falls back at session start
            # when libnvinfer is absent: refuse up front instead.
            return f"{self.name}: {self.provider} needs TensorRT's libraries: {tensorrt_missing()}"
        return None

    def load(self, artifact: Artifact, device: Device, model: ModelSpec) -> Runner:
        options = {
            "trt_int8_enable": True,
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(Path(tempfile.gettempdir()) / "qconform-ort-trt-cache"),
        }
        return OrtQdqRunner(artifact.file(QDQ_PAYLOAD), self.provider, options)


@register
class TensorRTRtxOrtEP(TensorRTOrtEP):
    name = "tensorrt-rtx-ort"
    description = "the INC QDQ graph through the TensorRT-RTX plugin EP (RTX GPUs)"
    provider = "NvTensorRTRTXExecutionProvider"

    def unavailable(self, device: Device) -> str | None:
        cap = device.capability
        if cap is not None and cap not in RTX_CAPABILITIES and cap < RTX_MIN_NEW:
            return f"{self.name}: TensorRT-RTX supports RTX GPUs (compute capability 8.6, 8.9, 12.0+); {device.name} is sm_{cap[0]}{cap[1]}"
        missing = ort_provider_missing(self.provider)
        if missing:
            return f"{self.name}: {missing} (pip install onnxruntime-ep-nv-tensorrt-rtx and register its library)"
        return Pathway.unavailable(self, device)

    def load(self, artifact: Artifact, device: Device, model: ModelSpec) -> Runner:
        return OrtQdqRunner(artifact.file(QDQ_PAYLOAD), self.provider)
