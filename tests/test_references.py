"""References in the precision a candidate is made from, cached on disk (harness/run/references.py),
the precision floor beside them, and MLPerf's TEST01 check of a timed path (harness/measure/timing.py):
on CPU, with a checkpoint transformers built from a config and trained briefly (tests/arch_matrix.py)."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch

from harness.core import FP32_CPU, Precision
from harness.measure.timing import first_disagreement, timed_path_check
from harness.models.hf import HuggingFaceModel
from harness.run.references import ReferenceStore, fp32_floor_precision, load_beside
from tests.arch_matrix import checkpoint

BF16_CPU = Precision("bfloat16", "cpu")  # the GPU pathways' bf16 reference, exercised on the CPU


@pytest.fixture(scope="module")
def llama_dir():
    return checkpoint("llama")


def _model(path, **options) -> HuggingFaceModel:
    return HuggingFaceModel(path, **{"eval_tokens": 128, "seq_len": 64, "batch_size": 2, "new_tokens": 4, "generation_prompts": 2, **options})


def test_second_run_reads_the_cached_reference(llama_dir, tmp_path):
    first = ReferenceStore(tmp_path)
    outputs = first.outputs(_model(llama_dir), FP32_CPU)
    assert first.computed == [(_model(llama_dir).id, FP32_CPU)]
    again = ReferenceStore(tmp_path)  # a new run: a fresh store and a fresh model object
    cached = again.outputs(_model(llama_dir), FP32_CPU)
    assert again.computed == [], "the second run ran the model again"
    assert set(cached) == set(outputs) and all(np.array_equal(cached[k], outputs[k]) for k in outputs)


def test_a_changed_data_file_or_precision_computes_it_again(llama_dir, tmp_path):
    store = ReferenceStore(tmp_path)
    model = _model(llama_dir)
    store.outputs(model, FP32_CPU)
    prompts = tmp_path / "prompts.jsonl"
    shutil.copy(model.data["eval_prompts"], prompts)
    prompts.write_text(prompts.read_text().replace("The", "A", 1))
    rerun = ReferenceStore(tmp_path)
    rerun.outputs(_model(llama_dir, eval_prompts=prompts), FP32_CPU)
    rerun.outputs(_model(llama_dir), BF16_CPU)
    rerun.outputs(_model(llama_dir), FP32_CPU)  # unchanged: read back
    assert rerun.computed == [(model.id, FP32_CPU), (model.id, BF16_CPU)]
    assert len(list((tmp_path / "references" / model.id).glob("*.npz"))) == 3


def test_bf16_reference_loads_from_the_files_and_its_floor_is_small_but_not_zero(llama_dir, tmp_path):
    model = _model(llama_dir)
    module = model.load_module(BF16_CPU)
    assert {p.dtype for p in module.parameters()} == {torch.bfloat16}
    assert "reference" not in model.__dict__, "loading bf16 built the fp32 reference first"
    store = ReferenceStore(tmp_path)
    assert fp32_floor_precision(model, "cpu", None, 2**30) == FP32_CPU  # a small model fits a 1 GiB budget
    assert "fit neither" in fp32_floor_precision(model, "cpu", None, 2**10)
    floor = model.floor_metrics(store.outputs(model, FP32_CPU), store.outputs(model, BF16_CPU))
    assert 0 < floor["kl_mean"] < 0.05 and floor["top1_agreement"] > 0.9, floor


def test_weights_come_from_the_checkpoint_without_the_fp32_model(llama_dir):
    model = _model(llama_dir)
    name = next(iter(model.weight_layer_shapes()))
    from_files = model.reference_weight(name)
    assert "reference" not in model.__dict__, "a weight or a shape needed the whole fp32 model"
    assert np.array_equal(from_files, _model(llama_dir).reference.get_submodule(name).weight.detach().numpy())


def test_test01_accepts_the_timed_path_of_the_same_model_and_catches_another(llama_dir):
    model = _model(llama_dir, new_tokens=8, generation_prompts=4)
    module = model.reference
    expected = model.model_kind.greedy_generate(lambda inputs: model.run_module(module, inputs))
    prompts = model.model_kind.prompt_ids
    assert first_disagreement(module.model, prompts, expected, "cpu") is None
    top1 = model.model_kind.forced_top1(lambda inputs: model.run_module(module, inputs), expected)
    assert timed_path_check(module.model, prompts, expected, "cpu", expected, top1)[0]
    other = copy.deepcopy(module.model)  # planted: the timed path is not the accuracy run's model
    with torch.no_grad():
        other.model.layers[0].mlp.down_proj.weight.mul_(4.0)
        other.lm_head.weight.mul_(-1.0)
    found = first_disagreement(other, prompts, expected, "cpu")
    assert found is not None and "the timed path chose" in found and "near-tie" in found, found
    agrees, note = timed_path_check(other, prompts, expected, "cpu", expected, top1)  # MLPerf's fallback fails it too
    assert not agrees and "more than 1% below" in note, note


def test_a_reference_loaded_beside_the_candidate_holds_what_they_share_once(llama_dir):
    """load_beside: the candidate's unchanged tensors (here the embedding and norms) become the
    reference's, one it changed (a norm scaled) keeps its own values, and the candidate's outputs are
    bit-identical before and after; a load that fails leaves the candidate as it was."""
    model = _model(llama_dir)
    candidate = model.load_module(BF16_CPU)
    with torch.no_grad():
        candidate.model.model.norm.weight.mul_(1.5)  # what a quantizer might change
    batch = model.eval_batches()[0]
    before = model.run_module(candidate, batch, "cpu")["logits"]
    reference = load_beside(candidate, lambda: model.load_module(BF16_CPU))
    shared = {name for name, p in candidate.named_parameters() if any(p is q for q in reference.parameters())}
    assert "model.model.embed_tokens.weight" in shared and "model.model.layers.0.input_layernorm.weight" in shared
    assert "model.model.norm.weight" not in shared
    assert torch.equal(candidate.model.model.norm.weight, reference.model.model.norm.weight * 1.5)
    assert np.array_equal(model.run_module(candidate, batch, "cpu")["logits"], before)

    def failing():
        raise RuntimeError("out of memory")

    kept = {name: p.detach().clone() for name, p in candidate.named_parameters()}
    with pytest.raises(RuntimeError):
        load_beside(candidate, failing)
    assert all(torch.equal(kept[name], p) for name, p in candidate.named_parameters())
