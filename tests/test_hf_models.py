"""Your own Hugging Face checkpoint: three tiny checkpoints built with transformers (Llama, Qwen2,
BERT in the sentence-transformers layout) load through HuggingFaceModel; INC INT8 QDQ and the INC FP8
reference build and run on them; their metrics pass the thresholds in tests/hf_profile.toml; and a
per-tensor-weight-scale INT8 artifact of the Llama fails them, with its generations as evidence."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from harness.artifacts.manifest import load_artifact
from harness.core import Device
from harness.judge.gates import threshold_key
from harness.judge.thresholds import load_profile
from harness.measure.golden import MAX_BYTES, read_golden, write_golden
from harness.models.hf import CAUSAL_LM, ENCODER, HuggingFaceModel, model_from_source
from harness.pathways.base import get_pathway
from harness.pathways.inc_int8_qdq import PAYLOAD
from harness.run.store import ArtifactStore
from tests.hf_checkpoints import BUILDERS
from tests.planted_defects import per_tensor_weights, rewrite_artifact

pytest.importorskip("transformers")
PROFILE = Path(__file__).parent / "hf_profile.toml"
CPU = Device("cpu", "cpu")
SMALL = dict(eval_tokens=256, seq_len=64, new_tokens=8, generation_prompts=4)
PATHWAYS = ("inc-int8-qdq", "inc-fp8-ref")


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {name: build(root / f"test-{name}") for name, build in BUILDERS.items()}


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> ArtifactStore:
    return ArtifactStore(tmp_path_factory.mktemp("cache"))


# A random BERT ranks the labeled pairs by chance (Spearman 0.55 with the labels), so its
# relative task drop is noise (measured -2.7% INT8, +1.4% FP8): it declares the other two metrics.
METRICS = {"bert": ("row_cosine", "ranking_agreement")}


@pytest.fixture(scope="session")
def models(checkpoints) -> dict[str, HuggingFaceModel]:
    return {name: HuggingFaceModel(path, metrics=METRICS.get(name), **SMALL) for name, path in checkpoints.items()}


def evaluated(model, store, pathway_name, artifact=None):
    pathway = get_pathway(pathway_name)
    reason = pathway.unavailable(CPU) or pathway.build_unavailable()
    if reason:
        pytest.skip(reason)
    artifact = artifact or store.get(pathway, model)
    return model.evaluate(pathway.load(artifact, CPU, model))


def gate(model, pathway_name, reference, candidate) -> tuple[dict[str, float], list[str]]:
    """The measured task metrics and the thresholds they miss, judged as the accuracy suite judges
    them (a proportion on its passing-side bound, the labeled task on its paired table)."""
    from harness.run.session import case_threshold
    from suites.test_accuracy import judge_task_metrics

    profile = load_profile(str(PROFILE))
    task = model.task_metrics(reference, candidate)
    measured = {threshold_key(k): v for k, v in task.items()}
    # [pathway.model.<cpu class>] first, then [pathway.model], then the policy, as a run looks it up.
    thresholds = {k: case_threshold(profile, k, get_pathway(pathway_name), model, CPU) for k in measured}
    judged = judge_task_metrics(task, model.task_metric_samples(reference), {k: t.value for k, t in thresholds.items()}, model.evidence(reference, candidate)["statistics"])[0]
    misses = [f"{k} {v:.4g} vs {thresholds[k].describe()}" for k, v in measured.items() if not thresholds[k].passes(judged.get(k, v))]
    return measured, misses


@pytest.mark.parametrize("name, kind", [("llama", CAUSAL_LM), ("qwen2", CAUSAL_LM), ("bert", ENCODER)])
def test_checkpoint_loads_offline(models, name, kind):
    model = models[name]
    assert (model.kind, model.id) == (kind, f"test-{name}")
    reference = model.evaluate(model.run_reference)
    if kind == CAUSAL_LM:
        assert reference["logits"].shape == (4, 64, 384)
        assert reference["generated_ids"].shape == (4, 8)
        assert [b["input_ids"].shape for b in model.eval_batches()] == [(2, 64), (2, 64)]
        assert model.eval_inputs()["input_ids"][0, 0] == model.tokenizer.bos_token_id
    else:
        assert reference["embedding"].shape == (48, 64)
        np.testing.assert_allclose(np.linalg.norm(reference["embedding"], axis=1), 1.0, rtol=1e-5)  # Normalize declared
    # Evaluation and calibration data are different texts.
    calibration = np.concatenate([b["input_ids"].ravel() for b in model.calibration_inputs()])
    assert not np.array_equal(calibration[:64], model.eval_inputs()["input_ids"].ravel()[:64])


@pytest.mark.parametrize("pathway_name", PATHWAYS)
@pytest.mark.parametrize("name", ["llama", "qwen2", "bert"])
def test_artifacts_build_run_and_pass(models, store, name, pathway_name):
    model = models[name]
    reference = model.evaluate(model.run_reference)
    candidate = evaluated(model, store, pathway_name)
    measured, misses = gate(model, pathway_name, reference, candidate)
    print(name, pathway_name, {k: round(v, 4) for k, v in model.evidence(reference, candidate)["statistics"].items()})
    assert not misses, misses
    assert set(measured) == {threshold_key(k) for k in model.task_metric_names}


def test_per_tensor_weight_scales_fail_the_llama_gates(models, store, tmp_path):
    """Per-tensor int8 weight scales, set by the outlier rows, turn the Llama's text to garbage:
    perplexity, KL, top-1 and generation gates all fail; the generations show it."""
    model = models["llama"]
    clean = store.get(get_pathway("inc-int8-qdq"), model)
    target = tmp_path / "planted"
    shutil.copytree(clean.path, target)
    rewrite_artifact(clean, target, PAYLOAD, per_tensor_weights(onnx.load(str(target / PAYLOAD))), weight_granularity="per-tensor")
    reference = model.evaluate(model.run_reference)
    candidate = evaluated(model, store, "inc-int8-qdq", load_artifact(target))
    measured, misses = gate(model, "inc-int8-qdq", reference, candidate)
    evidence = model.evidence(reference, candidate)
    print({k: round(v, 4) for k, v in evidence["statistics"].items()})
    assert {"max_ppl_ratio_log", "max_kl_mean", "max_kl_p99", "min_top1_agreement", "min_generation_agreement"} <= {m.split()[0] for m in misses}, misses
    assert measured["max_kl_mean"] > 1.0 and measured["min_top1_agreement"] < 0.2
    generations = evidence["generations"]
    assert len(generations) == 4 and all(set(g) == {"prompt", "reference", "candidate"} for g in generations)
    assert all(g["reference"] != g["candidate"] for g in generations)


def test_golden_digest_is_bounded_for_an_8b_vocabulary(models, tmp_path):
    """512 evaluation tokens of a 128,256-token vocabulary (Llama 3 8B): the digest (top-8 ids and
    log-probabilities + generated ids) stays far under 5 MB, and compares at inf dB with itself."""
    model = models["llama"]
    logits = np.random.default_rng(0).standard_normal((2, 256, 128256), dtype=np.float32)
    outputs = {"logits": logits, "generated_ids": np.zeros((8, 16), dtype=np.int64)}
    digest = model.golden_digest(outputs)
    inputs = {"input_ids": np.zeros((2, 256), dtype=np.int64)}
    write_golden(tmp_path, digest, inputs, {})
    size = sum(p.stat().st_size for p in tmp_path.iterdir())
    print(f"golden for 512 tokens x 128256 vocabulary: {size} bytes")
    assert size <= MAX_BYTES and size < 64 * 1024
    golden = read_golden(tmp_path, inputs)
    assert model.golden_metrics(golden.outputs, outputs)["min_golden_sqnr_db"] > 60
    shifted = {"logits": logits + np.random.default_rng(1).normal(0, 0.3, logits.shape).astype(np.float32)}
    assert model.golden_metrics(golden.outputs, shifted)["min_golden_sqnr_db"] < 30


def test_onnx_file_source(models, checkpoints, store, tmp_path):
    """An fp32 ONNX file with its tokenizer beside it: the reference runs on ONNX Runtime and
    matches the checkpoint's; INT8 QDQ builds from the file; torch pathways skip with the reason."""
    llama = models["llama"]
    folder = tmp_path / "onnx-llama"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(checkpoints["llama"] / name, folder / name)
    llama.export_onnx(folder / "my-llama.onnx")
    model = model_from_source(str(folder / "my-llama.onnx"), **SMALL)
    assert (model.kind, model.id) == (CAUSAL_LM, "my-llama")
    np.testing.assert_allclose(model.run_reference(model.eval_batches()[0])["logits"], llama.run_reference(llama.eval_batches()[0])["logits"], atol=1e-4)
    assert "is an ONNX file" in model.unavailable_for(get_pathway("inc-fp8-ref"))
    assert model.unavailable_for(get_pathway("inc-int8-qdq")) is None
    reference = model.evaluate(model.run_reference)
    measured = model.task_metrics(reference, evaluated(model, store, "inc-int8-qdq"))
    assert measured["top1_agreement"] > 0.8 and measured["kl_mean"] < 0.1, measured


def test_model_sources_refuse_what_they_cannot_load(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    # The local guard raises ValueError, harness/artifacts/trust.py (when present) its own errors: both name the file.
    with pytest.raises(Exception, match="pytorch_model.bin.*safetensors|safetensors.*pytorch_model.bin"):
        model_from_source(str(tmp_path))
    with pytest.raises(ValueError, match="not a checkpoint directory"):
        model_from_source(str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="has no 'nothing'"):
        model_from_source("harness.models.minilm:nothing")


def test_suites_gate_a_checkpoint_and_show_generations(checkpoints, models, store, tmp_path, monkeypatch, run_suites):
    """End to end through the conformance suites: the clean Llama INT8 artifact passes accuracy and
    golden gates; its per-tensor twin (given with --artifacts) fails them, and summary.json carries
    the reference and candidate generations beside the numbers."""
    model = models["llama"]
    clean = store.get(get_pathway("inc-int8-qdq"), model)
    planted = tmp_path / "artifacts" / model.id / "inc-int8-qdq"
    shutil.copytree(clean.path, planted)
    rewrite_artifact(clean, planted, PAYLOAD, per_tensor_weights(onnx.load(str(planted / PAYLOAD))), weight_granularity="per-tensor")
    monkeypatch.setenv("QCONFORM_TEST_CHECKPOINTS", str(checkpoints["llama"]))
    # No --profile: a model without a calibrated table is gated by defaults.toml's policy thresholds.
    common = ("-p", "tests.hf_plugin", f"--models={model.id}", "--pathways=inc-int8-qdq", f"--golden-dir={tmp_path / 'golden'}", f"--qc-cache={store.cache_dir}", "-k", "cpu")
    suites = ("test_accuracy.py", "test_golden.py")
    run_suites(*common, "--regen-golden", suites=suites)
    passed = run_suites(*common, suites=suites)
    assert passed.returncode == 0, passed.output
    failed = run_suites(*common, f"--artifacts={tmp_path / 'artifacts'}", suites=suites)
    assert failed.returncode == 1, failed.output
    misses = {r["metric"] for r in failed.records(outcome="failed")}
    assert {"max_kl_mean", "min_top1_agreement", "min_generation_agreement", "min_golden_sqnr_db"} <= misses, failed.output
    [kl] = failed.records(metric="max_kl_mean")
    assert kl["statistics"]["kl_mean"] == kl["measured"] and len(kl["generations"]) == 4
    assert all(g["candidate"] != g["reference"] for g in kl["generations"])
