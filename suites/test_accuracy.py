"""Accuracy: each pathway's outputs against its reference (the model as the candidate is made from
it: fp32 on the CPU, bf16 on the GPU for torchao's GPU cases, with the bf16-vs-fp32 floor beside
it), within the profile's budget."""

import pytest

from harness.judge.gates import metric, threshold_key, threshold_keys
from harness.judge.metrics import ALPHA, POWER, ProportionTest, log_error_histogram, output_metrics, smallest_detectable_change
from harness.judge.paired import PairedTask
from harness.measure.layout_checks import weight_sqnr
from harness.measure.localize import NotLocalizable, describe_first_bad
from harness.run.session import cases


@cases(thresholds=("min_sqnr_db", "min_cosine", "min_layer_activation_sqnr_db"))
def test_output_agreement(case, gate):
    """The primary output stays close to the fp32 reference (SQNR, cosine)."""
    name = case.model.primary_output
    reference, candidate = case.reference[name], case.outputs[name]
    stats = output_metrics(reference, candidate)
    detail = f"{name}: max |err| {stats['max_abs_err']:.3g}, {stats['nonfinite']} non-finite values{describe_floor(case)}"
    plots = {"error_histogram": log_error_histogram(reference, candidate), "layer_weight_sqnr_db": weight_sqnr(case.runner.layout(), case.model)}
    try:  # where the error starts, for the failure message and the report's per-layer plot
        errors = case.layer_errors()
        key = "min_layer_activation_sqnr_db"
        threshold = case.threshold(key).value
        detail += "; " + describe_first_bad(errors, threshold)
        plots["layer_activation_sqnr_db"] = [list(e) for e in errors]  # a list: execution order survives JSON key sorting
    except NotLocalizable as exc:
        detail += f"; no per-layer localization ({exc})"
    gate.check(case, {"min_sqnr_db": stats["sqnr_db"], "min_cosine": stats["cosine"]}, detail, extra={**plots, **floor_extra(case)})


def floor_extra(case) -> dict:
    return {"reference": str(case.precision), "precision_floor": case.precision_floor} if case.precision_floor else {}


def describe_floor(case) -> str:
    """What a non-fp32 reference costs by itself, for the record's message (empty for fp32)."""
    floor = case.precision_floor
    if not floor:
        return ""
    if "not_measured" in floor:
        return f"; reference {case.precision}, precision floor not measured: {floor['not_measured']}"
    numbers = ", ".join(f"{key} {value:.4g}" for key, value in floor.items() if key != "against")
    return f"; reference {case.precision}, precision floor against {floor['against']}: {numbers}"


@cases(thresholds=("min_layer_activation_sqnr_db",))
def test_layer_activation_sqnr(case, gate):
    """Every weight layer's output, run inside the quantized model, stays close to the same layer's
    output in the fp32 reference (activation SQNR in execution order; the worst layer is named)."""
    try:
        errors = case.layer_errors()
    except NotLocalizable as exc:
        pytest.skip(f"{case.pathway.name}: {exc}")
    layer, value = min(errors, key=lambda e: e[1])
    threshold = case.threshold("min_layer_activation_sqnr_db").value
    detail = f"worst layer {layer}: {value:.1f} dB; {describe_first_bad(errors, threshold)}"
    gate.check(case, {"min_layer_activation_sqnr_db": value}, detail, extra={"layer_activation_sqnr_db": [list(e) for e in errors]})


@cases(thresholds=lambda pathway, model, kind: [key for name in model.task_metric_names for key in threshold_keys(name)])
def test_task_metric(case, gate):
    """The model's task metric (token agreement, ranking, task score) stays within budget.
    A proportion fails only when it is significantly past its threshold (one-sided 5%, with the
    power stated: harness/judge/metrics.ProportionTest); a correlation states the smallest change
    its sample size can detect."""
    measured = case.model.task_metrics(case.reference, case.outputs)
    samples = case.model.task_metric_samples(case.reference)
    thresholds = {threshold_key(name): case.threshold(threshold_key(name)).value for name in samples if name in measured}
    # evidence: every measured statistic and, for LLMs, reference vs candidate generations (report).
    evidence = case.model.evidence(case.reference, case.outputs)
    judge, extra, notes = judge_task_metrics(measured, samples, thresholds, evidence.get("statistics", measured))
    extra.update(evidence, **floor_extra(case))
    gate.check(case, {key: value for name, value in measured.items() for key in threshold_keys(name)}, describe_floor(case).removeprefix("; "), extra=extra, judge=judge, notes=notes)


def judge_task_metrics(
    measured: dict[str, float], samples: dict[str, int], thresholds: dict[str, float], statistics: dict[str, float] | None = None
) -> tuple[dict[str, float], dict[str, object], dict[str, str]]:
    """(the value each threshold key is judged on, the record's extra, a note per key) from the
    measured task metrics, the items each is measured on and the thresholds; what a metric is over
    n items (a proportion, a correlation, a paired table) is its entry in harness/judge/gates.METRICS.
    `statistics`: every number the model measured (a paired table's counts among them)."""
    judge, detectable, counted, notes, tests = {}, {}, {}, {}, {}
    for name, n in samples.items():
        key = threshold_key(name)
        entry = metric(key)
        if entry.sample is None or name not in measured:
            continue
        counted[key] = n
        if entry.sample == "proportion":
            test = ProportionTest(measured[name], n, thresholds[key], entry.direction)
            judge[key], detectable[key], notes[key] = test.judged, test.detectable, test.note(name)
            tests[key] = {"bound": test.bound_side, "judged": test.judged, "alpha": ALPHA, "power": POWER, "detectable": test.detectable}
        elif entry.sample == "paired":  # the labeled task's 2x2 table (harness/judge/paired.py)
            task = PairedTask.from_metrics(statistics or measured)
            detectable[key] = task.detectable_loss()
            if key == "min_task_recovery":
                judge[key] = task.recovery_upper
                notes[key] = f"recovery {task.recovery:.4f} (reference accuracy {task.reference_accuracy:.3f}, candidate {task.candidate_accuracy:.3f}), a paired non-inferiority test with the budget as its margin (Tango's score test): fails only when its one-sided 95% upper bound ({task.recovery_upper:.4f}) is under the threshold; " + task.power_note(thresholds[key])
            else:
                notes[key] = task.power_note()
        else:
            detectable[key] = smallest_detectable_change(measured[name], n, entry.sample)
    extra: dict[str, object] = {"detectable": detectable, "samples": counted, "proportion_tests": tests}
    return judge, extra, notes
