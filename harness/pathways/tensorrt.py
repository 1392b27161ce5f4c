"""tensorrt: a QDQ graph executed by TensorRT, behind one interface.

- `tensorrt`: an engine built with the `tensorrt` Python API from an INC INT8 QDQ graph,
  serialized into the artifact, run with torch CUDA tensors.
- `tensorrt-fp8`: the same, from an FP8 (E4M3) QDQ graph (ONNX Runtime's quantizer), on GPUs with
  FP8 tensor cores (compute capability >= 8.9).
- `tensorrt-ort`: the INT8 QDQ graph through ONNX Runtime's TensorrtExecutionProvider.
- `tensorrt-rtx-ort`: the same graph through the TensorRT-RTX plugin EP (RTX GPUs only).

One build path for TensorRT 10 and 11. TensorRT 11 removed weak typing (BuilderFlag.INT8/FP16/
FP8/..., the INT8 calibrator, ICudaEngine.device_memory_size): networks are strongly typed and
the Q/DQ nodes alone decide what runs quantized. On 10.x the network opts into
NetworkDefinitionCreationFlag.STRONGLY_TYPED so both versions build the same engine (11.4 keeps
the flag, documented as deprecated and ignored). The rest of the graph keeps the ONNX graph's own
dtype (fp32), and TF32 -- "Enabled by default" for DataType.FLOAT per the 11.4 BuilderFlag
docstring -- is cleared so it stays fp32; both are recorded in the manifest recipe.

TensorRT accepts only symmetric quantization (zero point 0), so the TensorRT pathways quantize
activations to symmetric int8, not INC's default asymmetric uint8.

Written against the tensorrt API directly rather than through Polygraphy: the build is a dozen
calls, and qconform needs its own cache key (ONNX hash, TensorRT version, GPU), its own skip
reasons and its own artifact validation. An engine is only valid for the GPU and TensorRT
version that built it, and loading checks both before deserializing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from harness.artifacts.errors import ArtifactError
from harness.artifacts.manifest import Artifact
from harness.artifacts.payloads import pick
from harness.artifacts.qdq import load_model
from harness.core import Device, Runner, Tensors
from harness.models.base import ModelSpec
from harness.pathways.base import Pathway, register
from harness.pathways.inc_int8_qdq import PAYLOAD as QDQ_PAYLOAD
from harness.pathways.inc_int8_qdq import IncInt8Qdq, build_qdq, export_for_quantization, read_qdq_payload
from harness.runtimes.onnxruntime import OrtQdqRunner, ort_provider_missing, ort_session
from harness.runtimes.tensorrt import TensorRTRunner, deserialize, refuse_plugin_libraries, tensorrt_missing

ENGINE = "model.engine"
WORKSPACE_MIB = 2048
FP8_MIN_CAPABILITY = (8, 9)
# What the builder is told, recorded in the recipe (part of the engine cache key).
ENGINE_RECIPE = {"network": "strongly typed", "float_precision": "float32", "builder_flags_cleared": ["TF32"], "workspace_mib": WORKSPACE_MIB}
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


def strongly_typed_network(trt, builder) -> Any:
    """A network whose tensor types come from the graph (TensorRT 11: always; 10.x: opted in)."""
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))


def builder_config(trt, builder, workspace_mib: int) -> Any:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    config.clear_flag(trt.BuilderFlag.TF32)  # fp32 stays fp32 (ENGINE_RECIPE)
    return config


def tensorrt_build(device: Device) -> str:
    """The capability probe (harness/run/probes.py) of the engine pathways: a Builder builds a one-layer
    strongly typed network (ReLU) with the pathway's builder settings, and a Runtime (host code
    disallowed) deserializes it into an execution context."""
    import tensorrt as trt

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


def build_engine(onnx_path: Path, model: ModelSpec, workspace_mib: int) -> bytes:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = strongly_typed_network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"{onnx_path}: TensorRT cannot parse the QDQ graph: {errors}")
    config = builder_config(trt, builder, workspace_mib)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in _profile_shapes(model).items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT {trt.__version__} failed to build an engine from {onnx_path}")
    return bytes(serialized)


def int8_recipe(model: ModelSpec) -> dict[str, Any]:
    """INC's INT8 QDQ recipe with symmetric int8 activations (TensorRT needs zero point 0)."""
    return {**IncInt8Qdq().recipe(model), "activation_dtype": "int8", "activation_symmetric": True}


def fp8_recipe(model: ModelSpec) -> dict[str, Any]:
    """ONNX Runtime's FP8 QDQ quantizer: E4M3 weights and activations, per-tensor scales from the
    standard deviation (ORT supports only CalibrationMethod.Distribution for float8)."""
    return {
        "quantizer": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "opset": 19,  # float8 Q/DQ needs opset 19
        "op_types": ["MatMul", "Gemm"],
        "weight_dtype": "float8_e4m3fn",
        "weight_granularity": "per-tensor",
        "activation_dtype": "float8_e4m3fn",
        "activation_granularity": "per-tensor",
        "calibration": "distribution (scale = std / std of the E4M3 grid)",
        "calibration_batches": len(model.calibration_inputs()),
        "keep_float": list(model.int8_keep_float),
    }


def build_fp8_qdq(model: ModelSpec, calib: list[Tensors], out_path: Path, recipe: dict[str, Any]) -> Path:
    """The FP8 QDQ graph: builds and runs on CPU (ONNX Runtime's CPU EP executes float8 Q/DQ)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calib)

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="qconform-export-") as tmp:
        fp32, keep_float = export_for_quantization(model, recipe, Path(tmp))
        quantize_static(
            str(fp32),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QFLOAT8E4M3FN,
            weight_type=QuantType.QFLOAT8E4M3FN,
            calibrate_method=CalibrationMethod.Distribution,
            op_types_to_quantize=recipe["op_types"],
            nodes_to_exclude=keep_float,
            per_channel=recipe["weight_granularity"] == "per-channel",
        )
    return out_path


class _FromQdq(Pathway):
    """Shared by the runners: the artifact holds a QDQ graph (and maybe an engine)."""

    devices = ("cuda",)
    requires = {"onnxruntime": "pip install onnxruntime-gpu"}
    build_requires = IncInt8Qdq.build_requires
    tool_packages = ("onnx-neural-compressor", "onnxruntime", "onnx", "torch")

    def recipe(self, model: ModelSpec) -> dict[str, Any]:
        return {**int8_recipe(model), "runtime": self.name}

    def build_graph(self, model: ModelSpec, calib: list[Tensors], out_path: Path) -> None:
        build_qdq(model, calib, out_path, int8_recipe(model))

    def build(self, model: ModelSpec, calib: list[Tensors], out_dir: Path) -> Artifact:
        self.build_graph(model, calib, out_dir / QDQ_PAYLOAD)
        self.add_engine(model, out_dir)
        return self.finish(out_dir, model, Device.detect())

    def add_engine(self, model: ModelSpec, out_dir: Path) -> None:
        """Runners that execute the graph directly need nothing more."""

    def read_payload(self, payloads: list[Path], model: ModelSpec) -> tuple[dict[str, Path], dict[str, Any]]:
        files, recipe = read_qdq_payload(payloads, model)
        return files, {**recipe, "runtime": self.name}


@register
class TensorRTEngine(_FromQdq):
    name = "tensorrt"
    description = "TensorRT engine built from the INC QDQ ONNX graph (strongly typed, explicit INT8 quantization, fp32 elsewhere)"
    tool_packages = ("tensorrt", *_FromQdq.tool_packages)

    def unavailable(self, device: Device) -> str | None:
        missing = tensorrt_missing()
        return f"{self.name}: {missing}" if missing else super().unavailable(device)

    def probe_operation(self, device: Device):
        return "TensorRT Builder (one-layer strongly typed network) + Runtime", tensorrt_build

    def recipe(self, model: ModelSpec) -> dict[str, Any]:
        # The engine cache key: the QDQ recipe, what the builder is told, TensorRT version (tool_packages) and the GPU.
        return {**super().recipe(model), "engine": ENGINE_RECIPE, "gpu": Device.detect().name}

    def add_engine(self, model: ModelSpec, out_dir: Path) -> None:
        (out_dir / ENGINE).write_bytes(build_engine(out_dir / QDQ_PAYLOAD, model, WORKSPACE_MIB))

    def read_payload(self, payloads: list[Path], model: ModelSpec) -> tuple[dict[str, Path], dict[str, Any]]:
        """The QDQ graph and the engine built from it (checked against this GPU when it loads)."""
        files, recipe = super().read_payload([p for p in payloads if p.suffix not in (".engine", ".plan")], model)
        return {**files, ENGINE: pick(payloads, (".engine", ".plan"), "TensorRT engine")}, recipe

    def load(self, artifact: Artifact, device: Device, model: ModelSpec) -> Runner:
        import tensorrt as trt

        refuse_plugin_libraries(artifact)
        problem = engine_mismatch(artifact.manifest, device.name, trt.__version__)
        if problem:
            raise ArtifactError(f"{artifact.file(ENGINE)}: {problem}")
        return TensorRTRunner(artifact.file(ENGINE).read_bytes(), load_model(artifact.file(QDQ_PAYLOAD)), model.output_names, trt)


@register
class TensorRTFp8Engine(TensorRTEngine):
    name = "tensorrt-fp8"
    description = "TensorRT engine built from an FP8 (E4M3) QDQ ONNX graph (ONNX Runtime quantizer); sm_89+"
    build_requires = {"onnxruntime": "pip install onnxruntime"}
    tool_packages = ("tensorrt", "onnxruntime", "onnx", "torch")

    def unavailable(self, device: Device) -> str | None:
        reason = super().unavailable(device)
        if reason is None and device.capability is not None and device.capability < FP8_MIN_CAPABILITY:
            return f"{self.name}: FP8 needs CUDA compute capability >= 8.9, {device.name} is sm_{device.capability[0]}{device.capability[1]}"
        return reason

    def recipe(self, model: ModelSpec) -> dict[str, Any]:
        return {**fp8_recipe(model), "runtime": self.name, "engine": ENGINE_RECIPE, "gpu": Device.detect().name}

    def build_graph(self, model: ModelSpec, calib: list[Tensors], out_path: Path) -> None:
        build_fp8_qdq(model, calib, out_path, fp8_recipe(model))


@register
class TensorRTOrtEP(_FromQdq):
    name = "tensorrt-ort"
    description = "the INC QDQ graph through ONNX Runtime's TensorrtExecutionProvider"
    provider = "TensorrtExecutionProvider"

    def probe_operation(self, device: Device):
        return f"onnxruntime InferenceSession on {self.provider}", ort_session(self.provider)

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
        # ONNX Runtime's own TensorRT EP links TensorRT 10 (libnvinfer.so.10), where these
        # weak-typing switches still exist; TensorRT 11 is reached through the engine pathways.
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
