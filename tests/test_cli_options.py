"""One option name per concept in every command (old names: deprecated aliases that still work
for one release), `qconform --version`, help for every option, every command in the description."""

from __future__ import annotations

import argparse
import re

import pytest

from harness.cli import build_parser, main
from harness.run.store import ArtifactStore


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version(capsys):
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and re.fullmatch(r"qconform \S+\n", out), out


def test_description_lists_every_command_and_every_option_has_help():
    parser, sub = build_parser()
    description = parser.description
    for command, subparser in sub.choices.items():
        assert re.search(rf"^  {re.escape(command)} ", description, re.M), f"{command} is not in `qconform --help`'s list"
        for action in subparser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"qconform {command} {'/'.join(action.option_strings) or action.dest}: no help text"
    run = sub.choices["run"]
    for flag in ("--qc-cache", "--models", "--model", "--pathways", "--report-dir"):
        assert flag in run._option_string_actions  # the names every other command uses


def test_the_same_names_in_build_import_and_run():
    _, sub = build_parser()
    for command in ("build", "import", "run"):
        flags = sub.choices[command]._option_string_actions
        assert {"--models", "--model", "--pathways"} <= set(flags), command
    assert "--qc-cache" in sub.choices["build"]._option_string_actions


def test_build_cache_is_a_deprecated_alias_of_qc_cache(capsys, llama_int8):
    cache = str(ArtifactStore().cache_dir)  # where llama_int8 was built: nothing is rebuilt
    code, out, err = _run(capsys, "build", "--models", "tiny-llama", "--pathways", "inc-int8-qdq", "--cache", cache)
    assert code == 0 and f"ok    inc-int8-qdq           tiny-llama   {llama_int8.path}" in out, out + err
    assert err.strip() == "qconform build: --cache is deprecated, use --qc-cache (the old name goes in the next release)"
    code, out, err = _run(capsys, "build", "--models", "tiny-llama", "--pathways", "inc-int8-qdq", "--qc-cache", cache)
    assert code == 0 and str(llama_int8.path) in out and err == ""


def test_a_usage_error_stays_one_line_with_a_deprecated_name(capsys, tmp_path):
    code, _, err = _run(capsys, "build", "--models", "nope", "--cache", str(tmp_path))
    [line] = err.strip().splitlines()  # no deprecation line beside a usage error
    assert code == 4 and line.startswith("qconform build: unknown model 'nope'; known: "), line


@pytest.fixture
def payload(llama_int8):
    return str(next(llama_int8.path.glob("*.onnx")))


def test_import_takes_the_run_names_and_the_old_ones(capsys, tmp_path, payload):
    code, out, err = _run(capsys, "import", "--pathways", "inc-int8-qdq", "--models", "tiny-llama", payload, "--out", str(tmp_path / "a"))
    assert code == 0 and err == "", out + err
    assert "run it: qconform run --artifacts" in out
    code, out, err = _run(capsys, "import", "--pathway", "inc-int8-qdq", "--model", "tiny-llama", payload, "--out", str(tmp_path / "b"))
    assert code == 0, out + err
    assert err.splitlines() == [
        "qconform import: --pathway is deprecated, use --pathways (the old name goes in the next release)",
        "qconform import: --model tiny-llama: a model id is deprecated here, use --models tiny-llama (--model takes a checkpoint directory, .onnx file or module:factory)",
    ]
    assert (tmp_path / "a" / "tiny-llama" / "inc-int8-qdq" / "manifest.json").read_text() != ""
    assert (tmp_path / "b" / "tiny-llama" / "inc-int8-qdq" / "manifest.json").is_file()


@pytest.mark.parametrize(
    "args, why",
    [
        (("--pathways", "inc-int8-qdq,inc-fp8-ref", "--models", "tiny-llama"), "--pathways: name exactly one pathway for the artifact (got inc-int8-qdq, inc-fp8-ref)"),
        (("--models", "tiny-llama"), "--pathways: name exactly one pathway for the artifact (got none)"),
        (("--pathways", "inc-int8-qdq"), "name the model the payload was made from: --models ID"),
        (("--pathways", "inc-int8-qdq", "--models", "a,b"), "--models: name exactly one model the payload was made from (got a, b)"),
    ],
)
def test_import_names_one_pathway_and_one_model(capsys, tmp_path, args, why):
    code, _, err = _run(capsys, "import", *args, str(tmp_path / "x.onnx"), "--out", str(tmp_path))
    [line] = err.strip().splitlines()
    assert code == 4 and line.startswith(f"qconform import: {why}"), line


def test_build_looks_model_ids_up_in_the_project_file(capsys, tmp_path, monkeypatch):
    """`build --models` takes a qconform.toml [[models]] id (find_model; tests/test_bad_input.py
    builds one): an unknown id names the project's ids beside the built-in ones."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "qconform.toml").write_text('[[models]]\nid = "ours"\nsource = "harness.models.tiny_llama:TinyLlamaSpec"\n')
    code, out, err = _run(capsys, "build", "--models", "nope", "--pathways", "inc-int8-qdq")
    assert code == 4 and "[[models]]: ours" in err, err


def test_calibrate_refuses_an_out_it_cannot_write_before_any_run(capsys, tmp_path):
    """`--out harness/profiles/x.toml` from a directory without harness/profiles: one usage line
    before the runs (not a traceback after three of them)."""
    out = tmp_path / "no-such-dir" / "x.toml"
    code, stdout, err = _run(capsys, "calibrate", "--name", "x", "--out", str(out), "--runs", "3", "-m", "gpu")
    assert code == 4 and err == f"qconform calibrate: --out {out}: no directory {out.parent}\n", err
    assert "calibration run" not in stdout


def test_calibrate_of_runs_that_gated_nothing_writes_no_profile(capsys, tmp_path):
    """Runs that gated nothing (`-m gpu` on a CPU: NOT GATED) have nothing to calibrate: exit 6, one
    line, and no profile without tables that could be committed by mistake."""
    from tests.test_report_json import _summary

    skipped = {"check": "output_agreement", "pathway": "inc-int8-qdq", "model": "tiny-llama", "device": "cuda", "outcome": "skipped", "message": "needs a CUDA GPU", "nodeid": "t"}
    summary = _summary(tmp_path, [skipped], verdict="NOT GATED")
    out = tmp_path / "gpu.toml"
    code, _, err = _run(capsys, "calibrate", "--name", "gpu", "--out", str(out), "--from", str(summary))
    assert code == 6 and not out.exists(), err
    assert err == "qconform calibrate: no gate measured anything in 1 run(s) (NOT GATED): nothing to calibrate, no profile written\n"


def test_import_run_hint_names_the_model_as_it_was_given(capsys, tmp_path, payload):
    """The printed `run it:` command works as printed: a model given by id is named with --models, one
    given by source (a checkpoint, .onnx or module:factory, which --models cannot name) with --model."""
    code, out, _ = _run(capsys, "import", "--pathways", "inc-int8-qdq", "--models", "tiny-llama", payload, "--out", str(tmp_path / "a"))
    assert code == 0 and f"run it: qconform run --artifacts {tmp_path / 'a'} --models tiny-llama --pathways inc-int8-qdq\n" in out, out
    source = "harness.models.tiny_llama:TinyLlamaSpec"
    code, out, err = _run(capsys, "import", "--pathways", "inc-int8-qdq", "--model", source, payload, "--out", str(tmp_path / "b"))
    assert code == 0 and f"run it: qconform run --artifacts {tmp_path / 'b'} --model {source} --pathways inc-int8-qdq\n" in out, out + err
