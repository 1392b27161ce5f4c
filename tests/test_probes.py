"""Capability probes: a real tiny operation per pathway; a failure becomes a precise skip reason,
or a failure of the run when the pathway is required."""

from __future__ import annotations

import pytest
import torch

from harness.core import Device
from harness.pathways.base import get_pathway
from harness.run import probes

CPU = Device("cpu", "x86_64")
# The GPU where there is one; else the CPU, whose row-wise _scaled_mm exists from torch 2.12 on
# (torch 2.11's CPU kernel takes per-tensor scales only: seen on the H100 machine's torch 2.11).
HERE = Device.detect()


def test_rowwise_fp8_gemm_probe_runs_for_real():
    probe = probes.probe(get_pathway("torchao-fp8-rowwise"), HERE)
    assert probe.ok, probe.detail


def test_failing_rowwise_kernel_becomes_a_precise_skip_or_a_failure_when_required(monkeypatch):
    def not_supported(*args, **kwargs):
        raise RuntimeError("CUBLAS_STATUS_NOT_SUPPORTED when calling cublasLtMatmul")

    monkeypatch.setattr(torch, "_scaled_mm", not_supported)
    probe = probes.probe(get_pathway("torchao-fp8-rowwise"), HERE)
    assert not probe.ok
    reason = probe.skip_reason()
    assert reason.startswith(f"torchao-fp8-rowwise: capability probe failed on {HERE.describe()}: torch._scaled_mm, float8_e4m3fn with row-wise scales")
    assert "RuntimeError: CUBLAS_STATUS_NOT_SUPPORTED when calling cublasLtMatmul" in reason
    assert f"torch {torch.__version__}" in reason and "cuBLAS " in reason and "TensorRT " in reason


def test_a_failing_probe_skips_with_its_reason_and_fails_a_required_pathway(llama_int8, run_suites):
    # -k keeps the other planted pathways (one of them hangs on purpose) out of the default selection's run.
    args = ("-p", "tests.planted_pathways", "--models=tiny-llama", "-k", "output_agreement and (broken or inc-int8-qdq)")
    # Not named: it is not run on this machine, with the probe's finding as the reason; the run passes.
    run = run_suites(*args)
    skip = run.summary["not_selected"]["planted-broken-kernel"]
    assert run.returncode == 0 and not run.records(pathway="planted-broken-kernel"), run.output
    assert "planted-broken-kernel: capability probe failed on cpu" in skip and "CUBLAS_STATUS_NOT_SUPPORTED" in skip
    probe = next(p for p in run.summary["environment"]["probes"] if p["pathway"] == "planted-broken-kernel")
    assert not probe["ok"] and probe["operation"] == "a planted row-wise GEMM"
    # Named (required): the same finding fails the run instead of skipping it.
    run = run_suites(*args, "--pathways=planted-broken-kernel,inc-int8-qdq")
    [failure] = run.records(pathway="planted-broken-kernel", device="cpu")
    assert run.returncode == 3 and run.summary["verdict"] == "ERROR" and failure["outcome"] == "error", run.output
    assert "required pathway cannot run here: planted-broken-kernel: capability probe failed" in failure["message"]


def test_wrong_numbers_fail_the_probe_too(monkeypatch):
    real = torch._scaled_mm
    monkeypatch.setattr(torch, "_scaled_mm", lambda *a, **k: real(*a, **k) * 2)
    probe = probes.probe(get_pathway("torchao-fp8-rowwise"), HERE)
    assert not probe.ok and "row-wise _scaled_mm returned wrong values" in probe.detail


def test_ort_probe_asserts_the_requested_provider():
    import onnxruntime as ort

    assert probes.probe(get_pathway("inc-int8-qdq"), CPU).ok
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA EP")
    probe = probes.probe(get_pathway("inc-int8-qdq"), Device("cuda", "NVIDIA H100 80GB HBM3", (9, 0)))
    assert not probe.ok
    assert "onnxruntime InferenceSession on CUDAExecutionProvider" in probe.skip_reason()
    assert "offers no CUDAExecutionProvider" in probe.detail
    assert probe.versions["capability"] == "sm_90" and "driver" in probe.versions
