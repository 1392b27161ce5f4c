"""Artifacts: what each quantized artifact really holds, read back from its payload, against what it
must hold: the expected recipe from the pathway and the profile, never the artifact's own claim."""

import pytest

from harness.artifacts.errors import ArtifactFinding
from harness.measure import layout_checks as lc
from harness.measure.localize import calibration_input_ranges
from harness.run.session import case_labels, cases


def _expected(case):
    return lc.expected_recipe(case.pathway, case.model, case.profile)


def _gate_worst(case, gate, key: str, values: dict[str, float], what: str, unit: str = "") -> None:
    """Gate the worst layer's value on `key`, naming the layer; an empty measurement fails."""
    if not values:
        gate.expect(case, [f"no quantized layer to measure {what} on"], key)
        return
    name, value = lc.worst(values, case.threshold(key).direction)
    gate.check(case, {key: value}, f"worst layer {name}: {what} {value:.3g}{unit}", extra={"per_layer": values})


class _Labels:
    """What a Record needs of a case whose artifact never became one (it is not the model's)."""

    def __init__(self, case_key: tuple):
        self.labels = case_labels(*case_key)  # (model, pathway, device kind)


@pytest.fixture
def case_or_finding(case_key, qc):
    """The loaded case, or what loading its artifact found (not the model's, an invalid graph).
    Loaded at setup, like `case`: an artifact that does not load is a setup error (ERROR), a
    skipped case skips."""
    try:
        return qc.case(*case_key)
    except pytest.skip.Exception:
        found = qc.finding(*case_key)
        if found is None:
            raise
        return found


def _gate_finding(case_key, case_or_finding, gate, check: str) -> None:
    """FAIL `check` with the finding of its kind, pass it on a loaded case; another check's finding
    skips it (the case never loaded)."""
    if isinstance(case_or_finding, ArtifactFinding):
        if case_or_finding.check != check:
            pytest.skip(f"{case_or_finding} (the {case_or_finding.check} check fails)")
        gate.expect(_Labels(case_key), [str(case_or_finding)], check)
    gate.expect(case_or_finding, [], check)


@cases()
def test_artifact_identity(case_key, case_or_finding, gate):
    """The artifact is the model's: its manifest names the model and the sha256 of the model's
    weights, and its payload's inputs, layers and weight values are the model's (harness/artifacts/identity.py).
    One built from other weights or for another model fails here (FAIL, not ERROR: it loads, it
    is the wrong one), and every other check of the case skips naming this one."""
    _gate_finding(case_key, case_or_finding, gate, "artifact_identity")


@cases()
def test_graph_valid(case_key, case_or_finding, gate):
    """An ONNX payload is a valid graph: ONNX's checker with full_check, and every Q/DQ node's axis
    exists in its tensor (harness/artifacts/qdq.py graph_problems). Checked when the runner loads,
    before any session: ONNX Runtime's optimizer folds an invalid DequantizeLinear away and runs,
    so every number measured from it would be over an invalid graph. It FAILs here (the other checks
    of the case skip naming it) instead of crashing inside a gate."""
    if not isinstance(case_or_finding, ArtifactFinding) and not hasattr(getattr(case_or_finding.runner, "model", None), "graph"):
        pytest.skip(f"{case_or_finding.runner.describe()} runs no ONNX graph")
    _gate_finding(case_key, case_or_finding, gate, "graph_valid")


@cases()
def test_every_weight_layer_quantized(case, gate):
    """Every Linear/MatMul weight is quantized, except the layers the expected recipe keeps float."""
    gate.expect(case, lc.coverage_problems(case.runner.layout(), _expected(case), case.model), "every_weight_layer_quantized")


@cases()
def test_granularity_matches_recipe(case, gate):
    """Weight dtype, granularity (and its axis), zero points, activation dtype and granularity, as
    read from the payload, are the expected recipe's."""
    gate.expect(case, lc.layout_problems(case.runner.layout(), _expected(case)), "granularity_matches_recipe")


@cases()
def test_manifest_recipe_agrees(case, gate):
    """The manifest's recipe is a claim: it must agree with the expected recipe."""
    gate.expect(case, lc.claim_problems(case.artifact.recipe, _expected(case)), "manifest_recipe_agrees")


@cases()
def test_project_recipe(case, gate):
    """The artifact was built with the recipe the team's project file requires ([recipes.<pathway>]):
    every key it sets, as the artifact's recipe records it (its layout keys are also checked
    against the payload itself, above)."""
    required = case.model.recipe_overrides.get(case.pathway.name, {})
    if not required:
        pytest.skip(f"the project file sets no [recipes.{case.pathway.name}]")
    gate.expect(case, lc.project_recipe_problems(case.artifact.recipe, required), "project_recipe")


@cases()
def test_scales_valid(case, gate):
    """Scales are positive and finite."""
    gate.expect(case, lc.scale_problems(case.runner.layout()), "scales_valid")


@cases(thresholds=("min_layer_weight_sqnr_db",))
def test_layer_weight_sqnr(case, gate):
    """Each quantized layer's weight, as the runtime uses it, stays close to the model's fp32 weight."""
    _gate_worst(case, gate, "min_layer_weight_sqnr_db", lc.weight_sqnr(case.runner.layout(), case.model), "weight SQNR", " dB")


@cases(thresholds=lambda pathway, model, kind: ("min_code_range_use",) if lc.int8_per_channel_weights(pathway.expected_recipe(model)) else ())
def test_code_range_use(case, gate):
    """Symmetric per-channel max-abs int8 puts +-127 into every channel: scales too large for the
    weights leave the code range unused."""
    layout = case.runner.layout()
    if not any(layer.dtype == "int8" and layer.weight_granularity == "per-channel" for layer in layout.layers.values()):
        pytest.skip(f"{case.pathway.name}: no int8 per-channel weights (code-range use is gated for those)")
    _gate_worst(case, gate, "min_code_range_use", lc.code_range_use(layout), "fraction of channels reaching |code| >= 126")


@cases(thresholds=("max_weight_scale_log2_err",))
def test_weight_scales_plausible(case, gate):
    """Each weight scale times the largest code is about the model's max |w| of its channel."""
    _gate_worst(case, gate, "max_weight_scale_log2_err", lc.weight_scale_error(case.runner.layout(), case.model), "|log2(scale * qmax / max|w|)|")


@cases(thresholds=lambda pathway, model, kind: ("min_activation_scale_log2", "max_activation_scale_log2") if lc.static_activations(pathway.expected_recipe(model)) else ())
def test_activation_scales_plausible(case, gate):
    """Static activation scales fit the range the fp32 model's layer inputs take on the calibration data."""
    layout = case.runner.layout()
    if not any(layer.activation_scale is not None for layer in layout.layers.values()):
        pytest.skip(f"{case.pathway.name}: no static activation scales (dynamic or weight-only)")
    values = lc.activation_scale_log2(layout, calibration_input_ranges(case.runner, case.model, case.harness.store.cache_dir))
    (low, lo), (high, hi) = lc.worst(values, "min"), lc.worst(values, "max")
    detail = f"log2(scale / calibration-range scale): lowest {lo:.3g} at {low}, highest {hi:.3g} at {high}"
    gate.check(case, {"min_activation_scale_log2": lo, "max_activation_scale_log2": hi}, detail, extra={"per_layer": values})


@cases(thresholds=lambda pathway, model, kind: ("max_weight_amax_rel_err", "max_input_amax_ratio") if pathway.records_statistics else ())
def test_recorded_statistics_match_model(case, gate):
    """Calibration statistics in the artifact (FP8 amax) agree with the model: weight amax with the
    weights themselves, input amax with a fresh measurement on the calibration data."""
    stats = case.pathway.recorded_statistics(case.artifact)
    if stats is None:
        pytest.skip(f"{case.pathway.name}: the artifact records no calibration statistics")
    fresh = calibration_input_ranges(case.runner, case.model, case.harness.store.cache_dir)
    weight_err, input_ratio = lc.statistics_errors(stats, case.model, fresh)
    (w_name, w_err), (i_name, i_ratio) = lc.worst(weight_err, "max"), lc.worst(input_ratio, "max")
    detail = f"worst weight amax {w_name}: off by {w_err:.2%}; worst input amax {i_name}: off by x{i_ratio:.3g}"
    gate.check(case, {"max_weight_amax_rel_err": w_err, "max_input_amax_ratio": i_ratio}, detail)


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
