"""The speedup gate fails a planted slow candidate (dequantize-to-bf16 then matmul)."""

import pytest

from harness.core import Device

pytestmark = pytest.mark.gpu


def test_slow_candidate_fails_the_speedup_gate(tmp_path, run_suites):
    device = Device.detect()
    if device.kind != "cuda":
        pytest.skip("needs a CUDA GPU: the speedup gate times real kernels")
    profile = tmp_path / "slow.toml"
    profile.write_text("[planted-slow-dequant.llama8b-linear]\nmin_sqnr_db = 26.0\nmin_speedup = 1.3\n")

    run = run_suites(
        "-p",
        "tests.planted_pathways",
        "--pathways=planted-slow-dequant",
        f"--profile={profile}",
        "-k",
        "gate_up-m4096] or down-m4096]",
        suites=("test_speedup.py",),
    )

    assert run.returncode == 1, run.output
    speed = run.records(metric="min_speedup")
    assert len(speed) == 2 and all(r["outcome"] == "failed" for r in speed), run.output
    assert all(r["measured"] < 1.05 for r in speed)
    assert all(r["outcome"] == "passed" for r in run.records(metric="min_sqnr_db"))  # slow, not wrong


def test_slow_candidate_fails_the_model_speed_gate(tmp_path, run_suites, monkeypatch):
    """FP8 weights dequantized to bf16 before every matmul, in every Linear of the Llama-3.1-8B
    architecture (8 of its 32 layers, to spend little device time: the ratio is per layer): slower
    than bf16 at prefill and decode, so the model-level gate must fail it."""
    device = Device.detect()
    if device.kind != "cuda":
        pytest.skip("needs a CUDA GPU: the model-level speed gate times a real 8B-architecture model")
    profile = tmp_path / "slow.toml"
    profile.write_text("[planted-slow-dequant.\"llama-3.1-8b\"]\nmin_speedup = 1.05\n")
    monkeypatch.setenv("QCONFORM_PERF_LAYERS", "8")
    monkeypatch.setenv("QCONFORM_PERF_PREFILL", "1x2048")
    monkeypatch.setenv("QCONFORM_PERF_DECODE", "1x512")

    run = run_suites("-p", "tests.planted_pathways", "--pathways=planted-slow-dequant", f"--profile={profile}", suites=("test_model_speed.py",))

    speed = run.records(metric="min_speedup")
    assert sorted(r["model"] for r in speed) == ["llama-3.1-8b-decode-1x512", "llama-3.1-8b-prefill-1x2048"], run.output
    assert run.returncode == 1 and all(r["outcome"] == "failed" for r in speed), run.output
    assert all(r["measured"] < 1.05 and r["workload"]["layers"] == 8 for r in speed), run.output
