"""Defects planted into real artifacts, each the kind of mistake a gate exists to catch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from harness.artifacts.manifest import Artifact, write_manifest
from harness.artifacts.qdq import WEIGHT_OPS, Graph
from harness.core import module_path


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
    return reseal(target, artifact, recipe={**artifact.manifest["recipe"], **recipe_changes})


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


def _layer_dq(model: onnx.ModelProto, layer: str) -> tuple[Graph, onnx.NodeProto]:
    """The weight DequantizeLinear of the MatMul of module `layer` ("layers.1.mlp.down_proj")."""
    graph = Graph(model)
    for node in model.graph.node:
        if node.op_type in WEIGHT_OPS and module_path(node.name) == layer:
            return graph, graph.dequantize_of(node.input[WEIGHT_OPS[node.op_type]])
    raise KeyError(layer)


# The single-layer defects hit one layer in the middle of the decoder; the output gate must name it.
ONE_LAYER = "layers.1.mlp.down_proj"


def one_layer_scales_x4(model: onnx.ModelProto, layer: str = ONE_LAYER) -> onnx.ModelProto:
    """One layer's weight scales multiplied by 4 (its weights 4x too large)."""
    graph, dq = _layer_dq(model, layer)
    _replace(model, {dq.input[1]: (graph.array(dq.input[1]) * 4).astype(np.float32)})
    return model


def one_layer_permuted(model: onnx.ModelProto, layer: str = "layers.0.mlp.up_proj") -> onnx.ModelProto:
    """One layer's output channels shuffled, codes and scales together (a wrong row order on export)."""
    graph, dq = _layer_dq(model, layer)
    q, scales = graph.array(dq.input[0]), graph.array(dq.input[1])
    order = np.random.default_rng(0).permutation(q.shape[1])
    _replace(model, {dq.input[0]: q[:, order], dq.input[1]: scales[order]})
    return model


def one_layer_axis_out_of_range(model: onnx.ModelProto, layer: str = ONE_LAYER) -> onnx.ModelProto:
    """One weight DequantizeLinear given axis 2 of its 2-D tensor: the class of INC's bias
    DequantizeLinear on axis 1 of a 1-D tensor (a GPT-2's Conv1D), which ONNX's checker passes and
    ONNX Runtime's optimizer folds away, so an optimized session runs an invalid graph."""
    _, dq = _layer_dq(model, layer)
    del dq.attribute[:]
    dq.attribute.append(onnx.helper.make_attribute("axis", 2))
    return model


def two_layers_swapped(model: onnx.ModelProto, first: str = "layers.0.mlp.up_proj", second: str = "layers.1.mlp.up_proj") -> onnx.ModelProto:
    """Two layers' quantized weights of equal shape swapped, codes with scales: every shape and every
    scale is plausible, each layer holds the other's weights."""
    graph, a = _layer_dq(model, first)
    _, b = _layer_dq(model, second)
    _replace(model, {a.input[0]: graph.array(b.input[0]), a.input[1]: graph.array(b.input[1]), b.input[0]: graph.array(a.input[0]), b.input[1]: graph.array(a.input[1])})
    return model


def one_layer_coarse_codes(model: onnx.ModelProto, layer: str = "layers.0.self_attn.o_proj") -> onnx.ModelProto:
    """One layer requantized with scales 4x too large (as if its range had been 4x wider): the
    weights still dequantize to about the right values, on a quarter of the int8 code range."""
    graph, dq = _layer_dq(model, layer)
    q, scales = graph.array(dq.input[0]), graph.array(dq.input[1])
    coarse = (scales * 4).astype(np.float32)
    _replace(model, {dq.input[0]: np.clip(np.rint(q * scales / coarse), -127, 127).astype(np.int8), dq.input[1]: coarse})
    return model


def transposed_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Square weights stored as W instead of W^T (shapes still fit), each with its own scales."""
    graph, dqs = _weights(model)
    for dq in dqs:
        q = graph.array(dq.input[0])
        if q.ndim == 2 and q.shape[0] == q.shape[1]:
            _replace(model, {dq.input[0]: np.ascontiguousarray(q.T)})
    return model


def calibration_tiny_range(model: onnx.ModelProto) -> onnx.ModelProto:
    """Activation scales as from calibration data with a 16x smaller range than real inputs."""
    graph = Graph(model)
    arrays = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[0] not in graph.inits:
            arrays[node.input[1]] = (graph.array(node.input[1]) / 16).astype(np.float32)
    _replace(model, arrays)
    return model


def int8_activations(model: onnx.ModelProto) -> onnx.ModelProto:
    """Activations quantized to int8 (zero point - 128) where uint8 is expected: the same numbers,
    a different layout than the recipe promises (and than an int8-activation kernel expects)."""
    graph = Graph(model)
    arrays = {name: (graph.array(name).astype(np.int16) - 128).astype(np.int8) for name, init in graph.inits.items() if init.data_type == onnx.TensorProto.UINT8}
    _replace(model, arrays)
    del model.graph.value_info[:]  # stale uint8 types; ONNX Runtime infers them again
    return model


def fp32_graph_claiming_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """The fp32 export itself, shipped under an INT8 manifest."""
    from harness.measure.localize import fp32_graph
    from harness.models.base import get_model

    graph = onnx.ModelProto()
    graph.CopyFrom(fp32_graph(get_model("tiny-llama")))
    return graph


# catalog id -> (planting function, recipe changes, suites that hold the gate)
ONNX_DEFECTS = {
    "per-tensor-scales": (per_tensor_weights, {"weight_granularity": "per-tensor"}, ("test_accuracy.py",)),
    "per-tensor-undeclared": (per_tensor_weights, {}, ("test_artifacts.py",)),
    "scales-2x": (scales_times_two, {}, ("test_accuracy.py",)),
    "zero-point-off-by-one": (zero_point_off_by_one, {}, ("test_artifacts.py",)),
    "scales-wrong-axis": (scales_on_wrong_axis, {}, ("test_accuracy.py",)),
    "layer-left-float": (one_layer_left_float, {}, ("test_artifacts.py",)),
    "one-layer-scales-x4": (one_layer_scales_x4, {}, ("test_artifacts.py", "test_accuracy.py")),
    "one-layer-permuted": (one_layer_permuted, {}, ("test_artifacts.py",)),
    "one-layer-coarse-codes": (one_layer_coarse_codes, {}, ("test_artifacts.py",)),
    "transposed-weights": (transposed_weights, {}, ("test_artifacts.py",)),
    "calibration-tiny-range": (calibration_tiny_range, {}, ("test_artifacts.py",)),
    "int8-activations-expected-uint8": (int8_activations, {}, ("test_artifacts.py",)),
    "fp32-graph-claiming-int8": (fp32_graph_claiming_int8, {}, ("test_artifacts.py",)),
    "two-layers-swapped": (two_layers_swapped, {}, ("test_artifacts.py",)),
    "qdq-axis-out-of-range": (one_layer_axis_out_of_range, {}, ("test_artifacts.py", "test_accuracy.py")),
}


# -- INC FP8 statistics files -------------------------------------------------------------------

FP8_MEASURE = "measure_hooks_maxabs"  # INC's dump, kept as .json (its pickled .npz twin is rebuilt at load)
FP8_SCALES = "measure_hooks_maxabs_MAXABS_POW2"  # scales INC derived; when absent it derives them again


def _write_fp8_measure(directory: Path, nodes: dict) -> None:
    """Write INC's measurement dump as the artifact keeps it: the JSON only (qconform writes the
    .npz INC reads from it at load; an artifact's own .npz is refused as a possible pickle)."""
    import json

    path = directory / f"{FP8_MEASURE}.json"
    data = json.loads(path.read_text())
    data["Nodes"] = nodes
    path.write_text(json.dumps(data, indent=4))


def fp8_weight_amax_scaled(directory: Path) -> None:
    """Recorded weight amax 2x the weights' real max |w|: statistics that do not belong to the
    model's weights. INC uses the stored scales, so the numbers do not change: only a check of the
    statistics against the weights sees it."""
    import json

    nodes = json.loads((directory / f"{FP8_MEASURE}.json").read_text())["Nodes"]
    for node in nodes.values():
        node["params"]["weight"] = (np.asarray(node["params"]["weight"]) * 2).tolist()
    _write_fp8_measure(directory, nodes)


def fp8_calibrated_on_other_data(directory: Path) -> None:
    """Input amax 16x below what the calibration data gives (calibrated on near-silent inputs),
    with the scales INC derives from them (the stored scales are dropped, so INC derives anew)."""
    import json

    nodes = json.loads((directory / f"{FP8_MEASURE}.json").read_text())["Nodes"]
    for node in nodes.values():
        node["inputs"] = (np.asarray(node["inputs"]) / 16).tolist()
    _write_fp8_measure(directory, nodes)
    (directory / f"{FP8_SCALES}.json").unlink()


# catalog id -> planting function on a copy of the inc-fp8-ref tiny-llama artifact directory
FP8_DEFECTS = {
    "fp8-weight-amax-scaled": fp8_weight_amax_scaled,
    "fp8-calibrated-on-other-data": fp8_calibrated_on_other_data,
}


def reseal(directory: Path, artifact: Artifact, **changes) -> Artifact:
    """Rewrite the manifest so every hash matches the planted files (the numeric gates are tested,
    not the hash check)."""
    m = {**artifact.manifest, **changes}
    return write_manifest(
        directory,
        pathway=m["pathway"],
        model_id=m["model_id"],
        recipe=m["recipe"],
        source_weights_sha256=m["source_weights_sha256"],
        tool_versions=m["tool_versions"],
        built_on=m["built_on"],
    )


# -- torchao-int8-dynamic state dicts -------------------------------------------------------------

TORCHAO_PAYLOAD = "model.pt"  # harness/pathways/torchao_int8.py PAYLOAD


def _rewrite_int8_weights(directory: Path, change) -> None:
    """Load the artifact's state dict, replace Int8Tensor weights by change(key, weight), save it
    back the way torch.save(module.state_dict()) writes it."""
    import torch
    from torchao.quantization import Int8Tensor  # also registers torchao's tensor types as safe globals

    path = directory / TORCHAO_PAYLOAD
    state = torch.load(path, map_location="cpu", weights_only=True)
    torch.save({key: change(key, value) if isinstance(value, Int8Tensor) else value for key, value in state.items()}, path)


def int8_per_tensor_weights(directory: Path) -> None:
    """Every weight requantized with one scale per tensor (what granularity=[PerRow(), PerTensor()]
    makes): the largest channel sets everyone's scale, which on a model with outlier channels turns
    the output to garbage."""
    from torchao.quantization import Int8Tensor, PerTensor

    _rewrite_int8_weights(directory, lambda key, w: Int8Tensor.from_hp(w.dequantize(), PerTensor(), act_quant_kwargs=w.act_quant_kwargs))


def int8_one_layer_scales_x4(directory: Path, layer: str = ONE_LAYER) -> None:
    """One layer's weight scales multiplied by 4 (its weights 4x too large); codes unchanged."""
    from torchao.quantization import Int8Tensor

    def change(key, w):
        if key != f"{layer}.weight":
            return w
        return Int8Tensor(w.qdata, w.scale * 4, w.block_size, w.dtype, zero_point=w.zero_point, act_quant_kwargs=w.act_quant_kwargs)

    _rewrite_int8_weights(directory, change)


# catalog id -> (planting function on a copy of the torchao-int8-dynamic tiny-llama artifact
# directory, recipe changes, suites that hold the gate)
TORCHAO_INT8_DEFECTS = {
    "torchao-int8-per-tensor-scales": (int8_per_tensor_weights, {"weight_granularity": "per-tensor"}, ("test_accuracy.py",)),
    "torchao-int8-per-tensor-undeclared": (int8_per_tensor_weights, {}, ("test_artifacts.py",)),
    "torchao-int8-one-layer-scales-x4": (int8_one_layer_scales_x4, {}, ("test_artifacts.py", "test_accuracy.py")),
}
