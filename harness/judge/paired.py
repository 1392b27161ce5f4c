"""Paired statistics of a labeled task scored on the same items by the reference and the candidate.

Accuracy alone hides answer flips (Dutta et al. 2024, "Accuracy is Not All You Need"): a candidate
can lose ten items and gain nine. Every item is scored twice, so the comparison is paired:
- the 2x2 table of (reference correct, candidate correct);
- the flip rate, the fraction of items whose correctness changed;
- McNemar's exact test on the discordant pairs: under "no real loss" each discordant item is a
  fair coin between a loss (reference right, candidate wrong) and a gain, so the one-sided p-value
  of `losses` is a binomial tail;
- the accuracy recovery quantized / reference (llm-compressor's and MLPerf's form), gated by a paired
  non-inferiority test with the recovery budget as its margin: the budget allows a net loss of
  (1 - threshold) x the reference's accuracy, and the gate fails only when the data show, at
  one-sided level 5%, that the net loss is larger (Tango's score test for paired proportions, 1998:
  the recovery's one-sided 95% upper bound from that test's interval is under the threshold). A
  loss inside the budget passes however many items show it; a loss the set cannot tell from the
  budget passes too, and the net loss beyond the budget it catches with 80% power is stated.
  McNemar's test of ANY net loss (MLPerf-strict) is a metric a team selects (`task_mcnemar_p`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.judge.metrics import ALPHA, POWER, Z_ALPHA, Z_POWER_80

BISECTIONS = 60  # of the net-loss bound in [-1, 1]: 2^-59, far below one item in any task


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

    def _gain_rate_under(self, loss: float) -> float:
        """The maximum-likelihood rate of gains when the true net loss (loss rate - gain rate) is
        `loss` (Tango 1998, eq. 3): the positive root of 2n q^2 - B q - G loss (1 - loss) = 0."""
        n, lost, gained = self.n, self.losses, self.gains
        b = lost * (1 - loss) + gained * (1 - 3 * loss) - 2 * loss * (n - lost - gained)
        return (b + math.sqrt(max(b * b + 8 * n * gained * loss * (1 - loss), 0.0))) / (4 * n)

    def loss_score(self, loss: float) -> float:
        """Tango's score statistic of H0 "the true net loss is `loss`": (L - G - n loss) / its
        standard error under H0, sqrt(n (2 q + loss - loss^2)) with q the gain rate under H0. At
        loss 0 it is McNemar's z, (L - G) / sqrt(L + G). Large: the net loss is larger than `loss`."""
        variance = self.n * (2 * self._gain_rate_under(loss) + loss - loss * loss)
        excess = self.losses - self.gains - self.n * loss
        return excess / math.sqrt(variance) if variance > 0 else (0.0 if excess == 0 else math.copysign(math.inf, excess))

    @property
    def loss_lower(self) -> float:
        """One-sided 95% lower bound of the net loss (fraction of items): the smallest loss the score
        test does not reject at level ALPHA (the statistic falls as the loss grows)."""
        low, high = -1.0, 1.0
        if self.loss_score(low) <= Z_ALPHA:
            return low
        for _ in range(BISECTIONS):
            mid = (low + high) / 2
            low, high = (mid, high) if self.loss_score(mid) > Z_ALPHA else (low, mid)
        return high

    @property
    def recovery_upper(self) -> float:
        """One-sided 95% upper bound of the recovery, 1 - loss_lower / reference accuracy: what the
        recovery gate is judged on. Under a threshold t exactly when the score test shows a net loss
        beyond the budget (1 - t) x reference accuracy (non-inferiority, margin = the budget)."""
        if self.reference_accuracy == 0:
            return self.recovery
        return 1.0 - self.loss_lower / self.reference_accuracy

    def detectable_loss(self) -> float:
        """How far beyond its margin (the recovery budget; McNemar's: none) a true net loss must be
        for the gate to fail with 80% power at this n (normal approximation for paired proportions,
        Connor 1987): (z_a + z_b) sqrt(psi / n), psi the discordant fraction (at least 2/n: a table
        without flips says little about how many a defect would cause). Checked by simulation
        (tests/test_task_gates.py)."""
        psi = max(self.flip_rate, 2.0 / self.n)
        return (Z_ALPHA + Z_POWER_80) * math.sqrt(psi / self.n)

    def power_note(self, recovery_threshold: float | None = None) -> str:
        """What the gate can see at this n: McNemar's (no threshold) any net loss, the recovery
        gate's a net loss beyond its budget."""
        beyond = self.detectable_loss()
        note = f"{self.n} items, {self.losses} lost and {self.gains} gained (McNemar one-sided p = {self.mcnemar_p:.3g}); alpha {ALPHA:.0%}; "
        if recovery_threshold is None or self.reference_accuracy == 0:
            return note + f"a net loss of {beyond:.1%} of the items is caught with {POWER:.0%} power"
        allowed = (1 - recovery_threshold) * self.reference_accuracy
        note += f"the recovery threshold {recovery_threshold:g} allows a net loss of {allowed:.1%} of the items; a net loss of {allowed + beyond:.1%} is caught with {POWER:.0%} power"
        # Only where the gate found no loss beyond the budget: one it did find shows the set was large enough.
        if beyond > allowed and self.recovery_upper >= recovery_threshold:
            note += f"; TOO FEW ITEMS: a net loss of twice the budget ({2 * allowed:.1%}) is caught with less than {POWER:.0%} power"
        return note
