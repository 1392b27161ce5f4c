"""Numerical agreement between a reference and a candidate output. All in float64, NaN-safe:
a non-finite candidate scores as badly as possible instead of raising or passing."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _pair(reference: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs candidate {cand.shape}")
    return ref, cand


# Elements per float64 block: whole-output metrics run block by block, so a causal LM's full-vocabulary
# logits (Gemma-3-270m: 4 x 128 x 262,144 float32, 537 MB) never exist as float64 copies (1.07 GB each,
# four or five at once: 11.1 GiB peak in its FP8 run before this).
BLOCK = 1 << 22


def _blocks(reference: np.ndarray, candidate: np.ndarray):
    """(reference, candidate) as float64 blocks of the flattened arrays, in order."""
    ref, cand = np.asarray(reference), np.asarray(candidate)
    if ref.shape != cand.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs candidate {cand.shape}")
    ref, cand = ref.reshape(-1), cand.reshape(-1)
    for start in range(0, max(ref.size, 1), BLOCK):
        yield ref[start : start + BLOCK].astype(np.float64), cand[start : start + BLOCK].astype(np.float64)


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: 10*log10(|ref|^2 / |ref - cand|^2)."""
    return sqnr_from_sums(*sqnr_sums(reference, candidate))


def sqnr_sums(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """(|ref|^2, |ref - cand|^2) in float64, noise inf where the candidate is not finite: sums over
    parts (batches) add up to the whole's, for sqnr_from_sums."""
    signal = noise = 0.0
    for ref, cand in _blocks(reference, candidate):  # a shape mismatch raises before the first block
        if not np.isfinite(cand).all():
            return signal, math.inf
        signal += float(np.sum(ref**2))
        noise += float(np.sum((ref - cand) ** 2))
    return signal, noise


def tensor_sqnr_db(reference, candidate) -> float:
    """sqnr_db of two float torch tensors of one shape, computed on their device: float32 sums per
    row, float64 over rows (a release-size model's weights are compared on its GPU, not copied to
    the host)."""
    import torch

    if reference.shape != candidate.shape:
        raise ValueError(f"shape mismatch: reference {tuple(reference.shape)} vs candidate {tuple(candidate.shape)}")
    if not bool(torch.isfinite(candidate).all()):
        return float("-inf")
    rows = reference.shape[0] if reference.ndim else 1
    ref, cand = reference.float().reshape(rows, -1), candidate.float().reshape(rows, -1)
    return sqnr_from_sums(float(ref.square().sum(dim=1).double().sum()), float((ref - cand).square().sum(dim=1).double().sum()))


def sqnr_from_sums(signal: float, noise: float) -> float:
    if noise == 0:
        return float("inf")
    if signal == 0 or math.isinf(noise):
        return float("-inf")
    return float(10 * math.log10(signal / noise))


def cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Cosine similarity of the flattened tensors."""
    dot = ref_sq = cand_sq = 0.0
    for ref, cand in _blocks(reference, candidate):
        if not np.isfinite(cand).all():
            return float("-inf")
        dot, ref_sq, cand_sq = dot + float(np.sum(ref * cand)), ref_sq + float(np.sum(ref**2)), cand_sq + float(np.sum(cand**2))
    denom = math.sqrt(ref_sq) * math.sqrt(cand_sq)
    return dot / denom if denom > 0 else 0.0


def rowwise_cosine(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis, one value per row (e.g. per sentence embedding)."""
    ref, cand = _pair(reference, candidate)
    ref = ref.reshape(-1, ref.shape[-1])
    cand = np.where(np.isfinite(cand), cand, 0.0).reshape(-1, ref.shape[-1])
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    sims = np.divide(np.sum(ref * cand, axis=1), denom, out=np.zeros(len(ref)), where=denom > 0)
    bad = ~np.isfinite(np.asarray(candidate, dtype=np.float64)).reshape(len(ref), -1).all(axis=1)
    sims[bad] = -1.0
    return sims


def error_stats(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """One pass over the blocks: |reference - candidate| kept as float32 (one output's size, for its
    quantile), the reference's largest magnitude and the candidate's non-finite count."""
    err = np.empty(np.asarray(reference).size, dtype=np.float32)
    peaks, nonfinite, at = [], 0, 0
    for ref, cand in _blocks(reference, candidate):
        err[at : at + ref.size] = np.abs(ref - cand)
        at += ref.size
        if ref.size:
            peaks.append(float(np.max(np.abs(ref))))
        nonfinite += int(cand.size - np.count_nonzero(np.isfinite(cand)))
    scale = max(peaks, default=0.0) or 1.0
    finite = bool(np.isfinite(err).all())
    return {
        "max_abs_err": float(np.max(err)) if err.size else 0.0,
        "mean_abs_err": float(np.mean(err, dtype=np.float64)) if err.size else 0.0,
        "p99_abs_err": float(np.quantile(err, 0.99)) if finite and err.size else float("inf"),
        "max_rel_err": (float(np.max(err)) if err.size else 0.0) / scale,
        "nonfinite": nonfinite,
    }


def argmax_agreement(reference_logits: np.ndarray, candidate_logits: np.ndarray) -> float:
    """Fraction of positions whose top-1 (greedy) token is the same in both."""
    ref, cand = _pair(reference_logits, candidate_logits)
    valid = np.isfinite(cand).all(axis=-1)  # a position with NaN/Inf logits never agrees
    return float(np.mean((ref.argmax(axis=-1) == np.nan_to_num(cand).argmax(axis=-1)) & valid))


def _ranks(values: np.ndarray) -> np.ndarray:
    # Average ranks for ties, as Spearman's rho requires.
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    for value in np.unique(values):
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D score vectors."""
    a, b = _pair(np.ravel(a), np.ravel(b))
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("-inf")
    ra, rb = _ranks(a), _ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt(np.sum(ra**2) * np.sum(rb**2))
    return float(np.sum(ra * rb) / denom) if denom > 0 else 0.0


def output_metrics(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """The numeric-agreement metrics every output is gated on."""
    return {"sqnr_db": sqnr_db(reference, candidate), "cosine": cosine(reference, candidate), **error_stats(reference, candidate)}


def log_error_histogram(reference: np.ndarray, candidate: np.ndarray, bins: int = 40) -> dict[str, list[float]]:
    """Histogram of log10 |reference - candidate| (small enough to keep in summary.json)."""
    edges = np.linspace(-12.0, 4.0, bins + 1)
    counts = np.zeros(bins, dtype=np.int64)
    for ref, cand in _blocks(reference, candidate):
        err = np.abs(ref - cand)
        counts += np.histogram(np.log10(err[np.isfinite(err)] + 1e-12), bins=edges)[0]
    return {"edges": edges.round(3).tolist(), "counts": counts.tolist()}


def cross_runtime_metrics_keys(model) -> list[str]:
    """The threshold keys cross_runtime_metrics gates for this model."""
    tokens = {"token_agreement", "top1_agreement"} & set(model.task_metric_names)
    return ["min_cross_sqnr_db", *(["min_cross_token_agreement"] if tokens else [])]


def cross_runtime_metrics(model, reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, float]:
    """How closely two runtimes agree on one model's outputs (threshold keys as measured names)."""
    name = model.primary_output
    measured = {"min_cross_sqnr_db": sqnr_db(reference[name], other[name])}
    if "min_cross_token_agreement" in cross_runtime_metrics_keys(model):
        measured["min_cross_token_agreement"] = argmax_agreement(reference[name], other[name])
    return measured


# -- language-model metrics (llama.cpp `perplexity --kl-divergence`, lm-eval perplexity) ------------


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 along the last axis."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def next_token_stats(reference_logits: np.ndarray, candidate_logits: np.ndarray, input_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Per predicted position (every token but the last of each window): the negative
    log-likelihood of the real next token under reference and candidate, KL(reference ||
    candidate) of the next-token distributions, and whether both put the same token on top.
    One window at a time, so a 128k vocabulary never needs a float64 copy of all logits."""
    ref_all, cand_all = np.asarray(reference_logits), np.asarray(candidate_logits)
    if ref_all.shape != cand_all.shape:
        raise ValueError(f"shape mismatch: reference {ref_all.shape} vs candidate {cand_all.shape}")
    parts: dict[str, list[np.ndarray]] = {"nll_reference": [], "nll_candidate": [], "kl": [], "same_top": []}
    for ref_row, cand_row, ids in zip(ref_all, cand_all, np.asarray(input_ids), strict=True):
        ref, cand, labels = ref_row[:-1], cand_row[:-1], ids[1:]
        finite = np.isfinite(cand).all(axis=-1)  # a position with NaN/Inf logits is as bad as it gets
        lp_ref, lp_cand = log_softmax(ref), log_softmax(np.where(np.isfinite(cand), cand, 0.0))
        rows = np.arange(len(labels))
        kl = np.sum(np.exp(lp_ref) * (lp_ref - lp_cand), axis=-1)
        parts["nll_reference"].append(-lp_ref[rows, labels])
        parts["nll_candidate"].append(np.where(finite, -lp_cand[rows, labels], np.inf))
        parts["kl"].append(np.where(finite, np.maximum(kl, 0.0), np.inf))
        parts["same_top"].append((ref.argmax(axis=-1) == cand.argmax(axis=-1)) & finite)
    return {name: np.concatenate(values) for name, values in parts.items()}


def lm_metrics(reference_logits: np.ndarray, candidate_logits: np.ndarray, input_ids: np.ndarray) -> dict[str, float]:
    """The numbers llama.cpp's KL-divergence mode prints: ln(PPL(Q)/PPL(base)), KL divergence
    (mean with its standard error, percentiles 90/95/99/99.9, max), "same top" (top-1 agreement),
    and delta-p, the change of the real next token's probability (candidate - reference: mean,
    RMS, 1st and 99th percentile); plus both perplexities."""
    s = next_token_stats(reference_logits, candidate_logits, input_ids)
    n = len(s["kl"])
    diff = s["nll_candidate"] - s["nll_reference"]
    dp = np.exp(-s["nll_candidate"]) - np.exp(-s["nll_reference"])  # an inf NLL is probability 0
    ln_ratio = float(np.mean(diff))
    finite = np.isfinite(diff).all()
    return {
        "ppl_ratio_log": ln_ratio,
        "ppl_ratio_log_stderr": float(np.std(diff, ddof=1) / np.sqrt(n)) if finite and n > 1 else float("inf"),
        "rel_ppl_increase": float(np.expm1(ln_ratio)),
        "ppl_reference": float(np.exp(np.mean(s["nll_reference"]))),
        "ppl_candidate": float(np.exp(np.mean(s["nll_candidate"]))),
        "kl_mean": float(np.mean(s["kl"])),
        "kl_mean_stderr": float(np.std(s["kl"], ddof=1) / np.sqrt(n)) if finite and n > 1 else float("inf"),
        **{f"kl_p{label}": float(np.quantile(s["kl"], q)) if finite else float("inf") for label, q in (("90", 0.90), ("95", 0.95), ("99", 0.99), ("999", 0.999))},
        "kl_max": float(np.max(s["kl"])),
        "dp_mean": float(np.mean(dp)),
        "dp_rms": float(np.sqrt(np.mean(dp**2))),
        "dp_p01": float(np.quantile(dp, 0.01)),
        "dp_p99": float(np.quantile(dp, 0.99)),
        "top1_agreement": float(np.mean(s["same_top"])),
        "positions": float(n),
    }


def lm_metric_names() -> tuple[str, ...]:
    """Every name lm_metrics returns (what a causal LM may declare as a metric), from lm_metrics itself."""
    logits = np.zeros((1, 3, 2))
    return tuple(lm_metrics(logits, logits, np.zeros((1, 3), dtype=np.int64)))


def generation_agreement(reference_ids: np.ndarray, candidate_ids: np.ndarray) -> float:
    """Fraction of greedily generated tokens identical at the same position (one row per prompt).
    After the first difference the two continuations usually part ways, so this falls fast."""
    ref, cand = np.asarray(reference_ids), np.asarray(candidate_ids)
    if ref.shape != cand.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs candidate {cand.shape}")
    return float(np.mean(ref == cand)) if ref.size else 1.0


def topk_logprobs(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most likely token ids per position and their log-probabilities, sorted, one window
    at a time: what a golden keeps of an LLM's logits (bounded size whatever the vocabulary)."""
    flat = np.asarray(logits).reshape(-1, np.asarray(logits).shape[-1])
    ids = np.empty((len(flat), k), dtype=np.int32)
    values = np.empty((len(flat), k), dtype=np.float32)
    for start in range(0, len(flat), 128):
        lp = log_softmax(flat[start : start + 128])
        top = np.argpartition(-lp, k - 1, axis=-1)[:, :k]
        order = np.argsort(-np.take_along_axis(lp, top, axis=-1), axis=-1)
        top = np.take_along_axis(top, order, axis=-1)
        ids[start : start + 128], values[start : start + 128] = top, np.take_along_axis(lp, top, axis=-1)
    return ids, values


def logprobs_at(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Log-probabilities of the given token ids (N, k) under logits (..., V), row by row."""
    flat = np.asarray(logits).reshape(-1, np.asarray(logits).shape[-1])
    out = np.empty(ids.shape, dtype=np.float64)
    for start in range(0, len(flat), 128):
        lp = log_softmax(np.where(np.isfinite(flat[start : start + 128]), flat[start : start + 128], np.nan))
        out[start : start + 128] = np.take_along_axis(lp, ids[start : start + 128].astype(np.int64), axis=-1)
    return out

# -- sample size ------------------------------------------------------------------------------

Z_95 = 1.959964  # two-sided 95%
Z_POWER_80 = 0.841621  # 80% power
# The gates' rule for a proportion (below): one-sided alpha = 5%, power 80%.
ALPHA, POWER = 0.05, 0.80
Z_ALPHA = 1.644854  # one-sided 5%


def wilson_lower(p: float, n: int, z: float = Z_95) -> float:
    """Lower end of the Wilson score interval of a proportion p measured on n items (z = 1.96: the
    two-sided 95% interval). Items are treated as independent; tokens of one sequence are
    correlated, so the true interval is somewhat wider."""
    if n <= 0 or not math.isfinite(p):
        return float("nan")
    center = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (center - half) / (1 + z * z / n)


def wilson_upper(p: float, n: int, z: float = Z_95) -> float:
    """Upper end of the Wilson score interval (as wilson_lower)."""
    if n <= 0 or not math.isfinite(p):
        return float("nan")
    center = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (center + half) / (1 + z * z / n)


@dataclass(frozen=True)
class ProportionTest:
    """The rule a proportion measured on n items is gated by, and its two error rates.

    The threshold is the level a clean artifact must hold (TensorRT-LLM's accuracy suite's form of
    a one-sided test): a gate FAILs only when the data show, at one-sided level ALPHA, that the
    true value is on the wrong side of it, i.e. when the Wilson bound on the *passing* side is
    past it. A clean artifact sitting exactly at the threshold then fails with probability ALPHA
    (the false-alarm rate), and one whose true value is `detectable` past it fails with
    probability POWER. Judging on the failing side's bound instead (a `min_` value on its lower
    bound) controls the false pass but fails a clean artifact at the threshold ~97% of the time:
    a real 270M LLM's FP8 top-1 of 0.856 over 508 tokens failed a 0.85 threshold that way."""

    measured: float
    n: int
    threshold: float
    direction: str  # "min" | "max"

    @property
    def judged(self) -> float:
        """The value compared with the threshold: the passing side's one-sided bound."""
        bound = wilson_upper if self.direction == "min" else wilson_lower
        return bound(self.measured, self.n, Z_ALPHA)

    @property
    def bound_side(self) -> str:
        return "upper" if self.direction == "min" else "lower"

    @property
    def detectable(self) -> float:
        """How far past the threshold a true value must be to fail with probability POWER, at least
        3/n (the rule of three). The Wilson bound inverts the score test, so the gate fails exactly
        when the measured proportion is past c = t -/+ z_alpha sqrt(t(1-t)/n); the true value p1
        with P(past c) = POWER solves |c - p1| = z_beta sqrt(p1(1-p1)/n)."""
        t = min(max(self.threshold, 0.0), 1.0)
        if self.direction == "max":  # mirror: a max_ rate q is a min_ proportion 1 - q
            t = 1.0 - t
        c = t - Z_ALPHA * math.sqrt(t * (1 - t) / self.n)
        k = Z_POWER_80**2 / self.n
        b = 2 * c + k
        p1 = (b - math.sqrt(max(b * b - 4 * (1 + k) * c * c, 0.0))) / (2 * (1 + k)) if c > 0 else 0.0
        return max(t - p1, 3.0 / self.n)

    def note(self, name: str) -> str:
        side = "below" if self.direction == "min" else "above"
        return (
            f"{name} {self.measured:.4f} over {self.n} items fails only if its one-sided {1 - ALPHA:.0%} {self.bound_side} bound "
            f"({self.judged:.4f}) is {side} {self.threshold:g}: a clean artifact at the threshold fails with probability {ALPHA:.0%}, "
            f"one {self.detectable:.3f} {side} it with probability {POWER:.0%}"
        )


def smallest_detectable_change(metric: float, n: int, kind: str = "correlation") -> float:
    """The smallest true change of a correlation measured at `metric` over n pairs (Spearman) that a
    two-sided 5% test detects with 80% power, through Fisher's z, whose s.e. is 1/sqrt(n-3).
    (Proportions have their own rule with both error rates: ProportionTest.)"""
    if kind != "correlation":
        raise ValueError(f"unknown metric kind {kind!r} (proportions: ProportionTest)")
    r = min(abs(metric), 0.999999)
    return r - math.tanh(math.atanh(r) - (Z_95 + Z_POWER_80) / math.sqrt(n - 3))
