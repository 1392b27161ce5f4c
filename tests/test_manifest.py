"""Manifest validation: every way a manifest can be wrong is named in the error."""

import json

import pytest

from harness.artifacts.errors import ArtifactError
from harness.artifacts.manifest import MANIFEST, load_artifact, write_manifest

FIELDS = dict(
    pathway="inc-int8-qdq",
    model_id="tiny-llama",
    recipe={"weight_dtype": "int8", "weight_granularity": "per-channel"},  # the minimal int8 QDQ recipe
    source_weights_sha256="ab" * 32,
    tool_versions={"onnx": "1.0"},
    built_on={"kind": "cpu"},
)


@pytest.fixture
def artifact_dir(tmp_path):
    (tmp_path / "model.qdq.onnx").write_bytes(b"weights")  # the payload name inc-int8-qdq needs
    write_manifest(tmp_path, **FIELDS)
    return tmp_path


def _edit(directory, change):
    manifest = json.loads((directory / MANIFEST).read_text())
    change(manifest)
    (directory / MANIFEST).write_text(json.dumps(manifest))


def test_round_trip(artifact_dir):
    artifact = load_artifact(artifact_dir, pathway="inc-int8-qdq", model_id="tiny-llama")
    assert artifact.recipe == FIELDS["recipe"]
    assert set(artifact.manifest["files"]) == {"model.qdq.onnx"}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("recipe"), "manifest.json: 'recipe' is a required property"),
        (lambda m: m.update(extra=1), "Additional properties are not allowed ('extra' was unexpected)"),
        (lambda m: m.update(schema_version=99), "schema_version 99 is not supported"),
        (lambda m: m.update(recipe="per-channel"), "manifest.json: recipe: 'per-channel' is not of type 'object'"),
        (lambda m: m.update(files={}), "manifest.json: files: {} should be non-empty"),
        (lambda m: m["recipe"].update(weight_dtype="int9"), "manifest.json: recipe.weight_dtype: 'int9' is not one of ['int8', 'uint8']"),
        (lambda m: m["recipe"].pop("weight_dtype"), "manifest.json: recipe: 'weight_dtype' is a required property"),
        (lambda m: m.update(source_weights_sha256="abc"), "manifest.json: source_weights_sha256: 'abc' does not match"),
        (lambda m: m["files"].update({"model.qdq.onnx": 7}), "manifest.json: files.model.qdq.onnx: 7 is not of type 'string'"),
        (lambda m: m.update(files={"model.onnx": "0" * 64}), "manifest.json: files: 'model.qdq.onnx' is a required property"),
        (lambda m: m["files"].update({"../escape": "0" * 64}), "points outside the artifact"),
        (lambda m: m["files"].update({"gone.onnx": "0" * 64}), "gone.onnx: listed in the manifest but missing"),
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
    (artifact_dir / "model.qdq.onnx").write_bytes(b"weightz")
    with pytest.raises(ArtifactError, match="model.qdq.onnx: sha256 mismatch"):
        load_artifact(artifact_dir)


def test_every_pathway_example_in_the_contract_validates():
    from harness.schema import manifest_problems, manifest_schema

    examples = manifest_schema()["examples"]
    assert {e["pathway"] for e in examples} >= {"inc-int8-qdq", "inc-fp8-ref", "torchao-fp8-rowwise", "tensorrt"}
    for example in examples:
        assert manifest_problems(example) == [], example["pathway"]


def test_docs_are_generated_from_the_schema():
    from pathlib import Path

    from harness.schema import render_markdown

    doc = Path(__file__).resolve().parent.parent / "docs" / "artifacts.md"
    assert doc.read_text() == render_markdown(), "docs/artifacts.md is stale: python -m harness.schema > docs/artifacts.md"


def test_missing_recipe_key_is_named(artifact_dir):
    artifact = load_artifact(artifact_dir)
    with pytest.raises(ArtifactError, match="manifest.json: recipe has no 'activation_dtype', which the test needs"):
        artifact.recipe_value("activation_dtype", "the test")


def test_built_in_recipes_follow_the_contract():
    from harness.models.base import get_model
    from harness.pathways.base import all_pathways
    from harness.schema import manifest_problems

    model = get_model("tiny-llama")
    for pathway in all_pathways():
        manifest = {"schema_version": 1, "pathway": pathway.name, "model_id": model.id, "recipe": pathway.recipe(model),
                    "files": dict.fromkeys(("model.qdq.onnx", "model.engine", "model.pt", "measure_hooks_maxabs.json"), "0" * 64), "source_weights_sha256": "0" * 64, "tool_versions": {}, "built_on": {"kind": "cpu"}}
        assert manifest_problems(manifest) == [], pathway.name
