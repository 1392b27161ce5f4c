"""Model kinds are objects (harness/models/kinds.py): the built-in causal LM and encoder are found
from config.json, and a third kind is one module plus its data. tests/toy_kind.py adds a sequence
classifier (any *ForSequenceClassification checkpoint); a tiny BertForSequenceClassification is
detected as one, evaluated through the kind interface, and gated end to end by
`qconform run --model DIR --pathways inc-int8-qdq -k accuracy` with a profile table for it. Its
`max_label_flips` proportion is judged on its Wilson upper bound. GPT-2's Conv1D weight layers are
weight layers (ModelSpec.weight_layer_types), oriented (out, in)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.models.kinds import KINDS, ModelKind, get_kind, kind_for_config, unregister_kind
from tests.conftest import REPO

pytest.importorskip("transformers")
PROFILE = Path(__file__).parent / "toy_kind_profile.toml"


@pytest.fixture
def toy_kind():
    from tests import toy_kind

    toy_kind.register()
    yield toy_kind.SequenceClassifier
    unregister_kind(toy_kind.SequenceClassifier.name)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    from tests.hf_checkpoints import build_bert_classifier

    return build_bert_classifier(tmp_path_factory.mktemp("kinds") / "toy-classifier")


def test_builtin_kinds_from_config_json():
    assert {"causal-lm", "encoder"} <= set(KINDS)
    assert kind_for_config({"architectures": ["Qwen2ForCausalLM"]}).name == "causal-lm"
    assert kind_for_config({"architectures": ["GPT2LMHeadModel"]}).name == "causal-lm"
    assert kind_for_config({"architectures": ["BertModel"]}).name == "encoder"
    assert kind_for_config({}).name == "encoder"  # the fallback
    assert get_kind("causal-lm").default_metrics == ("ppl_ratio_log", "kl_mean", "kl_p99", "top1_agreement", "generation_agreement", "task_recovery", "task_flip_rate")
    with pytest.raises(KeyError, match="unknown model kind 'image'"):
        get_kind("image")


def test_hf_model_holds_no_kind_branches():
    source = (REPO / "harness" / "models" / "hf.py").read_text()
    assert "self.kind ==" not in source and "self.kind !=" not in source


def test_a_toy_kind_is_detected_and_evaluated_through_the_kind_interface(toy_kind, classifier_dir):
    from harness.models.hf import HuggingFaceModel

    assert kind_for_config(json.loads((classifier_dir / "config.json").read_text())) is toy_kind
    model = HuggingFaceModel(classifier_dir, seq_len=32)
    assert isinstance(model.model_kind, toy_kind) and isinstance(model.model_kind, ModelKind)
    assert (model.kind, model.id, model.task_metric_names, model.output_names) == ("sequence-classifier", "toy-classifier", ("label_agreement", "label_flips"), ("logits",))
    model.validate()
    reference = model.evaluate(model.run_reference)
    assert reference["logits"].shape == (24, 2)
    noisy = {"logits": reference["logits"] + np.random.default_rng(0).normal(0, 0.05, reference["logits"].shape).astype(np.float32)}
    measured = model.task_metrics(reference, noisy)
    assert measured["label_agreement"] + measured["label_flips"] == pytest.approx(1.0)
    assert model.task_metrics(reference, reference) == {"label_agreement": 1.0, "label_flips": 0.0}
    assert model.task_metric_samples(reference) == {"label_agreement": 24, "label_flips": 24}
    assert set(model.evidence(reference, noisy)["statistics"]) >= {"label_accuracy_reference", "label_accuracy_candidate"}
    golden = model.golden_digest(reference)
    assert model.golden_metrics(golden, reference)["min_golden_sqnr_db"] == float("inf")
    assert "classifier" in {name.rsplit(".", 1)[-1] for name in model.weight_layer_names()}


def test_init_text_comes_from_the_kind(toy_kind, classifier_dir, tmp_path):
    from harness.project_init import init_project

    text = init_project(classifier_dir, tmp_path / "qconform.toml")
    assert "# Gated metrics (sequence classifier)" in text and 'metrics = ["label_agreement", "label_flips"]' in text
    assert '# eval_labeled = "data/labeled_sentences.jsonl"' in text and "eval_prompts" not in text and "eval_pairs" not in text


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_a_toy_kind_is_gated_end_to_end(classifier_dir, tmp_path):
    """`qconform run --model DIR` with the kind's module as a plugin: built, gated, PASS. Its
    `max_` proportion (the flip rate over 24 sentences) is judged on its one-sided lower bound: the
    same artifact under a budget between that bound and the measured rate passes (over budget, not
    significantly at n = 24), and under a budget below the bound fails."""
    common = (f"--model={classifier_dir}", "--pathways=inc-int8-qdq", "-k", "accuracy", "-p", "tests.toy_kind", f"--qc-cache={tmp_path / 'cache'}", "-p", "no:cacheprovider")
    passed = _run(tmp_path, *common, f"--profile={PROFILE}", f"--report-dir={tmp_path / 'pass'}")
    summary = json.loads((tmp_path / "pass" / "summary.json").read_text())
    assert passed.returncode == 0 and summary["verdict"] == "PASS", passed.stdout[-3000:] + passed.stderr[-2000:]
    records = {r["metric"]: r for r in summary["records"] if r.get("metric") and r["model"] == "toy-classifier"}
    assert {"min_sqnr_db", "min_cosine", "min_layer_activation_sqnr_db", "min_label_agreement", "max_label_flips"} <= set(records)
    flips = records["max_label_flips"]
    assert flips["source"] == "toy_kind_profile.toml [inc-int8-qdq.toy-classifier]"
    test = flips["proportion_tests"]["max_label_flips"]
    assert test["bound"] == "lower" and flips["proportion_tests"]["min_label_agreement"]["bound"] == "upper"
    assert "label_flips" in flips["message"] and "one-sided 95% lower bound" in flips["message"]
    measured, lower = flips["measured"], test["judged"]
    assert 0 < lower < measured, "the toy's INT8 artifact flips some labels (tests/toy_kind.py)"

    def with_budget(budget: float, name: str) -> tuple[int, dict]:
        profile = tmp_path / f"{name}.toml"
        profile.write_text(PROFILE.read_text().replace("max_label_flips = 0.30", f"max_label_flips = {budget:.6f}"))
        run = _run(tmp_path, *common, f"--profile={profile}", f"--report-dir={tmp_path / name}")
        [record] = [r for r in json.loads((tmp_path / name / "summary.json").read_text())["records"] if r.get("metric") == "max_label_flips"]
        return run.returncode, record

    code, record = with_budget((lower + measured) / 2, "not-significant")
    assert code == 0 and record["outcome"] == "passed" and record["measured"] > record["threshold"]
    code, record = with_budget(lower / 2, "significant")
    assert code == 1 and record["outcome"] == "failed"


def test_gpt2_conv1d_layers_are_weight_layers_oriented_out_in(tmp_path):
    """GPT-2 keeps its weights in transformers' Conv1D, stored (in, out): they are weight layers,
    with shapes and reference weights oriented (out, in) as a Linear's, so the identity check of its
    own fp32 ONNX export passes."""
    import onnx
    from transformers.pytorch_utils import Conv1D

    from harness.artifacts.identity import check_onnx_matches
    from harness.models.hf import HuggingFaceModel
    from tests.hf_checkpoints import build_gpt2

    model = HuggingFaceModel(build_gpt2(tmp_path / "gpt2"), eval_tokens=128, seq_len=64)
    modules = dict(model.reference.named_modules())
    shapes = model.weight_layer_shapes()
    conv = [name for name in shapes if isinstance(modules[name], Conv1D)]
    assert len(conv) == 8 and "model.lm_head" in shapes  # 4 Conv1D per block, and the Linear head
    fc = "model.transformer.h.0.mlp.c_fc"
    assert tuple(modules[fc].weight.shape) == (64, 256) and shapes[fc] == (256, 64)
    np.testing.assert_array_equal(model.reference_weight(fc), modules[fc].weight.detach().numpy().T)
    check_onnx_matches(onnx.load(str(model.export_onnx(tmp_path / "gpt2.onnx"))), model)
