"""The command line: build, run's skip reasons, and report's exit code."""

import importlib.util
import json
import subprocess
import sys

import pytest

from harness.cli import main
from harness.core import Device


def test_build_reports_each_pathway(llama_int8, capsys):
    assert main(["build", "--models", "tiny-llama"]) == 0
    out = capsys.readouterr().out
    assert f"ok    inc-int8-qdq           tiny-llama   {llama_int8.path}" in out
    assert "skip  torchao-fp8-rowwise    tiny-llama   torchao-fp8-rowwise: " in out


def test_report_exit_code_follows_the_verdict(tmp_path, capsys):
    record = {"outcome": "failed", "pathway": "p", "device": "cpu", "model": "m", "check": "c", "metric": "min_cosine", "measured": 0.5, "threshold": 0.9}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"verdict": "FAIL", "line": "FAIL: 1 failed", "counts": {"failed": 1}, "records": [record]}))
    assert main(["report", str(path)]) == 1
    assert "failed  p/cpu m c min_cosine=0.5 threshold 0.9" in capsys.readouterr().out


def test_unavailable_pathways_skip_with_reason(run_suites):
    if Device.detect().kind == "cuda":
        pytest.skip("checks the skip reasons of a machine without CUDA")
    run = run_suites("--pathways=torchao-fp8-rowwise,tensorrt", "--models=tiny-llama")
    # Named pathways that cannot run: nothing was gated, and that is not a pass (exit 6, NOT GATED).
    assert run.returncode == 6, run.output
    reasons = {r["message"] for r in run.summary["records"]}
    torchao = "torchao-fp8-rowwise: needs a CUDA GPU, and torch sees none on this machine"
    if importlib.util.find_spec("torchao") is None:
        torchao = "torchao-fp8-rowwise: Python package 'torchao' is not installed (pip install 'qconform[gpu]' (torchao >= 0.18 needs torch >= 2.11))"
    tensorrt = "tensorrt: Python package 'tensorrt' is not installed (pip install 'qconform[trt]'; needs NVIDIA's TensorRT libraries)"
    assert reasons == {torchao, tensorrt}
    assert run.summary["verdict"] == "NOT GATED"
    assert set(run.summary["not_gated"]) == {"torchao-fp8-rowwise", "tensorrt"}


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "harness.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "build" in out.stdout and "run" in out.stdout
