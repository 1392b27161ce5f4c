"""The CPU-checkable parts of the paired timing (the GPU part runs in tests/test_speed_gate.py)."""

import numpy as np

from harness.measure.timing import bootstrap_median_interval, copies_to_defeat_l2


def test_bootstrap_interval_brackets_the_median_and_narrows_with_less_noise():
    rng = np.random.default_rng(1)
    noisy, steady = 1.5 + rng.normal(0, 0.1, 41), 1.5 + rng.normal(0, 0.01, 41)
    low, high = bootstrap_median_interval(noisy)
    assert low <= np.median(noisy) <= high
    s_low, s_high = bootstrap_median_interval(steady)
    assert (s_high - s_low) < (high - low) / 5


def test_weight_copies_exceed_twice_l2():
    l2 = 50 * 2**20
    assert copies_to_defeat_l2(4096 * 4096, l2) == 7  # 16 MiB of fp8 weights: 7 copies > 100 MiB
    assert copies_to_defeat_l2(3 * 4096 * 14336, l2) == 1
