"""Profiles: selection, validation, and threshold direction."""

import math

import pytest

from harness.core import Device
from harness.judge.thresholds import ProfileError, Threshold, detect_profile_name, load_profile


def test_builtin_cpu_profile_has_every_gate_of_the_default_pathway():
    profile = load_profile("cpu")
    for model, keys in {
        "tiny-llama": ["min_sqnr_db", "min_cosine", "min_token_agreement", "min_golden_sqnr_db"],
        "minilm-l6": ["min_sqnr_db", "min_cosine", "min_row_cosine", "min_ranking_agreement", "max_rel_task_drop", "min_golden_sqnr_db"],
    }.items():
        for key in keys:
            assert profile.threshold(key, "inc-int8-qdq", model).source == f"cpu.toml [inc-int8-qdq.{model}]"


def test_detect_profile_name():
    assert detect_profile_name(Device("cpu", "x86_64")) == "cpu"
    assert detect_profile_name(Device("cuda", "NVIDIA H100 80GB HBM3", (9, 0))) == "h100"
    assert detect_profile_name(Device("cuda", "NVIDIA GeForce RTX 5090", (12, 0))) == "rtx5090"
    assert detect_profile_name(Device("cuda", "NVIDIA L4", (8, 9))) == "generic-gpu"


def test_threshold_direction_and_nan():
    low = Threshold("min_sqnr_db", 20.0, "x")
    high = Threshold("max_rel_task_drop", 0.01, "x")
    assert low.passes(20.0) and not low.passes(19.9) and not low.passes(math.nan)
    assert high.passes(0.0) and not high.passes(0.02) and not high.passes(math.nan)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[a.b]\nmin_sqnr = 3\n", "unknown threshold 'min_sqnr'"),
        ("[a.b]\nmin_sqnr_db = 'high'\n", "min_sqnr_db must be a number"),
        ("[a.b\nmin_sqnr_db = 3\n", "not valid TOML"),
    ],
)
def test_bad_profile_is_named(tmp_path, text, message):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(ProfileError, match="mine.toml") as err:
        load_profile(str(path))
    assert message in str(err.value)


def test_missing_profile_and_threshold(tmp_path):
    with pytest.raises(ProfileError, match="no built-in profile 'nope'; known: cpu"):
        load_profile("nope")
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(str(tmp_path / "absent.toml"))
    with pytest.raises(ProfileError, match=r"no table \[tensorrt.tiny-llama\]"):
        load_profile("cpu").threshold("min_sqnr_db", "tensorrt", "tiny-llama")
