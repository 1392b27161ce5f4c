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
    assert get_kind("causal-lm").default_metrics == ("ppl_ratio_log", "kl_mean", "kl_p99", "top1_agreement", "generation_agreement")
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
    """`qconform run --model DIR` with the kind's module as a plugin: built, gated, PASS; the same
    artifact under a flip budget its Wilson upper bound exceeds FAILs, though the measured flip rate
    and its lower bound are both within it (a `max_` proportion is judged on its upper bound)."""
    common = (f"--model={classifier_dir}", "--pathways=inc-int8-qdq", "-k", "accuracy", "-p", "tests.toy_kind", f"--qc-cache={tmp_path / 'cache'}", "-p", "no:cacheprovider")
    passed = _run(tmp_path, *common, f"--profile={PROFILE}", f"--report-dir={tmp_path / 'pass'}")
    summary = json.loads((tmp_path / "pass" / "summary.json").read_text())
    assert passed.returncode == 0 and summary["verdict"] == "PASS", passed.stdout[-3000:] + passed.stderr[-2000:]
    records = {r["metric"]: r for r in summary["records"] if r.get("metric") and r["model"] == "toy-classifier"}
    assert {"min_sqnr_db", "min_cosine", "min_layer_activation_sqnr_db", "min_label_agreement", "max_label_flips"} <= set(records)
    flips = records["max_label_flips"]
    assert flips["source"] == "toy_kind_profile.toml [inc-int8-qdq.toy-classifier]"
    upper = flips["judged_on_upper_bound"]["max_label_flips"]
    assert upper > flips["measured"] and "label_flips judged on its 95% upper bound" in flips["message"]
    assert flips["judged_on_lower_bound"]["min_label_agreement"] < records["min_label_agreement"]["measured"]

    # The same artifact (cached) under a budget of 0.10 flips: no more than 2 of 24 flip, so the
    # measured rate (<= 0.083) is within it, but 0 flips of 24 already has an upper bound of 0.138.
    strict = tmp_path / "strict.toml"
    strict.write_text(PROFILE.read_text().replace("max_label_flips = 0.30", "max_label_flips = 0.10"))
    failed = _run(tmp_path, *common, f"--profile={strict}", f"--report-dir={tmp_path / 'fail'}")
    summary = json.loads((tmp_path / "fail" / "summary.json").read_text())
    assert failed.returncode == 1 and summary["verdict"] == "FAIL", failed.stdout[-3000:]
    [flips] = [r for r in summary["records"] if r.get("metric") == "max_label_flips"]
    assert flips["outcome"] == "failed" and flips["measured"] <= 0.10 < flips["judged_on_upper_bound"]["max_label_flips"]


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
