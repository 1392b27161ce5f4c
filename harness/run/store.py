"""Where artifacts come from: the user's directory (`--artifacts DIR`), or the build cache, which
builds the embedded defaults on first use and keys them by weights, recipe and tool versions."""

from __future__ import annotations

import functools
import hashlib
import inspect
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from harness.artifacts.errors import ArtifactError, ArtifactIdentityError
from harness.artifacts.manifest import Artifact, cache_key, default_cache_dir, load_artifact, publish
from harness.measure.localize import BUILD_CACHE
from harness.models.base import ModelSpec
from harness.pathways.base import Pathway
from harness.run.references import release_memory

STALE_BUILD_S = 3 * 3600


@functools.cache
def build_code_digest(pathway: Pathway) -> str:
    """sha256 (16 hex digits) of the code an artifact is built with: the pathway's module and the
    model export code (harness/models/, harness/artifacts/). A fix there rebuilds cached artifacts,
    which the tool versions alone would keep serving."""
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent.parent
    sources = [Path(inspect.getfile(type(pathway))), *sorted((here / "models").glob("*.py")), *sorted((here / "artifacts").glob("*.py"))]
    for source in sources:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ArtifactStore:
    def __init__(self, cache_dir: Path | None = None, user_dir: Path | None = None, log: Callable[[str], None] = _stderr):
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.user_dir = Path(user_dir) if user_dir else None
        self.log = log
        self._user_artifacts: dict[Path, Artifact] = {}

    def path_for(self, pathway: Pathway, model: ModelSpec) -> Path:
        if self.user_dir:
            return self.user_dir / model.id / pathway.name
        key = cache_key(
            pathway=pathway.name,
            model_id=model.id,
            source_weights_sha256=model.weights_sha256,
            recipe=pathway.recipe(model),
            tool_versions={**pathway.tool_versions(), "qconform build code": build_code_digest(pathway)},
        )
        return self.cache_dir / "artifacts" / model.id / pathway.name / key[:16]

    def user_artifact(self, pathway: Pathway, model: ModelSpec) -> Artifact | None:
        """The pair's artifact under --artifacts, validated once per session (manifest, every file's
        sha256, ONNX external data), or None when the directory holds none for it. Raises
        ArtifactIdentityError when its manifest names another model; `get` checks the weights."""
        path = self.path_for(pathway, model)
        if path not in self._user_artifacts:
            if not path.exists():
                return None
            self._user_artifacts[path] = load_artifact(path, pathway=pathway.name, model_id=model.id)
        return self._user_artifacts[path]

    def get(self, pathway: Pathway, model: ModelSpec) -> Artifact:
        path = self.path_for(pathway, model)
        if self.user_dir:
            artifact = self.user_artifact(pathway, model)
            if artifact is None:
                raise ArtifactError(f"{path}: no {pathway.name} artifact for model {model.id} under --artifacts")
            return self._check_source(artifact, model)
        if path.exists():
            try:
                return self._check_source(load_artifact(path, pathway=pathway.name, model_id=model.id), model)
            except ArtifactError as exc:
                # A damaged cache entry is rebuilt, loudly; a user's artifact never is.
                self.log(f"qconform: cached artifact is invalid, rebuilding: {exc}")
                shutil.rmtree(path, ignore_errors=True)
        return self.build(pathway, model, path)

    def build(self, pathway: Pathway, model: ModelSpec, path: Path) -> Artifact:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(".build-*"):
            # Left by a killed run; a live concurrent build is younger than any build takes.
            if time.time() - stale.stat().st_mtime > STALE_BUILD_S:
                shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=".build-"))
        self.log(f"qconform: building {pathway.name} artifact for {model.id} -> {path}")
        start = time.perf_counter()
        cache = BUILD_CACHE.set(self.cache_dir)
        try:
            pathway.build(model, model.calibration_inputs(), staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            BUILD_CACHE.reset(cache)
            release_memory()  # the build's model is gone: its memory is not the next phase's
        publish(staging, path)
        self.log(f"qconform: built {pathway.name} for {model.id} in {time.perf_counter() - start:.1f}s")
        return self._check_source(load_artifact(path, pathway=pathway.name, model_id=model.id), model)

    @staticmethod
    def _check_source(artifact: Artifact, model: ModelSpec) -> Artifact:
        recorded = artifact.manifest["source_weights_sha256"]
        if recorded != model.weights_sha256:
            raise ArtifactIdentityError(f"{artifact.path}: built from other weights than model {model.id} (manifest {recorded[:12]}…, model {model.weights_sha256[:12]}…)")
        return artifact
