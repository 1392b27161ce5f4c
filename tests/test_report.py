"""Report content and calibration, from recorded GPU runs and from a real CPU run."""

import json

import tomllib

from harness.cli import main
from harness.judge.gates import Record
from harness.judge.thresholds import load_profile
from harness.report.html import speedup_html, table_rows


def _speed(model, m, measured, threshold, outcome):
    return Record.from_json({
        "pathway": "torchao-fp8-rowwise",
        "model": model,
        "device": "cuda",
        "check": "speedup",
        "metric": "min_speedup",
        "measured": measured,
        "threshold": threshold,
        "outcome": outcome,
        "shape": {"m": m, "k": 4096, "n": 4096},
        "timing": {"ci_low": measured - 0.01, "ci_high": measured + 0.01},
    })


def test_speedup_table_pivots_shapes_by_tokens():
    html = speedup_html(
        [
            _speed("llama8b-linear-o_proj-m1", 1, 0.89, 0.78, "passed"),
            _speed("llama8b-linear-o_proj-m4096", 4096, 1.10, 1.33, "failed"),
        ]
    )
    assert "<th>M=1</th><th>M=4096</th>" in html
    assert "<td>llama8b-linear-o_proj</td>" in html
    assert "<td class='qc-failed'><b>1.10x</b> (>= 1.33)" in html


def test_skips_fold_and_failures_come_first():
    skip = Record("c", "tensorrt", "m", "cuda", "skipped", message="no TensorRT")
    fail = Record("c", "p", "m", "cpu", "failed")
    rows = table_rows([skip, Record(**{**skip.__dict__, "model": "n"}), fail])
    assert [r.outcome for r in rows] == ["failed", "skipped"]
    assert rows[1].model == "m, n" and rows[1].check == "2 check(s)"


def test_calibrate_writes_a_loadable_profile_under_the_worst_run(tmp_path, llama_int8, run_suites):
    run = run_suites("--pathways=inc-int8-qdq", "--models=tiny-llama")
    assert run.returncode == 0, run.output
    worse = json.loads(json.dumps(run.summary))
    for record in worse["records"]:
        if record.get("metric") == "min_token_agreement":
            record["measured"] -= 0.01  # a second, slightly worse run
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(run.summary))
    second.write_text(json.dumps(worse))

    out = tmp_path / "mine.toml"
    assert main(["calibrate", "--from", str(first), "--from", str(second), "--name", "mine", "--out", str(out)]) == 0

    profile = load_profile(str(out))
    measured = min(r["measured"] for r in worse["records"] if r.get("metric") == "min_token_agreement")
    threshold = profile.threshold("min_token_agreement", "inc-int8-qdq", "tiny-llama").value
    assert measured - 0.04 < threshold < measured  # under the worst run, by the stated margin
    assert tomllib.loads(out.read_text())["inc-int8-qdq"]["tiny-llama"]["min_sqnr_db"] > 0
