"""Artifact directories: a payload plus manifest.json, written atomically and validated on load.

A bad artifact must never produce numbers, so `load_artifact` checks the schema, the pathway and
the sha256 of every file before anyone reads the payload, and names the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.artifacts.errors import ArtifactError, ArtifactIdentityError
from harness.schema import manifest_problems

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"

@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: dict[str, Any]

    @property
    def pathway(self) -> str:
        return self.manifest["pathway"]

    @property
    def model_id(self) -> str:
        return self.manifest["model_id"]

    @property
    def recipe(self) -> dict[str, Any]:
        return self.manifest["recipe"]

    def recipe_value(self, key: str, needed_by: str) -> Any:
        """A recipe entry a check needs; a recipe without it is a named error, not a KeyError."""
        if key not in self.recipe:
            raise ArtifactError(f"{self.path / MANIFEST}: recipe has no {key!r}, which {needed_by} needs")
        return self.recipe[key]

    def file(self, name: str) -> Path:
        if name not in self.manifest["files"]:
            raise ArtifactError(f"{self.path / MANIFEST}: no file {name!r} listed in the manifest")
        return self.path / name

    @property
    def digest(self) -> str:
        """One hash for the whole artifact: the manifest's file hashes and recipe."""
        body = json.dumps({k: self.manifest[k] for k in ("files", "recipe", "pathway", "model_id")}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write then rename, so an interrupted run never leaves half a file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; these files are shared and committed
    os.replace(tmp, path)


def _payload_files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(
    directory: Path,
    *,
    pathway: str,
    model_id: str,
    recipe: dict[str, Any],
    source_weights_sha256: str,
    tool_versions: dict[str, str],
    built_on: dict[str, Any],
) -> Artifact:
    """Hash every payload file in `directory` and write its manifest."""
    directory = Path(directory)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "pathway": pathway,
        "model_id": model_id,
        "recipe": recipe,
        "files": {name: sha256_file(directory / name) for name in _payload_files(directory)},
        "source_weights_sha256": source_weights_sha256,
        "tool_versions": tool_versions,
        "built_on": built_on,
    }
    write_json_atomic(directory / MANIFEST, manifest)
    return Artifact(directory, manifest)


def load_artifact(directory: Path | str, *, pathway: str | None = None, model_id: str | None = None) -> Artifact:
    """Validate an artifact directory completely; raise ArtifactError naming the file and problem."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: artifact directory does not exist")
    if not manifest_path.is_file():
        raise ArtifactError(f"{manifest_path}: manifest missing (not a qconform artifact)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{manifest_path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{manifest_path}: top level must be an object, got {type(manifest).__name__}")

    version = manifest.get("schema_version")
    if isinstance(version, int) and version != SCHEMA_VERSION:  # a newer contract: say so, not its field errors
        raise ArtifactError(f"{manifest_path}: schema_version {version} is not supported (expected {SCHEMA_VERSION})")
    problems = manifest_problems(manifest)  # the contract: harness/schema/manifest-v1.json
    if problems:
        raise ArtifactError(f"{manifest_path}: " + "; ".join(problems))
    if pathway is not None and manifest["pathway"] != pathway:
        raise ArtifactError(f"{manifest_path}: built by pathway {manifest['pathway']!r}, expected {pathway!r}")
    if model_id is not None and manifest["model_id"] != model_id:
        raise ArtifactIdentityError(f"{manifest_path}: built for model {manifest['model_id']!r}, expected {model_id!r}")
    for name, expected in manifest["files"].items():
        path = directory / name
        if not path.resolve().is_relative_to(directory.resolve()):
            raise ArtifactError(f"{manifest_path}: file {name!r} points outside the artifact")
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in the manifest but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(f"{path}: sha256 mismatch (manifest {expected[:12]}…, file {actual[:12]}…): modified or corrupted")
    unlisted = sorted(set(_payload_files(directory)) - set(manifest["files"]))
    if unlisted:
        raise ArtifactError(f"{directory}: file(s) not in the manifest: {', '.join(unlisted)}")
    for name in manifest["files"]:
        if name.endswith(".onnx"):
            _check_external_data(directory, name, manifest["files"])
    return Artifact(directory, manifest)


def _check_external_data(directory: Path, name: str, listed: dict[str, str]) -> None:
    """Every external data file an ONNX payload references is a file of the artifact, listed (and so
    hashed) in the manifest: a graph whose weights were left behind is named here, not by a loader."""
    from harness.artifacts.trust import onnx_external_data

    try:
        locations = onnx_external_data(directory / name)
    except ArtifactError:
        return  # an unparsable graph is the pathway loader's finding (it does not load)
    base = Path(name).parent
    for tensor, location in locations.items():
        member = os.path.normpath(base / location)
        if member not in listed:
            where = "missing from the artifact" if not (directory / member).is_file() else "not listed in the manifest"
            raise ArtifactError(f"{directory / name}: tensor {tensor!r} stores its data in {location!r}, which is {where}")


def publish(staging: Path, final: Path) -> Path:
    """Move a fully built staging directory into place; an existing complete artifact wins."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staging, final)
    except OSError:
        # Another worker published first (target is a non-empty dir): keep theirs.
        shutil.rmtree(staging, ignore_errors=True)
    return final


def default_cache_dir() -> Path:
    return Path(os.environ.get("QCONFORM_CACHE") or Path.home() / ".cache" / "qconform")


def cache_key(*, pathway: str, model_id: str, source_weights_sha256: str, recipe: dict, tool_versions: dict) -> str:
    body = json.dumps(
        {
            "pathway": pathway,
            "model_id": model_id,
            "weights": source_weights_sha256,
            "recipe": recipe,
            "tools": tool_versions,
            "schema": SCHEMA_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()
