"""Layer-level evidence in-process: localization names a planted bad layer (ONNX Runtime and torch
hooks), model identity refuses another model by name, sample-size statistics, expected recipes."""

import copy
import math

import numpy as np
import onnx
import pytest
import torch

from harness.artifacts.errors import ArtifactError
from harness.artifacts.identity import check_onnx_matches, check_state_dict_matches
from harness.judge.metrics import smallest_detectable_change, wilson_lower
from harness.judge.thresholds import ProfileError, load_profile
from harness.measure.localize import first_bad_layer, fp32_graph, layer_errors
from harness.models.base import get_model
from harness.pathways.base import get_pathway
from harness.pathways.inc_int8_qdq import PAYLOAD
from harness.runtimes.torch import TorchRunner
from tests.planted_defects import ONE_LAYER, one_layer_scales_x4


def test_first_bad_layer_is_first_below_threshold_else_largest_drop():
    errors = [("a", 30.0), ("b", 28.0), ("c", 9.0), ("d", 8.0)]
    assert first_bad_layer(errors, 14.0) == ("c", 28.0, 9.0)
    assert first_bad_layer(errors, 5.0) == ("c", 28.0, 9.0)  # none below: the largest drop
    assert first_bad_layer([("a", 3.0)], 14.0) == ("a", math.inf, 3.0)
    assert first_bad_layer([], 14.0) is None


def test_onnx_localization_names_the_planted_layer(llama_int8, tmp_path):
    from harness.runtimes.onnxruntime import OrtQdqRunner

    model = get_model("tiny-llama")
    path = tmp_path / PAYLOAD
    onnx.save(one_layer_scales_x4(onnx.load(str(llama_int8.file(PAYLOAD)))), str(path))
    errors = layer_errors(OrtQdqRunner(path, "CPUExecutionProvider"), model, model.eval_inputs())
    assert [name for name, _ in errors][-1] == "lm_head" and len(errors) == len(model.linear_layer_names())
    name, before, after = first_bad_layer(errors, load_profile("cpu").threshold("min_layer_activation_sqnr_db", "inc-int8-qdq", "tiny-llama").value)
    assert name == ONE_LAYER and before > 14 and after < 0  # measured 23.3 dB -> -9.5 dB


def test_torch_hook_localization_names_the_planted_layer():
    """The hook path (INC FP8 here, TorchAO on GPU) on a float copy with one layer's weight x4."""
    model = get_model("tiny-llama")
    module = copy.deepcopy(model.reference)
    with torch.no_grad():
        dict(module.named_modules())["layers.0.mlp.up_proj"].weight.mul_(4)
    from harness.pathways.inc_fp8_ref import read_layout  # lists plain Linear layers as unquantized

    runner = TorchRunner(module, model.input_names, model.output_names, "cpu", "planted float copy", read_layout)
    errors = layer_errors(runner, model, model.eval_inputs())
    assert dict(errors)["layers.0.self_attn.q_proj"] == math.inf  # untouched layers before it are exact
    assert first_bad_layer(errors, 14.0)[0] == "layers.0.mlp.up_proj", errors


def test_identity_refuses_another_model_by_name():
    llama, minilm = get_model("tiny-llama"), get_model("minilm-l6")
    if minilm.unavailable():
        pytest.skip(minilm.unavailable())
    check_onnx_matches(fp32_graph(llama), llama)  # its own export passes
    with pytest.raises(ArtifactError, match=r"this artifact is not model tiny-llama: graph inputs \['attention_mask', 'input_ids'\] do not match the model's inputs \['input_ids'\]"):
        check_onnx_matches(fp32_graph(minilm), llama)


def test_identity_names_a_layer_whose_shape_differs():
    model = get_model("tiny-llama")
    state = dict(model.reference.state_dict())
    state["lm_head.weight"] = torch.zeros(10, 128)
    with pytest.raises(ArtifactError, match=r"layer lm_head: weight shape \(10, 128\) differs from the model's \(256, 128\)"):
        check_state_dict_matches(state, model)
    graph = copy.deepcopy(fp32_graph(model))
    init = next(i for i in graph.graph.initializer if i.dims == [128, 256])  # an up/gate weight, (in, out)
    init.CopyFrom(onnx.numpy_helper.from_array(np.zeros((128, 255), np.float32), init.name))
    with pytest.raises(ArtifactError, match=r"this artifact is not model tiny-llama: layer layers\.\d\.mlp\.\w+_proj: weight shape \(255, 128\) differs from the model's \(256, 128\)"):
        check_onnx_matches(graph, model)


def test_wilson_lower_bound_and_detectable_change():
    assert wilson_lower(0.5, 100) == pytest.approx(0.4038, abs=1e-4)  # textbook value
    assert wilson_lower(1.0, 512) == pytest.approx(0.99255, abs=1e-4)
    assert wilson_lower(0.959, 512) < 0.959
    assert smallest_detectable_change(0.99, 24, "correlation") == pytest.approx(0.99 - math.tanh(math.atanh(0.99) - 2.8016 / math.sqrt(21)), abs=1e-4)


def test_profile_expect_table_overrides_the_pathway(tmp_path):
    from harness.measure.layout_checks import expected_recipe

    path = tmp_path / "mine.toml"
    path.write_text('[inc-int8-qdq.tiny-llama]\nmin_sqnr_db = 1\n[inc-int8-qdq.tiny-llama.expect]\nactivation_dtype = "int8"\n')
    expected = expected_recipe(get_pathway("inc-int8-qdq"), get_model("tiny-llama"), load_profile(str(path)))
    assert expected["activation_dtype"] == "int8" and expected["weight_granularity"] == "per-channel"
    path.write_text('[inc-int8-qdq.tiny-llama.expect]\nactivation_dtyp = "int8"\n')
    with pytest.raises(ProfileError, match="unknown recipe key 'activation_dtyp'"):
        load_profile(str(path))


def test_the_fp32_export_is_kept_in_the_runs_cache(run_suites, tmp_path):
    """Localization's fp32 export goes to the run's cache (--qc-cache), its weights as external data
    beside it, so a warm run of the same cache exports nothing."""
    cache = tmp_path / "cache"
    run = run_suites("--models=tiny-llama", "--pathways=inc-int8-qdq", "-k", "cpu and layer_activation_sqnr", f"--qc-cache={cache}", f"--golden-dir={tmp_path / 'golden'}")
    assert run.returncode == 0, run.output[-3000:]
    [export] = (cache / "exports" / "tiny-llama").glob("*/model.fp32.onnx")
    assert (export.parent / "model.fp32.onnx.data").is_file()
