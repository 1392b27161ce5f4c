"""Reading a QDQ ONNX graph with `onnx`: which weight-bearing ops are quantized, with what
granularity, scales and zero points. Shared by every pathway that executes a QDQ graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import external_data_helper, numpy_helper

from harness.artifacts.trust import check_onnx as load_model  # noqa: F401  the one ONNX loader (external data, op domains)
from harness.core import QuantLayer, QuantLayout

# The one list of weight-bearing ONNX ops (layout reading, identity checks, localization): op ->
# index of its weight input.
WEIGHT_OPS = {"MatMul": 1, "Gemm": 1, "Conv": 1}

DTYPE_NAMES = {
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.FLOAT8E4M3FN: "float8_e4m3fn",
    onnx.TensorProto.FLOAT8E5M2: "float8_e5m2",
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
}


class Graph:
    def __init__(self, model: onnx.ModelProto, base_dir: Path | None = None):
        """`base_dir`: where the model's external data files are, for a model loaded without them
        (check_onnx(weights=False))."""
        self.model, self.base_dir = model, base_dir
        self.inits = {t.name: t for t in model.graph.initializer}
        self.producer = {out: node for node in model.graph.node for out in node.output}
        self.quantized = {node.input[0] for node in model.graph.node if node.op_type == "QuantizeLinear"}  # tensors fed to a QuantizeLinear

    def array(self, name: str) -> np.ndarray:
        tensor = self.inits[name]
        if self.base_dir is not None and external_data_helper.uses_external_data(tensor):
            # Read from its file into a copy of the reference: the graph never keeps the data.
            reference = onnx.TensorProto()
            reference.CopyFrom(tensor)
            return numpy_helper.to_array(reference, str(self.base_dir))
        return numpy_helper.to_array(tensor)

    def dequantize_of(self, tensor: str) -> onnx.NodeProto | None:
        node = self.producer.get(tensor)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    @staticmethod
    def axis(node: onnx.NodeProto) -> int:
        for attr in node.attribute:
            if attr.name == "axis":
                return attr.i
        return 1  # ONNX's default for Quantize/DequantizeLinear


# SmoothQuant (INC's, onnx_neural_compressor/algorithms/smoother/core.py; ONNX Runtime's
# extra_options SmoothQuant runs the same code): `X -> Mul(X, <node>_smooth_scale) -> <node>` in front
# of each smoothed weight op, named "<node>_smooth_mul", its initializer holding 1/s per input
# channel, and the op's weight multiplied by s along its input axis. Recognized by that name: a
# RMSNorm's gain is a Mul by a per-channel initializer in front of the same ops.
SMOOTH_MUL_SUFFIX = "_smooth_mul"


def smoothing_of(graph: Graph, tensor: str) -> tuple[str, np.ndarray] | None:
    """When `tensor` is a SmoothQuant Mul's output: (the unsmoothed tensor it scales, the factor
    1/s per input channel it multiplies by); else None."""
    node = graph.producer.get(tensor)
    if node is None or node.op_type != "Mul" or not node.name.endswith(SMOOTH_MUL_SUFFIX):
        return None
    scale = [i for i in node.input if i in graph.inits]
    if len(scale) != 1:
        return None
    source = next(i for i in node.input if i != scale[0])
    return source, graph.array(scale[0]).astype(np.float64).reshape(-1)


def smoothed_reference(reference: Any, layer: QuantLayer) -> Any:
    """The model's weight (out, in) as `layer` must store it: times its SmoothQuant factors along
    the input axis (a smoothed layer computes (x / s) @ (s * W)). What every comparison of a stored
    weight with the model's (identity, weight SQNR, weight scales) takes; unchanged for an
    unsmoothed layer."""
    if reference is None or layer.input_smoothing is None or reference.ndim != 2 or reference.shape[1] != layer.input_smoothing.size:
        return reference
    factors = layer.input_smoothing.reshape(1, -1)
    if not isinstance(reference, np.ndarray):  # a torch tensor: the factors go to its device
        import torch

        factors = torch.as_tensor(factors, dtype=reference.dtype, device=reference.device)
    return reference * factors


def read_layout(model: onnx.ModelProto, base_dir: Path | None = None) -> QuantLayout:
    """`base_dir`: the directory of the model's external data, when it was loaded without them."""
    graph = Graph(model, base_dir)
    layout = QuantLayout()
    for node in model.graph.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) <= WEIGHT_OPS[node.op_type]:
            continue
        weight_name = node.input[WEIGHT_OPS[node.op_type]]
        name = node.name or node.output[0]
        if weight_name in graph.inits:
            layout.unquantized.append(name)  # a float weight feeding the op directly
            continue
        dq = graph.dequantize_of(weight_name)
        if dq is None or dq.input[0] not in graph.inits:
            continue  # an activation x activation op (attention scores), not a weight
        weight = graph.inits[dq.input[0]]
        scales = graph.array(dq.input[1]).astype(np.float64)
        zero_points = graph.array(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
        axis = graph.axis(dq)
        dims = list(weight.dims)
        per_channel = scales.size > 1
        # MatMul holds (in, out): output channels on the last axis; Gemm's transB puts them first.
        out_axis = 0 if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute) else len(dims) - 1
        if node.op_type == "Conv":
            out_axis = 0
        granularity = "per-tensor"
        if per_channel:
            granularity = "per-channel" if axis % len(dims) == out_axis else f"per-channel on axis {axis}, not the output-channel axis {out_axis}"
        act_dq = graph.dequantize_of(node.input[0])
        act_scale = act_zp = act_dtype = None
        if act_dq is not None and act_dq.input[1] in graph.inits:
            act_scale = graph.array(act_dq.input[1])
            act_zp = graph.array(act_dq.input[2]) if len(act_dq.input) > 2 and act_dq.input[2] else None
            act_dtype = DTYPE_NAMES.get(graph.inits[act_dq.input[2]].data_type) if act_zp is not None else None
        act_q = graph.producer.get(act_dq.input[0]) if act_dq is not None else None
        smoothing = smoothing_of(graph, act_q.input[0] if act_q is not None and act_q.op_type == "QuantizeLinear" else node.input[0])
        shape = [1] * len(dims)
        if per_channel:
            shape[axis] = -1
        zp = 0 if zero_points is None else zero_points.astype(np.float64).reshape(shape)
        transposed = node.op_type == "MatMul" or (node.op_type == "Gemm" and out_axis == 1)  # MatMul holds (in, out); the reference Linear holds (out, in)
        shaped_scales = scales.reshape(shape)

        def dequantized(weight=weight, zp=zp, scales=shaped_scales, transposed=transposed) -> np.ndarray:
            # On each read, one layer at a time: held for every layer at once, a model's float64
            # weights were 8x its INT8 payload in memory (2.1 GB for Gemma-3-270m's).
            values = (graph.array(weight.name).astype(np.float64) - zp) * scales
            return values.T if transposed else values

        layout.layers[name] = QuantLayer(
            name=name,
            dtype=DTYPE_NAMES.get(weight.data_type, str(weight.data_type)),
            weight_granularity=granularity,
            weight_axis=axis if per_channel else None,
            weight_scales=scales,
            weight_zero_points=zero_points,
            activation_dtype=act_dtype,
            activation_granularity=None if act_dq is None else ("per-tensor" if act_scale is None or act_scale.size == 1 else "per-channel"),
            activation_scale=act_scale,
            activation_zero_point=act_zp,
            output_channels=dims[axis] if per_channel else None,
            dequantized=dequantized,
            input_smoothing=None if smoothing is None else 1.0 / smoothing[1],
            output_quantized=node.output[0] in graph.quantized,
        )
    return layout


QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def qdq_axis_problems(model: onnx.ModelProto) -> list[str]:
    """Quantize/DequantizeLinear nodes with a per-axis scale whose axis the tensor does not have
    (or whose scale does not fit that axis). ONNX's checker, even with full_check, passes them, and
    ONNX Runtime's optimizer fuses a constant DequantizeLinear into its consumer without reading the
    axis: only an unoptimized session raises ("axis 1 is not in valid range [-1,0]"), so an
    optimized run computes outputs over an invalid graph. A per-tensor (one-element) scale takes no
    axis (ORT reads none). Tensors of unknown rank (activations without value_info) are not judged."""
    inits = {t.name: t for t in model.graph.initializer}
    ranks = {name: len(t.dims) for name, t in inits.items()}
    for info in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        if info.type.tensor_type.HasField("shape"):
            ranks.setdefault(info.name, len(info.type.tensor_type.shape.dim))
    problems = []
    for node in model.graph.node:
        if node.op_type not in QDQ_OPS or len(node.input) < 2 or node.input[1] not in inits or node.input[0] not in ranks:
            continue
        scale_dims = list(inits[node.input[1]].dims)
        if int(np.prod(scale_dims)) <= 1:
            continue
        axis, rank = Graph.axis(node), ranks[node.input[0]]
        dims = list(inits[node.input[0]].dims) if node.input[0] in inits else None
        if not -rank <= axis < rank:
            problems.append(f"{node.op_type} {node.name or node.output[0]}: axis {axis} of its {rank}-D input {node.input[0]} (valid: {-rank} .. {rank - 1})")
        elif dims is not None and scale_dims != [dims[axis]]:
            problems.append(f"{node.op_type} {node.name or node.output[0]}: {scale_dims} scales along axis {axis} of {node.input[0]} {dims}")
    return problems


def graph_problems(model: onnx.ModelProto, path) -> list[str]:
    """Why a QDQ graph is not valid ONNX: the checker with full_check (strict shape inference) on
    the file (by path: external data, over 2 GB), and every Q/DQ axis against its tensor's rank."""
    problems = qdq_axis_problems(model)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        problems.append(f"ONNX checker (full_check): {' '.join(str(exc).split())[:300]}")
    return problems
