"""ort-int8-qdq: ONNX Runtime's `quantize_static` (QDQ, per-channel int8 weights, uint8
activations, MinMax calibration) as a qconform pathway: a second INT8 tool next to INC, loaded
and run exactly like inc-int8-qdq (ONNX Runtime, one execution provider)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import onnx

from harness.core import Device
from harness.pathways.inc_int8_qdq import PAYLOAD, IncInt8Qdq


class OrtInt8Qdq(IncInt8Qdq):
    name = "ort-int8-qdq"
    description = "ONNX Runtime quantize_static to ONNX QDQ (per-channel int8 weights), run with ONNX Runtime"
    build_requires: dict[str, str] = {}  # onnxruntime alone builds it
    tool_packages = ("onnxruntime", "onnx", "torch")

    def recipe(self, model) -> dict[str, Any]:
        return {**super().recipe(model), "producer": "onnxruntime.quantization.quantize_static"}

    def build(self, model, calib, out_dir: Path):
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.batches = iter(calib)

            def get_next(self):
                return next(self.batches, None)

        recipe = self.recipe(model)
        with tempfile.TemporaryDirectory(prefix="ort-int8-") as tmp:
            fp32 = model.export_onnx(Path(tmp) / "model.fp32.onnx", opset=recipe["opset"])
            names = [node.name for node in onnx.load(str(fp32)).graph.node]
            quantize_static(
                str(fp32),
                str(out_dir / PAYLOAD),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=recipe["op_types"],
                nodes_to_exclude=[n for n in names if any(re.search(p, n) for p in recipe["keep_float"])],
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"WeightSymmetric": True},
            )
        return self.finish(out_dir, model, Device.detect())
