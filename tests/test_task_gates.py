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
    """Accuracy 0.60 -> 0.52: recovery 0.8667, a net loss of 8 items in 100. The threshold 0.95
    allows a net loss of 0.05 x 0.60 = 0.03. Tango's score test of "net loss = 0.03": B = 10 x 0.97
    + 2 x 0.91 - 0.06 x 88 = 6.24; the gain rate under H0 q = (6.24 + sqrt(6.24^2 + 8 x 100 x 2 x
    0.03 x 0.97)) / 400 = 0.038716; z = (10 - 2 - 3) / sqrt(100 (2q + 0.03 - 0.0009)) = 1.5319 <
    1.6449: a loss beyond the budget is not shown, the recovery's upper bound is above 0.95."""
    assert (TABLE.reference_accuracy, TABLE.candidate_accuracy) == (pytest.approx(0.60), pytest.approx(0.52))
    assert TABLE.recovery == pytest.approx(0.52 / 0.60)
    assert TABLE._gain_rate_under(0.03) == pytest.approx(0.038716, abs=1e-6)
    assert TABLE.loss_score(0.03) == pytest.approx(1.5319, abs=1e-4)
    assert TABLE.loss_score(0.0) == pytest.approx(8 / math.sqrt(12))  # at margin 0: McNemar's z
    # The bound is where the score test stops rejecting, and it is on the passing side of 0.95.
    assert TABLE.loss_score(TABLE.loss_lower) == pytest.approx(1.644854, abs=1e-6)
    assert TABLE.recovery_upper == pytest.approx(1 - TABLE.loss_lower / 0.60) and TABLE.recovery_upper > 0.95
    assert TABLE.flip_rate == pytest.approx(0.12)
    assert TABLE.table == [[50, 10], [2, 38]]


@pytest.mark.parametrize("table, loss", [(TABLE, 0.03), (TABLE, -0.05), (PairedTask(852, 30, 17, 75), 0.01), (PairedTask(38, 3, 9, 0), 0.1), (PairedTask(95, 5, 0, 0), -0.02)])
def test_the_gain_rate_under_h0_is_the_likelihood_maximum(table, loss):
    """Tango's closed form against a grid search of the multinomial likelihood with the net loss fixed."""
    n, lost, gained = table.n, table.losses, table.gains
    grid = np.linspace(max(0.0, -loss) + 1e-9, (1 - loss) / 2 - 1e-9, 400001)
    likelihood = (lost * np.log(grid + loss) if lost else 0) + (gained * np.log(grid) if gained else 0) + (n - lost - gained) * np.log(1 - 2 * grid - loss)
    assert table._gain_rate_under(loss) == pytest.approx(grid[np.argmax(likelihood)], abs=1e-5)


def _expected_table(n: int, accuracy: float, gain_rate: float, net_loss: float) -> list[float]:
    loss_rate = gain_rate + net_loss
    return [accuracy - loss_rate, loss_rate, gain_rate, 1 - accuracy - gain_rate]  # both, losses, gains, neither


@pytest.mark.parametrize("n, accuracy, gain_rate", [(100, 0.6, 0.05), (974, 0.88, 0.02), (300, 0.5, 0.10)])
def test_the_recovery_gates_alpha_and_power_by_simulation(n, accuracy, gain_rate):
    """Tables drawn with a true net loss exactly at the budget (threshold 0.95: 5% of the accuracy)
    fail 5% of the time; with the net loss the record says is caught with 80% power (budget +
    detectable_loss at the flip rate that loss gives), at least 80% of the time; with no loss,
    almost never. 2000 seeded draws each (binomial s.e. 0.005 at 5%, 0.009 at 80%)."""
    rng = np.random.default_rng(0)
    budget = 0.05 * accuracy

    def fail_rate(net_loss: float, draws: int = 2000) -> float:
        p = _expected_table(n, accuracy, gain_rate, net_loss)
        return float(np.mean([PairedTask(*map(int, rng.multinomial(n, p))).recovery_upper < 0.95 for _ in range(draws)]))

    beyond = 0.0
    for _ in range(30):  # the detectable loss depends on the flips it causes: its fixed point
        beyond = PairedTask(*(round(n * x) for x in _expected_table(n, accuracy, gain_rate, budget + beyond))).detectable_loss()
    assert 0.03 <= fail_rate(budget) <= 0.065
    assert fail_rate(budget + beyond) >= 0.78
    assert fail_rate(0.0) <= 0.01


def test_power_statement_by_hand():
    """Detectable loss beyond the margin (z_a + z_b) sqrt(psi / n) = 2.486475 * sqrt(0.12 / 100) =
    0.08613: a recovery threshold of 0.95 on a 0.60 task allows 0.03, and a loss of 0.116 is caught
    with 80% power; twice the budget is not: said so."""
    assert TABLE.detectable_loss() == pytest.approx(2.486475 * math.sqrt(0.0012), abs=1e-5)
    note = TABLE.power_note(0.95)
    assert "allows a net loss of 3.0%" in note and "a net loss of 11.6% is caught with 80% power" in note and "TOO FEW ITEMS" in note
    assert "TOO FEW ITEMS" not in PairedTask(5000, 20, 20, 4960).power_note(0.99)
    # A loss the recovery gate found (upper bound 0.51 < 0.95) proves the set large enough, however
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
