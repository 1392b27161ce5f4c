"""The labeled-task gates (harness/judge/paired.py) against hand-worked values, and the causal LM's
multiple-choice scoring as lm-evaluation-harness scores it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.judge.paired import PairedTask, binomial_tail

# 100 items: 50 both right, 10 lost (reference right, candidate wrong), 2 gained, 38 both wrong.
TABLE = PairedTask(both=50, losses=10, gains=2, neither=38)


def test_mcnemar_exact_by_hand():
    """P(X >= 10), X ~ Binomial(12, 1/2) = (C(12,10) + C(12,11) + C(12,12)) / 2^12 = 79 / 4096."""
    assert TABLE.mcnemar_p == pytest.approx(79 / 4096)
    assert binomial_tail(0, 0) == 1.0 and binomial_tail(3, 3) == pytest.approx(1 / 8)
    assert PairedTask(50, 2, 10, 38).mcnemar_p > 0.99  # gains outnumber losses: no evidence of a loss


def test_recovery_and_its_bound_by_hand():
    """Accuracy 0.60 -> 0.52: recovery 0.8667. Paired s.e. of the difference sqrt(12 - 8^2/100) /
    100 = 0.033705; upper bound (0.52 + 1.644854 * 0.033705) / 0.60 = 0.95907."""
    assert (TABLE.reference_accuracy, TABLE.candidate_accuracy) == (pytest.approx(0.60), pytest.approx(0.52))
    assert TABLE.recovery == pytest.approx(0.52 / 0.60)
    assert TABLE.recovery_upper == pytest.approx((0.52 + 1.644854 * math.sqrt(11.36) / 100) / 0.60, abs=1e-5)
    assert TABLE.flip_rate == pytest.approx(0.12)
    assert TABLE.table == [[50, 10], [2, 38]]


def test_power_statement_by_hand():
    """Detectable net loss (z_a + z_b) sqrt(psi / n) = 2.486475 * sqrt(0.12 / 100) = 0.08613: a
    recovery threshold of 0.95 on a 0.60 task allows 0.03, which 100 items cannot detect; said so."""
    assert TABLE.detectable_loss() == pytest.approx(2.486475 * math.sqrt(0.0012), abs=1e-5)
    assert "TOO FEW ITEMS" in TABLE.power_note(0.95)
    assert "TOO FEW ITEMS" not in PairedTask(5000, 20, 20, 4960).power_note(0.99)
    # A loss the recovery gate found (upper bound 0.33 < 0.95) proves the set large enough, however
    # many items a small loss would need.
    broken = PairedTask(both=20, losses=40, gains=2, neither=38)
    assert broken.recovery_upper < 0.95 and "TOO FEW ITEMS" not in broken.power_note(0.95)


def test_the_table_from_items_and_from_metrics_agree():
    ref = np.array([1, 1, 0, 0, 1], bool)
    cand = np.array([1, 0, 1, 0, 1], bool)
    task = PairedTask.from_items(ref, cand)
    assert task.table == [[2, 1], [1, 1]]
    assert PairedTask.from_metrics(task.counts()) == task
    with pytest.raises(ValueError, match="paired task"):
        PairedTask.from_items(ref, cand[:3])


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    from tests.hf_checkpoints import build_llama

    return build_llama(tmp_path_factory.mktemp("llama") / "llama")


def test_choices_are_scored_by_continuation_log_likelihood(tmp_path, llama_dir):
    """A choice's score is the sum of its tokens' log-probabilities after the context, from logits
    at the positions before each token (lm-evaluation-harness's loglikelihood)."""
    from harness.judge.metrics import log_softmax
    from harness.models.hf import HuggingFaceModel

    data = tmp_path / "choices.jsonl"
    data.write_text('{"context": "The capital of France is", "choices": [" Paris", " London wide"], "answer": 0}\n')
    model = HuggingFaceModel(llama_dir, eval_tokens=128, seq_len=64, eval_choices=data)
    scores = model.evaluate(model.run_reference)["choice_logprobs"]
    [item] = model.model_kind.choice_items
    for i, (seq, start) in enumerate(zip(item["sequences"], item["starts"], strict=True)):
        ids = np.array([seq])
        logits = model.run_reference({"input_ids": ids, "attention_mask": np.ones_like(ids)})["logits"][0]
        expected = sum(log_softmax(logits[t - 1].astype(np.float64))[seq[t]] for t in range(start, len(seq)))
        assert scores[0, i] == pytest.approx(expected, abs=1e-4)  # padding in the batch changes nothing


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"context": "a", "choices": [" b"], "answer": 0}', "choices must be a list of at least two"),
        ('{"context": "a", "choices": [" b", " c"], "answer": 2}', "answer 2 is not an index"),
        ('{"context": "a", "choices": [" b", " c"]}', "missing key"),
    ],
)
def test_bad_choice_items_are_refused_naming_the_item(tmp_path, llama_dir, line, message):
    from harness.models.hf import HuggingFaceModel

    data = tmp_path / "choices.jsonl"
    data.write_text(line + "\n")
    model = HuggingFaceModel(llama_dir, eval_tokens=128, seq_len=64, eval_choices=data)
    with pytest.raises(ValueError, match=message):
        model.validate()
