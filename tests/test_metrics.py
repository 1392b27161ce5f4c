"""Metrics against values worked out by hand."""

import numpy as np
import pytest

from harness import metrics


def test_sqnr_known_value():
    ref = np.ones(1000)
    assert metrics.sqnr_db(ref, ref * 1.01) == pytest.approx(40.0)
    assert metrics.sqnr_db(ref, ref) == float("inf")
    assert metrics.sqnr_db(ref, np.full(1000, np.nan)) == float("-inf")


def test_cosine_and_rowwise():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert metrics.rowwise_cosine(a, b).tolist() == [1.0, 0.0]
    assert metrics.cosine(a, b) == pytest.approx(0.5)
    b[1, 0] = np.nan
    assert metrics.rowwise_cosine(a, b)[1] == -1.0


def test_argmax_agreement():
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    cand = ref.copy()
    cand[0] = [0.9, 0.1]
    assert metrics.argmax_agreement(ref, cand) == 0.75
    cand[1] = np.nan
    assert metrics.argmax_agreement(ref, cand) == 0.5


def test_spearman():
    x = np.arange(10.0)
    assert metrics.spearman(x, x**3) == pytest.approx(1.0)
    assert metrics.spearman(x, -x) == pytest.approx(-1.0)
    assert metrics.spearman(np.array([1.0, 2, 2, 3]), np.array([1.0, 2, 3, 4])) == pytest.approx(0.9486833)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape mismatch"):
        metrics.sqnr_db(np.ones(3), np.ones(4))
