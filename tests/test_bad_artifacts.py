"""A bad artifact gives a clear error naming the file and the problem, and never produces numbers."""

import json

import pytest

from harness.artifacts import MANIFEST, ArtifactError, load_artifact, write_manifest
from harness.core import Device
from harness.models.base import get_model
from harness.pathways.base import get_pathway
from harness.pathways.inc_int8_qdq import PAYLOAD
from tests.planted_defects import rewrite_artifact

CASE = ("--pathways=inc-int8-qdq", "--models=tiny-llama")


def _assert_no_numbers(run, message):
    # The case cannot be loaded: every test of it errors in setup, so the verdict is ERROR (exit 3).
    assert run.returncode == 3 and run.summary["verdict"] == "ERROR", run.output
    records = run.records(model="tiny-llama", pathway="inc-int8-qdq", device="cpu")
    assert records and all(r["outcome"] == "error" for r in records)
    assert not any("measured" in r for r in records), "a bad artifact produced numbers"
    assert all(message in r["message"] for r in records), [r["message"] for r in records]


def test_truncated_onnx_is_rejected_before_running(llama_int8, user_artifacts, run_suites):
    target = user_artifacts(llama_int8)
    data = (target / PAYLOAD).read_bytes()
    (target / PAYLOAD).write_bytes(data[: len(data) // 2])
    rewrite_manifest = json.loads((target / MANIFEST).read_text())
    write_manifest(target, **{k: rewrite_manifest[k] for k in ("pathway", "model_id", "recipe", "source_weights_sha256", "tool_versions", "built_on")})

    with pytest.raises(ArtifactError, match=rf"{PAYLOAD}: not a valid ONNX model"):
        get_pathway("inc-int8-qdq").load(load_artifact(target), Device("cpu", "cpu"), get_model("tiny-llama"))

    run = run_suites(f"--artifacts={target.parent.parent}", *CASE, suites=("test_accuracy.py", "test_artifacts.py"))
    _assert_no_numbers(run, "not a valid ONNX model")


def test_hash_mismatch_is_rejected(llama_int8, user_artifacts, run_suites):
    target = user_artifacts(llama_int8)
    data = bytearray((target / PAYLOAD).read_bytes())
    data[-100] ^= 0xFF  # one flipped byte in the weights
    (target / PAYLOAD).write_bytes(bytes(data))

    with pytest.raises(ArtifactError, match=rf"{PAYLOAD}: sha256 mismatch"):
        load_artifact(target)

    run = run_suites(f"--artifacts={target.parent.parent}", *CASE)
    _assert_no_numbers(run, "sha256 mismatch")


def test_artifact_from_other_weights_is_rejected(llama_int8, user_artifacts, run_suites):
    target = user_artifacts(llama_int8)
    import onnx

    rewrite_artifact(llama_int8, target, PAYLOAD, onnx.load(str(target / PAYLOAD)))
    manifest = json.loads((target / MANIFEST).read_text())
    manifest["source_weights_sha256"] = "0" * 64
    (target / MANIFEST).write_text(json.dumps(manifest))

    run = run_suites(f"--artifacts={target.parent.parent}", *CASE)
    _assert_no_numbers(run, "built from other weights")


def test_payload_of_another_model_is_refused_by_name(llama_int8, minilm_int8, user_artifacts, run_suites):
    """minilm-l6's INT8 graph under a tiny-llama manifest whose hashes and weights digest are right."""
    from tests.planted_defects import reseal

    target = user_artifacts(llama_int8)
    for name in minilm_int8.manifest["files"]:  # the graph and its external weights
        (target / name).write_bytes(minilm_int8.file(name).read_bytes())
    reseal(target, llama_int8)

    with pytest.raises(ArtifactError, match=r"this artifact is not model tiny-llama: graph inputs \['attention_mask', 'input_ids'\] do not match"):
        get_pathway("inc-int8-qdq").load(load_artifact(target), Device("cpu", "cpu"), get_model("tiny-llama"))

    run = run_suites(f"--artifacts={target.parent.parent}", *CASE)
    _assert_no_numbers(run, "this artifact is not model tiny-llama: graph inputs")


def test_missing_artifact_under_user_dir(tmp_path, run_suites):
    (tmp_path / "empty").mkdir()
    run = run_suites(f"--artifacts={tmp_path / 'empty'}", *CASE)
    _assert_no_numbers(run, "no inc-int8-qdq artifact for model tiny-llama")
