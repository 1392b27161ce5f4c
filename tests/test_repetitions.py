"""The speed verdict across independent repetitions (harness/judge/repetitions.py): planted agreeing
and disagreeing repetitions, its false-alarm rate and power by simulation, and `qconform merge
--repetitions` on planted summaries."""

import json

import numpy as np
import pytest

from harness.cli import main
from harness.judge.repetitions import AGREEMENT_BAND, KERNEL_AGREEMENT_BAND, Repetition, agreement_band, judge_repetitions
from harness.measure.timing import bootstrap_median_interval
from harness.report.summary import merge_repetitions


def test_agreeing_repetitions_below_the_threshold_fail_and_above_it_pass():
    slow = [Repetition(0.78, 0.77, 0.79), Repetition(0.79, 0.78, 0.795), Repetition(0.785, 0.78, 0.79)]
    assert judge_repetitions(slow, 0.8).outcome == "failed"
    fast = [Repetition(1.31, 1.30, 1.32), Repetition(1.313, 1.303, 1.321)]
    assert judge_repetitions(fast, 1.0).outcome == "passed"


def test_repetitions_that_disagree_beyond_the_band_are_unstable_not_pass_or_fail():
    # The measured swing of issue 37: 1.187x cold, 0.790x warm, one artifact.
    swing = judge_repetitions([Repetition(1.187, 1.133, 1.198), Repetition(0.790, 0.671, 0.833)], 1.0)
    assert swing.outcome == "unstable" and "disagree" in swing.why
    # Within the band, but only one of three established the slowdown: a split is unstable too.
    split = judge_repetitions([Repetition(0.79, 0.78, 0.795), Repetition(0.81, 0.79, 0.83), Repetition(0.80, 0.79, 0.81)], 0.8)
    assert split.outcome == "unstable" and "1 of 3" in split.why
    with pytest.raises(ValueError):
        judge_repetitions([Repetition(1.0, 0.9, 1.1)], 1.0)


def _simulated_repetition(rng, true_ratio: float, within_sd: float, between_sd: float, samples: int = 15) -> Repetition:
    """One fresh process: its own offset (clocks, compilation) and `samples` paired ratios."""
    offset = true_ratio * (1 + rng.normal(0, between_sd))
    ratios = offset * (1 + rng.normal(0, within_sd, samples))
    low, high = bootstrap_median_interval(ratios, resamples=400, seed=int(rng.integers(1 << 30)))
    return Repetition(float(np.median(ratios)), low, high)


@pytest.mark.parametrize("between_sd", [0.0, 0.005])
def test_false_alarm_rate_and_power_by_simulation(between_sd):
    """At the threshold, three repetitions FAIL together rarely: with sampling noise alone about
    0.025**3 (seen: 0), with 0.5% between-process drift (five times the 0.1% measured on the H100
    between two fresh processes) under 1%. A candidate 10% below its threshold fails every time."""
    rng = np.random.default_rng(0)
    threshold, within, trials = 1.0, 0.01, 400
    at_threshold = [judge_repetitions([_simulated_repetition(rng, threshold, within, between_sd) for _ in range(3)], threshold).outcome for _ in range(trials)]
    false_alarms = at_threshold.count("failed") / trials
    assert false_alarms <= 0.01, false_alarms
    slower = [judge_repetitions([_simulated_repetition(rng, 0.9 * threshold, within, between_sd) for _ in range(3)], threshold).outcome for _ in range(100)]
    assert slower.count("failed") == 100


def _summary(speedup: float, ci: tuple[float, float], extra_records=(), check: str = "model_speedup", threshold: float = 1.0) -> dict:
    speed = {
        "check": check, "pathway": "torchao-fp8-rowwise", "model": "llama-3.1-8b-prefill-1x2048", "device": "cuda", "outcome": "passed" if ci[1] >= threshold else "failed",
        "metric": "min_speedup", "measured": speedup, "threshold": threshold, "direction": "min", "nodeid": "suites/test_model_speed.py::test_model_speedup[x]",
        "timing": {"speedup": speedup, "ci_low": ci[0], "ci_high": ci[1]},
    }
    gate = {"check": "output_agreement", "pathway": "torchao-fp8-rowwise", "model": "tiny-llama", "device": "cuda", "outcome": "passed", "metric": "min_sqnr_db", "measured": 30.0, "threshold": 20.0, "direction": "min", "nodeid": "suites/test_accuracy.py::test_output_agreement[x]"}
    return {"verdict": "PASS", "records": [speed, gate, *extra_records], "selected": ["torchao-fp8-rowwise"], "environment": {"device": "cuda: NVIDIA H100"}}


def test_merge_judges_each_speed_gate_across_repetitions(tmp_path):
    records, result, env, _ = merge_repetitions([_summary(0.78, (0.77, 0.79)), _summary(0.79, (0.78, 0.795)), _summary(0.785, (0.78, 0.79))])
    speed = next(r for r in records if r.metric == "min_speedup")
    assert (result.word, speed.outcome, env["repetitions"]) == ("FAIL", "failed", 3)
    assert len(speed.extra["repetitions"]) == 3 and "every one of 3" in speed.message

    # One run measured a slowdown, the next did not: the gate is unstable, an error, never a PASS.
    records, result, _, _ = merge_repetitions([_summary(1.187, (1.133, 1.198)), _summary(0.79, (0.671, 0.833))])
    speed = next(r for r in records if r.metric == "min_speedup")
    assert (result.word, speed.outcome) == ("ERROR", "error") and speed.message.startswith("UNSTABLE")

    # Through the command: the verdict is its exit code.
    paths = []
    for i, (value, ci) in enumerate([(1.31, (1.30, 1.32)), (1.313, (1.303, 1.321))]):
        path = tmp_path / f"rep{i}" / "summary.json"
        path.parent.mkdir()
        path.write_text(json.dumps(_summary(value, ci)))
        paths.append(str(path))
    assert main(["merge", "--repetitions", *paths, "--out", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "summary.json").read_text())
    assert merged["verdict"] == "PASS" and merged["environment"]["repetitions"] == 2
    assert AGREEMENT_BAND == 0.05


def test_kernel_table_points_agree_within_their_measured_band():
    """The H100's o_proj M=128 kernel point in two fresh cold processes (2026-12-07): 0.898 and
    0.777, each interval tight. Kernel points repeat within 10% (KERNEL_AGREEMENT_BAND), so two
    passing repetitions pass; the same spread in a model-level point (5%) is UNSTABLE."""
    h100 = [((0.898, (0.897, 0.970))), ((0.777, (0.776, 0.778)))]
    kernel = [_summary(v, ci, check="speedup", threshold=0.62) for v, ci in h100]
    records, result, _, _ = merge_repetitions(kernel)
    assert (result.word, next(r for r in records if r.metric == "min_speedup").outcome) == ("PASS", "passed")
    model = [_summary(v, ci, threshold=0.62) for v, ci in h100]
    records, result, _, _ = merge_repetitions(model)
    assert (result.word, next(r for r in records if r.metric == "min_speedup").outcome) == ("ERROR", "error")
    # Beyond the kernel band, a kernel point is unstable too.
    records, result, _, _ = merge_repetitions([_summary(0.95, (0.94, 0.96), check="speedup", threshold=0.62), _summary(0.75, (0.74, 0.76), check="speedup", threshold=0.62)])
    assert result.word == "ERROR"
    assert (agreement_band("speedup"), agreement_band("model_speedup")) == (KERNEL_AGREEMENT_BAND, AGREEMENT_BAND)
