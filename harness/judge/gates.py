"""The one gate concept: a Record per checked value (or per item that checked nothing numeric), the
only metric -> threshold mapping, and the verdict of a session computed from all of its Records.

Every conformance item reports through Records: threshold gates, yes/no artifact checks, property
violations, errors, skips and xfails. summary.json, the HTML report, `qconform report|merge` and the
exit status all come from `verdict()` here, so they cannot disagree.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

# -- metrics: direction, meaning, noise band between two clean runs, calibration margin ---------


@dataclass(frozen=True)
class Metric:
    direction: str  # "min": measured must be >= threshold; "max": <= threshold
    explanation: str
    # How far the value may move between two clean runs before the baseline comparison counts it.
    noise: tuple[str, float] = ("abs", 0.005)  # ("abs" | "rel", size)
    # Calibration rule: threshold from the worst value of repeated clean runs; None = policy, not measured.
    margin: tuple[str, float] | None = ("distance", 2.0)  # see calibrated_threshold()
    policy: float | None = None  # the fixed value of a policy threshold
    # What a measured value is over the n items a model reports for it (ModelSpec.task_metric_samples):
    # "proportion" (a fraction of n items: it fails only when significantly past its threshold,
    # one-sided 5%, its power stated: harness/judge/metrics.ProportionTest), "correlation" (a rank
    # correlation over n pairs: its smallest detectable change through Fisher's z), "paired" (a
    # labeled task's 2x2 table of reference vs candidate correctness: harness/judge/paired.py), or
    # None (judged as measured).
    sample: str | None = None


METRICS: dict[str, Metric] = {
    "min_sqnr_db": Metric("min", "SQNR of the primary output against the fp32 reference, dB (higher is closer)", ("abs", 0.5), ("minus", 2.0)),
    "min_cosine": Metric("min", "cosine similarity of the primary output to the fp32 reference"),
    "min_row_cosine": Metric("min", "worst per-row (per sentence / per token) cosine to the fp32 reference"),
    "min_token_agreement": Metric("min", "fraction of positions whose greedy next token equals the reference's", ("abs", 0.01), ("minus", 0.03), sample="proportion"),
    "min_ranking_agreement": Metric("min", "Spearman correlation of pair similarities, candidate vs reference", sample="correlation"),
    "max_rel_task_drop": Metric("max", "relative loss of the task score vs the reference (MLPerf-style 1% = keep 99%)", margin=None, policy=0.01),
    "min_speedup": Metric("min", "median speedup over the full-precision baseline, same run, interleaved", ("rel", 0.05), ("times", 0.90)),
    "min_prefill_speedup": Metric("min", "the team's own candidate against its bf16 model, one prefill forward at the model's prefill point (median of paired interleaved repeats, judged on its interval's upper end)", ("rel", 0.05), ("times", 0.90)),
    "min_decode_speedup": Metric("min", "the team's own candidate against its bf16 model, one greedy decode step at the model's decode point (CUDA-graphed, median of paired interleaved repeats, judged on its interval's upper end)", ("rel", 0.05), ("times", 0.90)),
    "min_golden_sqnr_db": Metric("min", "SQNR of the output against the stored golden output of this pathway, dB", ("abs", 1.0), None, 35.0),
    # Another toolchain or GPU class than the golden's: kernels and rounding differ, outputs move a
    # little. Set from measured drift (see defaults.toml); a real change of outputs still fails.
    "min_golden_cross_sqnr_db": Metric("min", "SQNR of the output against the nearest golden recorded in another context (device class or toolchain), dB", ("abs", 1.0), None, 25.0),
    "min_cross_sqnr_db": Metric("min", "SQNR between two runtimes' outputs for the same artifact or recipe (e.g. CPU EP vs CUDA EP), dB", ("abs", 0.5), ("minus", 2.0)),
    "min_cross_token_agreement": Metric("min", "fraction of greedy tokens two runtimes agree on for the same artifact or recipe", ("abs", 0.01), ("minus", 0.03)),
    # Language models, as llama.cpp's `perplexity --kl-divergence` reports them (natural log, nats).
    "max_ppl_ratio_log": Metric("max", "ln(PPL(quantized)/PPL(reference)) over the evaluation text's fixed windows (0 = same perplexity)", ("abs", 0.005), ("twice", 0.001)),
    # The other side of the same number: a candidate much BETTER than the model it is made from is
    # not its quantization but a leak (an export that drops the causal mask sees the next token:
    # ln ratio -2.22 measured on SmolLM2-135M). Policy, not calibrated: clean artifacts measured
    # -0.0023 at the lowest (tiny-llama E5M2; INT8 -0.0004, E4M3 -0.0017; Gemma-3-270m E4M3 -0.0002;
    # tests/hf_checkpoints Llama/Qwen2 INT8 +0.025/+0.035, E4M3 -0.0008/+0.009, stderr up to 0.016).
    "min_ppl_ratio_log": Metric("min", "ln(PPL(quantized)/PPL(reference)), its lower bound: a candidate far better than its reference sees what the reference cannot (a dropped causal mask)", ("abs", 0.005), margin=None, policy=-0.05),
    "max_rel_ppl_increase": Metric("max", "relative perplexity increase PPL(quantized)/PPL(reference) - 1 (0.01 = 1% worse)", ("abs", 0.005), ("twice", 0.001)),
    "max_kl_mean": Metric("max", "mean KL divergence of the next-token distributions, reference || quantized, nats per token", ("abs", 0.005), ("twice", 0.001)),
    "max_kl_p99": Metric("max", "99th percentile over tokens of the next-token KL divergence, nats", ("abs", 0.02), ("twice", 0.001)),
    "max_kl_max": Metric("max", "largest next-token KL divergence of any evaluated token, nats", ("abs", 0.05), ("twice", 0.001)),
    "min_top1_agreement": Metric("min", "fraction of evaluated tokens whose most likely next token is the reference's ('same top')", ("abs", 0.01), ("minus", 0.03), sample="proportion"),
    # Generation compounds: one flipped token changes the rest of the continuation, so clean runs
    # spread wide (0.31-1.0 on two tiny checkpoints, where top-1 spread 0.86-0.96): half the worst
    # measured; a broken model generates ~0 (per-tensor weights measured 0.0). Not judged as a
    # proportion: the tokens of one continuation are far from independent.
    "min_generation_agreement": Metric("min", "fraction of greedily generated tokens equal to the reference's at the same position, over the prompts", ("abs", 0.05), ("times", 0.5)),
    # Layer-level gates (harness/measure/layout_checks.py, harness/measure/localize.py): the worst layer is named.
    "min_layer_weight_sqnr_db": Metric("min", "worst layer's SQNR of the weight the runtime uses against the model's fp32 weight, dB", ("abs", 0.5), ("minus", 2.0)),
    "min_layer_activation_sqnr_db": Metric("min", "worst layer's output SQNR inside the quantized model against the same layer in the fp32 reference, dB", ("abs", 0.5), ("minus", 2.0)),
    "min_code_range_use": Metric("min", "worst layer's fraction of int8 output channels whose largest |code| reaches 126 (max-abs scales reach 127)", ("abs", 0.01), ("minus", 0.02)),
    "max_weight_scale_log2_err": Metric("max", "worst channel's |log2(weight scale * largest code / max|w|)|, against the model's fp32 weights", ("abs", 0.02), ("minus", 0.05)),
    "min_activation_scale_log2": Metric("min", "lowest layer's log2(activation scale / scale implied by the fp32 input range on the calibration data): below, inputs clip", ("abs", 0.02), ("minus", 0.05)),
    "max_activation_scale_log2": Metric("max", "highest layer's log2(activation scale / scale implied by the fp32 input range on the calibration data): above, codes go unused", ("abs", 0.02), ("minus", 0.05)),
    "max_weight_amax_rel_err": Metric("max", "worst layer's relative error of the recorded weight amax against the model's max |w|", margin=None, policy=0.01),
    "max_input_amax_ratio": Metric("max", "worst layer's factor between the recorded input amax and a fresh measurement on the calibration data", margin=None, policy=1.05),
    "min_peak_fraction": Metric("min", "fraction of the GPU's peak reached by the candidate on its binding limit (compute or HBM bandwidth; harness/measure/roofline.py)", ("rel", 0.05), ("times", 0.90)),
    # Labeled multiple-choice task of a causal LM, the same items scored on reference and candidate
    # (harness/judge/paired.py): "paired" metrics are judged with the 2x2 table's paired statistics.
    "min_task_recovery": Metric("min", "labeled-task accuracy of the candidate / the reference's on the same items (llm-compressor's recovery): a paired non-inferiority test with the budget 1 - threshold as its margin, failing only when the one-sided 95% upper bound of Tango's score interval is under the threshold", ("abs", 0.01), ("minus", 0.03), sample="paired"),
    "max_task_flip_rate": Metric("max", "fraction of labeled items whose correctness flipped, either way (Dutta et al. 2024: accuracy hides flips)", ("abs", 0.01), ("minus", 0.03), sample="proportion"),
    "min_task_mcnemar_p": Metric("min", "one-sided exact McNemar p-value that the candidate loses more labeled items than it gains (under the threshold: a significant loss of any size; MLPerf-strict, selected with the model's `metrics`, not by default)", ("abs", 0.0), margin=None, policy=0.01, sample="paired"),
    "min_e4m3_over_e5m2_db": Metric("min", "output SQNR of FP8 E4M3 minus that of E5M2 (same recipe): E4M3 must be at least as accurate in range", ("abs", 0.5), ("minus", 1.0)),
}

# Yes/no checks (artifact structure) are Records too: measured = number of problems, must be 0.
PROBLEMS = Metric("max", "number of problems found in the artifact (must be 0)", margin=None, policy=0.0)


def metric(key: str) -> Metric:
    try:
        return METRICS[key]
    except KeyError:
        raise KeyError(f"unknown metric {key!r}; known: {', '.join(METRICS)}") from None


def register_metric(key: str, direction: str, explanation: str, **kwargs: Any) -> None:
    """Metric names are open: a model or plugin declares its own, profiles give the thresholds."""
    if not key.startswith(f"{direction}_"):
        raise ValueError(f"metric {key!r}: a {direction!r} threshold key must start with '{direction}_'")
    existing = METRICS.get(key)
    new = Metric(direction, explanation, **kwargs)
    if existing is not None and existing != new:
        raise ValueError(f"metric {key!r} is already defined differently")
    METRICS[key] = new


def threshold_keys(name: str) -> list[str]:
    """Every threshold that gates a metric: `token_agreement` -> [`min_token_agreement`]; a metric
    wrong in both directions has both bounds, the upper first (`ppl_ratio_log`)."""
    keys = [key for key in (f"max_{name}", f"min_{name}") if key in METRICS]
    if not keys:
        raise KeyError(f"no threshold key gates metric {name!r}; known: {', '.join(METRICS)}")
    return keys


def threshold_key(name: str) -> str:
    """The (first) threshold that gates a metric: `token_agreement` -> `min_token_agreement`."""
    return threshold_keys(name)[0]


def passes(key: str, measured: float, threshold: float) -> bool:
    if math.isnan(measured):
        return False
    return measured >= threshold if metric(key).direction == "min" else measured <= threshold


def calibrated_threshold(key: str, worst: float) -> float:
    """A threshold a clean run clears with room, from the worst value measured over repeated runs."""
    m = metric(key)
    if m.margin is None:
        return float(m.policy)
    rule, size = m.margin
    if rule == "minus":  # dB and fractions: a fixed distance under the worst run
        value = worst - size if m.direction == "min" else worst + size
        return math.floor(value * 100) / 100 if m.direction == "min" else math.ceil(value * 100) / 100
    if rule == "times":  # speed, generation: a fraction of the worst run
        return math.floor(worst * size * 100) / 100
    if rule == "twice":  # divergences: twice the worst, two significant digits, at least `size`
        value = max(2 * worst, size)
        digits = 1 - math.floor(math.log10(value))
        return math.ceil(value * 10**digits) / 10**digits
    # "distance": similarity in [0, 1]: `size` times the measured distance from 1
    return math.floor((1 - size * (1 - worst)) * 1000) / 1000


def noise_band(key: str, baseline: float) -> float:
    kind, size = METRICS[key].noise if key in METRICS else ("abs", 0.005)
    return size * abs(baseline) if kind == "rel" and math.isfinite(baseline) else size


# -- records --------------------------------------------------------------------------------

OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


@dataclass
class Record:
    """One checked thing: a measured value against its threshold, or an item's outcome."""

    check: str  # the gate: suite test name without `test_`
    pathway: str
    model: str
    device: str
    outcome: str  # one of OUTCOMES
    metric: str | None = None
    measured: float | None = None
    threshold: float | None = None
    direction: str | None = None
    source: str | None = None  # where the threshold came from ("cpu.toml [inc-int8-qdq.tiny-llama]")
    explanation: str | None = None
    message: str = ""  # why it failed or was skipped, or a note
    nodeid: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # evidence for the report (plots, timings, generations)

    def to_json(self) -> dict[str, Any]:
        """The record in summary.json (and in an xdist worker's report); within a process Records
        stay objects, from the gate that made them to the verdict and the report."""
        data = {k: v for k, v in asdict(self).items() if v not in (None, "", {})}
        data.update(data.pop("extra", {}))
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Record":
        names = set(cls.__dataclass_fields__) - {"extra"}
        data = {**data, **{k: float(data[k]) for k in ("measured", "threshold") if data.get(k) is not None}}  # "inf" in JSON
        return cls(**{k: v for k, v in data.items() if k in names}, extra={k: v for k, v in data.items() if k not in names})


# -- the verdict ---------------------------------------------------------------------------

# Exit status per verdict: identical from pytest, `qconform run`, `qconform report` and `qconform merge`.
# 4 is pytest's usage error: bad options, profiles, names or artifact directories, before any test.
EXIT_CODES = {"PASS": 0, "FAIL": 1, "INCOMPLETE": 2, "ERROR": 3, "USAGE ERROR": 4, "NOT GATED": 6}


@dataclass
class Verdict:
    word: str
    counts: dict[str, int]  # test items by outcome, as pytest and pytest-html count them
    gates: int  # measured values checked against a threshold
    not_gated: dict[str, str]  # selected pathway -> why no gate of it ran
    not_selected: dict[str, str]  # pathway -> why this run did not select it

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.word]

    def line(self) -> str:
        """The one-line verdict: word, counts, and what did not run."""
        counts = ", ".join(f"{n} {k}" for k, n in self.counts.items() if n)
        text = f"{self.word}: {counts or 'no tests'}; {self.gates} check(s) ran"
        if self.not_gated:
            text += "; no gate ran for " + "; ".join(f"{p} ({why})" for p, why in sorted(self.not_gated.items()))
        if self.not_selected:
            text += "; not selected: " + ", ".join(sorted(self.not_selected))
        return text


def item_outcomes(records: Iterable[Record]) -> dict[str, str]:
    """The outcome of each test item (nodeid): the worst of its records."""
    rank = {"error": 0, "failed": 1, "xpassed": 2, "passed": 3, "xfailed": 4, "skipped": 5}
    items: dict[str, str] = {}
    for r in records:
        key = r.nodeid or f"{r.check}:{r.pathway}:{r.model}:{r.device}"
        if key not in items or rank[r.outcome] < rank[items[key]]:
            items[key] = r.outcome
    return items


def gates_an_artifact(record: Record) -> bool:
    """Whether a record checked an artifact of its pathway for a model (a gate or an artifact
    check of a case), not only the pathway's library (a property test has no model)."""
    return record.outcome in ("passed", "failed") and record.model not in ("", "-")


def verdict(records: list[Record], selected: Iterable[str] = (), not_selected: dict[str, str] | None = None, complete: bool = True) -> Verdict:
    """PASS only if nothing failed or errored and every selected pathway had a gate on one of its
    artifacts (property tests of its library alone do not count); FAIL before ERROR."""
    outcomes = item_outcomes(records)
    counts = Counter(outcomes.values())
    counts = {k: counts.get(k, 0) for k in OUTCOMES}
    # A check ran when it passed or failed: a threshold, an artifact check or a property.
    gates = sum(1 for r in records if r.outcome in ("passed", "failed"))
    gated = {r.pathway for r in records if gates_an_artifact(r)}
    not_gated = {}
    for pathway in selected:
        if pathway not in gated:
            reasons = sorted({r.message for r in records if r.pathway == pathway and r.outcome in ("skipped", "error") and r.message})
            checked = sum(1 for r in records if r.pathway == pathway and r.outcome in ("passed", "failed"))
            library = f"only {checked} check(s) of its library ran, none on an artifact" if checked else ""
            not_gated[pathway] = "; ".join([*([library] if library else []), *reasons[:3]]) or "none of its tests ran in this selection (-m, -k, --shard or --models)"
    # A failed check says the artifact is bad whatever else could not be measured (the errors are
    # listed beside it); ERROR only when nothing failed: qconform could not produce the evidence.
    if any(r.outcome == "failed" for r in records):
        word = "FAIL"
    elif counts["error"]:
        word = "ERROR"
    elif not complete:
        word = "INCOMPLETE"
    elif not_gated or not gates:
        word = "NOT GATED"
    else:
        word = "PASS"
    return Verdict(word, counts, gates, not_gated, dict(not_selected or {}))
