"""Fixtures for qconform's own tests: real artifacts built by the real pathway, and a way to run
the conformance suites the way a user does (a separate pytest process) and read its summary.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.artifacts.manifest import Artifact
from harness.core import Device
from harness.models.base import get_model
from harness.pathways.base import get_pathway
from harness.run.store import ArtifactStore

REPO = Path(__file__).resolve().parent.parent
SUITES = REPO / "suites"


def _built(model_id: str, pathway_name: str) -> Artifact:
    pathway, model = get_pathway(pathway_name), get_model(model_id)
    reason = model.unavailable() or pathway.unavailable(Device.detect())
    if reason:
        pytest.skip(reason)
    return ArtifactStore().get(pathway, model)  # the user's cache: shared with `qconform run`


@pytest.fixture(scope="session")
def llama_int8() -> Artifact:
    return _built("tiny-llama", "inc-int8-qdq")


@pytest.fixture(scope="session")
def llama_fp8() -> Artifact:
    reason = get_pathway("inc-fp8-ref").build_unavailable()
    if reason:
        pytest.skip(reason)
    return _built("tiny-llama", "inc-fp8-ref")


@pytest.fixture(scope="session")
def llama_torchao_int8() -> Artifact:
    return _built("tiny-llama", "torchao-int8-dynamic")


@pytest.fixture
def user_artifacts(tmp_path: Path):
    """Copy a built artifact into a `--artifacts` layout the test may then damage."""

    def copy(artifact: Artifact) -> Path:
        target = tmp_path / "artifacts" / artifact.model_id / artifact.pathway
        shutil.copytree(artifact.path, target)
        return target

    return copy


@dataclass
class SuiteRun:
    returncode: int
    output: str
    summary: dict

    def records(self, **match) -> list[dict]:
        return [r for r in self.summary.get("records", []) if all(r.get(k) == v for k, v in match.items())]


@pytest.fixture
def run_suites(tmp_path: Path):
    """Run conformance suites in a child pytest, as `qconform run` would, and return its summary."""

    def run(*args: str, suites: tuple[str, ...] = ("test_accuracy.py",)) -> SuiteRun:
        report_dir = tmp_path / "reports"
        cmd = [sys.executable, "-m", "pytest", *(str(SUITES / s) for s in suites), f"--report-dir={report_dir}", "-p", "no:cacheprovider", *args]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
        summary_path = report_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        return SuiteRun(proc.returncode, proc.stdout + proc.stderr, summary)

    return run


@pytest.fixture(scope="session")
def minilm_int8() -> Artifact:
    return _built("minilm-l6", "inc-int8-qdq")
