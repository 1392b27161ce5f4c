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
