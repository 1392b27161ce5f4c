"""The README says what the commands do: init's next step, the default window length, where
goldens go, the documented options and report keys."""

from __future__ import annotations

import inspect
import re

import pytest

from harness.cli import build_parser, main
from tests.conftest import REPO

README = (REPO / "README.md").read_text()
RUNBOOK = REPO / "docs" / "runbook.md"


def test_init_suggests_what_the_readme_does(tmp_path, capsys):
    pytest.importorskip("transformers")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.hf_checkpoints import SEED, _decoder_config, build_tokenizer

    ckpt = tmp_path / "my-llama"
    ckpt.mkdir()
    build_tokenizer(ckpt)
    torch.manual_seed(SEED)
    LlamaForCausalLM(_decoder_config(LlamaConfig)).save_pretrained(str(ckpt))
    out = tmp_path / "qconform.toml"
    assert main(["init", "--model", str(ckpt), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "then `qconform run --regen-golden`" in said
    block = README[README.index("qconform init --model path/to/checkpoint") :].split("```")[0]
    assert "qconform run --regen-golden" in block.splitlines()[1]
    written = int(re.search(r"^seq_len = (\d+)$", out.read_text(), re.M).group(1))
    assert f"`seq_len` tokens: {written} by default" in README


def test_default_window_matches_the_readme():
    from harness.models.hf import HuggingFaceModel

    default = inspect.signature(HuggingFaceModel.__init__).parameters["seq_len"].default
    assert f"`seq_len` tokens: {default} by default" in README
    assert "512 tokens by default" not in README


def test_golden_dir_help_says_where_goldens_go():
    _, sub = build_parser()
    help_text = sub.choices["run"]._option_string_actions["--golden-dir"].help
    assert "beside qconform.toml" in help_text


def test_readme_documents_baseline_history_json_and_the_option_names():
    for text in ("--baseline", "history/summary-", "qconform report --json", "qconform report --markdown", "qconform report --history", "ci/github/qconform.yml", "`--qc-cache DIR`", "build --cache", "import --pathway", "docs/runbook.md"):
        assert text in README, text
    assert "--pathway inc-int8-qdq --model tiny-llama" not in README  # the examples use the current names
    from harness.judge.gates import Record, verdict
    from harness.report.verdict import verdict_object

    records = [Record("c", "p", "m", "cpu", "failed", metric="min_cosine", measured=0.5, threshold=0.9, direction="min", source="x", nodeid="t")]
    obj = verdict_object({"comparison": {"regressions": []}, "environment": {}}, records, verdict(records, ["p"]), "r.html")
    for key in [*obj, *obj["cells"][0], *obj["failures"][0]]:
        assert f"`{key}`" in README, f"README does not document the JSON key {key!r}"


def test_runbook_covers_the_four_situations():
    text = RUNBOOK.read_text()
    for title in ("## First release of a model", "## Each next release", "## A new GPU class", "## A torch or INC upgrade"):
        assert title in text


def test_run_help_shows_the_option_values_the_readme_names():
    """`qconform run --help` lists qconform's options as the README's sentence about it spells them
    (`--profile NAME|PATH`, `--artifacts DIR`, ...), the same value names as the other commands."""
    _, sub = build_parser()
    usage = " ".join(sub.choices["run"].format_help().split())
    sentence = " ".join(README[README.index("`qconform run --help` lists") :].split("any other argument goes to pytest")[0].split())
    for option in re.findall(r"`(--[a-z-]+ [A-Z][A-Z|,.]*)`", sentence):
        assert f"[{option}]" in usage, f"qconform run --help does not show {option}"
    for option in ("--models ID,...", "--pathways NAME,...", "--shard K/N"):
        assert f"[{option}]" in usage, option
