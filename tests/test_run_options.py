"""`qconform run` declares qconform's own pytest options (read from the plugin) and passes them on."""

from __future__ import annotations

import argparse

import pytest

from harness import cli


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    cli.add_pytest_options(parser)
    return parser


def test_help_lists_every_plugin_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    for flags, _ in cli._pytest_options():
        lines = [line for line in text.splitlines() if line.strip().startswith(flags[0])]
        assert len(lines) == 1 and len(lines[0].split(flags[0], 1)[1].strip()) > 10, f"{flags[0]} has no one-line help"


def test_declared_options_go_to_pytest_and_the_rest_passes_through(tmp_path):
    args, rest = run_parser().parse_known_args(["--models", "tiny-llama", "--regen-golden", f"--artifacts={tmp_path}", "-k", "accuracy", "-x"])
    assert cli.pytest_option_args(args) == [f"--artifacts={tmp_path}", "--regen-golden", "--models=tiny-llama"]
    assert rest == ["-k", "accuracy", "-x"]
