"""Defects planted into real artifacts, each the kind of mistake a gate exists to catch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from harness.artifacts import Artifact, write_manifest
from harness.qdq import WEIGHT_OPS, Graph


def weight_dequantizers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    graph = Graph(model)
    found = []
    for node in model.graph.node:
        if node.op_type in WEIGHT_OPS and len(node.input) > WEIGHT_OPS[node.op_type]:
            dq = graph.dequantize_of(node.input[WEIGHT_OPS[node.op_type]])
            if dq is not None and dq.input[0] in graph.inits:
                found.append(dq)
    return found


def per_tensor_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Requantize every per-channel int8 weight with one scale per tensor (set by its largest
    channel): the classic mistake that turns an LLM with outlier channels into garbage."""
    graph = Graph(model)
    replacements = {}
    for dq in weight_dequantizers(model):
        q, scales = graph.array(dq.input[0]), graph.array(dq.input[1])
        axis = Graph.axis(dq)
        shape = [1] * q.ndim
        shape[axis] = -1
        weight = q.astype(np.float32) * scales.reshape(shape)
        scale = np.float32(np.abs(weight).max() / 127.0)
        requantized = np.clip(np.round(weight / scale), -127, 127).astype(np.int8)
        replacements[dq.input[0]] = requantized
        replacements[dq.input[1]] = np.array(scale, dtype=np.float32)
        replacements[dq.input[2]] = np.array(0, dtype=np.int8)
        del dq.attribute[:]  # a scalar scale takes no axis
    for init in model.graph.initializer:
        if init.name in replacements:
            init.CopyFrom(numpy_helper.from_array(replacements[init.name], init.name))
    return model


def rewrite_artifact(artifact: Artifact, target: Path, onnx_name: str, model: onnx.ModelProto, **recipe_changes) -> Artifact:
    """Save a modified graph into `target` with a consistent manifest, as a user's tool would."""
    onnx.save(model, str(target / onnx_name))
    m = artifact.manifest
    return write_manifest(
        target,
        pathway=m["pathway"],
        model_id=m["model_id"],
        recipe={**m["recipe"], **recipe_changes},
        source_weights_sha256=m["source_weights_sha256"],
        tool_versions=m["tool_versions"],
        built_on=m["built_on"],
    )


def _weights(model: onnx.ModelProto):
    graph = Graph(model)
    return graph, weight_dequantizers(model)


def _replace(model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> None:
    for init in model.graph.initializer:
        if init.name in arrays:
            init.CopyFrom(numpy_helper.from_array(arrays[init.name], init.name))


def scales_times_two(model: onnx.ModelProto) -> onnx.ModelProto:
    graph, dqs = _weights(model)
    _replace(model, {dq.input[1]: (graph.array(dq.input[1]) * 2).astype(np.float32) for dq in dqs})
    return model


def zero_point_off_by_one(model: onnx.ModelProto) -> onnx.ModelProto:
    graph, dqs = _weights(model)
    _replace(model, {dq.input[2]: (graph.array(dq.input[2]).astype(np.int16) + 1).astype(np.int8) for dq in dqs})
    return model


def scales_on_wrong_axis(model: onnx.ModelProto) -> onnx.ModelProto:
    """Per-channel scales applied along the input axis of every square weight (shapes still fit)."""
    graph, dqs = _weights(model)
    for dq in dqs:
        dims = list(graph.inits[dq.input[0]].dims)
        if len(dims) == 2 and dims[0] == dims[1]:
            for attr in dq.attribute:
                if attr.name == "axis":
                    attr.i = 1 - attr.i
    return model


def one_layer_left_float(model: onnx.ModelProto) -> onnx.ModelProto:
    """Feed the first quantized MatMul its dequantized float weight directly, dropping its QDQ."""
    graph, dqs = _weights(model)
    dq = dqs[0]
    q, scale = graph.array(dq.input[0]), graph.array(dq.input[1])
    shape = [1] * q.ndim
    shape[Graph.axis(dq)] = -1
    model.graph.initializer.append(numpy_helper.from_array(q.astype(np.float32) * scale.reshape(shape), "planted_float_weight"))
    for node in model.graph.node:
        node.input[:] = ["planted_float_weight" if name == dq.output[0] else name for name in node.input]
    model.graph.node.remove(dq)
    return model


# catalog id -> (planting function, recipe changes, suites that hold the gate)
ONNX_DEFECTS = {
    "per-tensor-scales": (per_tensor_weights, {"weight_granularity": "per-tensor"}, ("test_accuracy.py",)),
    "per-tensor-undeclared": (per_tensor_weights, {}, ("test_artifacts.py",)),
    "scales-2x": (scales_times_two, {}, ("test_accuracy.py",)),
    "zero-point-off-by-one": (zero_point_off_by_one, {}, ("test_artifacts.py",)),
    "scales-wrong-axis": (scales_on_wrong_axis, {}, ("test_accuracy.py",)),
    "layer-left-float": (one_layer_left_float, {}, ("test_artifacts.py",)),
}
