"""INC INT8 W8A8 for LLMs: inc-int8-qdq's build options ([recipes.inc-int8-qdq]: smoothquant,
smoothquant_alpha, keep_float, quantize_outputs) on a tiny Llama with the activation
outliers of a real one planted into its MLPs.

The planted pattern: a few channels of every up_proj output are scaled x1000 and the matching
down_proj input columns divided by 1000, so the model computes what it did, while its down_proj
inputs carry channels ~1000x the rest (a pretrained 135M Llama's down_proj inputs carry channels
~3000x the median). Per-tensor uint8 activations then round every other channel to zero.
Measured on the 2-core CPU machine (256 evaluation tokens, 4 prompts x 8 tokens):

  recipe                                    logits SQNR   KL      top-1   generation
  default                                   -1.5 dB       2.97    0.012   0.00
  quantize_outputs = false                  -4.2 dB       4.77    0.004   0.00
  smoothquant 0.5 (outputs quantized)        0.05 dB      1.25    0.32    0.03
  smoothquant 0.5, quantize_outputs = false  25.2 dB      0.011   0.89    0.78
  smoothquant "auto", quantize_outputs=false 25.9 dB      0.011   0.89    0.59
  keep_float down_proj                      -0.1 dB       1.30    0.30    0.03

SmoothQuant divides each layer's input by per-channel scales, which fixes down_proj's input; but
INC's static QDQ also quantizes every MatMul's *output* per tensor, and up_proj's output carries
the same outlier channels (as it does in a real model, less extremely): only with those outputs
left float (quantize_outputs = false) does SmoothQuant rescue the model.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from harness.artifacts.errors import ArtifactError
from harness.artifacts.identity import check_onnx_matches, weight_value_mismatch
from harness.artifacts.qdq import read_layout, smoothed_reference
from harness.core import Device
from harness.judge.metrics import sqnr_db
from harness.measure import layout_checks as lc
from harness.measure.localize import calibration_input_ranges, torch_activations
from harness.models.hf import HuggingFaceModel
from harness.pathways.base import get_pathway
from harness.pathways.inc_int8_qdq import PAYLOAD, int8_qdq_recipe, read_qdq_payload, with_options
from harness.run.store import ArtifactStore
from tests.hf_checkpoints import build_llama

pytest.importorskip("transformers")
pytest.importorskip("onnx_neural_compressor")
CPU = Device("cpu", "cpu")
SMALL = dict(eval_tokens=256, seq_len=64, new_tokens=8, generation_prompts=4)
PATHWAY = "inc-int8-qdq"
OUTLIER_CHANNELS = (3, 17, 90)  # of the 128 intermediate channels
RATIO = 1000.0

DEFAULT: dict = {}
SMOOTH = {"smoothquant": True, "smoothquant_alpha": 0.5, "quantize_outputs": False}
SMOOTH_AUTO = {"smoothquant": True, "smoothquant_alpha": "auto", "quantize_outputs": False}


def plant_activation_outliers(source: Path, target: Path, channels=OUTLIER_CHANNELS, ratio: float = RATIO) -> Path:
    """`source` with channels of every MLP's up_proj output x `ratio` and the matching down_proj
    input columns / `ratio`: the same function, with outlier channels in every down_proj input."""
    import torch
    from transformers import LlamaForCausalLM

    shutil.copytree(source, target)
    model = LlamaForCausalLM.from_pretrained(str(source))
    index = torch.tensor(channels)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.up_proj.weight[index] *= ratio
            layer.mlp.down_proj.weight[:, index] /= ratio
    model.save_pretrained(str(target))
    return target


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("smoothquant")
    base = build_llama(root / "test-llama")
    return base, plant_activation_outliers(base, root / "test-llama-outliers")


@pytest.fixture(scope="module")
def model(checkpoints) -> HuggingFaceModel:
    return HuggingFaceModel(checkpoints[1], **SMALL)


@pytest.fixture(scope="module")
def reference(model):
    return model.evaluate(model.run_reference)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ArtifactStore:
    return ArtifactStore(tmp_path_factory.mktemp("cache"))


@contextlib.contextmanager
def selecting(model, options: dict):
    """The project's [recipes.inc-int8-qdq] table set to `options` (as the run sets it)."""
    before = model.recipe_overrides
    model.recipe_overrides = {PATHWAY: dict(options)} if options else {}
    try:
        yield get_pathway(PATHWAY)
    finally:
        model.recipe_overrides = before


def built(model, store, options: dict):
    with selecting(model, options) as pathway:
        reason = pathway.unavailable(CPU) or pathway.build_unavailable()
        if reason:
            pytest.skip(reason)
        artifact = store.get(pathway, model)
        return artifact, pathway.load(artifact, CPU, model)


def measured(model, store, reference, options: dict) -> dict[str, float]:
    _, runner = built(model, store, options)
    candidate = model.evaluate(runner)
    metrics = model.task_metrics(reference, candidate)
    return {"sqnr_db": sqnr_db(reference["logits"], candidate["logits"]), **metrics}


def test_planted_outliers_keep_the_function(checkpoints, model):
    """The planted model computes the base model's logits, and its down_proj inputs carry
    channels hundreds of times the median channel."""
    base = HuggingFaceModel(checkpoints[0], **SMALL)
    batch = model.eval_batches()[0]
    np.testing.assert_allclose(model.run_reference(batch)["logits"], base.run_reference(batch)["logits"], atol=2e-3)
    layers = [name for name, _ in model.reference.named_modules() if name.endswith("mlp.down_proj")]
    inputs = torch_activations(model.reference, layers, [batch], model.input_names, which="input")
    for name, values in inputs.items():
        peak = np.abs(values.reshape(-1, 128)).max(axis=0)
        assert peak.max() / np.median(peak) > 300, name


def test_default_recipe_is_unchanged_and_options_are_recorded(model):
    """Selecting nothing keeps the default recipe byte for byte (so default artifacts, their cache
    key and goldens stay); each selected option is recorded; invalid values are refused."""
    pathway = get_pathway(PATHWAY)
    assert pathway.recipe(model) == int8_qdq_recipe(model)
    assert not {k for k in pathway.recipe(model) if k.startswith("smoothquant") or k == "quantize_outputs"}
    with selecting(model, {"smoothquant_alpha": "auto", "keep_float": ["down_proj"], "min_sqnr_db": 3}):
        recipe = pathway.recipe(model)
    assert recipe == {**int8_qdq_recipe(model), "keep_float": ["down_proj"], "smoothquant": True, "smoothquant_alpha": "auto"}
    with selecting(model, {"smoothquant": True, "smoothquant_alpha": 1}):
        assert pathway.recipe(model) == {**int8_qdq_recipe(model), "smoothquant": True, "smoothquant_alpha": 1.0}
    with selecting(model, {"smoothquant": True}):
        assert pathway.recipe(model)["smoothquant_alpha"] == 0.5  # INC's default, recorded
    assert set(pathway.recipe_options) >= {"smoothquant", "smoothquant_alpha", "keep_float", "quantize_outputs"}
    for key, value in [("smoothquant", "yes"), ("smoothquant_alpha", 1.5), ("smoothquant_alpha", "best"), ("smoothquant_alpha", True), ("keep_float", "down_proj"), ("keep_float", ["("]), ("quantize_outputs", 0)]:
        assert pathway.recipe_option_problem(key, value), (key, value)
    for key, value in [("smoothquant", False), ("smoothquant_alpha", 0), ("smoothquant_alpha", "auto"), ("keep_float", [])]:
        assert pathway.recipe_option_problem(key, value) is None, (key, value)
    with pytest.raises(ValueError, match="smoothquant = false"):
        with_options(int8_qdq_recipe(model), {"smoothquant": False, "smoothquant_alpha": 0.5})


def test_smoothquant_rescues_the_outlier_model(model, store, reference):
    """Per-tensor static activations destroy the outlier model; SmoothQuant (alpha 0.5 and INC's
    auto-alpha) with float MatMul outputs brings it back to the clean model's quality (the
    test-llama INT8 thresholds of tests/hf_profile.toml: KL < 0.055, top-1 > 0.86); SmoothQuant
    alone cannot, since INC quantizes up_proj's outlier-carrying output per tensor."""
    default = measured(model, store, reference, DEFAULT)
    assert default["sqnr_db"] < 5 and default["top1_agreement"] < 0.5 and default["kl_mean"] > 0.5, default
    outputs_quantized = measured(model, store, reference, {"smoothquant": True, "smoothquant_alpha": 0.5})
    assert outputs_quantized["top1_agreement"] < 0.5, outputs_quantized
    for options in (SMOOTH, SMOOTH_AUTO):
        smooth = measured(model, store, reference, options)
        print(options, {k: round(v, 4) for k, v in smooth.items()})
        assert smooth["sqnr_db"] > 20 and smooth["kl_mean"] < 0.055 and smooth["top1_agreement"] > 0.86, (options, smooth)
        assert smooth["sqnr_db"] > default["sqnr_db"] + 15


def test_manifest_records_the_selected_recipe(model, store):
    """The artifact's manifest records the recipe the project selected, agrees with the expected
    recipe, and its cache entry is not the default build's."""
    artifact, _ = built(model, store, SMOOTH)
    assert {k: artifact.recipe[k] for k in SMOOTH} == SMOOTH
    with selecting(model, SMOOTH) as pathway:
        assert lc.project_recipe_problems(artifact.recipe, model.recipe_overrides[PATHWAY]) == []
        assert lc.claim_problems(artifact.recipe, pathway.expected_recipe(model)) == []
        smooth_path = store.path_for(pathway, model)
    default, _ = built(model, store, DEFAULT)
    assert default.path != smooth_path and "smoothquant" not in default.recipe


def test_smoothed_layout_reads_back(model, store):
    """The smoothed graph (INC's `<node>_smooth_mul` before every quantized MatMul) reads back as
    the same layers, every one with its smoothing factors; the layout checks, the model-identity
    checks and `qconform import` accept it; compared with the unsmoothed weights they would not."""
    artifact, runner = built(model, store, SMOOTH)
    _, plain = built(model, store, DEFAULT)
    layout = runner.layout()
    assert set(layout.layers) == set(plain.layout().layers) and not layout.unquantized
    assert all(layer.input_smoothing is not None and layer.input_smoothing.size == layer.dequantized_weight.shape[1] for layer in layout.layers.values())
    assert all(layer.input_smoothing is None for layer in plain.layout().layers.values())
    with selecting(model, SMOOTH) as pathway:
        expected = pathway.expected_recipe(model)
    assert lc.coverage_problems(layout, expected, model) == []
    assert lc.layout_problems(layout, expected) == []
    assert lc.scale_problems(layout) == []
    assert min(lc.code_range_use(layout).values()) == 1.0
    check_onnx_matches(runner.model, model)
    raw, smoothed = {}, {}
    for name, layer in layout.layers.items():
        weight = model.reference_weight(name)
        assert weight_value_mismatch(name, layer.dequantized_weight, smoothed_reference(weight, layer)) is None
        raw[name], smoothed[name] = sqnr_db(weight, layer.dequantized_weight), sqnr_db(smoothed_reference(weight, layer), layer.dequantized_weight)
    assert min(smoothed.values()) > 35, smoothed  # int8 per-channel codes of the smoothed weights
    assert max(raw.values()) < 10, raw  # the stored weights are s * W: not the model's
    files, recipe = read_qdq_payload([artifact.file(PAYLOAD)], model)
    assert recipe["smoothquant"] is True and recipe["quantize_outputs"] is False
    assert "smoothquant" not in read_qdq_payload([built(model, store, DEFAULT)[0].file(PAYLOAD)], model)[1]


def test_weight_and_activation_checks_account_for_smoothing(model, store):
    """The artifact suite's weight SQNR, weight-scale and activation-scale checks compare a smoothed
    layer with the model's weight times s and its input times 1/s (harness/artifacts/qdq.py
    smoothed_reference, smoothing_of): a correct smoothed artifact passes them as a plain one does."""
    _, runner = built(model, store, SMOOTH)
    layout = runner.layout()
    weight_sqnr = lc.weight_sqnr(layout, model)
    assert len(weight_sqnr) == len(layout.layers) and min(weight_sqnr.values()) > 35, weight_sqnr
    assert max(lc.weight_scale_error(layout, model).values()) < 0.02
    scales = lc.activation_scale_log2(layout, calibration_input_ranges(runner, model))
    assert len(scales) == len(layout.layers) and max(abs(v) for v in scales.values()) < 0.05, scales


def test_keep_float_replaces_the_models_list(model, store):
    """keep_float from the project keeps the named layers float (the whole list: it replaces the
    model's int8_keep_float); a pattern that names no node is refused at build time."""
    options = {"keep_float": ["down_proj"], "quantize_outputs": False}
    artifact, runner = built(model, store, options)
    layout = runner.layout()
    assert artifact.recipe["keep_float"] == ["down_proj"]
    assert sorted(layout.unquantized) == ["/model/model/layers.0/mlp/down_proj/MatMul", "/model/model/layers.1/mlp/down_proj/MatMul"]
    with selecting(model, options) as pathway:
        assert lc.coverage_problems(layout, pathway.expected_recipe(model), model) == []
    with pytest.raises(ArtifactError, match="match no node"):
        built(model, store, {"keep_float": ["dwn_proj"]})


def test_smoothing_is_read_only_from_incs_mul(model, store):
    """A RMSNorm's gain is also a Mul by a per-channel initializer in front of q/k/v and the head:
    only INC's `<node>_smooth_mul` is read as smoothing."""
    _, plain = built(model, store, DEFAULT)
    graph = plain.model
    gains = [n for n in graph.graph.node if n.op_type == "Mul" and any(i in {t.name for t in graph.graph.initializer} for i in n.input)]
    assert gains  # the norms' gains are there
    assert all(layer.input_smoothing is None for layer in read_layout(graph).layers.values())
    assert not [n for n in onnx.load(str(built(model, store, DEFAULT)[0].file(PAYLOAD))).graph.node if n.name.endswith("_smooth_mul")]


@pytest.mark.parametrize("options", [{}, {"quantize_outputs": False}, {"smoothquant": True, "quantize_outputs": False}], ids=["default", "float-outputs", "smoothquant"])
def test_payload_shows_quantize_outputs_and_smoothquant(model, store, options):
    """quantize_outputs and smoothquant are read from the graph by the layout check: each build
    agrees with its own recipe, and a recipe stating the other value fails it, naming the key."""
    _, runner = built(model, store, options)
    layout = runner.layout()
    with selecting(model, options) as pathway:
        assert lc.layout_problems(layout, pathway.expected_recipe(model)) == []
    outputs, smoothed = options.get("quantize_outputs", True), options.get("smoothquant", False)
    assert any("quantize_outputs" in p for p in lc.layout_problems(layout, {"quantize_outputs": not outputs}))
    assert any("smoothquant" in p for p in lc.layout_problems(layout, {"smoothquant": not smoothed}))


def test_the_build_quantizes_the_cached_export_without_the_torch_module(checkpoints, tmp_path):
    """The INT8 build exports once into the store's cache (localization reads the same file) and
    drops the fp32 torch module while INC quantizes (INC reads only the export); the next use loads
    the same weights from the checkpoint. Counted, not timed: one export per model and cache."""
    model = HuggingFaceModel(checkpoints[0], **SMALL)
    before = {name: tensor.clone() for name, tensor in model.reference.state_dict().items()}
    exports = []
    export = model.export_onnx
    model.export_onnx = lambda *args, **kwargs: exports.append(args) or export(*args, **kwargs)
    store = ArtifactStore(tmp_path / "cache")
    for options in (DEFAULT, SMOOTH):  # two builds of one model: one export
        built(model, store, options)
        assert "reference" not in model.__dict__
    assert len(exports) == 1 and list((tmp_path / "cache" / "exports" / model.id).glob("*/model.fp32.onnx"))
    after = model.reference.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[name], before[name]) for name in before)
