"""The cross-runtime gate fails when one runtime computes something else: a runner with doubled
weight scales against the clean one, judged by the H100 profile's CPU-vs-CUDA thresholds."""

import onnx

from harness.core import Device
from harness.judge.metrics import cross_runtime_metrics
from harness.judge.thresholds import load_profile
from harness.models.base import get_model
from harness.pathways.base import get_pathway
from harness.pathways.inc_int8_qdq import PAYLOAD
from tests.planted_defects import rewrite_artifact, scales_times_two


def _verdicts(measured):
    profile = load_profile("h100")
    return {key: profile.threshold(key, "inc-int8-qdq", "tiny-llama").passes(value) for key, value in measured.items()}


def test_cross_gate_passes_agreeing_runners_and_fails_a_diverging_one(llama_int8, user_artifacts):
    model, pathway, cpu = get_model("tiny-llama"), get_pathway("inc-int8-qdq"), Device("cpu", "cpu")
    inputs = model.eval_inputs()
    clean = pathway.load(llama_int8, cpu, model)(inputs)
    target = user_artifacts(llama_int8)
    planted = rewrite_artifact(llama_int8, target, PAYLOAD, scales_times_two(onnx.load(str(target / PAYLOAD))))
    diverging = pathway.load(planted, cpu, model)(inputs)

    assert _verdicts(cross_runtime_metrics(model, clean, pathway.load(llama_int8, cpu, model)(inputs))) == {"min_cross_sqnr_db": True, "min_cross_token_agreement": True}
    assert _verdicts(cross_runtime_metrics(model, clean, diverging)) == {"min_cross_sqnr_db": False, "min_cross_token_agreement": False}
