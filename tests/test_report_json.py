"""`qconform report --json`: one JSON object a CI bot reads, with the run's own exit code."""

from __future__ import annotations

import json

from harness.cli import main
from harness.judge.gates import Record, item_outcomes
from harness.report.summary import write_incomplete

GATE = {"check": "output_agreement", "device": "cpu", "direction": "min", "nodeid": "suites/test_accuracy.py::test_output_agreement[inc-int8-qdq-cpu-tiny-llama]"}


def _summary(tmp_path, records, verdict="FAIL", **extra):
    counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0, "xfailed": 0, "xpassed": 0}
    for outcome in item_outcomes(Record.from_json(r) for r in records).values():
        counts[outcome] += 1
    data = {
        "verdict": verdict,
        "exit_code": {"PASS": 0, "FAIL": 1, "NOT GATED": 6}[verdict],
        "line": f"{verdict}: ...",
        "counts": counts,
        "gates": sum(r["outcome"] in ("passed", "failed") for r in records),
        "selected": ["inc-int8-qdq", "tensorrt"],
        "not_gated": {},
        "not_selected": {"torchao-fp8-rowwise": "needs a CUDA GPU"},
        "created": "2026-12-01T00:00:00+00:00",
        "environment": {"device": "cpu: x86_64", "profile": "harness/profiles/cpu.toml"},
        "records": records,
        **extra,
    }
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(data))
    return path


def _report(path, capsys) -> tuple[int, dict]:
    code = main(["report", "--json", str(path)])
    return code, json.loads(capsys.readouterr().out)


def test_json_verdict_has_counts_cells_and_failures(tmp_path, capsys):
    records = [
        {**GATE, "pathway": "inc-int8-qdq", "model": "tiny-llama", "outcome": "failed", "metric": "min_sqnr_db", "measured": 16.4, "threshold": 20.0, "source": "cpu.toml [inc-int8-qdq.tiny-llama]", "message": "error starts at layer layers.0.mlp"},
        {**GATE, "pathway": "inc-int8-qdq", "model": "tiny-llama", "outcome": "failed", "metric": "min_cosine", "measured": 0.97, "threshold": 0.95, "source": "defaults.toml [inc-int8-qdq.default-causal-lm]"},
        {**GATE, "nodeid": "t2", "pathway": "inc-int8-qdq", "model": "minilm-l6", "outcome": "passed", "metric": "min_cosine", "measured": 0.999, "threshold": 0.99, "source": "cpu.toml [inc-int8-qdq.minilm-l6]"},
        {"check": "output_agreement", "device": "cuda", "nodeid": "t3", "pathway": "tensorrt", "model": "tiny-llama", "outcome": "skipped", "message": "tensorrt: not installed"},
        {"check": "speedup", "device": "cpu", "nodeid": "t4", "pathway": "-", "model": "-", "outcome": "skipped", "message": "got empty parameter set for (perf_key)"},
    ]
    path = _summary(tmp_path, records, comparison={"regressions": [{"metric": "min_cosine", "baseline": 0.99, "current": 0.97}], "improvements": []})
    code, obj = _report(path, capsys)
    assert code == 1 and obj["verdict"] == "FAIL" and obj["exit_code"] == 1 and obj["meaning"] == "a gate failed"
    assert obj["counts"] == {"passed": 1, "failed": 1, "error": 0, "skipped": 2, "xfailed": 0, "xpassed": 0}  # test items, as pytest counts
    cells = {(c["pathway"], c["device"], c["model"]): c for c in obj["cells"]}
    assert cells[("inc-int8-qdq", "cpu", "tiny-llama")]["status"] == "FAIL"
    worst = cells[("inc-int8-qdq", "cpu", "tiny-llama")]["worst_gate"]
    assert worst["metric"] == "min_sqnr_db" and worst["value"] == 16.4 and worst["threshold"] == 20.0 and round(worst["margin"], 6) == -3.6
    assert cells[("inc-int8-qdq", "cpu", "minilm-l6")]["status"] == "PASS"
    assert cells[("tensorrt", "cuda", "tiny-llama")] == {**cells[("tensorrt", "cuda", "tiny-llama")], "status": "NOT RUN", "reason": "tensorrt: not installed"}
    assert cells[("torchao-fp8-rowwise", "-", "tiny-llama")]["reason"] == "needs a CUDA GPU"  # not selected on this machine
    first, second = obj["failures"]
    assert (first["metric"], first["value"], first["threshold"], first["source"]) == ("min_sqnr_db", 16.4, 20.0, "cpu.toml [inc-int8-qdq.tiny-llama]")
    assert second["policy_threshold"] is True and obj["policy_thresholds"] == 1
    assert obj["regressions"][0]["metric"] == "min_cosine"
    assert [g["count"] for g in obj["not_run"]] == [1, 1] and "got empty parameter set" not in json.dumps(obj["not_run"])
    assert obj["line"].startswith("qconform verdict: FAIL (exit 1: a gate failed) - 1 passed, 1 failed, 2 skipped - ")


def test_json_verdict_of_an_unfinished_run_is_json_too(tmp_path, capsys):
    write_incomplete(tmp_path, "the run started and has not finished")
    code, obj = _report(tmp_path / "summary.json", capsys)
    assert code == 2 and obj["verdict"] == "INCOMPLETE" and obj["exit_code"] == 2


def test_json_verdict_of_a_missing_summary_is_a_usage_error(tmp_path, capsys):
    code, obj = _report(tmp_path / "nope.json", capsys)
    assert code == 4 and obj["verdict"] == "USAGE ERROR" and obj["line"].startswith("qconform report: no summary at ")


def test_json_verdict_of_a_real_run(tmp_path, capsys, llama_int8, run_suites):
    run = run_suites("--pathways=inc-int8-qdq", "--models=tiny-llama", "-k", "output_agreement or task_metric")
    code, obj = _report(tmp_path / "reports" / "summary.json", capsys)
    assert code == run.returncode == obj["exit_code"] and obj["verdict"] == run.summary["verdict"]
    [cell] = [c for c in obj["cells"] if c["device"] == "cpu"]
    assert cell["status"] == "PASS" and cell["worst_gate"]["margin"] >= 0 and cell["worst_gate"]["source"].startswith("cpu.toml")
