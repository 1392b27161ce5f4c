"""A team's lm-evaluation-harness task with a local data file, run end to end: lm-eval's own task
definition builds and scores the requests, qconform's reference and candidate runners answer them,
and the per-document results feed the paired task gates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.models.kinds import default_data

pytest.importorskip("transformers")
lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install 'qconform[lm-eval]')")
TASK = "team_mc"
REPO = Path(__file__).resolve().parent.parent


def task_config(directory: Path, items: int = 40) -> Path:
    """A multiple-choice task config as a team writes one: local JSON lines, lm-eval's YAML keys (the
    choices carry their leading space, so no target delimiter)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "items.jsonl"
    data.write_text("".join(default_data("choices.jsonl").read_text().splitlines(keepends=True)[:items]))
    (directory / "team_mc.yaml").write_text(
        f"task: {TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        'output_type: multiple_choice\ntarget_delimiter: ""\ndoc_to_text: "{{context}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    return directory


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    from tests.hf_checkpoints import build_llama

    return build_llama(tmp_path_factory.mktemp("llama") / "llama")


def test_lm_eval_scores_the_documents_as_qconform_scores_the_items(llama_dir, tmp_path):
    """The same 40 items: lm-eval's `acc` per document through the reference runner equals
    qconform's own log-likelihood scoring of them."""
    from harness.models.hf import HuggingFaceModel

    tasks = task_config(tmp_path / "tasks")
    via_lm_eval = HuggingFaceModel(llama_dir, eval_tokens=128, seq_len=64, lm_eval_tasks=[TASK], lm_eval_include=tasks)
    via_qconform = HuggingFaceModel(llama_dir, eval_tokens=128, seq_len=64, eval_choices=tasks / "items.jsonl")
    via_lm_eval.validate()
    ours = via_qconform.evaluate(via_qconform.run_reference)["task_correct"]
    theirs = via_lm_eval.evaluate(via_lm_eval.run_reference)
    assert theirs["task_correct"].shape == (40,) and list(theirs["task_documents"][:2]) == [f"{TASK}#0", f"{TASK}#1"]
    np.testing.assert_array_equal(theirs["task_correct"], ours)


def _run(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", *args], cwd=project, capture_output=True, text=True, timeout=900)


def test_a_team_lm_eval_task_gates_the_int8_artifact_end_to_end(llama_dir, tmp_path):
    """`qconform run` with a project file naming the task: the paired task gates are recorded
    (recovery as non-inferiority, flips; McNemar is not a default), each stating its power at this n."""
    tasks = task_config(tmp_path / "tasks")
    project = tmp_path / "team"
    project.mkdir()
    (project / "qconform.toml").write_text(
        'pathways = ["inc-int8-qdq"]\n\n[[models]]\n'
        f'source = "{llama_dir}"\nid = "team-llama"\neval_tokens = 128\nseq_len = 64\nnew_tokens = 4\ngeneration_prompts = 2\n'
        f'lm_eval_tasks = ["{TASK}"]\nlm_eval_include = "{tasks}"\n'
    )
    run = _run(project, "-k", "task_metric", f"--qc-cache={tmp_path / 'cache'}", "-p", "no:cacheprovider")
    summary = json.loads((project / "reports" / "summary.json").read_text())
    records = {r["metric"]: r for r in summary["records"] if r.get("metric", "").startswith(("min_task", "max_task")) and r["device"] == "cpu"}
    assert set(records) == {"min_task_recovery", "max_task_flip_rate"}, run.stdout[-3000:] + run.stderr[-2000:]
    assert "40 items" in records["min_task_recovery"]["message"] and "power" in records["min_task_recovery"]["message"]
    assert records["max_task_flip_rate"]["proportion_tests"]["max_task_flip_rate"]["bound"] == "lower"
    assert run.returncode in (0, 1) and summary["verdict"] in ("PASS", "FAIL")


def test_an_unknown_lm_eval_task_is_refused_before_any_test(llama_dir, tmp_path):
    tasks = task_config(tmp_path / "tasks")
    project = tmp_path / "team"
    project.mkdir()
    (project / "qconform.toml").write_text(
        f'pathways = ["inc-int8-qdq"]\n\n[[models]]\nsource = "{llama_dir}"\nlm_eval_tasks = ["no_such_task"]\nlm_eval_include = "{tasks}"\n'
    )
    run = _run(project, f"--qc-cache={tmp_path / 'cache'}", "-p", "no:cacheprovider")
    assert run.returncode == 4, run.stdout[-2000:] + run.stderr[-2000:]
    assert "no task config defines no_such_task (found: team_mc)" in run.stdout + run.stderr
