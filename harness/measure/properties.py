"""Properties every quantizer and kernel must have, as checks that raise PropertyViolation naming
the property and where it broke. suites/test_properties.py drives them with hypothesis against
each pathway's real quantizers; tests/ drive them with planted defective quantizers."""

from __future__ import annotations

from typing import Callable

import numpy as np

from harness.core import DTYPES

# Format facts from the one dtype table (harness/core.py): largest finite value, mantissa bits,
# smallest subnormal (OCP FP8 spec).
FP8_FORMATS = {d.name: {"max": d.qmax, "mantissa_bits": d.mantissa_bits, "min_subnormal": d.min_subnormal} for d in DTYPES.values() if d.fp8_format}


class PropertyViolation(AssertionError):
    pass


def _fail(prop: str, detail: str) -> None:
    raise PropertyViolation(f"property '{prop}' violated: {detail}")


def _expand(values: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if axis is None or values.size == 1:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return values.reshape(shape)


def check_positive_finite_scales(scales: np.ndarray) -> None:
    scales = np.asarray(scales, dtype=np.float64)
    bad = ~(np.isfinite(scales) & (scales > 0))
    if bad.any():
        _fail("positive finite scales", f"{int(bad.sum())} of {scales.size} scales are zero, negative or non-finite (e.g. {scales[bad].ravel()[:3]})")


def check_int_roundtrip(x: np.ndarray, q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int | None, qmin: int, qmax: int) -> None:
    """Inside the representable range, |x - dequant(quant(x))| <= scale / 2, up to the float32
    rounding of x / scale (2 ulps of |x|: a value exactly halfway between two codes may round
    either way)."""
    s, z = _expand(scale, x.ndim, axis), _expand(zero_point, x.ndim, axis)
    x = np.asarray(x, dtype=np.float64)
    dq = (np.asarray(q, dtype=np.float64) - z) * s
    inside = (x >= (qmin - z) * s) & (x <= (qmax - z) * s)
    err = np.abs(x - dq)
    limit = np.broadcast_to(s / 2, x.shape) * (1 + 1e-5) + np.abs(x) * 2.0**-22 + 1e-30
    worst = np.where(inside, err - limit, -np.inf)
    if (worst > 0).any():
        i = np.unravel_index(np.argmax(worst), x.shape)
        _fail("int round-trip within scale/2", f"x={x[i]:.6g} came back as {dq[i]:.6g}, error {err[i]:.3g} > scale/2 = {np.broadcast_to(s, x.shape)[i] / 2:.3g} at index {i}")


def check_int_symmetric(q: np.ndarray, zero_point: np.ndarray, qmin: int = -127, qmax: int = 127) -> None:
    """Symmetric INT8: zero point 0 and codes within [-127, 127] (never -128)."""
    if np.any(np.asarray(zero_point) != 0):
        _fail("symmetric int8 zero point", f"zero points {np.unique(zero_point)[:5]} are not all 0")
    q = np.asarray(q)
    if q.size and (q.min() < qmin or q.max() > qmax):
        _fail("symmetric int8 range", f"codes span [{q.min()}, {q.max()}], outside [{qmin}, {qmax}]")


def check_saturates(dequantized: np.ndarray, upper, lower) -> None:
    """Out-of-range inputs clamp to the format's extremes (scalars or per-element arrays):
    no wrap-around, no inf, no NaN."""
    y = np.asarray(dequantized, dtype=np.float64)
    if not np.isfinite(y).all():
        _fail("saturation instead of overflow", f"{int((~np.isfinite(y)).sum())} outputs are inf/NaN")
    upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), y.shape)
    lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), y.shape)
    tol = 1e-6 * np.maximum(np.abs(upper), np.abs(lower))
    if (y > upper + tol).any() or (y < lower - tol).any():
        _fail("saturation instead of overflow", f"outputs span [{y.min():.6g}, {y.max():.6g}], beyond the format's clamped range")


def check_channels_independent(quantize: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], x: np.ndarray, axis: int, channel: int, factor: float = 1000.0) -> None:
    """Scaling one channel changes neither the codes nor the scales of any other channel."""
    q1, s1 = quantize(x)
    y = np.array(x, copy=True)
    index = [slice(None)] * x.ndim
    index[axis] = channel
    y[tuple(index)] *= factor
    q2, s2 = quantize(y)
    others = [c for c in range(x.shape[axis]) if c != channel]
    if not others:
        return
    if not np.array_equal(np.take(q1, others, axis=axis), np.take(q2, others, axis=axis)) or not np.array_equal(
        np.take(np.ravel(s1), others) if np.size(s1) > 1 else s1, np.take(np.ravel(s2), others) if np.size(s2) > 1 else s2
    ):
        _fail("per-channel scales independent across channels", f"scaling channel {channel} by {factor:g} changed other channels' codes or scales")


def check_fp8_roundtrip(x: np.ndarray, dequantized: np.ndarray, scale: np.ndarray, fmt: str) -> None:
    """|x - dq(q(x))| <= 2^-(m+1) |x| + scale * min_subnormal / 2 inside the format's range."""
    spec = FP8_FORMATS[fmt]
    x = np.asarray(x, dtype=np.float64)
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), x.shape) if np.size(scale) == 1 else np.asarray(scale, dtype=np.float64)
    s = np.broadcast_to(s, x.shape)
    dq = np.asarray(dequantized, dtype=np.float64)
    inside = np.abs(x) <= spec["max"] * s
    limit = 2.0 ** -(spec["mantissa_bits"] + 1) * np.abs(x) + s * spec["min_subnormal"] / 2 + 1e-30
    err = np.abs(x - dq)
    bad = inside & ~(err <= limit * (1 + 1e-6))
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err / limit, 0)), x.shape)
        _fail(f"{fmt} relative error bounded by its mantissa", f"x={x[i]:.6g} came back as {dq[i]:.6g} (error {err[i]:.3g} > bound {limit[i]:.3g})")


def check_rows_independent(quantize_rows: Callable[[np.ndarray], np.ndarray], rows: np.ndarray, other: np.ndarray) -> None:
    """Row-wise dynamic quantization: a row's result does not depend on the rows batched with it."""
    first = quantize_rows(np.concatenate([rows, other]))[: len(rows)]
    alone = quantize_rows(rows)
    if not np.array_equal(np.asarray(first), np.asarray(alone)):
        _fail("row-wise quantization batch-invariant", "a row quantized differently depending on the other rows in the batch")


def check_deterministic(run: Callable[[], object], repeats: int = 3) -> None:
    def flat(value) -> list[np.ndarray]:
        if isinstance(value, dict):
            return [np.asarray(value[k]) for k in sorted(value)]
        if isinstance(value, (tuple, list)):
            return [np.asarray(v) for v in value]
        return [np.asarray(value)]

    first = flat(run())
    for attempt in range(1, repeats):
        again = flat(run())
        if any(not np.array_equal(a, b, equal_nan=True) for a, b in zip(first, again, strict=True)):
            _fail("deterministic", f"run {attempt + 1} differs from run 1 on the same input")
