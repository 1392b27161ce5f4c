"""What evaluating a causal LM costs, counted (forward passes), never timed: a regression that makes
the evaluation run more forwards fails here, whatever the machine's speed (issue 33). Each case's
records carry the counts and wall times of its phases (`costs`), and the report shows them."""

from harness.core import CountedRun
from harness.models.hf import HuggingFaceModel
from harness.report.html import costs_html
from harness.report.summary import records_from
from tests.hf_checkpoints import build_llama

# A transformers causal LM with the shipped data and default settings: 4 windows of 128 tokens in
# batches of 2 (2 forwards), 8 prompts x 16 greedy tokens batched (one forward per token: 16), the
# 100 labeled items batched (their logits fit LOGITS_PER_FORWARD at this vocabulary: 1).
EVAL_BATCH_FORWARDS = 2
GENERATION_FORWARDS = 16
LABELED_TASK_FORWARDS = 1
EVALUATION_FORWARDS = EVAL_BATCH_FORWARDS + GENERATION_FORWARDS + LABELED_TASK_FORWARDS  # 19 (230 before batching)


def test_a_causal_lm_evaluation_makes_a_stated_number_of_forward_passes(tmp_path):
    model = HuggingFaceModel(build_llama(tmp_path / "llama"))
    costs: dict = {}
    counted = CountedRun(model.run_reference)
    model.evaluate(counted, costs=costs)
    assert counted.forwards <= EVALUATION_FORWARDS, costs
    assert {part: cost["forwards"] for part, cost in costs.items()} == {"eval batches": EVAL_BATCH_FORWARDS, "greedy generation": GENERATION_FORWARDS, "labeled task": LABELED_TASK_FORWARDS}
    assert sum(cost["forwards"] for cost in costs.values()) == counted.forwards


def test_each_record_states_what_its_case_cost(tmp_path, run_suites):
    """A run's records carry the reference's and the candidate's phases (wall time, forward passes,
    host memory) and the report shows them."""
    checkpoint = build_llama(tmp_path / "cost-llama")
    run = run_suites(f"--model={checkpoint}", "--pathways=torchao-int8-dynamic", f"--qc-cache={tmp_path / 'cache'}", f"--golden-dir={tmp_path / 'golden'}", "-k", "output_agreement")
    assert run.returncode == 0, run.output[-3000:]
    [record] = [r for r in run.records(check="output_agreement") if r.get("metric") == "min_sqnr_db"]
    costs = record["costs"]
    for side in ("reference", "candidate"):
        assert costs[f"{side}: greedy generation"]["forwards"] == GENERATION_FORWARDS, costs
        assert costs[f"{side}: labeled task"]["forwards"] == LABELED_TASK_FORWARDS, costs
    assert {"reference outputs", "candidate outputs", "localization"} <= set(costs), costs
    assert costs["candidate outputs"]["host_peak_gib"] > 0 and costs["candidate outputs"]["seconds"] >= costs["candidate: greedy generation"]["seconds"]
    html = costs_html(records_from(run.summary))
    assert "What each case cost" in html and f"{GENERATION_FORWARDS} forwards" in html and "torchao-int8-dynamic/cpu" in html


def test_batched_generation_and_task_equal_one_sequence_at_a_time(tmp_path, monkeypatch):
    """Batching is bounded by LOGITS_PER_FORWARD (a large vocabulary gets smaller batches) and does not
    change what is measured: the greedy tokens are the same and the choice log-likelihoods agree to
    float32 rounding, with one prompt or one item per forward as with all of them in one."""
    import numpy as np

    from harness.models import causal_lm

    model = HuggingFaceModel(build_llama(tmp_path / "llama"))
    kind = model.model_kind
    batched = CountedRun(model.run_reference)
    tokens, logprobs = kind.greedy_generate(batched), kind.choice_logprobs(batched)
    monkeypatch.setattr(causal_lm, "LOGITS_PER_FORWARD", 1)
    single = CountedRun(model.run_reference)
    assert np.array_equal(kind.greedy_generate(single), tokens)
    np.testing.assert_allclose(kind.choice_logprobs(single), logprobs, rtol=1e-4, atol=1e-4)
    assert single.forwards == 8 * 16 + 100 and batched.forwards == GENERATION_FORWARDS + LABELED_TASK_FORWARDS
