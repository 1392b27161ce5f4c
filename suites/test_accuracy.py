"""Accuracy: each pathway's outputs against the full-precision reference, within the profile's budget."""

import pytest

from harness.gates import threshold_key
from harness.layout_checks import weight_sqnr
from harness.localize import NotLocalizable, describe_first_bad, localize
from harness.metrics import log_error_histogram, output_metrics, smallest_detectable_change, wilson_lower
from harness.session import cases


@cases()
def test_output_agreement(case, gate):
    """The primary output stays close to the fp32 reference (SQNR, cosine)."""
    name = case.model.primary_output
    reference, candidate = case.reference[name], case.outputs[name]
    stats = output_metrics(reference, candidate)
    detail = f"{name}: max |err| {stats['max_abs_err']:.3g}, {stats['nonfinite']} non-finite values"
    plots = {"error_histogram": log_error_histogram(reference, candidate), "layer_weight_sqnr_db": weight_sqnr(case.runner.layout(), case.model)}
    try:  # where the error starts, for the failure message and the report's per-layer plot
        errors = localize(case)
        key = "min_layer_activation_sqnr_db"  # without it: the layer with the largest drop
        threshold = case.threshold(key).value if case.profile.has(key, case.pathway.name, case.model.id) else float("-inf")
        detail += "; " + describe_first_bad(errors, threshold)
        plots["layer_activation_sqnr_db"] = [list(e) for e in errors]  # a list: execution order survives JSON key sorting
    except NotLocalizable as exc:
        detail += f"; no per-layer localization ({exc})"
    gate.check(case, {"min_sqnr_db": stats["sqnr_db"], "min_cosine": stats["cosine"]}, detail, extra=plots)


@cases()
def test_layer_activation_sqnr(case, gate):
    """Every weight layer's output, run inside the quantized model, stays close to the same layer's
    output in the fp32 reference (activation SQNR in execution order; the worst layer is named)."""
    try:
        errors = localize(case)
    except NotLocalizable as exc:
        pytest.skip(f"{case.pathway.name}: {exc}")
    layer, value = min(errors, key=lambda e: e[1])
    threshold = case.threshold("min_layer_activation_sqnr_db").value
    detail = f"worst layer {layer}: {value:.1f} dB; {describe_first_bad(errors, threshold)}"
    gate.check(case, {"min_layer_activation_sqnr_db": value}, detail, extra={"layer_activation_sqnr_db": [list(e) for e in errors]})


@cases()
def test_task_metric(case, gate):
    """The model's task metric (token agreement, ranking, task score) stays within budget.
    Proportions are judged on their 95% Wilson lower bound over the items measured, and each
    metric states the smallest change its sample size can detect."""
    measured = case.model.task_metrics(case.reference, case.outputs)
    samples = case.model.task_metric_samples(case.reference)
    judge, detectable, notes = {}, {}, []
    for metric, (n, kind) in samples.items():
        detectable[threshold_key(metric)] = smallest_detectable_change(measured[metric], n, kind)
        if kind == "proportion":
            judge[threshold_key(metric)] = wilson_lower(measured[metric], n)
            notes.append(f"{metric} judged on its 95% lower bound {judge[threshold_key(metric)]:.4f} over {n} items")
    extra = {"detectable": detectable, "samples": {threshold_key(m): n for m, (n, _) in samples.items()}, "judged_on_lower_bound": judge}
    # evidence: every measured statistic and, for LLMs, reference vs candidate generations (report).
    extra.update(case.model.evidence(case.reference, case.outputs))
    gate.check(case, {threshold_key(name): value for name, value in measured.items()}, "; ".join(notes), extra=extra, judge=judge)
