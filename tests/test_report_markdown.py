"""`qconform report --markdown`: the verdict for a CI job page or a PR comment, from the same helpers
as `report --json` (so the same counts, cells and failures), capped to a few screens, with the
run's own exit code."""

from __future__ import annotations

import json

from harness.cli import main
from harness.report.markdown import MAX_FAILURES
from harness.report.summary import write_incomplete
from tests.test_report_json import GATE, _summary

FAILED = {
    **GATE,
    "pathway": "inc-int8-qdq",
    "model": "tiny-llama",
    "outcome": "failed",
    "metric": "min_sqnr_db",
    "measured": 16.4,
    "threshold": 20.0,
    "source": "cpu.toml [inc-int8-qdq.tiny-llama]",
    "message": "error starts at layer layers.0.mlp | <b>",
}
PASSED = {
    **GATE,
    "nodeid": "t2",
    "pathway": "inc-int8-qdq",
    "model": "minilm-l6",
    "outcome": "passed",
    "metric": "min_cosine",
    "measured": 0.999,
    "threshold": 0.99,
    "source": "cpu.toml [inc-int8-qdq.minilm-l6]",
}
SKIPPED = {"check": "output_agreement", "device": "cuda", "nodeid": "t3", "pathway": "tensorrt", "model": "tiny-llama", "outcome": "skipped", "message": "tensorrt: not installed"}
REGRESSION = {"pathway": "inc-int8-qdq", "device": "cpu", "model": "tiny-llama", "metric": "min_sqnr_db", "baseline": 22.8, "current": 16.4, "delta": -6.4, "band": 0.5}


def _markdown(path, capsys) -> tuple[int, str, str]:
    code = main(["report", "--markdown", str(path)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_markdown_has_verdict_matrix_failures_regressions_and_not_run(tmp_path, capsys):
    path = _summary(tmp_path, [FAILED, PASSED, SKIPPED], comparison={"regressions": [REGRESSION], "improvements": []})
    code, page, _ = _markdown(path, capsys)
    assert code == 1 and page.startswith("## ❌ qconform verdict: FAIL (exit 1: a gate failed)\n")
    main(["report", "--json", str(path)])
    obj = json.loads(capsys.readouterr().out)
    assert "1 passed, 1 failed, 1 skipped" in page and f"{obj['checks_run']} check(s) ran" in page  # the JSON's counts
    assert "| pathway | minilm-l6 | tiny-llama |" in page
    assert "| **inc-int8-qdq** (cpu) | ✅ PASS<br>min_cosine 0.999 (>= 0.99, margin +0.009) | ❌ FAIL<br>min_sqnr_db 16.4 (>= 20, margin -3.6) |" in page
    assert "| **torchao-fp8-rowwise** | ➖ NOT RUN: needs a CUDA GPU |" in page  # not selected on this machine
    statuses = {c["status"] for c in obj["cells"]}
    assert all(f" {status}" in page for status in statuses)
    assert (
        "| **FAIL** | inc-int8-qdq/cpu tiny-llama | output_agreement | min_sqnr_db 16.4 (>= 20, margin -3.6) | cpu.toml [inc-int8-qdq.tiny-llama] | error starts at layer layers.0.mlp \\| &lt;b> |"
        in page
    )
    assert "### Regressions since the baseline: 1 (0 improvement(s))" in page and "22.8 -> 16.4 (-6.4, noise band 0.5)" in page
    assert "| tensorrt: not installed | 1 | tensorrt |" in page and "- **not run on this machine** torchao-fp8-rowwise: needs a CUDA GPU" in page


def test_long_lists_are_capped_saying_how_many_were_left_out(tmp_path, capsys):
    many = [{**FAILED, "nodeid": f"t{i}", "model": f"model-{i:02}", "message": "x" * 1000} for i in range(MAX_FAILURES + 5)]
    code, page, _ = _markdown(_summary(tmp_path, many), capsys)
    assert code == 1 and "### Failures: 15" in page and "_… and 5 more failure(s): see the HTML report or summary.json._" in page
    assert page.count("| **FAIL** |") == MAX_FAILURES and "x" * 200 not in page
    assert "more model column(s)" in page and len(page) < 20_000


def test_a_pass_has_no_failure_section(tmp_path, capsys):
    code, page, _ = _markdown(_summary(tmp_path, [PASSED], verdict="PASS", selected=["inc-int8-qdq"], not_selected={}), capsys)
    assert code == 0 and page.startswith("## ✅ qconform verdict: PASS (exit 0: ") and "Failures" not in page and "Not gated" not in page


def test_a_missing_or_unfinished_summary_is_a_page_too_with_the_usage_line(tmp_path, capsys):
    code, page, err = _markdown(tmp_path / "nope.json", capsys)
    assert code == 4 and err.startswith("qconform report: no summary at ") and "USAGE ERROR (exit 4" in page and "no summary at" in page
    write_incomplete(tmp_path, "the run started and has not finished")
    code, page, err = _markdown(tmp_path / "summary.json", capsys)
    assert code == 2 and "INCOMPLETE (exit 2: the run did not finish)" in page and err.count("\n") == 1


def test_markdown_and_json_are_one_form_each(capsys):
    assert main(["report", "--json", "--markdown"]) == 4
    assert "not allowed with argument" in capsys.readouterr().err


def test_the_readme_example_is_what_the_command_prints(tmp_path, capsys):
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    example = readme[readme.index("## ❌ qconform verdict: FAIL") :].split("```")[0]
    path = _summary(tmp_path, [{**FAILED, "message": "error starts at layer layers.0.mlp"}, PASSED, SKIPPED], not_selected={})
    code, page, _ = _markdown(path, capsys)
    assert code == 1 and page.replace(f" · full report: `{path}`", "") == example
