"""Model identity: an artifact must be a quantization of *this* model. A payload made from another
model is refused by name, before any number is produced, instead of failing later on a missing
input or a layer count. Used when a pathway loads an artifact (and by `qconform import`). A mismatch
is an ArtifactIdentityError: under a run, the `artifact_identity` gate fails with it (FAIL, not ERROR)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from harness.artifacts.errors import ArtifactIdentityError
from harness.core import module_path

if TYPE_CHECKING:
    import onnx

    from harness.models.base import ModelSpec

SHOWN = 5  # problems named in one message; the rest are counted


def _refuse(model: "ModelSpec", problems: list[str]) -> None:
    if problems:
        more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
        raise ArtifactIdentityError(f"this artifact is not model {model.id}: " + "; ".join(problems[:SHOWN]) + more)


def _linear_shapes(model: "ModelSpec") -> dict[str, tuple[int, ...]]:
    return model.weight_layer_shapes()  # Linear, Conv1D ... (ModelSpec.weight_layer_types), (out, in)


def check_layer_names(names: Iterable[str], model: "ModelSpec", what: str = "layers") -> None:
    """Every layer the artifact names must be a Linear layer of the model, and every Linear of the
    model must be there (kept-float layers included: they are still in the graph)."""
    names = {module_path(n) for n in names}
    expected = set(_linear_shapes(model))
    problems = []
    if names - expected:
        problems.append(f"{what} {sorted(names - expected)[:SHOWN]} are not layers of the model")
    if expected - names:
        problems.append(f"the model's layers {sorted(expected - names)[:SHOWN]} are missing")
    _refuse(model, problems)


def check_onnx_matches(graph: "onnx.ModelProto", model: "ModelSpec") -> None:
    """Graph inputs and every weight-bearing op (quantized or float) against the model's inputs
    and Linear layers: names and weight shapes. Raises ArtifactIdentityError naming the difference."""
    from harness.artifacts.qdq import WEIGHT_OPS, Graph

    g = Graph(graph)
    inputs = [i.name for i in graph.graph.input if i.name not in g.inits]
    if sorted(inputs) != sorted(model.input_names):
        _refuse(model, [f"graph inputs {sorted(inputs)} do not match the model's inputs {sorted(model.input_names)}"])
    shapes = _linear_shapes(model)
    problems, seen = [], []
    for node in graph.graph.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) <= WEIGHT_OPS[node.op_type]:
            continue
        weight = node.input[WEIGHT_OPS[node.op_type]]
        dq = g.dequantize_of(weight)
        stored = g.inits.get(weight) or (g.inits.get(dq.input[0]) if dq is not None else None)
        if stored is None:
            continue  # activation x activation (attention scores)
        name, dims = node.name or node.output[0], tuple(stored.dims)
        seen.append(name)
        if node.op_type == "MatMul" or (node.op_type == "Gemm" and not _attr(node, "transB")):
            dims = dims[::-1]  # stored (in, out); the model's Linear holds (out, in)
        expected = shapes.get(module_path(name))
        if expected is not None and dims != expected:
            problems.append(f"layer {module_path(name)}: weight shape {dims} differs from the model's {expected}")
    _refuse(model, problems)
    if shapes:  # a model given as an ONNX file has no torch layers to compare names with
        check_layer_names(seen, model, "graph layers")


def _attr(node, name: str) -> Any:
    return next((a.i for a in node.attribute if a.name == name), 0)


def align_state_dict(state: dict[str, Any], expected: Iterable[str]) -> dict[str, Any]:
    """A state dict saved from the bare model (`model.state_dict()` of the AutoModel, as a team's
    pipeline saves it) keyed like qconform's reference, which wraps that model in a module of its
    own: the one key prefix that makes the two key sets equal is added; otherwise unchanged."""
    expected = set(expected)
    if not state or set(state) == expected:
        return state
    first = next(iter(state))
    for prefix in {key[: len(key) - len(first)] for key in expected if key.endswith(first)}:
        if {prefix + key for key in state} == expected:
            return {prefix + key: value for key, value in state.items()}
    return state


def check_state_dict_matches(state: dict[str, Any], model: "ModelSpec") -> None:
    """A torch state dict (torchao's quantized tensors included) against the model's own."""
    expected = {k: tuple(v.shape) for k, v in model.skeleton.state_dict().items()}
    problems = []
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        problems.append(f"tensors do not match the model's: missing {missing[:SHOWN]}, extra {extra[:SHOWN]}")
    for key in sorted(set(state) & set(expected)):
        shape = tuple(state[key].shape) if hasattr(state[key], "shape") else np.shape(state[key])
        if shape != expected[key]:
            problems.append(f"layer {key.removesuffix('.weight')}: weight shape {shape} differs from the model's {expected[key]}")
    _refuse(model, problems)


# A dequantized weight this far from the reference weight is another model's (same shapes,
# other values). Measured on tiny-llama (ORT quantize_static), worst layer's cosine to the
# reference: per-channel int8 0.99995, per-tensor int8 (outliers set the scale) 0.989; the same
# architecture with another seed's weights 0.011 at best.
MIN_WEIGHT_COSINE = 0.5


def weight_value_mismatch(layer: str, weight: np.ndarray, reference: np.ndarray) -> str | None:
    a, b = weight.astype(np.float64).ravel(), reference.astype(np.float64).ravel()
    cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))
    if cosine < MIN_WEIGHT_COSINE:
        return f"layer {layer}: weights differ from the model's (cosine {cosine:.3f} < {MIN_WEIGHT_COSINE}): made from other weights"
    return None


# Weight values, not only shapes: SAMPLED elements per quantized tensor, at indices drawn from a
# generator seeded with SAMPLE_SEED (the same positions every run), dequantized and compared with the
# model's weight by cosine (MIN_WEIGHT_COSINE, above). Not within half a quantization step: a
# wrongly quantized layer (scales x2, per-tensor, permuted or transposed) is the model's weight
# badly stored, the layer and output gates' finding; here only a layer holding *another* layer's
# weights (two layers of equal shape swapped) is not the model's. Bounded: SAMPLED elements per
# tensor; the other layers of equal shape are read only for a layer that does not match its own.
SAMPLED = 64
SAMPLE_SEED = 34


def _sampled_cosine(stored: np.ndarray, reference: Any, picks: np.ndarray) -> float:
    a, b = stored.reshape(-1)[picks].astype(np.float64), np.asarray(reference, dtype=np.float64).reshape(-1)[picks]
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def swapped_weight_problems(layout: Any, model: "ModelSpec") -> list[str]:
    """Quantized layers (a QuantLayout's, dequantized (out, in)) whose sampled weights are another
    layer's of the model rather than their own."""
    from harness.artifacts.qdq import smoothed_reference

    shapes = _linear_shapes(model)
    problems = []
    for name, layer in layout.layers.items():
        own, stored = smoothed_reference(model.reference_weight(name), layer), layer.dequantized_weight
        if own is None or stored is None or np.shape(own) != np.shape(stored):
            continue  # a shape difference is check_onnx_matches's finding
        picks = np.random.default_rng(SAMPLE_SEED).choice(stored.size, min(SAMPLED, stored.size), replace=False)
        if _sampled_cosine(stored, own, picks) >= MIN_WEIGHT_COSINE:
            continue
        path = module_path(name)
        for other in sorted(n for n, shape in shapes.items() if shape == tuple(np.shape(stored)) and n != path):
            if _sampled_cosine(stored, smoothed_reference(model.reference_weight(other), layer), picks) >= MIN_WEIGHT_COSINE:
                problems.append(f"layer {path} holds the weights of layer {other} ({len(picks)} sampled values)")
                break
    return problems


def check_weight_values(layout: Any, model: "ModelSpec") -> None:
    """Raises ArtifactIdentityError when a layer holds another layer's weights."""
    _refuse(model, swapped_weight_problems(layout, model))
