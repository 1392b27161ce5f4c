"""What an artifact really holds, judged against what it must hold: the expected recipe (from the
pathway, overridable in the profile), never the artifact's own manifest, which is only a claim.
Yes/no checks return the list of problems; layer-level measurements return {layer: value} so a
gate can take the worst layer and name it."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.artifacts.qdq import smoothed_reference
from harness.core import DTYPES, RECIPE_KEYS, QuantLayout, module_path
from harness.judge.metrics import tensor_sqnr_db

if TYPE_CHECKING:
    from harness.judge.thresholds import Profile
    from harness.models.base import ModelSpec
    from harness.pathways.base import Pathway

# Largest code of each quantized storage dtype (harness/core.py DTYPES): a max-abs scale maps a
# channel's max |w| onto it.
QMAX = {d.name: d.qmax for d in DTYPES.values() if d.quantized}
# A channel "uses the code range" when its largest |code| is at least this: symmetric per-channel
# max-abs scales put +-127 into every channel (round(max|w| / (max|w|/127)) = 127).
FULL_CODE = 126


def expected_recipe(pathway: "Pathway", model: "ModelSpec", profile: "Profile") -> dict[str, Any]:
    """The pathway's expected recipe for `model`, with the profile's [pathway.model.expect] keys,
    then the layout keys of the project file's [recipes.<pathway>] (the team's word is last)."""
    expected = pathway.expected_recipe(model)
    if profile.has("expect", pathway.name, model.id):
        expected.update(profile.table(pathway.name, model.id, "expect"))
    expected.update({key: value for key, value in model.recipe_overrides.get(pathway.name, {}).items() if key in RECIPE_KEYS})
    return expected


def project_recipe_problems(recorded: dict[str, Any], required: dict[str, Any]) -> list[str]:
    """Where an artifact's recorded recipe (its manifest) differs from what the project file's
    [recipes.<pathway>] requires: every key the project sets, build option or layout."""
    return [
        f"recipe {key} is {recorded.get(key)!r}, the project file requires {value!r}"
        for key, value in required.items()
        if _norm(recorded.get(key)) != _norm(value)
    ]


def int8_per_channel_weights(recipe: dict[str, Any]) -> bool:
    """Whether a recipe puts int8 per-channel weights (whose code-range use is gated)."""
    return recipe.get("weight_dtype") == "int8" and recipe.get("weight_granularity") == "per-channel"


def static_activations(recipe: dict[str, Any]) -> bool:
    """Whether a recipe fixes activation scales at build time (gated against the calibration range)."""
    granularity = str(recipe.get("activation_granularity") or "")
    return bool(recipe.get("activation_dtype")) and bool(granularity) and "dynamic" not in granularity and not granularity.startswith("none")


def claim_problems(claimed: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Where the manifest's recipe claims a layout other than the expected one."""
    return [
        f"manifest claims {key}={claimed.get(key)!r}, expected {expected[key]!r}"
        for key in RECIPE_KEYS
        if key in expected and key in claimed and _norm(claimed[key]) != _norm(expected[key])
    ]


def _norm(value: Any) -> Any:
    return sorted(value) if isinstance(value, (list, tuple)) else value


def _kept_float(name: str, keep_float: list[str]) -> bool:
    name = name.removesuffix("_quant")  # ONNX QDQ renames a quantized node X to X_quant
    return any(re.search(pattern, name) for pattern in keep_float)


def coverage_problems(layout: QuantLayout, expected: dict[str, Any], model: "ModelSpec") -> list[str]:
    """Every Linear/MatMul weight quantized except the expected keep_float layers."""
    keep = list(expected.get("keep_float", []))
    problems = []
    left_float = sorted(n for n in layout.unquantized if not _kept_float(n, keep))
    if left_float:
        problems.append(f"weight layers left unquantized, not expected float: {left_float}")
    quantized_kept = sorted(n for n in layout.layers if _kept_float(n, keep))
    if quantized_kept:
        problems.append(f"layers expected to stay float are quantized: {quantized_kept}")
    total = len(layout.layers) + len(layout.unquantized)
    if total != len(model.weight_layer_names()):
        problems.append(f"{total} weight layers in the artifact, the model has {len(model.weight_layer_names())}")
    return problems


def layout_problems(layout: QuantLayout, expected: dict[str, Any]) -> list[str]:
    """Each quantized layer's weight dtype, granularity, zero points and activation quantization
    against the expected recipe, as read from the payload."""
    problems = []
    for layer in layout.layers.values():
        where = layer.name
        if "weight_dtype" in expected and layer.dtype != expected["weight_dtype"]:
            problems.append(f"{where}: weights are {layer.dtype}, expected {expected['weight_dtype']}")
        if "weight_granularity" in expected and layer.weight_granularity != expected["weight_granularity"]:
            problems.append(f"{where}: weight scales are {layer.weight_granularity}, expected {expected['weight_granularity']}")
        if "weight_group_size" in expected and layer.group_size != expected["weight_group_size"]:
            problems.append(f"{where}: weight group size is {layer.group_size}, expected {expected['weight_group_size']}")
        if layer.weight_granularity == "per-channel" and layer.weight_scales.size != layer.output_channels:
            problems.append(f"{where}: {layer.weight_scales.size} scales for {layer.output_channels} output channels")
        if expected.get("weight_symmetric") and layer.weight_zero_points is not None and np.any(layer.weight_zero_points):
            problems.append(f"{where}: symmetric weights expected, but non-zero weight zero points")
        if "activation_dtype" in expected and layer.activation_dtype != expected["activation_dtype"]:
            found = "no activation quantization" if layer.activation_dtype is None else f"activations quantized to {layer.activation_dtype}"
            problems.append(f"{where}: {found}, expected {expected['activation_dtype']}")
        if "activation_granularity" in expected and layer.activation_granularity != expected["activation_granularity"]:
            problems.append(f"{where}: activation quantization is {layer.activation_granularity}, expected {expected['activation_granularity']}")
        if expected.get("quantize_outputs") is False and layer.output_quantized:
            problems.append(f"{where}: its output is quantized, expected quantize_outputs = false")
        if expected.get("smoothquant") is False and layer.input_smoothing is not None:
            problems.append(f"{where}: its input is smoothed (SmoothQuant), expected smoothquant = false")
    # Some layer must show what the recipe turns on (not every one: a layer may be left without it).
    layers = layout.layers.values()
    if expected.get("quantize_outputs") is True and layers and not any(layer.output_quantized for layer in layers):
        problems.append("no weight op's output is quantized, expected quantize_outputs = true")
    if expected.get("smoothquant") is True and layers and all(layer.input_smoothing is None for layer in layers):
        problems.append("no layer's input is smoothed (no SmoothQuant scales in the graph), expected smoothquant = true")
    return problems


def scale_problems(layout: QuantLayout) -> list[str]:
    """Scales positive and finite (a zero or NaN scale destroys the layer)."""
    problems = []
    for layer in layout.layers.values():
        scales = np.asarray(layer.weight_scales)
        if not (np.isfinite(scales).all() and (scales > 0).all()):
            problems.append(f"{layer.name}: weight scales not all positive and finite")
        if layer.activation_scale is not None:
            act = np.asarray(layer.activation_scale)
            if not (np.isfinite(act).all() and (act > 0).all()):
                problems.append(f"{layer.name}: activation scale not positive and finite")
    return problems


# -- layer-level measurements -------------------------------------------------------------------


def _weight_pairs(layout: QuantLayout, model: "ModelSpec"):
    """(layer, the weight the runtime uses, the model's weight as the layer must store it) per
    quantized layer, float32 torch tensors on the device the runtime holds the weight on (a GPU
    candidate's weights are compared there), read one layer at a time."""
    for name, layer in layout.layers.items():
        weight = layer.dequantized_tensor()  # read once: it may be dequantized on each read
        reference = model.reference_weight_tensor(name, weight.device if weight is not None else "cpu")
        yield layer, weight, smoothed_reference(reference, layer)  # SmoothQuant stores W * s


def weight_sqnr(layout: QuantLayout, model: "ModelSpec") -> dict[str, float]:
    """Per quantized layer: SQNR of the weight the runtime uses against the fp32 weight, dB. Kept on
    the layout (the artifact and accuracy suites both ask; a release-size model's weights are read
    from its files layer by layer, once)."""
    cached = getattr(layout, "_weight_sqnr", {})
    if model.id in cached:
        return cached[model.id]
    result = cached.setdefault(model.id, {})
    layout._weight_sqnr = cached
    for layer, weight, reference in _weight_pairs(layout, model):
        if reference is None or weight is None:
            continue
        result[module_path(layer.name)] = -math.inf if reference.shape != weight.shape else tensor_sqnr_db(reference, weight)
    return result


def code_range_use(layout: QuantLayout) -> dict[str, float]:
    """Per int8 per-channel layer: fraction of output channels whose largest |code| reaches
    FULL_CODE. Scales that are too large (x2, x4) leave codes unused; a clean symmetric max-abs
    recipe uses the full range in every channel. The codes are recovered from the dequantized
    weight and its scales (out, in), on the weight's device."""
    import torch

    result = {}
    for name, layer in layout.layers.items():
        if layer.dtype == "int8" and layer.weight_granularity == "per-channel" and layer.dequantized is not None:
            weight = layer.dequantized_tensor().double()
            scales = torch.as_tensor(np.asarray(layer.weight_scales, dtype=np.float64).reshape(-1, 1), device=weight.device)
            zero = 0.0 if layer.weight_zero_points is None else torch.as_tensor(np.asarray(layer.weight_zero_points, dtype=np.float64).reshape(-1, 1), device=weight.device)
            peak = (torch.round(weight / scales) + zero).abs().amax(dim=1)
            result[module_path(name)] = float((peak >= FULL_CODE).double().mean())
    return result


def weight_scale_error(layout: QuantLayout, model: "ModelSpec") -> dict[str, float]:
    """Per layer: worst |log2(scale * qmax / max|w|)| over channels, max|w| from the model's fp32
    weights: 0 when each scale maps the channel's (or tensor's) max |w| onto the largest code."""
    result = {}
    for layer, _weight, reference in _weight_pairs(layout, model):
        if reference is None or layer.dtype not in QMAX:
            continue
        scales = np.asarray(layer.weight_scales, dtype=np.float64).reshape(-1)
        if layer.weight_granularity == "per-channel" and scales.size == reference.shape[0]:
            amax = reference.abs().amax(dim=1).double().cpu().numpy()
        else:
            amax = np.full(scales.shape, float(reference.abs().max()))
        ok = amax > 0
        result[module_path(layer.name)] = float(np.max(np.abs(np.log2(scales[ok] * QMAX[layer.dtype] / amax[ok])))) if ok.any() else 0.0
    return result


def activation_scale_log2(layout: QuantLayout, ranges: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Per statically quantized layer: log2(activation scale / the scale its calibration range
    implies), signed (negative: the scale clips inputs the calibration data holds), the range
    measured on the calibration data in the fp32 reference. Asymmetric uint8 spans
    [min(lo, 0), max(hi, 0)] over 255 codes; symmetric types span max|x| over qmax."""
    result = {}
    for name, layer in layout.layers.items():
        path = module_path(name)
        if layer.activation_scale is None or path not in ranges or layer.activation_dtype not in QMAX:
            continue
        lo, hi = ranges[path]
        implied = (max(hi, 0.0) - min(lo, 0.0)) / 255.0 if layer.activation_dtype == "uint8" else max(abs(lo), abs(hi)) / QMAX[layer.activation_dtype]
        scale = float(np.max(layer.activation_scale))
        result[path] = math.log2(scale / implied) if implied > 0 and scale > 0 else -math.inf
    return result


def worst(values: dict[str, float], direction: str) -> tuple[str, float]:
    """(layer, value) of the worst layer: the lowest for "min" gates, the highest for "max"."""
    name = (min if direction == "min" else max)(values, key=values.__getitem__)
    return name, values[name]


def statistics_errors(stats: dict[str, dict[str, float]], model: "ModelSpec", fresh: dict[str, tuple[float, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Recorded statistics against the model: per layer, the relative error of the recorded weight
    amax against max |w| of the fp32 weight, and the factor (>= 1) between the recorded input amax
    and a fresh max |x| of the layer's input on the calibration data."""
    weight_err, input_ratio = {}, {}
    for name, recorded in stats.items():
        reference = model.reference_weight(name)
        if reference is not None:
            amax = float(np.abs(reference).max())
            weight_err[name] = abs(recorded["weight_amax"] - amax) / amax if amax > 0 else math.inf
        if name in fresh:
            amax = max(abs(fresh[name][0]), abs(fresh[name][1]))
            ratio = recorded["input_amax"] / amax if amax > 0 else math.inf
            input_ratio[name] = max(ratio, 1 / ratio) if ratio > 0 else math.inf
    return weight_err, input_ratio
