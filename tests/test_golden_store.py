"""The golden store refuses what it cannot trust."""

import numpy as np
import pytest
from safetensors.numpy import save_file

from harness.golden import OUTPUTS, GoldenError, read_golden, write_golden

INPUTS = {"input_ids": np.arange(8, dtype=np.int64).reshape(2, 4)}


def test_round_trip(tmp_path):
    outputs = {"logits": np.random.default_rng(0).normal(size=(2, 4, 3)).astype(np.float32)}
    write_golden(tmp_path, outputs, INPUTS, {"tool_versions": {}})
    golden = read_golden(tmp_path, INPUTS)
    np.testing.assert_array_equal(golden.outputs["logits"], outputs["logits"])


def test_refuses_nan(tmp_path):
    bad = {"logits": np.array([1.0, np.nan], dtype=np.float32)}
    with pytest.raises(GoldenError, match="non-finite"):
        write_golden(tmp_path, bad, INPUTS, {})
    write_golden(tmp_path, {"logits": np.ones(2, dtype=np.float32)}, INPUTS, {})
    save_file(bad, str(tmp_path / OUTPUTS))  # a golden damaged after it was recorded
    with pytest.raises(GoldenError, match="holds NaN/Inf"):
        read_golden(tmp_path, INPUTS)


def test_other_inputs_and_missing(tmp_path):
    write_golden(tmp_path, {"logits": np.ones(2, dtype=np.float32)}, INPUTS, {})
    with pytest.raises(GoldenError, match="recorded for different eval inputs"):
        read_golden(tmp_path, {"input_ids": INPUTS["input_ids"] + 1})
    with pytest.raises(GoldenError, match="no golden record"):
        read_golden(tmp_path / "absent", INPUTS)
