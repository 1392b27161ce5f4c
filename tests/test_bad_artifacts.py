"""A bad artifact gives a clear error naming the file and the problem, and never produces numbers."""

import json

import pytest

from harness.artifacts.errors import ArtifactError, ArtifactIdentityError
from harness.artifacts.manifest import MANIFEST, load_artifact, write_manifest
from harness.core import Device
from harness.models.base import get_model
from harness.pathways.base import get_pathway
from harness.pathways.inc_int8_qdq import PAYLOAD
from tests.planted_defects import rewrite_artifact

CASE = ("--pathways=inc-int8-qdq", "--models=tiny-llama")


def _assert_not_the_model(run, message):
    # The artifact loads but is another model's: the artifact_identity check fails (FAIL, exit 1),
    # naming the mismatch; every other check of the case skips referencing it; no numbers.
    assert run.returncode == 1 and run.summary["verdict"] == "FAIL", run.output[-3000:]
    records = run.records(model="tiny-llama", pathway="inc-int8-qdq", device="cpu")
    [identity] = [r for r in records if r["check"] == "artifact_identity"]
    assert identity["outcome"] == "failed" and message in identity["message"], identity
    assert all(r["outcome"] == "skipped" and message in r["message"] for r in records if r is not identity)
    assert not any(r.get("metric") not in (None, "artifact_identity") for r in records), "another model's artifact produced numbers"


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

    # Refused before any test, in one line: USAGE ERROR (exit 4).
    run = run_suites(f"--artifacts={target.parent.parent}", *CASE)
    assert run.returncode == 4 and run.summary["verdict"] == "USAGE ERROR" and not run.summary["records"], run.output[-3000:]
    assert "sha256 mismatch" in run.summary["line"] and "Traceback" not in run.output


def test_artifact_from_other_weights_is_rejected(llama_int8, user_artifacts, run_suites):
    target = user_artifacts(llama_int8)
    import onnx

    rewrite_artifact(llama_int8, target, PAYLOAD, onnx.load(str(target / PAYLOAD)))
    manifest = json.loads((target / MANIFEST).read_text())
    manifest["source_weights_sha256"] = "0" * 64
    (target / MANIFEST).write_text(json.dumps(manifest))

    run = run_suites(f"--artifacts={target.parent.parent}", *CASE, suites=("test_accuracy.py", "test_artifacts.py"))
    _assert_not_the_model(run, "built from other weights")


def test_payload_of_another_model_is_refused_by_name(llama_int8, minilm_int8, user_artifacts, run_suites):
    """minilm-l6's INT8 graph under a tiny-llama manifest whose hashes and weights digest are right."""
    from tests.planted_defects import reseal

    target = user_artifacts(llama_int8)
    for name in minilm_int8.manifest["files"]:  # the graph and its external weights
        (target / name).write_bytes(minilm_int8.file(name).read_bytes())
    reseal(target, llama_int8)

    with pytest.raises(ArtifactError, match=r"this artifact is not model tiny-llama: graph inputs \['attention_mask', 'input_ids'\] do not match"):
        get_pathway("inc-int8-qdq").load(load_artifact(target), Device("cpu", "cpu"), get_model("tiny-llama"))

    with pytest.raises(ArtifactIdentityError):
        get_pathway("inc-int8-qdq").load(load_artifact(target), Device("cpu", "cpu"), get_model("tiny-llama"))
    run = run_suites(f"--artifacts={target.parent.parent}", *CASE, suites=("test_accuracy.py", "test_artifacts.py"))
    _assert_not_the_model(run, "this artifact is not model tiny-llama: graph inputs")


def test_missing_artifact_under_user_dir(tmp_path, run_suites):
    (tmp_path / "empty").mkdir()
    run = run_suites(f"--artifacts={tmp_path / 'empty'}", *CASE)
    _assert_no_numbers(run, "no inc-int8-qdq artifact for model tiny-llama")
