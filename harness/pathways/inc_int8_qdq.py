"""inc-int8-qdq: Intel Neural Compressor static post-training quantization to an ONNX QDQ graph,
executed with ONNX Runtime.

INC's ONNX line is the `onnx-neural-compressor` package (INC 3.x moved ONNX out of
`neural-compressor`; the 2.x `PostTrainingQuantConfig(backend="onnxrt_qdq")` API pins numpy<2 and
pulls pycocotools/opencv for nothing we use). Its `StaticQuantConfig` + `quantize` is the
supported static PTQ entry point (onnx_neural_compressor/quantization/quantize.py).
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from harness.artifacts.errors import ArtifactError
from harness.artifacts.identity import check_onnx_matches, weight_value_mismatch
from harness.artifacts.manifest import Artifact
from harness.artifacts.payloads import ImportRefused, external_data_files, pick, refuse, same_model, single
from harness.core import Device, QuantLayout, Runner, Tensors
from harness.models.base import ModelSpec
from harness.pathways.base import Pathway, register
from harness.runtimes.onnxruntime import OrtQdqRunner, ort_provider_missing, ort_session

PAYLOAD = "model.qdq.onnx"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def _calibration_reader(batches: list[Tensors]):
    from onnx_neural_compressor import data_reader

    class Reader(data_reader.CalibrationDataReader):
        def __init__(self) -> None:
            self.rewind()

        def get_next(self):
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(batches)

    return Reader()


def export_for_quantization(model: ModelSpec, recipe: dict[str, Any], tmp: Path) -> tuple[Path, list[str]]:
    """The fp32 ONNX export at the recipe's opset, and the names of its nodes the recipe keeps in float."""
    fp32 = model.export_onnx(tmp / "model.fp32.onnx", opset=recipe["opset"])
    names = [node.name for node in onnx.load(str(fp32)).graph.node]
    return fp32, [n for n in names if any(re.search(p, n) for p in recipe["keep_float"])]


def build_qdq(model: ModelSpec, calib: list[Tensors], out_path: Path, recipe: dict[str, Any]) -> Path:
    """INC static PTQ of the fp32 export to a QDQ graph at `out_path`, as `recipe` says
    (IncInt8Qdq.recipe's keys; the TensorRT pathways change the activation dtype and symmetry)."""
    from onnx_neural_compressor.quantization import config, quantize
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    with tempfile.TemporaryDirectory(prefix="qconform-export-") as tmp:
        fp32, keep_float = export_for_quantization(model, recipe, Path(tmp))
        quant_config = config.StaticQuantConfig(
            calibration_data_reader=_calibration_reader(calib),
            calibrate_method=CalibrationMethod.MinMax,
            quant_format=QuantFormat.QDQ,
            activation_type={"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[recipe["activation_dtype"]],
            weight_type=QuantType.QInt8,
            op_types_to_quantize=recipe["op_types"],
            nodes_to_exclude=keep_float,
            per_channel=recipe["weight_granularity"] == "per-channel",
            execution_provider="CPUExecutionProvider",
            extra_options={"WeightSymmetric": recipe["weight_symmetric"], "ActivationSymmetric": recipe.get("activation_symmetric", False)},
        )
        inc_logger = logging.getLogger("onnx_neural_compressor")
        level = inc_logger.level
        inc_logger.setLevel(logging.WARNING)  # its per-op statistics table is noise in a test log
        try:
            quantize(str(fp32), str(out_path), quant_config)
        finally:
            inc_logger.setLevel(level)
    if not out_path.is_file():
        raise ArtifactError(f"{out_path}: Neural Compressor produced no model")
    return out_path


def qdq_recipe(layout: QuantLayout, onnx_model, payload: Path) -> dict[str, Any]:
    """The recipe a QDQ graph states about itself."""
    layers = list(layout.layers.values())
    if not layers:
        raise ImportRefused(f"{payload}: no weight layer is quantized (no DequantizeLinear feeds a MatMul/Gemm/Conv weight)")
    ops = {n.name or n.output[0]: n.op_type for n in onnx_model.graph.node}
    recipe: dict[str, Any] = {
        "format": "QDQ",
        "opset": next(o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")),
        "op_types": sorted({ops[layer.name] for layer in layers}),
        "weight_dtype": single({layer.dtype for layer in layers}, "weight dtype", payload),
        "weight_granularity": single({layer.weight_granularity for layer in layers}, "weight granularity", payload),
        "weight_symmetric": all(layer.weight_zero_points is None or not np.any(layer.weight_zero_points) for layer in layers),
    }
    axes = {layer.weight_axis for layer in layers if layer.weight_axis is not None}
    if len(axes) == 1:
        recipe["weight_axis"] = axes.pop()
    act_dtypes = {layer.activation_dtype for layer in layers if layer.activation_dtype}
    act_granularities = {layer.activation_granularity for layer in layers if layer.activation_granularity}
    if act_dtypes:
        recipe["activation_dtype"] = single(act_dtypes, "activation dtype", payload)
    if act_granularities:
        recipe["activation_granularity"] = single(act_granularities, "activation granularity", payload)
    if onnx_model.producer_name:
        recipe["producer"] = f"{onnx_model.producer_name} {onnx_model.producer_version}".strip()
    return recipe


def read_qdq_payload(payloads: list[Path], model: ModelSpec) -> tuple[dict[str, Path], dict[str, Any]]:
    """`qconform import` of a QDQ graph (any QDQ producer: INC, ONNX Runtime's quantize_static, ...):
    checked against the model (inputs, layer names, weight shapes and values), with the ONNX
    external data it references; the recipe read from the graph."""
    from harness.artifacts.qdq import load_model, read_layout

    payload = pick(payloads, (".onnx",), "ONNX QDQ graph")
    try:
        onnx_model = load_model(payload)
    except ArtifactError as exc:
        raise ImportRefused(str(exc)) from exc
    same_model(check_onnx_matches, onnx_model, model, payload)  # graph inputs, layer names, weight shapes
    layout = read_layout(onnx_model)
    references = {name: model.reference_weight(name) for name in layout.layers}
    refuse([weight_value_mismatch(name, layer.dequantized_weight, references[name]) for name, layer in layout.layers.items() if references[name] is not None], payload, model)
    files = {PAYLOAD: payload, **external_data_files(payload, reserved={PAYLOAD})}
    return files, qdq_recipe(layout, onnx_model, payload)


@register
class IncInt8Qdq(Pathway):
    name = "inc-int8-qdq"
    description = "Intel Neural Compressor static PTQ to ONNX QDQ (per-channel int8 weights), run with ONNX Runtime"
    devices = ("cpu", "cuda")  # ONNX Runtime CPU EP; CUDA EP on GPUs
    requires = {"onnxruntime": "pip install onnxruntime"}
    build_requires = {"onnx_neural_compressor": "pip install 'qconform[cpu]'"}

    def unavailable(self, device: Device) -> str | None:
        reason = super().unavailable(device)
        if reason is None and device.kind == "cuda":
            missing = ort_provider_missing(PROVIDERS["cuda"])
            reason = f"{self.name}: {missing}" if missing else None
        return reason

    tool_packages = ("onnx-neural-compressor", "onnxruntime", "onnx", "torch")

    def probe_operation(self, device: Device):
        provider = PROVIDERS[device.kind]
        return f"onnxruntime InferenceSession on {provider}", ort_session(provider)

    def recipe(self, model: ModelSpec) -> dict[str, Any]:
        return {
            "format": "QDQ",
            "opset": 17,
            "op_types": ["MatMul", "Gemm"],  # the weight-bearing ops; W8A8 for Linear layers
            "weight_dtype": "int8",
            "weight_granularity": "per-channel",
            "weight_symmetric": True,
            "activation_dtype": "uint8",
            "activation_granularity": "per-tensor",
            "calibration": "minmax",
            "calibration_batches": len(model.calibration_inputs()),
            "keep_float": list(model.int8_keep_float),  # regexes over ONNX node names
        }

    def build(self, model: ModelSpec, calib: list[Tensors], out_dir: Path) -> Artifact:
        build_qdq(model, calib, out_dir / PAYLOAD, self.recipe(model))
        return self.finish(out_dir, model, Device.detect())

    def read_payload(self, payloads: list[Path], model: ModelSpec) -> tuple[dict[str, Path], dict[str, Any]]:
        return read_qdq_payload(payloads, model)

    def load(self, artifact: Artifact, device: Device, model: ModelSpec) -> Runner:
        runner = OrtQdqRunner(artifact.file(PAYLOAD), PROVIDERS[device.kind], artifact_dir=artifact.path)
        check_onnx_matches(runner.model, model)
        return runner

    def float_baseline(self, model: ModelSpec, device: Device) -> Runner:
        """The fp32 model on the same execution provider: what the INT8 graph must beat."""
        with tempfile.TemporaryDirectory(prefix="qconform-fp32-") as tmp:
            return OrtQdqRunner(model.export_onnx(Path(tmp) / "model.fp32.onnx"), PROVIDERS[device.kind])
