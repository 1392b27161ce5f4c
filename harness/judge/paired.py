"""Paired statistics of a labeled task scored on the same items by the reference and the candidate.

Accuracy alone hides answer flips (Dutta et al. 2024, "Accuracy is Not All You Need"): a candidate
can lose ten items and gain nine. Every item is scored twice, so the comparison is paired:
- the 2x2 table of (reference correct, candidate correct);
- the flip rate, the fraction of items whose correctness changed;
- McNemar's exact test on the discordant pairs: under "no real loss" each discordant item is a
  fair coin between a loss (reference right, candidate wrong) and a gain, so the one-sided p-value
  of `losses` is a binomial tail;
- the accuracy recovery quantized / reference (llm-compressor's and MLPerf's form), judged like a
  proportion: it fails only when its one-sided 95% upper bound, from the paired difference's
  standard error, is under the threshold; the shortfall it catches with 80% power is stated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.judge.metrics import ALPHA, POWER, Z_ALPHA, Z_POWER_80


def binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exactly (n is a count of discordant items: small)."""
    if k <= 0:
        return 1.0
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2.0**n


@dataclass(frozen=True)
class PairedTask:
    """One labeled task's 2x2 table: items both got right, the reference only (losses), the
    candidate only (gains), neither."""

    both: int
    losses: int
    gains: int
    neither: int

    @classmethod
    def from_items(cls, reference_correct: np.ndarray, candidate_correct: np.ndarray) -> "PairedTask":
        ref, cand = np.asarray(reference_correct, bool), np.asarray(candidate_correct, bool)
        if ref.shape != cand.shape or ref.ndim != 1:
            raise ValueError(f"paired task: {ref.shape} reference vs {cand.shape} candidate items")
        return cls(int(np.sum(ref & cand)), int(np.sum(ref & ~cand)), int(np.sum(~ref & cand)), int(np.sum(~ref & ~cand)))

    @classmethod
    def from_metrics(cls, measured: dict[str, float]) -> "PairedTask":
        """From the counts a causal LM reports among its metrics (PairedTask.counts())."""
        return cls(*(int(measured[f"task_{name}"]) for name in ("both_correct", "losses", "gains", "neither_correct")))

    def counts(self) -> dict[str, float]:
        return {"task_both_correct": self.both, "task_losses": self.losses, "task_gains": self.gains, "task_neither_correct": self.neither}

    @property
    def n(self) -> int:
        return self.both + self.losses + self.gains + self.neither

    @property
    def table(self) -> list[list[int]]:
        """[[both correct, reference only], [candidate only, both wrong]]."""
        return [[self.both, self.losses], [self.gains, self.neither]]

    @property
    def reference_accuracy(self) -> float:
        return (self.both + self.losses) / self.n if self.n else float("nan")

    @property
    def candidate_accuracy(self) -> float:
        return (self.both + self.gains) / self.n if self.n else float("nan")

    @property
    def flip_rate(self) -> float:
        return (self.losses + self.gains) / self.n if self.n else float("nan")

    @property
    def mcnemar_p(self) -> float:
        """One-sided exact McNemar p-value that the candidate loses more items than it gains."""
        return binomial_tail(self.losses, self.losses + self.gains)

    @property
    def recovery(self) -> float:
        """Candidate accuracy / reference accuracy (1.0 when both are 0: nothing to lose)."""
        if self.reference_accuracy == 0:
            return 1.0 if self.candidate_accuracy == 0 else float("inf")
        return self.candidate_accuracy / self.reference_accuracy

    def _difference_se(self) -> float:
        """Standard error of (candidate - reference) accuracy, paired: sqrt((b + c - (c - b)^2 / n)) / n.
        At least the one-discordant-item value, so a table without flips still has an interval."""
        b, c, n = self.losses, self.gains, self.n
        return math.sqrt(max(b + c - (c - b) ** 2 / n, 1.0)) / n

    @property
    def recovery_upper(self) -> float:
        """One-sided 95% upper bound of the recovery: what a recovery gate is judged on."""
        if self.reference_accuracy == 0:
            return self.recovery
        return (self.candidate_accuracy + Z_ALPHA * self._difference_se()) / self.reference_accuracy

    def detectable_loss(self) -> float:
        """The true net accuracy loss (fraction of items) that the recovery and McNemar gates
        detect with 80% power at this n (normal approximation for paired proportions, Connor
        1987): delta = (z_a + z_b) sqrt(psi / n), psi the discordant fraction (at least 2/n: a
        table without flips says little about how many a defect would cause)."""
        psi = max(self.flip_rate, 2.0 / self.n)
        return (Z_ALPHA + Z_POWER_80) * math.sqrt(psi / self.n)

    def power_note(self, recovery_threshold: float | None = None) -> str:
        loss = self.detectable_loss()
        note = (
            f"{self.n} items, {self.losses} lost and {self.gains} gained (McNemar one-sided p = {self.mcnemar_p:.3g}); "
            f"alpha {ALPHA:.0%}; a net loss of {loss:.1%} of the items is caught with {POWER:.0%} power"
        )
        if recovery_threshold is not None and self.reference_accuracy > 0:
            allowed = (1 - recovery_threshold) * self.reference_accuracy
            # Only where the gate found no loss: a loss it did find shows the set was large enough.
            if loss > allowed and self.recovery_upper >= recovery_threshold:
                note += f"; TOO FEW ITEMS: the recovery threshold {recovery_threshold:g} allows a loss of {allowed:.1%}, smaller than this set can detect"
        return note
