"""The project file's [recipes.<pathway>] is enforced: what it requires of an artifact is checked
against the artifact's recorded recipe (the project_recipe check) and, for layout keys, against
the payload itself; a mismatch FAILs naming the check and the key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_project(tmp_path: Path, recipes: str, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    team = tmp_path / "team"
    team.mkdir(exist_ok=True)
    (team / "qconform.toml").write_text(f'pathways = ["inc-int8-qdq"]\n\n[recipes."inc-int8-qdq"]\n{recipes}\n')
    report = tmp_path / "reports"
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--models", "tiny-llama", f"--report-dir={report}", "-p", "no:cacheprovider", *args],
        cwd=team, capture_output=True, text=True, timeout=900,
    )
    summary = json.loads((report / "summary.json").read_text()) if (report / "summary.json").exists() else {}
    return proc, summary


def records(summary: dict, check: str) -> list[dict]:
    return [r for r in summary.get("records", []) if r.get("check") == check and r.get("pathway") == "inc-int8-qdq"]


@pytest.mark.parametrize("required, verdict", [("per-channel", "PASS"), ("per-tensor", "FAIL")])
def test_a_recipe_mismatch_fails_the_project_recipe_check(tmp_path, llama_int8, required, verdict):
    """INC INT8 builds per-channel weights. A project requiring them passes project_recipe; one
    requiring per-tensor weights (a planted mismatch) fails it, and the payload's layout check
    fails against the same requirement."""
    proc, summary = run_project(tmp_path, f'weight_granularity = "{required}"', "-k", "project_recipe or granularity_matches_recipe")
    assert summary.get("verdict") == verdict, proc.stdout[-3000:] + proc.stderr[-2000:]
    [project] = [r for r in records(summary, "project_recipe") if r["device"] == "cpu"]
    [layout] = [r for r in records(summary, "granularity_matches_recipe") if r["device"] == "cpu"]
    if verdict == "PASS":
        assert proc.returncode == 0 and project["outcome"] == layout["outcome"] == "passed"
    else:
        assert proc.returncode == 1 and project["outcome"] == layout["outcome"] == "failed"
        assert "recipe weight_granularity is 'per-channel', the project file requires 'per-tensor'" in project["message"]


def test_without_project_recipes_the_check_says_why_it_did_not_run(tmp_path, llama_int8):
    team = tmp_path / "team"
    team.mkdir()
    (team / "qconform.toml").write_text('pathways = ["inc-int8-qdq"]\n')
    report = tmp_path / "reports"
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--models", "tiny-llama", f"--report-dir={report}", "-p", "no:cacheprovider", "-k", "project_recipe or granularity_matches_recipe"],
        cwd=team, capture_output=True, text=True, timeout=900,
    )
    summary = json.loads((report / "summary.json").read_text())
    skipped = [r for r in records(summary, "project_recipe") if r["device"] == "cpu"]
    assert proc.returncode == 0 and skipped and skipped[0]["outcome"] == "skipped"
    assert "the project file sets no [recipes.inc-int8-qdq]" in skipped[0]["message"]


def test_a_recipe_key_no_gate_verifies_is_refused_when_the_project_file_loads(tmp_path):
    """A key that is neither a build option of the pathway nor read from the payload by a gate would
    be required and never checked: the project file is refused (exit 4), naming the key."""
    proc, _ = run_project(tmp_path, 'calibration = "entropy"')
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert '[recipes.inc-int8-qdq] calibration: no gate verifies this key in an artifact' in proc.stdout + proc.stderr


def test_quantized_outputs_fail_a_project_requiring_float_outputs(tmp_path, llama_int8, user_artifacts):
    """The project file and the manifest say quantize_outputs = false; the graph quantizes every
    weight op's output (INC's default build, relabelled). The manifest's claim passes
    project_recipe; the payload's layout check FAILs, naming the key."""
    from tests.planted_defects import reseal

    target = user_artifacts(llama_int8)
    reseal(target, llama_int8, recipe={**llama_int8.manifest["recipe"], "quantize_outputs": False})
    proc, summary = run_project(tmp_path, "quantize_outputs = false", f"--artifacts={target.parent.parent}", "-k", "project_recipe or granularity_matches_recipe")
    assert proc.returncode == 1 and summary.get("verdict") == "FAIL", proc.stdout[-3000:] + proc.stderr[-2000:]
    [project] = [r for r in records(summary, "project_recipe") if r["device"] == "cpu"]
    [layout] = [r for r in records(summary, "granularity_matches_recipe") if r["device"] == "cpu"]
    assert project["outcome"] == "passed" and layout["outcome"] == "failed"
    assert "its output is quantized, expected quantize_outputs = false" in layout["message"]
