"""The accuracy gate catches per-tensor weight scales on the decoder with outlier channels."""

import onnx

from harness.pathways.inc_int8_qdq import PAYLOAD
from tests.planted_defects import per_tensor_weights, rewrite_artifact

CASE = ("--pathways=inc-int8-qdq", "--models=tiny-llama")


def test_clean_artifact_passes_the_same_gates(llama_int8, user_artifacts, run_suites):
    """Control: the unmodified artifact, supplied the same way, passes (the gate is not trigger-happy)."""
    target = user_artifacts(llama_int8)
    run = run_suites(f"--artifacts={target.parent.parent}", *CASE)
    assert run.returncode == 0, run.output
    assert run.records(outcome="passed", metric="min_token_agreement")


def test_per_tensor_weight_scales_fail_the_accuracy_gate(llama_int8, user_artifacts, run_suites):
    target = user_artifacts(llama_int8)
    planted = per_tensor_weights(onnx.load(str(target / PAYLOAD)))
    rewrite_artifact(llama_int8, target, PAYLOAD, planted, weight_granularity="per-tensor")

    run = run_suites(f"--artifacts={target.parent.parent}", *CASE)

    assert run.returncode == 1, run.output
    failed = {r["metric"]: r for r in run.records(outcome="failed")}
    assert {"min_token_agreement", "min_sqnr_db", "min_cosine"} <= set(failed), run.output
    assert failed["min_token_agreement"]["measured"] < 0.2  # garbage text: almost no greedy token survives
    assert "task_metric gate failed" in run.output and "min_token_agreement measured" in run.output


def test_undeclared_per_tensor_scales_fail_the_granularity_check(llama_int8, user_artifacts, run_suites):
    """The same defect with a manifest that still claims per-channel is caught by the artifact suite."""
    target = user_artifacts(llama_int8)
    rewrite_artifact(llama_int8, target, PAYLOAD, per_tensor_weights(onnx.load(str(target / PAYLOAD))))

    run = run_suites(f"--artifacts={target.parent.parent}", *CASE, suites=("test_artifacts.py",))

    assert run.returncode == 1, run.output
    [failure] = run.records(outcome="failed")
    assert failure["check"] == "granularity_matches_recipe"
    assert "weight scales are per-tensor, recipe declares per-channel" in failure["reason"]
