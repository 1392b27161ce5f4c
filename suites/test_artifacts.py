"""Artifacts: what each quantized artifact holds, read back from the artifact itself."""

import re

import numpy as np
import pytest


def test_every_weight_layer_quantized(case):
    """No Linear layer is silently left in float, unless the recipe keeps it float by name."""
    layout = case.runner.layout()
    keep_float = case.artifact.recipe.get("keep_float", [])
    kept = [name for name in layout.unquantized if any(re.search(p, name) for p in keep_float)]
    left_float = sorted(set(layout.unquantized) - set(kept))
    assert not left_float, f"weight layers left unquantized, not declared in the recipe: {left_float}"
    expected = len(case.model.linear_layer_names()) - len(kept)
    assert len(layout.layers) == expected, f"{len(layout.layers)} quantized weight layers, model has {expected} to quantize"


def test_granularity_matches_recipe(case):
    """Weights are stored in the declared dtype and granularity (per-channel: one scale per output channel)."""
    layout = case.runner.layout()
    weight_dtype = case.artifact.recipe_value("weight_dtype", "the granularity check")
    weight_granularity = case.artifact.recipe_value("weight_granularity", "the granularity check")
    for layer in layout.layers.values():
        assert layer.dtype == weight_dtype, f"{layer.name}: weights are {layer.dtype}, recipe declares {weight_dtype}"
        assert layer.weight_granularity == weight_granularity, f"{layer.name}: weight scales are {layer.weight_granularity}, recipe declares {weight_granularity}"
        if layer.weight_granularity == "per-channel":
            assert layer.weight_scales.size == layer.output_channels, f"{layer.name}: {layer.weight_scales.size} scales for {layer.output_channels} output channels"


def test_scales_valid(case):
    """Scales are positive and finite; symmetric recipes have all-zero weight zero points."""
    layout, recipe = case.runner.layout(), case.artifact.recipe
    for layer in layout.layers.values():
        scales = np.asarray(layer.weight_scales)
        assert np.isfinite(scales).all() and (scales > 0).all(), f"{layer.name}: weight scales not all positive and finite"
        if layer.activation_scale is not None:
            act = np.asarray(layer.activation_scale)
            assert np.isfinite(act).all() and (act > 0).all(), f"{layer.name}: activation scale not positive and finite"
        if recipe.get("weight_symmetric") and layer.weight_zero_points is not None:
            assert not np.any(layer.weight_zero_points), f"{layer.name}: symmetric recipe but non-zero weight zero points"


def test_execution_placement(case, record_property):
    """Where the runtime really executes each node: ONNX Runtime silently runs what the requested
    EP cannot on the CPU. The report lists those nodes; loading already refused a fallen-back EP."""
    placement = getattr(case.runner, "placement", None)
    if placement is None:
        pytest.skip(f"{case.runner.describe()} does not report per-node placement")
    nodes = placement(case.model.eval_inputs())
    assert nodes, "the profiled run reported no nodes"
    summary = ", ".join(f"{len(v)} on {k}" for k, v in sorted(nodes.items()))
    elsewhere = {k: v for k, v in nodes.items() if k != case.runner.provider}
    if elsewhere:
        summary += "; not on the requested EP: " + "; ".join(f"{k}: {', '.join(v[:8])}{' …' if len(v) > 8 else ''}" for k, v in elsewhere.items())
    record_property("qconform_note", summary)
