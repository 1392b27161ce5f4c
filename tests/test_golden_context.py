"""Goldens carry their context and are keyed by device class. Same class and toolchain: the strict
threshold. Another toolchain (a torch release) or a GPU class with no golden yet: the nearest golden
under the cross-context tolerance, naming what changed and how to re-record; a real change of the
outputs beyond that tolerance still fails. A custom profile finds the goldens of its device class."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from harness.core import Device
from harness.measure.golden import META, find_golden, write_golden
from tests.conftest import REPO

CASE = ("--pathways=inc-int8-qdq", "--models=tiny-llama")
HERE = Device.detect().device_class
INPUTS = {"input_ids": np.arange(6, dtype=np.int64).reshape(2, 3)}


def _record(run_suites, golden: Path) -> None:
    """Goldens of the current toolchain, recorded as a team does for its first release."""
    recorded = run_suites(*CASE, f"--golden-dir={golden}", "--regen-golden", suites=("test_golden.py",))
    assert recorded.returncode == 6, recorded.output[-2000:]  # recording gates nothing: NOT GATED
    assert (golden / "tiny-llama" / "inc-int8-qdq").is_dir()


def _claim_recorded_with(golden: Path, torch_version: str) -> Path:
    directory = golden / "tiny-llama" / "inc-int8-qdq" / HERE
    meta = json.loads((directory / META).read_text())
    meta["tool_versions"]["torch"] = torch_version
    (directory / META).write_text(json.dumps(meta))
    return directory


def _add_noise(directory: Path, relative: float) -> None:
    path = directory / "outputs.safetensors"
    outputs = load_file(str(path))
    logprobs = outputs["topk_logprobs"] if "topk_logprobs" in outputs else outputs["logits"]
    noise = np.random.default_rng(0).normal(scale=relative * logprobs.std(), size=logprobs.shape)
    key = "topk_logprobs" if "topk_logprobs" in outputs else "logits"
    save_file({**outputs, key: (logprobs + noise).astype(np.float32)}, str(path))


def test_a_torch_release_is_compared_under_the_cross_context_tolerance(llama_int8, tmp_path, run_suites):
    golden = tmp_path / "golden"
    _record(run_suites, golden)
    _claim_recorded_with(golden, "2.0.0")
    run = run_suites(*CASE, f"--golden-dir={golden}", suites=("test_golden.py",))
    assert run.returncode == 0, run.output[-2000:]
    [record] = run.records(check="golden", outcome="passed")
    assert record["metric"] == "min_golden_cross_sqnr_db"
    assert "torch 2.0.0 -> " in record["message"] and "qconform run --regen-golden --models tiny-llama --pathways inc-int8-qdq" in record["message"]


def test_a_real_change_beyond_the_cross_context_tolerance_still_fails(llama_int8, tmp_path, run_suites):
    golden = tmp_path / "golden"
    _record(run_suites, golden)
    _add_noise(_claim_recorded_with(golden, "2.0.0"), 0.3)  # ~10 dB away: no toolchain drift measured that far
    run = run_suites(*CASE, f"--golden-dir={golden}", suites=("test_golden.py",))
    assert run.returncode == 1 and run.summary["verdict"] == "FAIL", run.output[-2000:]
    [failure] = run.records(check="golden", outcome="failed")
    assert failure["metric"] == "min_golden_cross_sqnr_db" and failure["measured"] < failure["threshold"]


def test_same_context_drift_fails_the_strict_threshold(llama_int8, tmp_path, run_suites):
    golden = tmp_path / "golden"
    _record(run_suites, golden)
    _add_noise(golden / "tiny-llama" / "inc-int8-qdq" / HERE, 0.02)  # ~34 dB: within the cross tolerance, not the strict one
    run = run_suites(*CASE, f"--golden-dir={golden}", suites=("test_golden.py",))
    assert run.returncode == 1, run.output[-2000:]
    [failure] = run.records(check="golden", outcome="failed")
    assert failure["metric"] == "min_golden_sqnr_db" and failure["measured"] < failure["threshold"]


def test_a_custom_profile_finds_the_goldens_of_its_device_class(llama_int8, tmp_path, run_suites):
    golden = tmp_path / "golden"
    _record(run_suites, golden)
    team = tmp_path / "team.toml"
    team.write_text((REPO / "harness" / "profiles" / "cpu.toml").read_text().replace('name = "cpu"', 'name = "team"'))
    run = run_suites(*CASE, f"--golden-dir={golden}", f"--profile={team}", suites=("test_golden.py",))
    assert run.returncode == 0, run.output[-2000:]
    [record] = run.records(check="golden", outcome="passed")
    assert record["metric"] == "min_golden_sqnr_db" and f"/{HERE}:" in record["message"]
    assert not (golden / "tiny-llama" / "inc-int8-qdq" / "team").exists()


def test_a_gpu_class_without_a_golden_takes_the_nearest_one_of_the_same_kind(tmp_path):
    for device_class, device in (("cpu", "cpu: x86_64"), ("h100", "cuda: NVIDIA H100 80GB HBM3 (sm_90)")):
        write_golden(tmp_path / "m" / "p" / device_class, {"logits": np.ones(3, dtype=np.float32)}, INPUTS, {"device": device, "created": "2026-11-25", "tool_versions": {"torch": "2.11.0"}})
    h200 = Device("cuda", "NVIDIA H200", (9, 0))
    match = find_golden(tmp_path, "m", "p", h200, {"torch": "2.11.0"}, INPUTS)
    assert match.golden.path.name == "h100" and not match.same_context
    assert match.changes == ["device class h200 has no golden yet; compared with h100's"]
    same = find_golden(tmp_path, "m", "p", Device("cuda", "NVIDIA H100 80GB HBM3", (9, 0)), {"torch": "2.11.0"}, INPUTS)
    assert same.same_context and same.golden.path.name == "h100"
    shutil.rmtree(tmp_path / "m" / "p" / "h100")
    assert find_golden(tmp_path, "m", "p", h200, {"torch": "2.11.0"}, INPUTS).golden.path.name == "cpu"


def test_rerecord_command_repeats_how_the_run_named_its_model_and_artifacts():
    """The command a missing or cross-context golden names works as printed: a model from --model
    SOURCE is named by its source (--models cannot name it), and --artifacts/--golden-dir are kept
    (without --artifacts the re-record would build and record qconform's own artifact instead)."""
    from types import SimpleNamespace

    from suites.test_golden import rerecord_command

    def qc(**options):
        user = [SimpleNamespace(id="llama")] if options.get("model") else []
        return SimpleNamespace(config=SimpleNamespace(getoption=lambda name: options.get(name)), user_models=user)

    case = SimpleNamespace(model=SimpleNamespace(id="llama"), pathway=SimpleNamespace(name="inc-int8-qdq"))
    assert rerecord_command(case, qc(model=["ckpt/llama"], artifacts="own-arts")) == "qconform run --regen-golden --model ckpt/llama --pathways inc-int8-qdq --artifacts own-arts, review and commit it"
    assert rerecord_command(case, qc(golden_dir="g")) == "qconform run --regen-golden --models llama --pathways inc-int8-qdq --golden-dir g, review and commit it"
