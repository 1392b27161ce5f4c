"""A speed verdict that holds across independent repetitions (fresh processes: new compilation or a
compile-cache load, new CUDA graphs, other clocks), as PyTorch's regression reports need two or
more consecutive violations and asv a significant change beyond a noise factor.

Each repetition gives the median of its paired, interleaved ratios with a 95% bootstrap interval
(harness/measure/timing.py). The rule over n >= 2 repetitions of one speed gate:
- the repetitions must agree: every median within AGREEMENT_BAND of their median; otherwise the
  gate is UNSTABLE (neither PASS nor FAIL: the number depends on something the run did not hold);
- FAIL only when every repetition established the slowdown on its own (its interval's upper end
  below the threshold);
- PASS when none did; a split (some did, some did not) is UNSTABLE too.

False alarms: a candidate exactly at its threshold fails a repetition with probability about
0.025 (the interval's one-sided level) when repetitions vary only by their own sampling noise, so
all n fail together with about 0.025**n; between-process drift raises that. Both are measured by
simulation in tests/test_repetitions.py with the spread measured on the H100 (see AGREEMENT_BAND).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

# The gates judged this way: paired speed ratios with an interval.
SPEED_METRICS = ("min_speedup", "min_prefill_speedup", "min_decode_speedup")

# Repetitions whose medians differ by more than their band from their common median disagree.
# Model-level points (whole prefill/decode forwards, milliseconds): 5%, the stability the GPU run is
# held to (issue 37). Measured on the H100, four fresh `qconform run -m gpu` processes (cold, warm,
# cold again; 2026-12-07): every model point within 1.0% of its median (prefill 1x2048
# 1.252-1.271x, decode 8x512 1.044-1.063x).
AGREEMENT_BAND = 0.05
# Kernel-table points (one Linear, microseconds): 10%. The same four processes moved them up to
# 7.2% from their median (o_proj M=128: 0.777-0.898x, each process's interval within 0.2%), on the
# FP8 side (17.3-19.9 us; bf16 15.3-15.5 us): a per-process effect of the FP8 kernels, so the
# kernel table is held to what it can repeat.
KERNEL_AGREEMENT_BAND = 0.10
KERNEL_CHECK = "speedup"  # suites/test_speedup.py: the kernel table's gate


def agreement_band(check: str) -> float:
    """The band a speed gate's repetitions must agree within (see above)."""
    return KERNEL_AGREEMENT_BAND if check == KERNEL_CHECK else AGREEMENT_BAND


@dataclass(frozen=True)
class Repetition:
    speedup: float  # median of the repetition's paired ratios
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class SpeedJudgement:
    outcome: str  # "passed", "failed" or "unstable"
    speedup: float  # the median over repetitions
    why: str


def judge_repetitions(repetitions: list[Repetition], threshold: float, band: float = AGREEMENT_BAND) -> SpeedJudgement:
    """The verdict of one speed gate over independent repetitions (see the module docstring)."""
    if len(repetitions) < 2:
        raise ValueError("a verdict across repetitions needs at least two")
    medians = [r.speedup for r in repetitions]
    center = statistics.median(medians)
    spread = max(abs(m / center - 1) for m in medians)
    shown = ", ".join(f"{r.speedup:.3f} ({r.ci_low:.3f}-{r.ci_high:.3f})" for r in repetitions)
    n = len(repetitions)
    if spread > band:
        return SpeedJudgement("unstable", center, f"UNSTABLE: {n} repetitions disagree, medians up to {spread:.1%} from their median {center:.3f} (band {band:.0%}): {shown}")
    established = sum(r.ci_high < threshold for r in repetitions)
    if established == n:
        return SpeedJudgement("failed", center, f"slower than {threshold} in every one of {n} independent repetitions: {shown}")
    if established:
        return SpeedJudgement("unstable", center, f"UNSTABLE: {established} of {n} repetitions established a speedup below {threshold}, the others did not: {shown}")
    return SpeedJudgement("passed", center, f"no slowdown below {threshold} established in {n} independent repetitions (within {spread:.1%} of their median): {shown}")
