"""The ready-to-copy CI pipelines (ci/github/qconform.yml, ci/gitlab/.gitlab-ci.yml): they parse,
every `qconform ...` in them is a valid invocation of our CLI's own parser (a renamed option breaks
this test), the verdict job merges exactly the summaries the run jobs write, and their steps run
for real here: the CPU job on a stand-in selection, the verdict job on it and planted GPU shards."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # PyYAML: transformers (the cpu extra) and gguf (the test extra) depend on it

from harness.cli import build_parser
from harness.judge.gates import Record, verdict
from harness.report.summary import write_summary
from harness.run.plugin import MARKERS
from harness.run.scaleout import parse_shard
from tests.conftest import REPO

GITHUB = REPO / "ci" / "github" / "qconform.yml"
GITLAB = REPO / "ci" / "gitlab" / ".gitlab-ci.yml"
SHELL_OPERATORS = {";", "&&", "||", "|", ">", ">>", "<", "&"}
# The stand-in selection the CPU job's command runs on here (pytest reads PYTEST_ADDOPTS).
STAND_IN = "--pathways=inc-int8-qdq --models=tiny-llama -k output_agreement"


def github_steps() -> dict[str, dict[str, dict]]:
    """job -> step id -> step."""
    jobs = yaml.safe_load(GITHUB.read_text())["jobs"]
    return {name: {step["id"]: step for step in job["steps"] if "id" in step} for name, job in jobs.items()}


def gitlab_jobs() -> dict[str, dict]:
    return {name: job for name, job in yaml.safe_load(GITLAB.read_text()).items() if isinstance(job, dict) and "script" in job}


def github_shards() -> int:
    return len(yaml.safe_load(GITHUB.read_text())["jobs"]["gpu"]["strategy"]["matrix"]["shard"])


def expand(script: str, shard: int, total: int) -> str:
    """The script as the runner hands it to the shell for shard `shard` of `total`."""
    for name, value in {"${{ matrix.shard }}": shard, "$CI_NODE_INDEX": shard, "$CI_NODE_TOTAL": total}.items():
        script = script.replace(name, str(value))
    return script


def qconform_commands(script: str) -> list[list[str]]:
    """Every `qconform ...` in a shell script, as its arguments (shell operators end a command)."""
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token in SHELL_OPERATORS:
                if command[:1] == ["qconform"]:
                    found.append(command[1:])
                command = []
            else:
                command.append(token)
    return found


def pipeline_scripts() -> list[tuple[str, str, str]]:
    """(pipeline, job, script) for every shell script of both pipelines, shards expanded."""
    out = []
    for job, steps in github_steps().items():
        for step in steps.values():
            for shard in range(1, github_shards() + 1) if job == "gpu" else [1]:
                out.append(("github", job, expand(step.get("run", ""), shard, github_shards())))
    for name, job in gitlab_jobs().items():
        for shard in range(1, job.get("parallel", 1) + 1):
            lines = [*job.get("before_script", []), *job["script"]]
            out.append(("gitlab", name, expand("\n".join(lines), shard, job.get("parallel", 1))))
    return out


def parsed(argv: list[str]):
    """argv through `qconform`'s own parser: a bad option is its usage error, here a test failure."""
    parser, _ = build_parser()
    try:
        args, rest = parser.parse_known_args(argv)
    except SystemExit as exc:
        pytest.fail(f"qconform {shlex.join(argv)}: not a valid invocation (exit {exc.code})")
    if args.command == "run":  # the rest goes to pytest: only a marker expression of our markers here
        assert rest[::2] == ["-m"] * (len(rest) // 2) and len(rest) % 2 == 0, rest
        for expression in rest[1::2]:
            assert set(re.findall(r"\w+", expression)) - {"not", "and", "or"} <= set(MARKERS), expression
    else:
        assert not rest, f"qconform {args.command}: unrecognized arguments {rest}"
    return args


def test_pipelines_parse_and_every_qconform_command_is_valid():
    commands = [argv for _, _, script in pipeline_scripts() for argv in qconform_commands(script)]
    assert {argv[0] for argv in commands} == {"run", "merge", "report"}
    for argv in commands:
        args = parsed(argv)
        if getattr(args, "shard", None):
            parse_shard(args.shard)


@pytest.mark.parametrize("pipeline", ["github", "gitlab"])
def test_the_verdict_job_merges_exactly_what_the_run_jobs_write(pipeline):
    """Every run job's summary (each shard's), no other: a shard that left none must be missed."""
    written, merged, shards = set(), [], set()
    for where, _, script in pipeline_scripts():
        if where != pipeline:
            continue
        for argv in qconform_commands(script):
            args = parsed(argv)
            if args.command == "run":
                written.add(f"{args.report_dir}/summary.json")
                shards |= {args.shard} if args.shard else set()
            elif args.command == "merge":
                merged = args.summaries
    assert sorted(merged) == sorted(written) and len(merged) == len(set(merged))
    totals = {parse_shard(s)[1] for s in shards}
    assert len(totals) == 1 and {parse_shard(s)[0] for s in shards} == set(range(1, totals.pop() + 1))


def test_the_github_verdict_job_runs_after_failed_shards_and_keeps_the_reports():
    jobs = yaml.safe_load(GITHUB.read_text())["jobs"]
    assert jobs["verdict"]["needs"] == ["cpu", "gpu"] and "cancelled()" in jobs["verdict"]["if"]
    assert jobs["gpu"]["strategy"]["fail-fast"] is False and "self-hosted" in jobs["gpu"]["runs-on"]
    for job in jobs.values():
        uploads = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
        assert uploads and all("cancelled()" in s["if"] for s in uploads)
    assert "$GITHUB_STEP_SUMMARY" in github_steps()["verdict"]["verdict"]["run"]


# -- the steps, run for real ---------------------------------------------------------------------


@pytest.fixture
def shell(tmp_path: Path):
    """Run a step's script as the runner does (bash -e) in tmp_path, `qconform` on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "qconform"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m harness.cli "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary.md"),
    }

    def run(script: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env={**env, **extra}, capture_output=True, text=True, timeout=900)

    return run


def _plant_gpu_shard(report_dir: Path, records: list[Record]) -> None:
    selected = sorted({r.pathway for r in records})
    write_summary(report_dir, records, verdict(records, selected), {"device": "cuda: NVIDIA GeForce RTX 5090", "profile": "rtx5090"}, selected)


def test_cpu_job_then_verdict_job_run_for_real(tmp_path, shell, llama_int8):
    steps = github_steps()
    cpu = shell(expand(steps["cpu"]["run"]["run"], 1, 1), PYTEST_ADDOPTS=STAND_IN)
    summary = json.loads((tmp_path / "reports" / "cpu" / "summary.json").read_text())
    assert cpu.returncode == summary["exit_code"], cpu.stdout[-3000:] + cpu.stderr[-3000:]
    assert summary["counts"]["passed"] >= 1 and all(r["device"] == "cpu" for r in summary["records"] if r["outcome"] == "passed")

    gate = {"check": "output_agreement", "device": "cuda", "metric": "min_sqnr_db", "direction": "min", "source": "rtx5090.toml [torchao-fp8-rowwise.tiny-llama]"}
    _plant_gpu_shard(
        tmp_path / "reports" / "gpu-1", [Record(pathway="torchao-fp8-rowwise", model="tiny-llama", outcome="passed", measured=31.0, threshold=25.0, nodeid="s1", **gate)]
    )
    _plant_gpu_shard(
        tmp_path / "reports" / "gpu-2", [Record(pathway="torchao-fp8-rowwise", model="minilm-l6", outcome="failed", measured=12.5, threshold=25.0, nodeid="s2", **gate)]
    )
    for shard in range(3, github_shards() + 1):
        _plant_gpu_shard(tmp_path / "reports" / f"gpu-{shard}", [])
    script = steps["verdict"]["verdict"]["run"]
    judged = shell(script)
    page = (tmp_path / "step-summary.md").read_text()
    assert judged.returncode == 1 and page.startswith("## ❌ qconform verdict: FAIL (exit 1: a gate failed)"), judged.stderr
    assert "| **FAIL** | torchao-fp8-rowwise/cuda minilm-l6 | output_agreement | min_sqnr_db 12.5 (>= 25, margin -12.5) |" in page
    assert (tmp_path / "reports" / "merged" / "conformance-merged.html").is_file()

    # A shard that left no summary (its runner died): no verdict from the others, and the page says so.
    (tmp_path / "reports" / "gpu-4" / "summary.json").unlink()
    (tmp_path / "step-summary.md").unlink()
    (tmp_path / "reports" / "merged" / "summary.json").unlink()
    judged = shell(script)
    assert judged.returncode == 4 and "no summary at reports/gpu-4/summary.json" in judged.stderr
    assert "USAGE ERROR (exit 4" in (tmp_path / "step-summary.md").read_text()


def test_gitlab_verdict_job_runs_for_real(tmp_path, shell):
    """Its script lines, as GitLab's shell runs them (one shell, stop at the first failing line)."""
    gate = Record(
        "output_agreement",
        "torchao-fp8-rowwise",
        "tiny-llama",
        "cuda",
        "passed",
        metric="min_sqnr_db",
        measured=31.0,
        threshold=25.0,
        direction="min",
        source="rtx5090.toml",
        nodeid="s1",
    )
    _plant_gpu_shard(tmp_path / "reports" / "cpu", [Record(**{**gate.__dict__, "pathway": "inc-int8-qdq", "device": "cpu", "nodeid": "c1"})])
    for shard in range(1, gitlab_jobs()["qconform-gpu"]["parallel"] + 1):
        _plant_gpu_shard(tmp_path / "reports" / f"gpu-{shard}", [gate] if shard == 1 else [])
    judged = shell("\n".join(gitlab_jobs()["qconform-verdict"]["script"]))
    assert judged.returncode == 0, judged.stderr
    assert (tmp_path / "reports" / "merged" / "summary.md").read_text().startswith("## ✅ qconform verdict: PASS (exit 0: ")
