"""The golden store refuses what it cannot trust, and the goldens this repository ships are current."""

import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from harness.measure.golden import FORMAT, META, OUTPUTS, GoldenError, read_golden, write_golden
from tests.conftest import REPO

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


def test_old_format_golden_says_to_re_record(tmp_path):
    """Goldens recorded before digests (full outputs, no "format" in meta.json) fail in one line."""
    write_golden(tmp_path, {"logits": np.ones(2, dtype=np.float32)}, INPUTS, {})
    meta = json.loads((tmp_path / META).read_text())
    del meta["format"]
    (tmp_path / META).write_text(json.dumps(meta))
    with pytest.raises(GoldenError, match="old format .* re-record it on this device class with --regen-golden") as exc:
        read_golden(tmp_path, INPUTS)
    assert "\n" not in str(exc.value)


def test_integer_arrays_stay_integers(tmp_path):
    ids = np.arange(6, dtype=np.int64).reshape(2, 3)
    write_golden(tmp_path, {"topk_ids": ids}, INPUTS, {})
    stored = read_golden(tmp_path, INPUTS).outputs["topk_ids"]
    assert stored.dtype == np.int32 and (stored == ids).all()


SHIPPED = sorted((REPO / "golden").glob("*/*/*/" + META))


@pytest.mark.parametrize("meta_path", SHIPPED, ids=lambda p: str(p.parent.relative_to(REPO / "golden")))
def test_shipped_goldens_are_in_the_current_format(meta_path):
    """An old-format golden fails its gate on the one device class that reads it (the H100 run
    found one): every golden in this repository is checked here, on any machine."""
    meta = json.loads(meta_path.read_text())
    assert meta.get("format") == FORMAT, f"{meta_path.parent}: format {meta.get('format', 1)}; re-record it on its device class with --regen-golden"
    missing = {"format", "inputs_sha256", "outputs", "device", "tool_versions", "created"} - set(meta)
    assert not missing, f"{meta_path}: no {sorted(missing)}"
    with safe_open(str(meta_path.parent / OUTPUTS), "np") as stored:
        assert sorted(stored.keys()) == sorted(meta["outputs"]), meta_path


def test_the_repository_ships_goldens():
    assert len(SHIPPED) >= 10  # the walk above found the store
