"""Accuracy: each pathway's outputs against the full-precision reference, within the profile's budget."""

import pytest

from harness.judge.gates import metric, threshold_key
from harness.judge.metrics import log_error_histogram, output_metrics, smallest_detectable_change, wilson_lower, wilson_upper
from harness.measure.layout_checks import weight_sqnr
from harness.measure.localize import NotLocalizable, describe_first_bad, localize
from harness.run.session import cases


@cases(thresholds=("min_sqnr_db", "min_cosine", "min_layer_activation_sqnr_db"))
def test_output_agreement(case, gate):
    """The primary output stays close to the fp32 reference (SQNR, cosine)."""
    name = case.model.primary_output
    reference, candidate = case.reference[name], case.outputs[name]
    stats = output_metrics(reference, candidate)
    detail = f"{name}: max |err| {stats['max_abs_err']:.3g}, {stats['nonfinite']} non-finite values"
    plots = {"error_histogram": log_error_histogram(reference, candidate), "layer_weight_sqnr_db": weight_sqnr(case.runner.layout(), case.model)}
    try:  # where the error starts, for the failure message and the report's per-layer plot
        errors = localize(case)
        key = "min_layer_activation_sqnr_db"
        threshold = case.threshold(key).value
        detail += "; " + describe_first_bad(errors, threshold)
        plots["layer_activation_sqnr_db"] = [list(e) for e in errors]  # a list: execution order survives JSON key sorting
    except NotLocalizable as exc:
        detail += f"; no per-layer localization ({exc})"
    gate.check(case, {"min_sqnr_db": stats["sqnr_db"], "min_cosine": stats["cosine"]}, detail, extra=plots)


@cases(thresholds=("min_layer_activation_sqnr_db",))
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


@cases(thresholds=lambda pathway, model, kind: [threshold_key(name) for name in model.task_metric_names])
def test_task_metric(case, gate):
    """The model's task metric (token agreement, ranking, task score) stays within budget.
    Proportions are judged on their 95% Wilson bound over the items measured (lower for a `min_`
    key, upper for a `max_` key), and each metric states the smallest change its sample size can detect."""
    measured = case.model.task_metrics(case.reference, case.outputs)
    judge, extra, notes = judge_task_metrics(measured, case.model.task_metric_samples(case.reference))
    # evidence: every measured statistic and, for LLMs, reference vs candidate generations (report).
    extra.update(case.model.evidence(case.reference, case.outputs))
    gate.check(case, {threshold_key(name): value for name, value in measured.items()}, "; ".join(notes), extra=extra, judge=judge)


def judge_task_metrics(measured: dict[str, float], samples: dict[str, int]) -> tuple[dict[str, float], dict[str, object], list[str]]:
    """(the value each threshold key is judged on, the record's extra, notes) from the measured task
    metrics and the items each is measured on; what a metric is over n items (a proportion, a
    correlation) is its entry in harness/gates.METRICS."""
    judge, detectable, counted, notes = {}, {}, {}, []
    bounds: dict[str, dict[str, float]] = {"lower": {}, "upper": {}}
    for name, n in samples.items():
        key = threshold_key(name)
        entry = metric(key)
        if entry.sample is None or name not in measured:
            continue
        counted[key] = n
        detectable[key] = smallest_detectable_change(measured[name], n, entry.sample)
        if entry.sample == "proportion":
            side = "lower" if entry.direction == "min" else "upper"
            judge[key] = bounds[side][key] = (wilson_lower if side == "lower" else wilson_upper)(measured[name], n)
            notes.append(f"{name} judged on its 95% {side} bound {judge[key]:.4f} over {n} items")
    extra: dict[str, object] = {"detectable": detectable, "samples": counted, "judged_on_lower_bound": bounds["lower"]}
    if bounds["upper"]:
        extra["judged_on_upper_bound"] = bounds["upper"]
    return judge, extra, notes
