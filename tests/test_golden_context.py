"""Goldens carry their context and are keyed by device class. Same class and toolchain: the strict
threshold. Another toolchain (a torch release) or a GPU class with no golden yet: the nearest golden
made the same way (pathway, made-from precision, device kind) under the cross-context tolerance,
naming what changed and how to re-record; a real change of the outputs beyond that tolerance still
fails. None made the same way: a skip naming the command that records one. A custom profile finds
the goldens of its device class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from harness.core import Device
from harness.measure.golden import META, GoldenError, NoGolden, find_golden, made_like, recorded_like, write_golden
from harness.pathways.base import get_pathway
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


H100, H200 = Device("cuda", "NVIDIA H100 80GB HBM3", (9, 0)), Device("cuda", "NVIDIA H200", (9, 0))
TOOLS = {"torch": "2.11.0"}


def _plant(root: Path, pathway: str, device_class: str, device: str, **meta) -> Path:
    """A golden as an older qconform recorded it (no made_from/device_kind keys) unless `meta` adds them."""
    directory = root / "m" / pathway / device_class
    write_golden(directory, {"logits": np.ones(3, dtype=np.float32)}, INPUTS, {"device": device, "created": "2026-11-25", "tool_versions": TOOLS, **meta})
    return directory


def test_a_golden_of_the_same_class_is_compared_strictly_and_another_gpu_class_under_the_cross_tolerance(tmp_path):
    pathway = get_pathway("torchao-int8-dynamic")
    _plant(tmp_path, pathway.name, "h100", "cuda: NVIDIA H100 80GB HBM3 (sm_90)")
    same = find_golden(tmp_path, "m", pathway, H100, TOOLS, INPUTS)
    assert same.same_context and same.golden.path.name == "h100"
    other = find_golden(tmp_path, "m", pathway, H200, TOOLS, INPUTS)
    assert other.golden.path.name == "h100" and not other.same_context
    assert other.changes == ["device class h200 has no golden yet; compared with h100's (made from bfloat16 on cuda, run on cuda)"]


def test_a_cpu_fp32_made_golden_is_never_compared_with_a_gpu_bf16_made_artifact(tmp_path):
    """The H100 run that compared torchao-int8-dynamic with the cpu-x86 golden (22.1 dB < 25 dB):
    not a change, another artifact. No golden made the same way: NoGolden, which the suite skips."""
    pathway = get_pathway("torchao-int8-dynamic")
    _plant(tmp_path, pathway.name, "cpu-x86", "cpu: x86_64")
    with pytest.raises(NoGolden, match=r"no golden of torchao-int8-dynamic \(made from bfloat16 on cuda, run on cuda\) under .*; not comparable: cpu-x86 \(made from float32 on cpu, run on cpu\)$"):
        find_golden(tmp_path, "m", pathway, H100, TOOLS, INPUTS)
    with pytest.raises(NoGolden, match=r"under \S+$"):  # nothing recorded at all: a first release
        find_golden(tmp_path / "empty", "m", pathway, H100, TOOLS, INPUTS)


def test_the_same_precision_on_another_device_kind_is_not_compared(tmp_path):
    """inc-int8-qdq's CUDA EP case is made from the fp32 model on the CPU too, but runs on the GPU."""
    pathway = get_pathway("inc-int8-qdq")
    _plant(tmp_path, pathway.name, "h100", "cuda: NVIDIA H100 80GB HBM3 (sm_90)")
    with pytest.raises(NoGolden, match=r"\(made from float32 on cpu, run on cpu\).*not comparable: h100 \(made from float32 on cpu, run on cuda\)"):
        find_golden(tmp_path, "m", pathway, Device("cpu", "x86_64"), TOOLS, INPUTS)


def test_an_unusable_golden_of_the_same_class_fails_and_one_of_another_class_is_not_used(tmp_path):
    pathway = get_pathway("torchao-int8-dynamic")
    old = _plant(tmp_path, pathway.name, "h100", "cuda: NVIDIA H100 80GB HBM3 (sm_90)")
    meta = json.loads((old / META).read_text())
    del meta["format"]  # format 1: full outputs
    (old / META).write_text(json.dumps(meta))
    with pytest.raises(GoldenError, match="golden in an old format") as raised:
        find_golden(tmp_path, "m", pathway, H100, TOOLS, INPUTS)
    assert not isinstance(raised.value, NoGolden)
    with pytest.raises(NoGolden, match=r"not comparable: h100 \(old format\)"):
        find_golden(tmp_path, "m", pathway, H200, TOOLS, INPUTS)
    _plant(tmp_path, pathway.name, "h200", "cuda: NVIDIA H200", made_from="float32 on cpu", device_kind="cuda")
    with pytest.raises(GoldenError, match="made from float32 on cpu, run on cuda; this case's is made from bfloat16 on cuda") as raised:
        find_golden(tmp_path, "m", pathway, H200, TOOLS, INPUTS)
    assert not isinstance(raised.value, NoGolden)


def test_a_golden_records_how_its_artifact_was_made_and_older_ones_derive_it(tmp_path):
    pathway = get_pathway("torchao-int8-dynamic")
    assert made_like(pathway, "cuda") == {"made_from": "bfloat16 on cuda", "device_kind": "cuda"}
    assert recorded_like({"device": "cuda: NVIDIA H100 80GB HBM3 (sm_90)"}, pathway) == made_like(pathway, "cuda")
    assert recorded_like({"device": "cpu: x86_64"}, pathway) == {"made_from": "float32 on cpu", "device_kind": "cpu"}
    recorded = {"device": "cuda: NVIDIA H200", "made_from": "float32 on cpu", "device_kind": "cuda"}
    assert recorded_like(recorded, pathway) == {"made_from": "float32 on cpu", "device_kind": "cuda"}


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
