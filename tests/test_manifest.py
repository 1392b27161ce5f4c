"""Manifest validation: every way a manifest can be wrong is named in the error."""

import json

import pytest

from harness.artifacts import MANIFEST, ArtifactError, load_artifact, write_manifest

FIELDS = dict(
    pathway="inc-int8-qdq",
    model_id="tiny-llama",
    recipe={"weight_granularity": "per-channel"},
    source_weights_sha256="ab" * 32,
    tool_versions={"onnx": "1.0"},
    built_on={"kind": "cpu"},
)


@pytest.fixture
def artifact_dir(tmp_path):
    (tmp_path / "payload.bin").write_bytes(b"weights")
    write_manifest(tmp_path, **FIELDS)
    return tmp_path


def _edit(directory, change):
    manifest = json.loads((directory / MANIFEST).read_text())
    change(manifest)
    (directory / MANIFEST).write_text(json.dumps(manifest))


def test_round_trip(artifact_dir):
    artifact = load_artifact(artifact_dir, pathway="inc-int8-qdq", model_id="tiny-llama")
    assert artifact.recipe == FIELDS["recipe"]
    assert set(artifact.manifest["files"]) == {"payload.bin"}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("recipe"), "missing field(s) recipe"),
        (lambda m: m.update(extra=1), "unknown field(s) extra"),
        (lambda m: m.update(schema_version=99), "schema_version 99 is not supported"),
        (lambda m: m.update(recipe="per-channel"), "field 'recipe' must be dict"),
        (lambda m: m.update(files={}), "lists no payload files"),
        (lambda m: m["files"].update({"../escape": "0"}), "points outside the artifact"),
        (lambda m: m["files"].update({"gone.onnx": "0"}), "gone.onnx: listed in the manifest but missing"),
    ],
)
def test_bad_manifest_is_named(artifact_dir, change, message):
    _edit(artifact_dir, change)
    with pytest.raises(ArtifactError, match="manifest|gone.onnx|escape") as err:
        load_artifact(artifact_dir)
    assert message in str(err.value)


def test_wrong_pathway_and_model(artifact_dir):
    with pytest.raises(ArtifactError, match="built by pathway 'inc-int8-qdq', expected 'tensorrt'"):
        load_artifact(artifact_dir, pathway="tensorrt")
    with pytest.raises(ArtifactError, match="built for model 'tiny-llama', expected 'minilm-l6'"):
        load_artifact(artifact_dir, model_id="minilm-l6")


def test_not_json_and_missing(tmp_path, artifact_dir):
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="manifest missing"):
        load_artifact(tmp_path / "empty")
    (artifact_dir / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="manifest.json: not valid JSON"):
        load_artifact(artifact_dir)


def test_modified_and_unlisted_files(artifact_dir):
    (artifact_dir / "stray.txt").write_text("x")
    with pytest.raises(ArtifactError, match="not in the manifest: stray.txt"):
        load_artifact(artifact_dir)
    (artifact_dir / "stray.txt").unlink()
    (artifact_dir / "payload.bin").write_bytes(b"weightz")
    with pytest.raises(ArtifactError, match="payload.bin: sha256 mismatch"):
        load_artifact(artifact_dir)
