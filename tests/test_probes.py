"""Capability probes: a real tiny operation per pathway; a failure becomes a precise skip reason,
or a failure of the run when the pathway is required."""

from __future__ import annotations

import pytest
import torch

from harness import probes
from harness.core import Device
from harness.pathways.base import get_pathway

CPU = Device("cpu", "x86_64")


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.setattr(probes, "_CACHE", {})


def test_rowwise_fp8_gemm_probe_runs_for_real():
    # torch's CPU build has the row-wise _scaled_mm too: the same call the GPU probe makes.
    probe = probes.probe(get_pathway("torchao-fp8-rowwise"), CPU)
    assert probe.ok, probe.detail
    assert probes.probe_verdict(probe, required=True) == ("run", "")


def test_failing_rowwise_kernel_becomes_a_precise_skip_or_a_failure_when_required(monkeypatch):
    def not_supported(*args, **kwargs):
        raise RuntimeError("CUBLAS_STATUS_NOT_SUPPORTED when calling cublasLtMatmul")

    monkeypatch.setattr(torch, "_scaled_mm", not_supported)
    probe = probes.probe(get_pathway("torchao-fp8-rowwise"), CPU)
    assert not probe.ok
    verdict, reason = probes.probe_verdict(probe, required=False)
    assert verdict == "skip"
    assert reason.startswith("torchao-fp8-rowwise: capability probe failed on cpu: x86_64: torch._scaled_mm, float8_e4m3fn with row-wise scales")
    assert "RuntimeError: CUBLAS_STATUS_NOT_SUPPORTED when calling cublasLtMatmul" in reason
    assert f"torch {torch.__version__}" in reason and "cuBLAS " in reason and "TensorRT " in reason
    verdict, message = probes.probe_verdict(probe, required=True)
    assert verdict == "fail" and message == f"required pathway cannot run: {reason}"


def test_wrong_numbers_fail_the_probe_too(monkeypatch):
    real = torch._scaled_mm
    monkeypatch.setattr(torch, "_scaled_mm", lambda *a, **k: real(*a, **k) * 2)
    probe = probes.probe(get_pathway("torchao-fp8-rowwise"), CPU)
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


def test_probes_run_once_per_session_and_unavailable_pathways_carry_their_reason(monkeypatch):
    calls = []
    real = probes.float8_round_trip
    monkeypatch.setattr(probes, "float8_round_trip", lambda device: calls.append(device) or real(device))
    pathways = [get_pathway("inc-fp8-ref"), get_pathway("torchao-fp8-rowwise")]  # the latter does not run on CPU
    first = probes.probe_all(pathways, CPU)
    second = probes.probe_all(pathways, CPU)
    assert [p.pathway for p in first] == ["inc-fp8-ref"] and first[0].ok
    assert first[0] is second[0] and len(calls) == 1
    monkeypatch.setattr(type(get_pathway("inc-fp8-ref")), "unavailable", lambda self, device: "inc-fp8-ref: Python package 'neural_compressor' is not installed")
    monkeypatch.setattr(probes, "_CACHE", {})
    (missing,) = probes.probe_all(pathways, CPU)
    assert not missing.ok and missing.operation == "availability check" and "'neural_compressor' is not installed" in missing.detail
    assert probes.probe_verdict(missing, required=True)[0] == "fail"
