"""`qconform import` on payloads made outside qconform: the recipe comes from the payload, the
artifact loads through the pathway's runner, and another model's payload is refused by name."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from harness.artifacts.manifest import load_artifact
from harness.artifacts.qdq import read_layout
from harness.cli import main
from harness.core import Device
from harness.judge.metrics import argmax_agreement
from harness.measure.localize import layer_errors
from harness.models.base import get_model
from harness.models.tiny_llama import TinyLlamaSpec
from harness.pathways.base import get_pathway

CPU = Device("cpu", "cpu")


def ort_quantize_static(spec, out: Path) -> Path:
    """What a team's own pipeline does: ONNX Runtime static QDQ quantization, per-channel weights."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(spec.calibration_inputs())

        def get_next(self):
            return next(self.batches, None)

    out.mkdir(parents=True, exist_ok=True)
    fp32 = spec.export_onnx(out / "fp32.onnx")
    quantize_static(str(fp32), str(out / "ort.qdq.onnx"), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    return out / "ort.qdq.onnx"


@pytest.fixture(scope="module")
def ort_llama(tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    return ort_quantize_static(get_model("tiny-llama"), tmp_path_factory.mktemp("ort"))


def qconform_import(capsys, *args: str) -> tuple[int, str]:
    code = main(["import", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err  # a refusal is one stderr line


def test_ort_quantize_static_model_imports_and_runs(ort_llama, tmp_path, capsys):
    code, out = qconform_import(capsys, "--pathway", "inc-int8-qdq", "--model", "tiny-llama", str(ort_llama), "--out", str(tmp_path))
    assert code == 0, out
    artifact = load_artifact(tmp_path / "tiny-llama" / "inc-int8-qdq", pathway="inc-int8-qdq", model_id="tiny-llama")
    model = get_model("tiny-llama")
    assert artifact.manifest["source_weights_sha256"] == model.weights_sha256
    # Read from the graph, not assumed: ORT's per_channel=True QInt8 weights, QUInt8 activations.
    recipe = artifact.recipe
    assert (recipe["weight_dtype"], recipe["weight_granularity"], recipe["weight_symmetric"]) == ("int8", "per-channel", True)
    assert (recipe["activation_dtype"], recipe["activation_granularity"], recipe["opset"]) == ("uint8", "per-tensor", 17)
    runner = get_pathway("inc-int8-qdq").load(artifact, CPU, model)
    outputs = runner(model.eval_inputs())
    reference = model.run_reference(model.eval_inputs())
    assert outputs["logits"].shape == reference["logits"].shape and np.isfinite(outputs["logits"]).all()
    assert argmax_agreement(reference["logits"], outputs["logits"]) > 0.5  # a working INT8 model, not noise
    assert len(runner.layout().layers) == len(model.linear_layer_names())


def test_an_imported_graph_with_external_data_runs_from_its_files(ort_llama, tmp_path, capsys, monkeypatch):
    """A team's QDQ graph saved with external data imports, runs and is localized without the graph
    ever being serialized with its weights (protobuf cannot hold one over 2 GB: a 1B model's INT8
    graph is 2.2 GB, and serializing copies every weight once more): the sessions read the
    artifact's files, and the runner's graph holds no second copy of the weights (its layout reads
    a tensor from the files when asked). Serializing a graph with its weights is made to fail as it
    does past 2 GB; the outputs are those of a runner made before that."""
    import onnx

    graph = onnx.load(str(ort_llama))
    external = tmp_path / "team"
    external.mkdir()
    onnx.save(graph, str(external / "ort.qdq.onnx"), save_as_external_data=True, all_tensors_to_one_file=True, location="ort.qdq.onnx.data", size_threshold=1024)
    code, out = qconform_import(capsys, "--pathway", "inc-int8-qdq", "--model", "tiny-llama", str(external / "ort.qdq.onnx"), "--out", str(tmp_path / "out"))
    assert code == 0, out
    artifact = load_artifact(tmp_path / "out" / "tiny-llama" / "inc-int8-qdq", pathway="inc-int8-qdq", model_id="tiny-llama")
    assert any(f.endswith(".data") for f in artifact.manifest["files"]), artifact.manifest["files"]
    model = get_model("tiny-llama")
    before = get_pathway("inc-int8-qdq").load(artifact, CPU, model)
    expected, expected_errors = before(model.eval_inputs())["logits"], layer_errors(before, model, model.eval_inputs())

    limit = onnx.load(str(external / "ort.qdq.onnx")).ByteSize() // 2  # with its weights "over 2 GB"; without them not
    real_serialize = onnx.ModelProto.SerializeToString

    def too_large(self, *args, **kwargs):
        if self.ByteSize() > limit:
            raise ValueError("Message onnx.ModelProto exceeds maximum protobuf size of 2GB")
        return real_serialize(self, *args, **kwargs)

    monkeypatch.setattr(onnx.ModelProto, "SerializeToString", too_large)
    runner = get_pathway("inc-int8-qdq").load(artifact, CPU, model)
    assert runner.model.ByteSize() < limit, "the runner holds the weights its session read from the files"
    assert np.array_equal(runner(model.eval_inputs())["logits"], expected)
    assert runner.placement(model.eval_inputs())  # the profiled session reads the files too
    assert layer_errors(runner, model, model.eval_inputs()) == expected_errors  # layer outputs exposed: from the files too

    real_named_temporary_file = tempfile.NamedTemporaryFile

    def read_only(*args, dir=None, **kwargs):  # noqa: A002  an artifact directory that cannot be written
        if dir is not None and Path(dir) == runner.path.parent:
            raise PermissionError(13, "Permission denied", str(dir))
        return real_named_temporary_file(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    assert layer_errors(runner, model, model.eval_inputs()) == expected_errors  # the data linked into a temporary directory
    assert sorted(p.name for p in runner.path.parent.iterdir()) == sorted([*artifact.manifest["files"], "manifest.json"])  # nothing written there
    layout, in_memory = runner.layout(), read_layout(onnx.load(str(runner.path)))  # the first reads each tensor from the files when asked
    assert layout.layers.keys() == in_memory.layers.keys()
    for name, layer in layout.layers.items():
        assert np.array_equal(layer.weight_scales, in_memory.layers[name].weight_scales) and np.array_equal(layer.dequantized(), in_memory.layers[name].dequantized()), name
    assert runner.model.ByteSize() < limit, "reading the layout kept weights in the graph"


def test_imported_ort_model_is_gated(ort_llama, tmp_path, capsys, run_suites):
    assert qconform_import(capsys, "--pathway", "inc-int8-qdq", "--model", "tiny-llama", str(ort_llama), "--out", str(tmp_path / "arts"))[0] == 0
    run = run_suites(f"--artifacts={tmp_path / 'arts'}", "--pathways=inc-int8-qdq", "--models=tiny-llama", "-k", "cpu", suites=("test_accuracy.py", "test_artifacts.py"))
    gated = {r["metric"]: r for r in run.records(pathway="inc-int8-qdq", device="cpu") if "metric" in r}
    assert {"min_sqnr_db", "min_token_agreement"} <= set(gated), run.output[-3000:]
    assert run.returncode == 0 and run.summary["verdict"] == "PASS", run.output[-3000:]


def test_another_models_graph_is_refused(minilm_int8, tmp_path, capsys):
    code, out = qconform_import(capsys, "--pathway", "inc-int8-qdq", "--model", "tiny-llama", str(minilm_int8.file("model.qdq.onnx")), "--out", str(tmp_path))
    assert code == 1
    assert "this artifact is not model tiny-llama: graph inputs ['attention_mask', 'input_ids'] do not match the model's inputs ['input_ids']" in out
    assert not (tmp_path / "tiny-llama").exists()


class NarrowLlama(TinyLlamaSpec):
    id = "narrow-llama"
    dim, hidden = 96, 192  # dead channels 7 and 93 must exist


class OtherSeedLlama(TinyLlamaSpec):
    id = "other-seed-llama"
    seed = 7


def test_other_shapes_are_refused(tmp_path, capsys):
    payload = ort_quantize_static(NarrowLlama(), tmp_path / "narrow")
    code, out = qconform_import(capsys, "--pathway", "inc-int8-qdq", "--model", "tiny-llama", str(payload), "--out", str(tmp_path / "arts"))
    assert code == 1
    assert "layer layers.0.self_attn.q_proj: weight shape (96, 96) differs from the model's (128, 128)" in out


def test_same_shapes_other_weights_are_refused(tmp_path, capsys):
    payload = ort_quantize_static(OtherSeedLlama(), tmp_path / "seed")
    code, out = qconform_import(capsys, "--pathway", "inc-int8-qdq", "--model", "tiny-llama", str(payload), "--out", str(tmp_path / "arts"))
    assert code == 1
    assert "weights differ from the model's (cosine" in out and "made from other weights" in out


def test_inc_fp8_dumps_import_with_format_from_the_scales(tmp_path, capsys):
    from tests.conftest import _built

    e4m3, e5m2 = _built("tiny-llama", "inc-fp8-ref"), _built("tiny-llama", "inc-fp8-ref-e5m2")
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    for name in e4m3.manifest["files"]:  # a team's own dump_stats_path prefix
        (dumps / name.replace("measure", "mystats")).write_bytes(e4m3.file(name).read_bytes())
    code, out = qconform_import(capsys, "--pathway", "inc-fp8-ref", "--model", "tiny-llama", *map(str, sorted(dumps.iterdir())), "--out", str(tmp_path / "arts"))
    assert code == 0, out
    artifact = load_artifact(tmp_path / "arts" / "tiny-llama" / "inc-fp8-ref")
    assert artifact.manifest["files"] == e4m3.manifest["files"]  # renamed to the prefix INC is given, same bytes
    assert (artifact.recipe["fp8_format"], artifact.recipe["scale_method"]) == ("E4M3", "maxabs_pow2")
    model = get_model("tiny-llama")
    outputs = get_pathway("inc-fp8-ref").load(artifact, CPU, model)(model.eval_inputs())
    assert np.isfinite(outputs["logits"]).all()

    code, out = qconform_import(capsys, "--pathway", "inc-fp8-ref", "--model", "tiny-llama", *(str(e5m2.file(n)) for n in e5m2.manifest["files"]), "--out", str(tmp_path / "arts2"))
    assert code == 1 and "the dumps hold E5M2 scales" in out and "pathway inc-fp8-ref quantizes E4M3" in out


def test_an_fp8_artifact_alone_skips_the_e5m2_comparison(tmp_path, capsys, run_suites):
    """`qconform run --artifacts DIR` with a team's E4M3 dumps and no E5M2 artifact: E4M3 vs E5M2 has
    nothing to compare with, so it is skipped with that reason (it failed the E4M3 cell before)."""
    from tests.conftest import _built

    e4m3 = _built("tiny-llama", "inc-fp8-ref")
    code, out = qconform_import(capsys, "--pathways", "inc-fp8-ref", "--models", "tiny-llama", *(str(e4m3.file(n)) for n in e4m3.manifest["files"]), "--out", str(tmp_path / "arts"))
    assert code == 0, out
    run = run_suites(f"--artifacts={tmp_path / 'arts'}", "-k", "e4m3_at_least", suites=("test_cross_pathway.py",))
    [record] = run.records(check="e4m3_at_least_as_accurate_as_e5m2")
    assert record["outcome"] == "skipped" and "no inc-fp8-ref-e5m2 artifact of tiny-llama under" in record["message"], record
    assert run.returncode != 1, run.output[-3000:]


def test_inc_fp8_dumps_of_another_model_are_refused(tmp_path, capsys):
    from tests.conftest import _built

    e4m3 = _built("tiny-llama", "inc-fp8-ref")
    measured = json.loads(e4m3.file("measure_hooks_maxabs.json").read_text())
    measured["Nodes"]["lm_head"]["params"]["weight"] = [[1.5]]
    (tmp_path / "x_hooks_maxabs.json").write_text(json.dumps(measured))
    others = [str(e4m3.file(n)) for n in e4m3.manifest["files"] if not n.startswith("measure_hooks_maxabs.")]
    code, out = qconform_import(capsys, "--pathway", "inc-fp8-ref", "--model", "tiny-llama", str(tmp_path / "x_hooks_maxabs.json"), *others, "--out", str(tmp_path / "arts"))
    assert code == 1 and "layer lm_head: measured weight amax 1.5 differs from the model's" in out


def test_torchao_fp8_checkpoint_imports_with_types_from_the_state_dict(tmp_path, capsys):
    """The checkpoint torchao's quantize_ writes on a GPU, made on the CPU by the same Float8Tensor.from_hp call."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchao")
    from torchao.quantization import Float8Tensor, PerRow
    from torchao.quantization.quantize_.workflows.float8.float8_tensor import QuantizeTensorToFloat8Kwargs

    model = get_model("tiny-llama")
    module = copy.deepcopy(model.reference).to(torch.bfloat16)
    for linear in (m for m in module.modules() if isinstance(m, torch.nn.Linear)):
        weight = Float8Tensor.from_hp(linear.weight.detach(), torch.float8_e4m3fn, PerRow(), act_quant_kwargs=QuantizeTensorToFloat8Kwargs(torch.float8_e4m3fn, PerRow()))
        linear.weight = torch.nn.Parameter(weight, requires_grad=False)
    torch.save(module.state_dict(), tmp_path / "fp8.pt")
    code, out = qconform_import(capsys, "--pathway", "torchao-fp8-rowwise", "--model", "tiny-llama", str(tmp_path / "fp8.pt"), "--out", str(tmp_path / "arts"))
    assert code == 0, out
    recipe = load_artifact(tmp_path / "arts" / "tiny-llama" / "torchao-fp8-rowwise").recipe
    assert recipe == {"weight_dtype": "float8_e4m3fn", "weight_granularity": "per-channel", "activation_dtype": "float8_e4m3fn",
                      "activation_granularity": "dynamic PerRow", "model_dtype": "bfloat16"}

    narrow = copy.deepcopy(NarrowLlama().reference)
    torch.save(narrow.state_dict(), tmp_path / "narrow.pt")
    code, out = qconform_import(capsys, "--pathway", "torchao-fp8-rowwise", "--model", "tiny-llama", str(tmp_path / "narrow.pt"), "--out", str(tmp_path / "arts2"))
    # The shared identity check names the first layers whose shapes differ (sorted by name).
    assert code == 1 and "narrow.pt: this artifact is not model tiny-llama: " in out
    assert "layer layers.0.mlp.up_proj: weight shape (192, 96) differs from the model's (256, 128)" in out


# What a team's own torchao pipeline does, outside qconform: the model's reference module, quantize_
# with the int8 dynamic config, torch.save of the state dict.
TORCHAO_INT8_SCRIPT = """
import sys

import torch
from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

from harness.models.base import get_model

module = get_model(sys.argv[1]).reference.eval()
quantize_(module, Int8DynamicActivationInt8WeightConfig())
torch.save(module.state_dict(), sys.argv[2])
"""


def test_torchao_int8_checkpoint_made_outside_qconform_imports_and_is_gated(tmp_path, capsys, run_suites):
    import subprocess
    import sys

    torch = pytest.importorskip("torch")
    pytest.importorskip("torchao")
    script, payload = tmp_path / "quantize_int8.py", tmp_path / "int8.pt"
    script.write_text(TORCHAO_INT8_SCRIPT)
    subprocess.run([sys.executable, str(script), "tiny-llama", str(payload)], check=True, cwd=Path(__file__).resolve().parent.parent, timeout=300)

    code, out = qconform_import(capsys, "--pathway", "torchao-int8-dynamic", "--model", "tiny-llama", str(payload), "--out", str(tmp_path / "arts"))
    assert code == 0, out
    recipe = load_artifact(tmp_path / "arts" / "tiny-llama" / "torchao-int8-dynamic").recipe
    assert recipe == {"weight_dtype": "int8", "weight_granularity": "per-channel", "weight_symmetric": True, "activation_dtype": "int8",
                      "activation_granularity": "per-token (dynamic)", "model_dtype": "float32"}
    run = run_suites(f"--artifacts={tmp_path / 'arts'}", "--pathways=torchao-int8-dynamic", "--models=tiny-llama", "-k", "cpu", suites=("test_accuracy.py", "test_artifacts.py"))
    gated = {r["metric"] for r in run.records(pathway="torchao-int8-dynamic", device="cpu", outcome="passed") if "metric" in r}
    assert {"min_sqnr_db", "min_token_agreement", "min_layer_weight_sqnr_db", "min_layer_activation_sqnr_db", "min_code_range_use", "max_weight_scale_log2_err"} <= gated, run.output[-3000:]
    assert run.returncode == 0 and run.summary["verdict"] == "PASS", run.output[-3000:]

    torch.save(get_model("tiny-llama").reference.state_dict(), tmp_path / "float.pt")  # not quantized at all
    code, out = qconform_import(capsys, "--pathway", "torchao-int8-dynamic", "--model", "tiny-llama", str(tmp_path / "float.pt"), "--out", str(tmp_path / "arts2"))
    assert code != 0 and "float.pt: no Int8Tensor weights: not a torchao int8 checkpoint" in out
    subprocess.run([sys.executable, str(script), "minilm-l6", str(tmp_path / "minilm.pt")], check=True, cwd=Path(__file__).resolve().parent.parent, timeout=300)
    code, out = qconform_import(capsys, "--pathway", "torchao-int8-dynamic", "--model", "tiny-llama", str(tmp_path / "minilm.pt"), "--out", str(tmp_path / "arts3"))
    assert code == 1 and "minilm.pt: this artifact is not model tiny-llama: " in out
