"""A new user's first run: a named pathway whose artifacts cannot be gated here is NOT GATED even
when its library's property tests pass; a threshold no profile or policy gives is a usage error
before any test runs, naming the table and the key."""

from __future__ import annotations

import pytest
import torch

from harness.judge.gates import EXIT_CODES


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the torchao pathway is gated")
def test_a_named_pathway_with_only_library_properties_is_not_gated(run_suites):
    run = run_suites("--pathways=torchao-fp8-rowwise", "-k", "fp8 or output_agreement", suites=("test_properties.py", "test_accuracy.py"))
    assert run.records(pathway="torchao-fp8-rowwise", outcome="passed"), "the CPU properties of torchao's quantizer should run"
    assert run.returncode == EXIT_CODES["NOT GATED"] and run.summary["verdict"] == "NOT GATED", run.output[-2000:]
    assert "none on an artifact" in run.summary["not_gated"]["torchao-fp8-rowwise"]


def test_a_threshold_nothing_gives_is_a_usage_error_before_any_test(llama_int8, run_suites, tmp_path):
    # A pathway of a plugin (here a planted INC variant) has no policy table: its profile must give
    # every threshold its gates ask for.
    profile = tmp_path / "team.toml"
    profile.write_text('[profile]\nname = "team"\n\n[planted-nondeterministic.tiny-llama]\nmin_sqnr_db = 20.0\n')
    run = run_suites("-p", "tests.planted_pathways", "--pathways=planted-nondeterministic", "--models=tiny-llama", f"--profile={profile}", "-k", "output_agreement")
    assert run.returncode == EXIT_CODES["USAGE ERROR"] and run.summary["verdict"] == "USAGE ERROR", run.output[-2000:]
    message = next(line for line in run.output.splitlines() if "no threshold" in line)
    assert "no threshold 'min_cosine' for [planted-nondeterministic.tiny-llama." in message and "team.toml" in message
    assert not run.summary.get("records"), "no test may run before the profile is complete"


def test_plain_pytest_on_the_suites_is_a_conformance_run(tmp_path):
    # No qconform option at all (the README's `qconform run` / `pytest -m gpu`): the suites' path alone
    # makes it a conformance run, so the verdict and summary.json are written.
    import subprocess
    import sys

    from tests.conftest import REPO

    cmd = [sys.executable, "-m", "pytest", str(REPO / "suites" / "test_properties.py"), "-k", "inc_int8_weight_quantizer", "-p", "no:cacheprovider", f"--rootdir={REPO}"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    summary = tmp_path / "reports" / "summary.json"
    assert summary.is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "qconform verdict:" in proc.stdout
