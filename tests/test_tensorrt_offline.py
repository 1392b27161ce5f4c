"""What of the TensorRT pathway can be checked without a GPU or TensorRT: skip reasons, the engine
cache key, engine/GPU/version validation, optimization profiles, EP provider assertions."""

import numpy as np
import pytest

from harness.models.base import get_model
from harness.pathways import tensorrt as trt_pathway
from harness.runtimes.tensorrt import tensorrt_missing
from harness.core import Device
from harness.pathways.base import get_pathway
from harness.runtimes.onnxruntime import OrtQdqRunner
from harness.store import ArtifactStore

H100 = Device("cuda", "NVIDIA H100 80GB HBM3", (9, 0))
RTX5090 = Device("cuda", "NVIDIA GeForce RTX 5090", (12, 0))


def test_skip_reasons_name_what_is_missing(monkeypatch):
    if tensorrt_missing() is None:
        pytest.skip("TensorRT is installed here")
    assert "Python package 'tensorrt' is not installed" in get_pathway("tensorrt").unavailable(H100)
    monkeypatch.setattr(trt_pathway, "ort_provider_missing", lambda provider: None)  # as if ORT listed the EP
    assert "TensorrtExecutionProvider needs TensorRT's libraries" in get_pathway("tensorrt-ort").unavailable(H100)
    assert "supports RTX GPUs (compute capability 8.6, 8.9, 12.0+); NVIDIA H100 80GB HBM3 is sm_90" in get_pathway("tensorrt-rtx-ort").unavailable(H100)
    assert "supports RTX GPUs" not in (get_pathway("tensorrt-rtx-ort").unavailable(RTX5090) or "")
    assert "needs a CUDA GPU" in get_pathway("tensorrt-rtx-ort").unavailable(Device("cuda", "absent"))


def test_engine_is_refused_on_another_gpu_or_tensorrt_version():
    manifest = {"built_on": {"name": "NVIDIA GeForce RTX 5090"}, "tool_versions": {"tensorrt": "10.13.0"}}
    assert trt_pathway.engine_mismatch(manifest, "NVIDIA GeForce RTX 5090", "10.13.0") is None
    assert "engine built on 'NVIDIA GeForce RTX 5090', this GPU is 'NVIDIA H100 80GB HBM3'" in trt_pathway.engine_mismatch(manifest, H100.name, "10.13.0")
    assert "built with TensorRT 10.13.0, this is TensorRT 10.14.1" in trt_pathway.engine_mismatch(manifest, "NVIDIA GeForce RTX 5090", "10.14.1")


def test_engine_cache_key_follows_gpu_and_tensorrt_version(monkeypatch, tmp_path):
    pathway, model, store = get_pathway("tensorrt"), get_model("tiny-llama"), ArtifactStore(tmp_path)
    keys = set()
    for gpu, version in (("NVIDIA H100 80GB HBM3", "10.13.0"), ("NVIDIA GeForce RTX 5090", "10.13.0"), ("NVIDIA GeForce RTX 5090", "10.14.1")):
        monkeypatch.setattr(Device, "detect", classmethod(lambda cls, gpu=gpu: Device("cuda", gpu, (9, 0))))
        monkeypatch.setattr(type(pathway), "tool_versions", lambda self, version=version: {"tensorrt": version})
        keys.add(store.path_for(pathway, model))
    assert len(keys) == 3


def test_optimization_profile_covers_the_eval_batch():
    shapes = trt_pathway._profile_shapes(get_model("tiny-llama"))
    assert shapes == {"input_ids": ((1, 1), (16, 32), (32, 64))}


def test_missing_execution_provider_is_refused_not_fallen_back(llama_int8):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA EP")
    with pytest.raises(RuntimeError, match=r"offers no CUDAExecutionProvider \(install onnxruntime-gpu in place of onnxruntime\)"):
        OrtQdqRunner(llama_int8.file("model.qdq.onnx"), "CUDAExecutionProvider")


def test_placement_lists_every_node_with_its_provider(llama_int8):
    runner = OrtQdqRunner(llama_int8.file("model.qdq.onnx"), "CPUExecutionProvider")
    placement = runner.placement({"input_ids": np.zeros((2, 8), np.int64)})
    assert list(placement) == ["CPUExecutionProvider"]
    assert any(node.startswith("MatMulInteger:") or node.startswith("QLinearMatMul:") or node.startswith("MatMul") for node in placement["CPUExecutionProvider"])
