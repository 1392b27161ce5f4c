"""Loading never runs code from an artifact or checkpoint: one planted payload per loader.

Each payload is a pickled object whose __reduce__ makes unpickling call `exec`, touching a marker
file. Every test asserts that the loader refuses it with a message naming the file, that the marker
never appears, and (so the test can fail) that the same file does touch the marker when loaded
the unsafe way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from harness.artifacts import trust
from harness.artifacts.errors import ArtifactError
from harness.artifacts.manifest import MANIFEST, load_artifact, write_manifest
from harness.artifacts.trust import UnsafeContentError
from harness.core import Device
from harness.models.base import get_model
from harness.pathways.base import get_pathway
from tests.conftest import REPO, _built


class Payload:
    """Unpickling this runs `exec`, which touches `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).touch()",)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "payload-ran"


def reseal(directory: Path) -> None:
    """Rewrite the manifest so every sha256 matches again, as an attacker who owns the pipeline can."""
    m = json.loads((directory / MANIFEST).read_text())
    write_manifest(directory, **{k: m[k] for k in ("pathway", "model_id", "recipe", "source_weights_sha256", "tool_versions", "built_on")})


# --- (a) inc-fp8-ref: INC unpickles .npz stats ---------------------------------------------------------


@pytest.fixture(scope="module")
def fp8_artifact():
    return _built("tiny-llama", "inc-fp8-ref")


def test_pickled_npz_in_fp8_artifact_is_refused_before_inc_sees_it(fp8_artifact, user_artifacts, marker):
    target = user_artifacts(fp8_artifact)
    planted = target / "measure_hooks_maxabs.npz"  # the measurement file INC's convert reads
    np.savez(planted, np.array(Payload(marker), dtype=object))
    reseal(target)
    artifact = load_artifact(target)  # the hashes match: the manifest alone cannot catch this

    with pytest.raises(UnsafeContentError, match=rf"{planted.name}: holds pickled Python objects"):
        get_pathway("inc-fp8-ref").load(artifact, Device("cpu", "cpu"), get_model("tiny-llama"))
    assert not marker.exists()

    # What INC itself does with it (neural_compressor/torch/algorithms/fp8_quant/_core/common.py).
    from neural_compressor.torch.algorithms.fp8_quant._core.common import load_npz

    load_npz(str(planted))
    assert marker.exists(), "the planted payload is not live; this test would pass vacuously"


def test_pickled_npz_fails_the_run_without_running(fp8_artifact, user_artifacts, run_suites, marker):
    """The issue's scenario end to end: `qconform run --artifacts DIR --pathways inc-fp8-ref`."""
    target = user_artifacts(fp8_artifact)
    np.savez(target / "measure_hooks_maxabs.npz", np.array(Payload(marker), dtype=object))
    reseal(target)
    run = run_suites(f"--artifacts={target.parent.parent}", "--pathways=inc-fp8-ref", "--models=tiny-llama")
    # The artifact cannot be loaded: every case errors (verdict ERROR, exit 3), naming the file.
    assert run.returncode == 3, run.output
    records = run.records(model="tiny-llama", pathway="inc-fp8-ref")
    assert records and all(r["outcome"] == "error" and "holds pickled Python objects" in r["message"] for r in records), records
    assert not marker.exists()


def test_plain_npz_in_fp8_artifact_is_refused_too(fp8_artifact, user_artifacts):
    target = user_artifacts(fp8_artifact)
    np.savez(target / "measure_hooks_maxabs.npz", np.zeros(3, dtype=np.float32))
    reseal(target)
    with pytest.raises(ArtifactError, match="measure_hooks_maxabs.npz: an inc-fp8-ref artifact holds INC's .json dumps only"):
        get_pathway("inc-fp8-ref").load(load_artifact(target), Device("cpu", "cpu"), get_model("tiny-llama"))


def test_clean_fp8_artifact_loads_and_holds_no_pickles(fp8_artifact):
    assert not [name for name in fp8_artifact.manifest["files"] if name.endswith(".npz")]
    for name in fp8_artifact.manifest["files"]:
        assert name.endswith(".json"), name
    model = get_model("tiny-llama")
    runner = get_pathway("inc-fp8-ref").load(fp8_artifact, Device("cpu", "cpu"), model)
    assert runner.layout().layers, "no quantized layer after loading a clean artifact"


def test_npz_written_from_json_is_what_inc_wrote(tmp_path):
    """load() hands INC .npz files rebuilt from the .json dumps; they must equal INC's own, bit for bit."""
    from harness.pathways.inc_fp8_ref import npz_stats

    pathway, model = get_pathway("inc-fp8-ref"), get_model("tiny-llama")
    reason = pathway.unavailable(Device("cpu", "cpu")) or model.unavailable()
    if reason:
        pytest.skip(reason)
    pathway.dump_stats(model, model.calibration_inputs(), tmp_path)
    originals = sorted(tmp_path.glob("*.npz"))
    assert len(originals) == 2, originals  # the measurement and the derived scales

    def same(a, b, where):
        if isinstance(a, dict):
            assert isinstance(b, dict) and set(a) == set(b), where
            for key in a:
                same(a[key], b[key], f"{where}.{key}")
        elif isinstance(a, (list, tuple)):
            assert isinstance(b, (list, tuple)) and len(a) == len(b), where  # INC reads both alike
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                same(x, y, f"{where}[{i}]")
        elif isinstance(a, np.ndarray):
            assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, (where, a, b)
            assert np.array_equal(a, b), where
        else:
            assert a == b, where

    for original in originals:
        inc = np.load(original, allow_pickle=True)["arr_0"].item()  # INC's own file, written just now
        same(npz_stats(json.loads(original.with_suffix(".json").read_text())), inc, original.name)


def test_check_npz_accepts_plain_arrays_and_names_a_bad_file(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.arange(3, dtype=np.float32))
    trust.check_npz(plain)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(plain.read_bytes()[:20])
    with pytest.raises(ArtifactError, match="broken.npz: not a readable .npz"):
        trust.check_npz(broken)


# --- (b) Hugging Face checkpoints ------------------------------------------------------------------------


def _tiny_checkpoint(directory: Path, pickle_weights: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    if pickle_weights:  # transformers 5 saves safetensors only; the legacy pytorch_model.bin is a torch.save pickle
        config.save_pretrained(directory)
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    else:
        model.save_pretrained(directory)
    return model


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_safetensors_checkpoint_loads_without_remote_code(tmp_path):
    from transformers import AutoModelForCausalLM

    reference = _tiny_checkpoint(tmp_path, pickle_weights=False)
    kwargs = trust.check_checkpoint_dir(tmp_path)
    assert kwargs == trust.HF_LOAD_KWARGS and kwargs["trust_remote_code"] is False
    assert _same_weights(AutoModelForCausalLM.from_pretrained(tmp_path, **kwargs), reference)


def test_pickle_checkpoint_refused_unless_opted_in(tmp_path):
    from transformers import AutoModelForCausalLM

    reference = _tiny_checkpoint(tmp_path, pickle_weights=True)
    with pytest.raises(UnsafeContentError, match=r"pytorch_model.bin: pickle-based weights .*--allow-pickle-checkpoint"):
        trust.check_checkpoint_dir(tmp_path)
    kwargs = trust.check_checkpoint_dir(tmp_path, allow_pickle=True)
    assert kwargs["weights_only"] is True and kwargs["use_safetensors"] is False and kwargs["trust_remote_code"] is False
    assert _same_weights(AutoModelForCausalLM.from_pretrained(tmp_path, **kwargs), reference)


def test_malicious_pickle_checkpoint_refused_even_when_opted_in(tmp_path, marker):
    _tiny_checkpoint(tmp_path, pickle_weights=True)
    weights = tmp_path / "pytorch_model.bin"
    torch.save({"model.embed_tokens.weight": Payload(marker)}, weights)

    with pytest.raises(UnsafeContentError, match="pytorch_model.bin: pickle-based weights"):
        trust.check_checkpoint_dir(tmp_path)
    with pytest.raises(UnsafeContentError, match=r"pytorch_model.bin: needs torch.load\(weights_only=False\)"):
        trust.check_checkpoint_dir(tmp_path, allow_pickle=True)
    assert not marker.exists()
    torch.load(weights, weights_only=False)
    assert marker.exists(), "the planted payload is not live; this test would pass vacuously"


def test_pickle_beside_safetensors_is_never_opened(tmp_path, marker):
    from transformers import AutoModelForCausalLM

    reference = _tiny_checkpoint(tmp_path, pickle_weights=False)
    torch.save({"model.embed_tokens.weight": Payload(marker)}, tmp_path / "pytorch_model.bin")
    model = AutoModelForCausalLM.from_pretrained(tmp_path, **trust.check_checkpoint_dir(tmp_path))
    assert _same_weights(model, reference) and not marker.exists()


def test_checkpoint_code_is_refused(tmp_path):
    _tiny_checkpoint(tmp_path, pickle_weights=False)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "modeling_evil.EvilModel"}}))
    with pytest.raises(UnsafeContentError, match="config.json: auto_map points to custom model code.*never runs checkpoint code"):
        trust.check_checkpoint_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "modeling_evil.py").write_text("raise SystemExit('ran')\n")
    with pytest.raises(UnsafeContentError, match="modeling_evil.py: checkpoint ships Python code"):
        trust.check_checkpoint_dir(tmp_path)


# --- (c) torch files ----------------------------------------------------------------------------------------


def test_torch_file_needing_full_unpickling_is_refused(tmp_path, marker):
    clean, evil = tmp_path / "clean.pt", tmp_path / "evil.pt"
    torch.save({"w": torch.arange(4.0)}, clean)
    torch.save({"w": Payload(marker)}, evil)
    assert torch.equal(trust.load_torch_file(clean, "cpu")["w"], torch.arange(4.0))
    with pytest.raises(UnsafeContentError, match=r"evil.pt: needs torch.load\(weights_only=False\).*qconform never does"):
        trust.load_torch_file(evil, "cpu")
    assert not marker.exists()
    torch.load(evil, weights_only=False)
    assert marker.exists(), "the planted payload is not live; this test would pass vacuously"


# --- (d, e) ONNX -------------------------------------------------------------------------------------------


def _onnx_model(domain: str = "", op: str = "MatMul") -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(2, 2), "w")
    node = helper.make_node(op, ["x", "w"], ["y"], name="the_node", domain=domain)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [weight]
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


def _with_external_weight(artifact_dir: Path, location: str) -> Path:
    """Save the model with its weight as external data at `location` (relative to the model file)."""
    model = _onnx_model()
    weight = model.graph.initializer[0]
    data = weight.raw_data
    (artifact_dir / location).parent.mkdir(parents=True, exist_ok=True)
    (artifact_dir / location).write_bytes(data)
    onnx.external_data_helper.set_external_data(weight, location=location, offset=0, length=len(data))
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    path = artifact_dir / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_onnx_external_data_inside_the_artifact_loads(tmp_path):
    path = _with_external_weight(tmp_path, "weights/w.bin")
    model = trust.check_onnx(path, tmp_path)
    assert np.array_equal(numpy_helper.to_array(model.graph.initializer[0]), np.arange(4, dtype=np.float32).reshape(2, 2))


def test_onnx_external_data_outside_the_artifact_is_refused(tmp_path):
    artifact_dir = tmp_path / "artifact"
    artifact_dir.mkdir()
    path = _with_external_weight(artifact_dir, "../secret.bin")
    assert (tmp_path / "secret.bin").is_file()  # the file exists: only the location check stops the read
    with pytest.raises(UnsafeContentError, match=r"model.onnx: tensor 'w' reads external data '../secret.bin' outside the artifact directory"):
        trust.check_onnx(path, artifact_dir)


def test_onnx_custom_op_domain_is_refused(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(_onnx_model(domain="com.example.evil", op="RunShell"), path)
    with pytest.raises(UnsafeContentError, match=r"model.onnx: node 'the_node' uses custom-op domain 'com.example.evil'"):
        trust.check_onnx(path)
    onnx.save(_onnx_model(), path)  # the same graph in the standard domain passes
    assert trust.check_onnx(path).graph.node[0].op_type == "MatMul"


def test_real_qdq_artifact_passes_the_onnx_checks(llama_int8):
    from harness.pathways.inc_int8_qdq import PAYLOAD

    model = trust.check_onnx(llama_int8.file(PAYLOAD), llama_int8.path)
    assert any(node.op_type == "DequantizeLinear" for node in model.graph.node)


def test_no_custom_op_library_is_ever_registered():
    """ONNX Runtime runs native code only through register_custom_ops_library; qconform never calls it."""
    calls = [p for p in [*(REPO / "harness").rglob("*.py"), *(REPO / "suites").rglob("*.py")] if "register_custom_ops_library(" in p.read_text()]
    assert not calls, calls
