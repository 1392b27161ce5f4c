"""`qconform run` declares qconform's own pytest options (read from the plugin) and passes them on."""

from __future__ import annotations

import argparse

from harness import cli


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    cli.add_pytest_options(parser)
    return parser


def test_help_lists_every_plugin_option(capsys):
    assert cli.main(["run", "--help"]) == 0  # help is returned like every other outcome, not raised
    text = capsys.readouterr().out
    lines = text.splitlines()
    for flags, _ in cli._pytest_options():
        at = [i for i, line in enumerate(lines) if line.strip().split(" ")[0].rstrip(",") == flags[0]]
        assert len(at) == 1, f"{flags[0]} listed {len(at)} times"
        # argparse puts the help of a long option name on the next line
        help_text = lines[at[0]].split(flags[0], 1)[1].strip() or lines[at[0] + 1].strip()
        assert len(help_text) > 10, f"{flags[0]} has no one-line help"


def test_declared_options_go_to_pytest_and_the_rest_passes_through(tmp_path):
    args, rest = run_parser().parse_known_args(["--models", "tiny-llama", "--regen-golden", f"--artifacts={tmp_path}", "--model", "a", "--model", "b", "-k", "accuracy", "-x"])
    assert cli.pytest_option_args(args) == [f"--artifacts={tmp_path}", "--regen-golden", "--model=a", "--model=b", "--models=tiny-llama"]
    assert rest == ["-k", "accuracy", "-x"]


def test_pyargs_run_of_the_installed_suites_is_a_conformance_run(tmp_path):
    """`pytest --pyargs harness.suites -m gpu` (README): the suites named as a module, no qconform
    option: still a conformance run, so a CPU machine gets the NOT GATED verdict and summary.json."""
    import json
    import subprocess
    import sys

    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the verdict of -m gpu on a machine without a GPU")
    done = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "harness.suites", "-m", "gpu", "-p", "no:cacheprovider", "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    summary = tmp_path / "reports" / "summary.json"
    assert summary.is_file(), done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads(summary.read_text())["verdict"] == "NOT GATED" and done.returncode == 6, done.stdout[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("qconform verdict: NOT GATED")
