"""Artifacts: what each quantized artifact holds, read back from the artifact itself."""

import re

import numpy as np
import pytest

from harness.session import cases


@cases()
def test_every_weight_layer_quantized(case, gate):
    """No Linear layer is silently left in float, unless the recipe keeps it float by name."""
    layout = case.runner.layout()
    keep_float = case.artifact.recipe.get("keep_float", [])
    kept = [name for name in layout.unquantized if any(re.search(p, name) for p in keep_float)]
    left_float = sorted(set(layout.unquantized) - set(kept))
    problems = [f"weight layers left unquantized, not declared in the recipe: {left_float}"] if left_float else []
    expected = len(case.model.linear_layer_names()) - len(kept)
    if len(layout.layers) != expected:
        problems.append(f"{len(layout.layers)} quantized weight layers, model has {expected} to quantize")
    gate.expect(case, problems, "every weight layer quantized")


@cases()
def test_granularity_matches_recipe(case, gate):
    """Weights are stored in the declared dtype and granularity (per-channel: one scale per output channel)."""
    layout, recipe = case.runner.layout(), case.artifact.recipe
    problems = []
    for layer in layout.layers.values():
        if layer.dtype != recipe["weight_dtype"]:
            problems.append(f"{layer.name}: weights are {layer.dtype}, recipe declares {recipe['weight_dtype']}")
        if layer.weight_granularity != recipe["weight_granularity"]:
            problems.append(f"{layer.name}: weight scales are {layer.weight_granularity}, recipe declares {recipe['weight_granularity']}")
        elif layer.weight_granularity == "per-channel" and layer.weight_scales.size != layer.output_channels:
            problems.append(f"{layer.name}: {layer.weight_scales.size} scales for {layer.output_channels} output channels")
    gate.expect(case, problems, "dtype and granularity as declared")


@cases()
def test_scales_valid(case, gate):
    """Scales are positive and finite; symmetric recipes have all-zero weight zero points."""
    layout, recipe = case.runner.layout(), case.artifact.recipe
    problems = []
    for layer in layout.layers.values():
        scales = np.asarray(layer.weight_scales)
        if not (np.isfinite(scales).all() and (scales > 0).all()):
            problems.append(f"{layer.name}: weight scales not all positive and finite")
        if layer.activation_scale is not None:
            act = np.asarray(layer.activation_scale)
            if not (np.isfinite(act).all() and (act > 0).all()):
                problems.append(f"{layer.name}: activation scale not positive and finite")
        if recipe.get("weight_symmetric") and layer.weight_zero_points is not None and np.any(layer.weight_zero_points):
            problems.append(f"{layer.name}: symmetric recipe but non-zero weight zero points")
    gate.expect(case, problems, "scales positive, finite, symmetric")


@cases()
def test_execution_placement(case, record_property):
    """Where the runtime really executes each node: ONNX Runtime silently runs what the requested
    EP cannot on the CPU. The report lists those nodes; loading already refused a fallen-back EP."""
    placement = getattr(case.runner, "placement", None)
    if placement is None:
        pytest.skip(f"{case.runner.describe()} does not report per-node placement")
    nodes = placement(case.model.eval_inputs())
    if not nodes:
        pytest.fail("the profiled run reported no nodes", pytrace=False)
    summary = ", ".join(f"{len(v)} on {k}" for k, v in sorted(nodes.items()))
    elsewhere = {k: v for k, v in nodes.items() if k != case.runner.provider}
    if elsewhere:
        summary += "; not on the requested EP: " + "; ".join(f"{k}: {', '.join(v[:8])}{' …' if len(v) > 8 else ''}" for k, v in elsewhere.items())
    record_property("qconform_note", summary)
