"""Accuracy: each pathway's outputs against the full-precision reference, within the profile's budget."""

from harness.metrics import log_error_histogram, output_metrics, sqnr_db
from harness.gates import threshold_key
from harness.session import cases


def layer_weight_sqnr(case) -> dict[str, float]:
    """Per quantized layer: SQNR of the weight the runtime uses against the fp32 weight (for the report)."""
    result = {}
    for name, layer in case.runner.layout().layers.items():
        reference = case.model.reference_weight(name)
        if reference is not None and layer.dequantized_weight is not None and reference.shape == layer.dequantized_weight.shape:
            result[name] = sqnr_db(reference, layer.dequantized_weight)
    return result


@cases()
def test_output_agreement(case, gate):
    """The primary output stays close to the fp32 reference (SQNR, cosine)."""
    name = case.model.primary_output
    reference, candidate = case.reference[name], case.outputs[name]
    stats = output_metrics(reference, candidate)
    detail = f"{name}: max |err| {stats['max_abs_err']:.3g}, {stats['nonfinite']} non-finite values"
    plots = {"error_histogram": log_error_histogram(reference, candidate), "layer_weight_sqnr_db": layer_weight_sqnr(case)}
    gate.check(case, {"min_sqnr_db": stats["sqnr_db"], "min_cosine": stats["cosine"]}, detail, extra=plots)


@cases()
def test_task_metric(case, gate):
    """The model's task metric (token agreement, ranking, task score) stays within budget."""
    measured = case.model.task_metrics(case.reference, case.outputs)
    # evidence: every measured statistic and, for LLMs, reference vs candidate generations (report).
    gate.check(case, {threshold_key(name): value for name, value in measured.items()}, extra=case.model.evidence(case.reference, case.outputs))
