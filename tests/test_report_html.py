"""The HTML report's content, top-down, from Records: verdict, matrix, failures with evidence,
regressions, not run by reason (one row per reason, one count), plots per model with thresholds,
details collapsed; policy thresholds flagged; noise rows gone."""

from __future__ import annotations

import re

from harness.judge.gates import Record, verdict
from harness.report.html import standalone_html, verdict_html
from harness.report.verdict import matrix, not_run_groups

ENV = {"device": "cpu: x86_64", "profile": "harness/profiles/cpu.toml", "packages": {"torch": "2.11"}}
LAYERS = [["layers.0.q", 30.0], ["layers.0.mlp", 12.0], ["layers.1.q", 11.0]]


def _records() -> list[Record]:
    case = {"pathway": "inc-int8-qdq", "model": "my-llama", "device": "cpu"}
    generations = [{"prompt": "The capital of France is", "reference": " Paris.", "candidate": " the the the"}]
    flips = {"table": [[40, 6], [1, 3]], "rows": ["reference correct", "reference wrong"], "columns": ["candidate correct", "candidate wrong"], "flipped": [{"context": "2+2", "answer": "4", "reference": "4", "candidate": "5"}], "flipped_total": 7}
    return [
        Record("task_metric", **case, outcome="failed", metric="min_top1_agreement", measured=0.41, threshold=0.8, direction="min", source="defaults.toml [inc-int8-qdq.default-causal-lm]", message="judged on its lower bound", nodeid="t1", extra={"generations": generations, "task_flips": flips}),
        Record("layer_activation_sqnr", **case, outcome="failed", metric="min_layer_activation_sqnr_db", measured=11.0, threshold=15.0, direction="min", source="defaults.toml [inc-int8-qdq.default-causal-lm]", nodeid="t2", extra={"layer_activation_sqnr_db": LAYERS}),
        Record("layer_weight_sqnr", **case, outcome="passed", metric="min_layer_weight_sqnr_db", measured=31.0, threshold=25.0, direction="min", source="cpu.toml [inc-int8-qdq.my-llama]", nodeid="t3", extra={"per_layer": {"a": 31.0, "b": 40.0}}),
        Record("output_agreement", "inc-fp8-ref", "my-llama", "cpu", "passed", metric="min_sqnr_db", measured=27.9, threshold=25.0, direction="min", source="cpu.toml [inc-fp8-ref.my-llama]", nodeid="t4"),
        Record("output_agreement", "inc-fp8-ref", "my-llama", "cpu", "passed", metric="min_cosine", measured=0.9999, threshold=0.998, direction="min", source="cpu.toml [inc-fp8-ref.my-llama]", nodeid="t4"),
        Record("artifact_identity", "inc-fp8-ref", "my-llama", "cpu", "passed", metric="artifact_identity", measured=0.0, threshold=0.0, direction="max", source="artifact check", nodeid="t5"),
        *[Record("output_agreement", "inc-int8-qdq", m, "cuda", "skipped", message="inc-int8-qdq: needs a CUDA GPU", nodeid=f"s{m}") for m in ("my-llama", "minilm-l6")],
        Record("code_range_use", "inc-fp8-ref", "my-llama", "cpu", "skipped", message="no int8 weights", nodeid="s3"),
        Record("speedup", "-", "-", "cpu", "skipped", message="got empty parameter set for (perf_key)", nodeid="s4"),
        Record("inc_int8_weight_quantizer", "inc-int8-qdq", "-", "cpu", "passed", nodeid="p1"),
    ]


def _page(records, comparison=None) -> str:
    result = verdict(records, ["inc-int8-qdq", "inc-fp8-ref"], {"tensorrt": "Python package 'tensorrt' is not installed"})
    return "".join(verdict_html(records, result, ENV, comparison, "reports/history/summary-1.json"))


def test_sections_read_top_down():
    comparison = {"regressions": [{"pathway": "inc-int8-qdq", "device": "cpu", "model": "my-llama", "metric": "min_top1_agreement", "baseline": 0.9, "current": 0.41, "delta": -0.49, "band": 0.01}], "improvements": []}
    page = _page(_records(), comparison)
    order = ["id='qc-verdict'", "id='qc-matrix'", "id='qc-failures'", "id='qc-baseline'", "id='qc-not-run'", "id='qc-plots'", "id='qc-details'"]
    positions = [page.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert "<details id='qc-details'>" in page  # collapsed
    assert "Release verdict: FAIL (exit 1)" in page and "a gate failed" in page.split("id='qc-matrix'")[0]
    assert "Regressions since the baseline: 1" in page


def test_matrix_cells_status_worst_gate_and_links():
    records = _records()
    result = verdict(records, ["inc-int8-qdq", "inc-fp8-ref"], {"tensorrt": "not installed"})
    rows, columns, cells = matrix(records, result)
    assert rows == [("inc-fp8-ref", "cpu"), ("inc-int8-qdq", "cpu"), ("inc-int8-qdq", "cuda"), ("tensorrt", "-")]
    assert columns == ["minilm-l6", "my-llama"]
    assert cells[("inc-int8-qdq", "cpu", "my-llama")].status == "FAIL"
    assert cells[("inc-int8-qdq", "cpu", "my-llama")].worst.metric == "min_top1_agreement"  # missed by 49%, the activation gate by 27%
    fp8 = cells[("inc-fp8-ref", "cpu", "my-llama")]
    assert fp8.status == "PASS" and fp8.worst.metric == "min_cosine"  # the artifact check (0 <= 0) is no margin
    assert cells[("inc-int8-qdq", "cuda", "minilm-l6")].status == "NOT RUN"
    assert cells[("tensorrt", "-", "my-llama")].reason == "not installed"
    page = _page(records)
    matrix_html = page[page.index("id='qc-matrix'") : page.index("id='qc-failures'")]
    assert "worst: min_top1_agreement 0.41 ≥ 0.8, margin -0.39" in matrix_html
    assert "worst: min_cosine 0.9999 ≥ 0.998, margin +0.0019" in matrix_html
    anchor = cells[("inc-int8-qdq", "cpu", "my-llama")].anchor
    assert f"href='#{anchor}'" in matrix_html and f"<h4 id='{anchor}'>" in page


def test_failures_carry_their_evidence():
    page = _page(_records())
    failures = page[page.index("id='qc-failures'") : page.index("id='qc-not-run'")]
    assert "Failures: 2" in failures
    assert "<b>0.41</b>" in failures and "≥ 0.8" in failures and "defaults.toml [inc-int8-qdq.default-causal-lm]" in failures
    assert "<b>First bad layer</b>: error starts at layer layers.0.mlp (SQNR 30.0 dB -&gt; 12.0 dB)" in failures
    assert "The capital of France is" in failures and " the the the" in failures  # generations side by side
    assert "Flipped items (7 in all)" in failures and "<td>40</td><td>6</td>" in failures
    assert failures.count("First bad layer") == 1  # evidence once per case


def test_not_run_is_one_row_per_reason_with_one_count():
    records = _records()
    page = _page(records)
    section = page[page.index("id='qc-not-run'") : page.index("id='qc-plots'")]
    result = verdict(records, ["inc-int8-qdq", "inc-fp8-ref"], {})
    assert f"Not run: {result.counts['skipped']} test(s), 3 reason(s)" in section
    assert f"Tests: {result.counts['passed']} passed, {result.counts['failed']} failed, {result.counts['skipped']} skipped" in page
    assert re.search(r"<td>inc-int8-qdq: needs a CUDA GPU</td><td>2</td>", section)
    assert sum(g["count"] for g in not_run_groups(records)) == result.counts["skipped"]
    assert "got empty parameter set" not in page  # pytest's noise: one plain group, no row of its own
    assert "Not run on this machine" in section and "tensorrt" in section


def test_policy_thresholds_are_flagged_and_named_in_the_header():
    page = _page(_records())
    header = page[: page.index("id='qc-matrix'")]
    assert "Profile: harness/profiles/cpu.toml; <b>policy defaults were used</b> (harness/profiles/defaults.toml) for 2 of 5 threshold(s)" in header
    assert "inc-int8-qdq/cpu my-llama" in header
    assert page.count("class='qc-policy'") >= 4  # header, failures, rows
    clean = [r for r in _records() if not (r.source or "").startswith("defaults.toml")]
    assert "policy defaults were used" not in _page(clean)


def test_plots_one_model_per_axis_with_thresholds(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report import html

    figures = []
    monkeypatch.setattr(html, "_png", lambda fig: figures.append(fig) or "<img>")
    html.plots_html(_records() + [Record("layer_weight_sqnr", "inc-int8-qdq", "other", "cpu", "passed", metric="min_layer_weight_sqnr_db", measured=30.0, threshold=20.0, direction="min", extra={"per_layer": {"a": 30.0}})])
    assert len(figures) == 2  # one figure (row of axes) per model
    titles = [[ax.get_title() for ax in fig.axes] for fig in figures]
    assert titles[0] == ["my-llama: weight SQNR per quantized layer (graph order)", "my-llama: activation SQNR per layer (execution order)"]
    assert titles[1] == ["other: weight SQNR per quantized layer (graph order)"]
    activation = figures[0].axes[1]
    assert [line.get_ydata()[0] for line in activation.get_lines() if line.get_linestyle() == "--"] == [15.0]  # the threshold, drawn
    for fig in figures:
        plt.close(fig)


def test_standalone_page_for_merged_shards():
    records = _records()
    page = standalone_html(records, verdict(records, ["inc-int8-qdq"], {}), ENV)
    assert page.startswith("<!DOCTYPE html>") and "Release verdict: FAIL" in page and "id='qc-matrix'" in page
