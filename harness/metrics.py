"""Numerical agreement between a reference and a candidate output. All in float64, NaN-safe:
a non-finite candidate scores as badly as possible instead of raising or passing."""

from __future__ import annotations

import math

import numpy as np


def _pair(reference: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs candidate {cand.shape}")
    return ref, cand


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: 10*log10(|ref|^2 / |ref - cand|^2)."""
    ref, cand = _pair(reference, candidate)
    if not np.isfinite(cand).all():
        return float("-inf")
    noise = np.sum((ref - cand) ** 2)
    signal = np.sum(ref**2)
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return float(10 * np.log10(signal / noise))


def cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Cosine similarity of the flattened tensors."""
    ref, cand = _pair(reference, candidate)
    if not np.isfinite(cand).all():
        return float("-inf")
    denom = np.linalg.norm(ref) * np.linalg.norm(cand)
    return float(np.sum(ref * cand) / denom) if denom > 0 else 0.0


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
    ref, cand = _pair(reference, candidate)
    err = np.abs(ref - cand)
    scale = float(np.max(np.abs(ref))) or 1.0
    return {
        "max_abs_err": float(np.max(err)),
        "mean_abs_err": float(np.mean(err)),
        "p99_abs_err": float(np.quantile(err, 0.99)) if np.isfinite(err).all() else float("inf"),
        "max_rel_err": float(np.max(err)) / scale,
        "nonfinite": int(np.size(cand) - np.count_nonzero(np.isfinite(cand))),
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
    ref, cand = _pair(reference, candidate)
    err = np.abs(ref - cand)
    err = np.log10(err[np.isfinite(err)] + 1e-12)
    counts, edges = np.histogram(err, bins=bins, range=(-12.0, 4.0))
    return {"edges": edges.round(3).tolist(), "counts": counts.tolist()}


def cross_runtime_metrics(model, reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, float]:
    """How closely two runtimes agree on one model's outputs (threshold keys as measured names)."""
    name = model.primary_output
    measured = {"min_cross_sqnr_db": sqnr_db(reference[name], other[name])}
    if "token_agreement" in model.task_metric_names:
        measured["min_cross_token_agreement"] = argmax_agreement(reference[name], other[name])
    return measured


# -- sample size ------------------------------------------------------------------------------

Z_95 = 1.959964  # two-sided 95%
Z_POWER_80 = 0.841621  # 80% power


def wilson_lower(p: float, n: int, z: float = Z_95) -> float:
    """Lower end of the Wilson score interval of a proportion p measured on n items: what the
    proportion is at least, with 95% confidence. (Items are treated as independent; tokens of one
    sequence are correlated, so the true interval is somewhat wider.)"""
    if n <= 0 or not math.isfinite(p):
        return float("nan")
    center = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (center - half) / (1 + z * z / n)


def smallest_detectable_change(metric: float, n: int, kind: str = "proportion") -> float:
    """The smallest true change of a metric measured at `metric` on n items that a two-sided 5%
    test detects with 80% power. Proportions (token agreement, top-1): (z_a + z_b) sqrt(p(1-p)/n),
    at least 3/n (rule of three: n agreeing items cannot exclude a 3/n disagreement rate).
    Correlations (Spearman over n pairs): through Fisher's z, whose s.e. is 1/sqrt(n-3)."""
    z = Z_95 + Z_POWER_80
    if kind == "proportion":
        return max(z * math.sqrt(max(metric * (1 - metric), 0.0) / n), 3.0 / n)
    if kind == "correlation":
        r = min(abs(metric), 0.999999)
        return r - math.tanh(math.atanh(r) - z / math.sqrt(n - 3))
    raise ValueError(f"unknown metric kind {kind!r}")
