"""What of the TensorRT pathway can be checked without a GPU or TensorRT: skip reasons, the engine
cache key, engine/GPU/version validation, optimization profiles, EP provider assertions."""

import numpy as np
import pytest

from harness.core import Device
from harness.models.base import get_model
from harness.pathways import tensorrt as trt_pathway
from harness.pathways.base import get_pathway
from harness.run.store import ArtifactStore
from harness.runtimes.onnxruntime import OrtQdqRunner
from harness.runtimes.tensorrt import tensorrt_missing

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


def test_engine_recipe_records_strong_typing_and_fp32_for_the_float_parts():
    for name in ("tensorrt", "tensorrt-fp8"):
        recipe = get_pathway(name).recipe(get_model("tiny-llama"))
        assert recipe["engine"] == {"network": "strongly typed", "float_precision": "float32", "builder_flags_cleared": ["TF32"], "workspace_mib": 2048}
    assert get_pathway("tensorrt").recipe(get_model("tiny-llama"))["activation_symmetric"] is True


def test_fp8_engine_needs_an_fp8_gpu(monkeypatch):
    monkeypatch.setattr(trt_pathway, "tensorrt_missing", lambda: None)  # as if TensorRT were installed
    a100 = Device("cuda", "NVIDIA A100-SXM4-80GB", (8, 0))
    assert get_pathway("tensorrt-fp8").unavailable(a100) == "tensorrt-fp8: FP8 needs CUDA compute capability >= 8.9, NVIDIA A100-SXM4-80GB is sm_80"
    assert get_pathway("tensorrt-fp8").unavailable(H100) is None
    assert get_pathway("tensorrt-fp8").unavailable(RTX5090) is None


def test_an_artifact_carrying_a_library_is_refused(tmp_path):
    from harness.artifacts.errors import ArtifactError
    from harness.artifacts.manifest import Artifact
    from harness.runtimes.tensorrt import refuse_plugin_libraries

    ok = Artifact(tmp_path, {"files": {"model.engine": "0" * 64, "model.qdq.onnx": "0" * 64}})
    refuse_plugin_libraries(ok)
    for name in ("libplugin.so", "libnvinfer_plugin.so.11", "plugin.DLL"):
        with pytest.raises(ArtifactError, match=f"{name}: an artifact may not carry plugin or shared libraries"):
            refuse_plugin_libraries(Artifact(tmp_path, {"files": {"model.engine": "0" * 64, name: "0" * 64}}))


def test_int8_graph_for_tensorrt_has_zero_point_zero(tmp_path):
    """TensorRT accepts only symmetric Q/DQ: the graph it builds from must have int8 zero points of 0."""
    from harness.artifacts.qdq import load_model, read_layout

    model = get_model("tiny-llama")
    path = trt_pathway.build_qdq(model, model.calibration_inputs(), tmp_path / "model.qdq.onnx", trt_pathway.int8_recipe(model))
    layers = read_layout(load_model(path)).layers
    assert layers
    for layer in layers.values():
        assert layer.dtype == "int8" and layer.activation_dtype == "int8", layer.name
        assert not np.any(layer.activation_zero_point) and not np.any(layer.weight_zero_points), layer.name


def test_fp8_qdq_graph_builds_and_runs_on_cpu(tmp_path):
    """The tensorrt-fp8 artifact's graph: float8_e4m3fn Q/DQ read back by the layout reader, and
    executed by ONNX Runtime's CPU EP close to the fp32 reference."""
    from harness.artifacts.qdq import load_model, read_layout
    from harness.judge.metrics import sqnr_db

    model = get_model("tiny-llama")
    recipe = trt_pathway.fp8_recipe(model)
    path = trt_pathway.build_fp8_qdq(model, model.calibration_inputs(), tmp_path / "model.qdq.onnx", recipe)
    layout = read_layout(load_model(path))
    assert len(layout.layers) == 15 and not layout.unquantized  # 2 layers x 7 Linear + lm_head
    for layer in layout.layers.values():
        assert (layer.dtype, layer.activation_dtype, layer.weight_granularity, layer.activation_granularity) == ("float8_e4m3fn", "float8_e4m3fn", "per-tensor", "per-tensor"), layer.name
        assert layer.dequantized_weight is not None and np.isfinite(layer.dequantized_weight).all()
    inputs = model.eval_inputs()
    candidate = OrtQdqRunner(path, "CPUExecutionProvider")(inputs)[model.output_names[0]]
    reference = model.run_reference(inputs)[model.output_names[0]]
    # Measured 21.5 dB (onnxruntime 1.32, torch 2.13 CPU).
    assert sqnr_db(reference, candidate) > 18.0
