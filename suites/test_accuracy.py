"""Accuracy: each pathway's outputs against the full-precision reference, within the profile's budget."""

from harness.metrics import output_metrics
from harness.thresholds import threshold_key


def test_output_agreement(case, gate):
    """The primary output stays close to the fp32 reference (SQNR, cosine)."""
    name = case.model.primary_output
    stats = output_metrics(case.reference[name], case.outputs[name])
    detail = f"{name}: max |err| {stats['max_abs_err']:.3g}, {stats['nonfinite']} non-finite values"
    gate.check(case, {"min_sqnr_db": stats["sqnr_db"], "min_cosine": stats["cosine"]}, detail)


def test_task_metric(case, gate):
    """The model's task metric (token agreement, ranking, task score) stays within budget."""
    measured = case.model.task_metrics(case.reference, case.outputs)
    gate.check(case, {threshold_key(name): value for name, value in measured.items()})
