"""Each property check fails on a quantizer planted with the defect it exists to catch, and passes
on a correct one: the checks in suites/test_properties.py cannot pass vacuously."""

import numpy as np
import pytest
import torch

from harness.judge.catalog import CATALOG
from harness.measure import properties as P

RNG = np.random.default_rng(7)
X = (RNG.normal(size=(6, 32)) * np.array([1.0] * 31 + [300.0])).astype(np.float32)  # one outlier column


def int8_per_channel(x, rounding=np.round, shared=False):
    absmax = np.abs(x).max() if shared else np.abs(x).max(axis=0)
    scale = np.broadcast_to(np.where(absmax > 0, absmax / 127, 1.0), (x.shape[1],)).astype(np.float64)
    return np.clip(rounding(x / scale), -127, 127).astype(np.int8), scale


def fp8(x, fmt, clamp=True):
    dtype = getattr(torch, fmt)
    t = torch.from_numpy(x)
    scale = t.abs().amax(dim=1, keepdim=True) / torch.finfo(dtype).max
    y = t / scale
    if clamp:
        y = y.clamp(-torch.finfo(dtype).max, torch.finfo(dtype).max)
    q = y.to(dtype)
    return q, scale, (q.float() * scale).numpy()


def _missing_clamp():
    # E5M2: torch's plain cast overflows to inf past 57344 (its E4M3 cast happens to saturate).
    _, scale, _ = fp8(X, "float8_e5m2")
    big = torch.from_numpy(X) * 100
    limit = 57344 * scale.numpy()
    P.check_saturates(((big / scale).to(torch.float8_e5m2).float() * scale).numpy(), limit, -limit)


def _e5m2_declared_e4m3():
    _, scale, dq = fp8(X, "float8_e5m2")
    P.check_fp8_roundtrip(X, dq, scale.numpy(), "float8_e4m3fn")


def _floor_rounding():
    q, scale = int8_per_channel(X, rounding=np.floor)
    P.check_int_roundtrip(X, q, scale, np.zeros(32), axis=1, qmin=-127, qmax=127)


def _shared_scale():
    P.check_channels_independent(lambda a: int8_per_channel(a, shared=True), X, axis=1, channel=3)


def _batch_dependent_rows():
    def per_batch(a):
        scale = np.abs(a).max() / 448.0  # one scale for the whole batch
        return torch.from_numpy(a / scale).to(torch.float8_e4m3fn).float().numpy()

    P.check_rows_independent(per_batch, X[:2], X[2:] * 10)


def _asymmetric_weights():
    q, _ = int8_per_channel(X)
    q[0, 0] = -128
    P.check_int_symmetric(q, np.zeros(32))


def _zero_scale():
    P.check_positive_finite_scales(np.array([0.5, 0.0, np.nan]))


PROPERTY_DEFECTS = {
    "missing-clamp": _missing_clamp,
    "e5m2-declared-e4m3": _e5m2_declared_e4m3,
    "floor-rounding": _floor_rounding,
    "shared-scale": _shared_scale,
    "batch-dependent-rows": _batch_dependent_rows,
    "asymmetric-weights": _asymmetric_weights,
    "zero-scale": _zero_scale,
}


@pytest.mark.parametrize("entry", [e for e in CATALOG if e.id in PROPERTY_DEFECTS], ids=lambda e: e.id)
def test_property_check_catches_planted_quantizer(entry):
    with pytest.raises(P.PropertyViolation, match=entry.cause.replace("(", r"\(").replace(")", r"\)")):
        PROPERTY_DEFECTS[entry.id]()


def test_checks_pass_on_correct_quantizers():
    q, scale = int8_per_channel(X)
    P.check_int_roundtrip(X, q, scale, np.zeros(32), axis=1, qmin=-127, qmax=127)
    P.check_int_symmetric(q, np.zeros(32))
    P.check_channels_independent(int8_per_channel, X, axis=1, channel=3)
    for fmt in P.FP8_FORMATS:
        _, scale, dq = fp8(X, fmt)
        P.check_fp8_roundtrip(X, dq, scale.numpy(), fmt)
    P.check_rows_independent(lambda a: fp8(a, "float8_e4m3fn")[0].float().numpy(), X[:2], X[2:] * 10)
    P.check_saturates(fp8(X * 100, "float8_e4m3fn")[2], np.inf, -np.inf)
    P.check_deterministic(lambda: int8_per_channel(X))
