"""tensorrt: engines built from the QDQ ONNX (INT8, FP8) with the TensorRT Python API."""

from harness.pathways.base import Planned, register


@register
class TensorRT(Planned):
    name = "tensorrt"
    description = "TensorRT engines built from the INC QDQ ONNX graph"
    devices = ("cuda",)
    issue = 6
