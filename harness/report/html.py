"""The verdict a release manager reads, at the top of the pytest-html report and top-down: the
verdict, the pathway x model matrix, failures with their evidence, regressions against the
baseline, what did not run (by reason), plots; then every check, collapsed. The cells, counts and
failures come from harness/report/verdict.py, as the terminal's and `qconform report --json`'s do;
summary.json (harness/report/summary.py) holds the same Records for machines."""

from __future__ import annotations

import html
import math
from typing import Any

from harness.judge.gates import Record, Verdict
from harness.report.summary import ORDER, counts_text
from harness.report.verdict import (
    PERF_COLUMN,
    distance,
    exit_meaning,
    failures,
    first_bad_layer,
    generations,
    is_case_record,
    is_noise,
    is_policy,
    matrix,
    not_run_groups,
    policy_records,
)


def table_rows(records: list[Record]) -> list[Record]:
    """Failures first; skips that share a pathway, device and reason fold into one row."""
    rows, folded = [], {}
    for r in records:
        if r.outcome != "skipped":
            rows.append(r)
            continue
        key = (r.pathway, r.device, r.message)
        group = folded.setdefault(key, (Record(**{**r.__dict__, "extra": {}}), set(), []))
        group[1].add(r.model)
        group[2].append(r.check)
    for row, models, checks in folded.values():
        models = sorted(models)
        row.model = ", ".join(models) if len(models) <= 4 else f"{len(models)} models/workloads ({models[0]} … {models[-1]})"
        row.check = f"{len(checks)} check(s)"
        rows.append(row)
    return sorted(rows, key=lambda r: (ORDER.get(r.outcome, 5), r.pathway, r.model, r.check))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value)) if value is not None else ""


def speedup_html(records: list[Record]) -> str:
    """Speedup by shape (rows) and token count M (columns), each cell beside its threshold."""
    cells: dict[tuple[str, str], dict[int, Record]] = {}
    for r in records:
        if r.metric == "min_speedup" and "shape" in r.extra:
            row = (r.pathway, r.model.rsplit("-m", 1)[0])
            cells.setdefault(row, {})[r.extra["shape"]["m"]] = r
    if not cells:
        return ""
    tokens = sorted({m for row in cells.values() for m in row})
    head = "".join(f"<th>M={m}</th>" for m in tokens)
    body = []
    for (pathway, shape), row in sorted(cells.items()):
        tds = []
        for m in tokens:
            r = row.get(m)
            if r is None:
                tds.append("<td></td>")
                continue
            t = r.extra.get("timing", {})
            interval = f"<br><small>CI {t['ci_low']:.2f}-{t['ci_high']:.2f}</small>" if "ci_low" in t else ""
            tds.append(f"<td class='qc-{r.outcome}'><b>{r.measured:.2f}x</b> (>= {r.threshold:g}){interval}</td>")
        body.append(f"<tr><td>{_fmt(pathway)}</td><td>{_fmt(shape)}</td>{''.join(tds)}</tr>")
    return (
        "<h3>Speedup over bf16 (median of paired repeats; threshold; 95% interval)</h3>"
        f"<table class='qc-table'><tr><th>Pathway</th><th>Workload</th>{head}</tr>{''.join(body)}</table>"
    )


COLOURS = {"PASS": "#1a7f37", "FAIL": "#cf222e", "ERROR": "#cf222e"}
STATUS_CLASS = {"PASS": "qc-passed", "FAIL": "qc-failed", "ERROR": "qc-error", "NOT RUN": "qc-skipped"}

# pytest-html puts its environment table above the summary; the page reads verdict first: the body
# is a flex column and the summary (which holds this block) comes right after the title.
STYLE = (
    "<style>"
    "body{display:flex;flex-direction:column}body>*{order:3}#title,body>p:first-of-type{order:0}body>.summary{order:1}"
    "#environment-header,#environment{order:2}#environment{align-self:flex-start}footer{order:4}"
    ".qc-table{border-collapse:collapse;margin:6px 0}.qc-table td,.qc-table th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}"
    ".qc-failed,.qc-error{background:#ffebe9}.qc-drift{background:#fff1e5}.qc-passed{background:#dafbe1}.qc-skipped,.qc-xfailed{background:#fff8c5}"
    ".qc-matrix td{min-width:12em}.qc-matrix a{color:inherit;text-decoration:none;display:block}.qc-status{font-weight:bold}"
    ".qc-policy{background:#ddf4ff;border:1px solid #54aeff;border-radius:3px;padding:0 3px;font-size:80%}"
    ".qc-evidence{border-left:4px solid #cf222e;padding:2px 10px;margin:8px 0}.qc-small{font-size:85%;color:#57606a}"
    "#qc-report{color:#24292f}#qc-report td,#qc-report th,#qc-report h3,#qc-report h4,#qc-report p{color:inherit}#qc-report h3{margin:14px 0 4px}"
    "</style>"
)
OPEN_DETAILS = "onclick=\"document.getElementById('qc-details').open=true\""


def _op(direction: str | None) -> str:
    return {"min": "≥", "max": "≤"}.get(direction or "", "")


def _source(r: Record) -> str:
    """The threshold's source, flagged when it is a policy default (defaults.toml)."""
    if not r.source:
        return ""
    badge = " <span class='qc-policy' title='policy default: no calibrated threshold for this case'>policy</span>" if is_policy(r) else ""
    return f"{_fmt(r.source)}{badge}"


def profile_line(env: dict[str, Any], records: list[Record]) -> str:
    """`Profile: harness/profiles/cpu.toml`, saying when and for what the policy defaults gated."""
    text = f"Profile: {_fmt(env.get('profile', '') or 'none loaded')}"
    policy = policy_records(records)
    if policy:
        cases = sorted({f"{r.pathway}/{r.device} {r.model}" for r in policy})
        gated = sum(1 for r in records if r.source and r.source != "artifact check")
        text += (
            f"; <b>policy defaults were used</b> (harness/profiles/defaults.toml) for {len(policy)} of {gated} threshold(s), "
            f"where the profile has no calibrated value: {_fmt(', '.join(cases))} <span class='qc-policy'>policy</span>"
        )
    return text


def verdict_section(records: list[Record], result: Verdict, env: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    gpu_line = f" (compute capability {env['compute_capability']}, CUDA {env['cuda']}, driver {env['driver']})" if "gpu" in env else ""
    return (
        f"<div id='qc-verdict'><h2 style='color:{COLOURS.get(result.word, '#9a6700')};margin:4px 0'>Release verdict: {result.word} (exit {result.exit_code})</h2>"
        f"<p style='margin:2px 0'><b>{_fmt(exit_meaning(result.word))}</b>. Tests: {counts_text(result)}; {result.gates} check(s) ran (threshold gates, artifact checks, properties).</p>"
        f"<p style='margin:2px 0'>Device: {_fmt(env.get('device', ''))}{gpu_line}. {profile_line(env, records)}.</p>"
        f"<p class='qc-small' style='margin:2px 0'>{_fmt(packages)}</p></div>"
    )


def matrix_html(records: list[Record], result: Verdict) -> str:
    """Pathway (device) x model: each cell's status, its worst gate and the margin to its threshold,
    linking to its rows in the details."""
    rows, columns, cells = matrix(records, result)
    if not rows:
        return "<div id='qc-matrix'><h3>Pathway × model</h3><p>No pathway ran a case on an artifact in this selection.</p></div>"
    head = "".join(f"<th>{_fmt(c)}</th>" for c in columns)
    body = []
    for pathway, device in rows:
        tds = []
        for column in columns:
            cell = cells.get((pathway, device, column))
            if cell is None:
                tds.append("<td class='qc-small'>-</td>")
                continue
            worst = cell.worst
            if cell.status == "NOT RUN":
                detail = _fmt(cell.reason[:160])
            elif cell.status == "ERROR":
                detail = _fmt(next((r.message for r in cell.records if r.outcome == "error"), "")[:160])
            elif worst is not None:
                detail = f"worst: {_fmt(worst.metric)} {_fmt(worst.measured)} {_op(worst.direction)} {_fmt(worst.threshold)}, margin {distance(worst):+.3g}"
                detail += " <span class='qc-policy'>policy</span>" if is_policy(worst) else ""
            else:
                detail = f"{sum(1 for r in cell.records if r.outcome == 'passed')} check(s) passed"
            link = f"#{cell.anchor}" if cell.records else "#qc-not-run"
            tds.append(f"<td class='{STATUS_CLASS[cell.status]}'><a href='{link}' {OPEN_DETAILS}><span class='qc-status'>{cell.status}</span><br><small>{detail}</small></a></td>")
        body.append(f"<tr><th>{_fmt(pathway)}<br><small>{_fmt(device)}</small></th>{''.join(tds)}</tr>")
    return (
        "<div id='qc-matrix'><h3>Pathway × model</h3>"
        f"<table class='qc-table qc-matrix'><tr><th>pathway</th>{head}</tr>{''.join(body)}</table>"
        "<p class='qc-small'>Each cell: PASS, FAIL, ERROR or NOT RUN over all of its checks; the gate closest to (or furthest past) its threshold and the margin, in the metric's units. A cell links to its rows below.</p></div>"
    )


def _generations_table(generations: list[dict[str, str]]) -> str:
    rows = "".join(
        f"<tr><td>{_fmt(g['prompt'])}</td><td>{_fmt(g['reference'])}</td><td class='qc-{'passed' if g['candidate'] == g['reference'] else 'failed'}'>{_fmt(g['candidate'])}</td></tr>"
        for g in generations
    )
    return f"<table class='qc-table'><tr><th>Prompt</th><th>Reference</th><th>Quantized</th></tr>{rows}</table>"


def _flipped_item(flip: dict[str, Any]) -> str:
    """A shipped or JSONL item (context and answer), or an lm-eval document (task#index)."""
    if "context" in flip:
        return f"{_fmt(flip['context'])} → answer {_fmt(flip.get('answer'))}"
    return _fmt(flip.get("document"))


def _flips_html(flips: dict[str, Any]) -> str:
    table = flips.get("table")
    parts = []
    if table:
        cols = "".join(f"<th>{_fmt(c)}</th>" for c in flips.get("columns", []))
        body = "".join(f"<tr><th>{_fmt(name)}</th>{''.join(f'<td>{_fmt(v)}</td>' for v in row)}</tr>" for name, row in zip(flips.get("rows", []), table, strict=False))
        parts.append(f"<table class='qc-table'><tr><th></th>{cols}</tr>{body}</table>")
    items = "".join(f"<li>{_flipped_item(f)}: reference {_fmt(f.get('reference'))}, quantized {_fmt(f.get('candidate'))}</li>" for f in flips.get("flipped", []))
    if items:
        parts.append(f"<p>Flipped items ({_fmt(flips.get('flipped_total', ''))} in all):</p><ul>{items}</ul>")
    return "".join(parts)


def failures_html(records: list[Record]) -> str:
    """Each failed gate and error with its evidence: measured vs threshold and its source, where the
    error starts, the case's generations side by side and its flips (once per case)."""
    found = failures(records)
    if not found:
        return "<div id='qc-failures'><h3>Failures: 0</h3><p>No gate failed and nothing errored.</p></div>"
    parts, shown = [], set()
    for r in found:
        case = (r.pathway, r.device, r.model)
        if r.outcome == "error":
            head = f"ERROR {_fmt(r.pathway)}/{_fmt(r.device)} {_fmt(r.model)}: {_fmt(r.check)}"
            numbers = ""
        elif r.metric and r.measured is not None and r.threshold is not None:
            head = f"FAIL {_fmt(r.pathway)}/{_fmt(r.device)} {_fmt(r.model)}: {_fmt(r.check)}"
            numbers = (
                f"<table class='qc-table'><tr><th>metric</th><th>measured</th><th>threshold</th><th>margin</th><th>threshold from</th></tr>"
                f"<tr class='qc-failed'><td>{_fmt(r.metric)}<br><small>{_fmt(r.explanation or '')}</small></td><td><b>{_fmt(r.measured)}</b></td>"
                f"<td>{_op(r.direction)} {_fmt(r.threshold)}</td><td>{distance(r):+.3g}</td><td>{_source(r)}</td></tr></table>"
            )
        else:
            head = f"FAIL {_fmt(r.pathway)}/{_fmt(r.device)} {_fmt(r.model)}: {_fmt(r.check)}"
            numbers = ""
        evidence = [numbers, f"<p>{_fmt(r.message)}</p>" if r.message else ""]
        if case not in shown:
            shown.add(case)
            where = first_bad_layer(records, case)
            if where:
                evidence.append(f"<p><b>First bad layer</b>: {_fmt(where)}</p>")
            gens = generations(records, case)
            if gens:
                evidence.append("<p><b>Generations</b>, reference vs quantized:</p>" + _generations_table(gens))
            flips = next((x.extra["task_flips"] for x in records if (x.pathway, x.device, x.model) == case and x.extra.get("task_flips")), None)
            if flips:
                evidence.append("<p><b>Labeled task</b>, reference vs quantized:</p>" + _flips_html(flips))
        parts.append(f"<div class='qc-evidence'><h4 style='margin:4px 0'>{head}</h4>{''.join(evidence)}<small><code>{_fmt(r.nodeid)}</code></small></div>")
    return f"<div id='qc-failures'><h3 style='color:#cf222e'>Failures: {len(found)}</h3>{''.join(parts)}</div>"


def not_run_html(records: list[Record], result: Verdict) -> str:
    """Tests that did not run, one row per reason with its count; pathways no gate ran for; pathways
    not selected on this machine."""
    groups = not_run_groups(records)
    total = result.counts.get("skipped", 0)
    parts = []
    if result.not_gated:
        items = "".join(f"<li><b>{_fmt(p)}</b>: {_fmt(why)}</li>" for p, why in sorted(result.not_gated.items()))
        parts.append(f"<p><b>Selected but no gate ran</b> (this alone makes the verdict NOT GATED):</p><ul>{items}</ul>")
    if result.not_selected:
        items = "".join(f"<li><b>{_fmt(p)}</b>: {_fmt(why)}</li>" for p, why in sorted(result.not_selected.items()))
        parts.append(f"<p><b>Not run on this machine</b> (not selected; name them with --pathways to require them):</p><ul>{items}</ul>")
    if groups:
        rows = "".join(
            f"<tr><td>{_fmt(g['reason'])}</td><td>{g['count']}</td><td>{_fmt(', '.join(g['pathways']) or '-')}</td><td><small>{_fmt(', '.join(g['checks']))}</small></td></tr>"
            for g in groups
        )
        parts.append(f"<table class='qc-table'><tr><th>Why not run</th><th>Tests</th><th>Pathways</th><th>Checks</th></tr>{rows}</table>")
    if not parts:
        return ""
    return f"<div id='qc-not-run'><h3>Not run: {total} test(s), {len(groups)} reason(s)</h3>{''.join(parts)}</div>"


def _row(r: Record, case: bool = True) -> str:
    """One record; in a cell's table (`case=False`) without the pathway, device and model it shares."""
    threshold = f"{_op(r.direction)} {_fmt(r.threshold)}" if r.threshold is not None else ""
    why = r.message or r.explanation or ""
    source = f"<br><small>{_source(r)}</small>" if r.source else ""
    labels = f"<td>{_fmt(r.pathway)}</td><td>{_fmt(r.device)}</td><td>{_fmt(r.model)}</td>" if case else ""
    return (
        f"<tr class='qc-{r.outcome}'><td><b>{r.outcome.upper()}</b></td>{labels}<td>{_fmt(r.check)}</td>"
        f"<td>{_fmt(r.metric or '')}</td><td>{_fmt(r.measured)}</td><td>{threshold}</td>"
        f"<td>{_fmt(why)}{source}</td></tr>"
    )


TABLE_HEAD = "<tr><th>Outcome</th><th>Pathway</th><th>Device</th><th>Model</th><th>Check</th><th>Metric</th><th>Measured</th><th>Threshold</th><th>What it means / why</th></tr>"
CELL_HEAD = "<tr><th>Outcome</th><th>Check</th><th>Metric</th><th>Measured</th><th>Threshold</th><th>What it means / why (threshold from)</th></tr>"


def details_html(records: list[Record], result: Verdict) -> str:
    """Every check, one table per matrix cell (the cells link here), then the library's property
    tests; collapsed."""
    rows, columns, cells = matrix(records, result)
    parts = []
    for pathway, device in rows:
        for column in columns:
            cell = cells.get((pathway, device, column))
            if cell is None or not cell.records:
                continue
            body = "".join(_row(r, case=column == PERF_COLUMN) for r in table_rows([r for r in cell.records if not is_noise(r)]))
            head = TABLE_HEAD if column == PERF_COLUMN else CELL_HEAD
            parts.append(f"<h4 id='{cell.anchor}'>{_fmt(pathway)}/{_fmt(device)} × {_fmt(column)}: {cell.status}</h4><table class='qc-table'>{head}{body}</table>")
    library = [r for r in records if not is_case_record(r) and not is_noise(r)]
    if library:
        body = "".join(_row(r) for r in table_rows(library))
        parts.append(f"<h4 id='qc-library'>Library property tests and other checks (no model)</h4><table class='qc-table'>{TABLE_HEAD}{body}</table>")
    return "".join(parts)


def verdict_html(records: list[Record], result: Verdict, env: dict[str, Any], comparison: dict | None = None, baseline_path: str = "", trend: dict | None = None) -> list[str]:
    """The report, top-down: the verdict; the pathway x model matrix; failures with evidence;
    regressions against the baseline and each metric across releases (`trend`, from
    harness/report/history.py); what did not run, by reason; plots; then the details, collapsed."""
    rows = sum(1 for r in records if not is_noise(r))
    details = "".join(
        [
            details_html(records, result),
            generations_html(records),
            costs_html(records),
            speedup_html(records),
            probes_html(env.get("probes", [])),
            proven_html(),
        ]
    )
    return [
        STYLE,
        "<div id='qc-report'>",
        verdict_section(records, result, env),
        matrix_html(records, result),
        failures_html(records),
        comparison_html(comparison, baseline_path),
        history_html(trend) if trend else "",
        not_run_html(records, result),
        plots_html(records),
        f"<details id='qc-details'><summary><b>Details</b>: every check ({rows} rows, by cell), generations, what each case cost, speed tables, capability probes, what each gate is proven to catch</summary>{details}</details>",
        "</div>",
    ]


def generations_html(records: list[Record]) -> str:
    """Reference and quantized greedy generations side by side, per case: garbage text is obvious."""
    seen, parts = set(), []
    for r in sorted(records, key=lambda r: (ORDER.get(r.outcome, 5), r.pathway, r.model)):
        if not r.extra.get("generations") or (r.pathway, r.model, r.device) in seen:
            continue
        seen.add((r.pathway, r.model, r.device))
        rows = "".join(
            f"<tr><td>{_fmt(g['prompt'])}</td><td>{_fmt(g['reference'])}</td><td class='qc-{'passed' if g['candidate'] == g['reference'] else 'failed'}'>{_fmt(g['candidate'])}</td></tr>"
            for g in r.extra["generations"]
        )
        parts.append(f"<h4>{_fmt(r.pathway)}/{_fmt(r.device)} {_fmt(r.model)}</h4><table class='qc-table'><tr><th>Prompt</th><th>Reference</th><th>Quantized</th></tr>{rows}</table>")
    return "<h3>Greedy generations, reference vs quantized</h3>" + "".join(parts) if parts else ""


def case_costs(records: list[Record]) -> dict[tuple[str, str, str], dict[str, dict[str, Any]]]:
    """Per (pathway, device, model): what each phase cost (the union of its records' `costs`)."""
    found: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for r in records:
        if isinstance(r.extra.get("costs"), dict):
            found.setdefault((r.pathway, r.device, r.model), {}).update(r.extra["costs"])
    return found


def _cost(cost: dict[str, Any]) -> str:
    parts = [f"{cost['seconds']:.1f} s"] if "seconds" in cost else []
    if "forwards" in cost:
        parts.append(f"{cost['forwards']} forwards")
    if "host_peak_gib" in cost:
        parts.append(f"host peak {cost['host_peak_gib']:.1f} GiB (+{cost.get('host_peak_raised_gib', 0):.1f})")
    if "gpu_peak_reserved_gib" in cost:
        parts.append(f"GPU {cost['gpu_peak_reserved_gib']:.1f} GiB")
    return ", ".join(parts)


def costs_html(records: list[Record]) -> str:
    """What each case's phases cost: wall time, forward passes, the process's host peak so far and
    how much the phase raised it (the phase that set the run's peak names itself)."""
    rows = []
    for (pathway, device, model), costs in sorted(case_costs(records).items()):
        cells = "".join(f"<li><b>{_fmt(label)}</b>: {_fmt(_cost(cost))}</li>" for label, cost in costs.items())
        rows.append(f"<tr><th>{_fmt(pathway)}/{_fmt(device)}<br><small>{_fmt(model)}</small></th><td><ul>{cells}</ul></td></tr>")
    if not rows:
        return ""
    return "<h3 id='qc-costs'>What each case cost</h3><table class='qc-table'><tr><th>case</th><th>phases (wall time, forward passes, host memory peak so far and what the phase added)</th></tr>" + "".join(rows) + "</table>"


def probes_html(probes: list[dict[str, Any]]) -> str:
    """The capability probes: one tiny real operation per pathway and device, before any case ran."""
    if not probes:
        return ""
    rows = "".join(
        f"<tr class='qc-{'passed' if p['ok'] else 'failed'}'><td>{_fmt(p['pathway'])}</td><td>{_fmt(p['device'])}</td><td>{_fmt(p['operation'])}</td>"
        f"<td>{'ok' if p['ok'] else 'FAILED'}: {_fmt(p['detail'])}</td><td><small>{_fmt(', '.join(f'{k} {v}' for k, v in p['versions'].items()))}</small></td></tr>"
        for p in probes
    )
    return f"<h3>Capability probes</h3><table class='qc-table'><tr><th>Pathway</th><th>Device</th><th>Operation</th><th>Result</th><th>Versions</th></tr>{rows}</table>"


def proven_html() -> str:
    """Per gate, the planted defects qconform's own tests prove it catches."""
    from harness.judge.catalog import by_gate

    items = "".join(f"<li><b>{_fmt(gate)}</b>: {_fmt('; '.join(entry.defect for entry in entries))}</li>" for gate, entries in sorted(by_gate().items()))
    return f"<details><summary>What each gate is proven to catch (planted defects in tests/)</summary><ul>{items}</ul></details>"


def standalone_html(records: list[Record], result: Verdict, env: dict[str, Any]) -> str:
    """A self-contained verdict page (used for merged shards)."""
    body = "".join(verdict_html(records, result, env))
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>qconform release verdict: {result.word}</title></head><body>{body}</body></html>\n"


# -- baseline comparison and history --------------------------------------------------------

def comparison_html(comparison: dict[str, list[dict[str, Any]]] | None, baseline_path: str) -> str:
    """Regressions against the baseline (each metric that moved the wrong way beyond its noise band);
    the improvements below them, collapsed."""
    if comparison is None:
        return ""

    def table(entries: list[dict[str, Any]]) -> str:
        rows = "".join(
            f"<tr><td>{_fmt(e['pathway'])}/{_fmt(e['device'])}</td><td>{_fmt(e['model'])}</td><td>{_fmt(e['metric'])}</td>"
            f"<td>{_fmt(e['baseline'])}</td><td>{_fmt(e['current'])}</td><td>{e['delta']:+.4g} (noise band {e['band']:.3g})</td></tr>"
            for e in entries
        )
        return f"<table class='qc-table'><tr><th>Pathway</th><th>Model</th><th>Metric</th><th>Baseline</th><th>Now</th><th>Change</th></tr>{rows}</table>"

    regressions, improvements = comparison["regressions"], comparison["improvements"]
    colour = "#cf222e" if regressions else "#1a7f37"
    parts = [f"<h3 style='color:{colour}'>Regressions since the baseline: {len(regressions)}</h3>", f"<p class='qc-small'>Compared with {_fmt(baseline_path)}</p>"]
    if regressions:
        parts.append(table(regressions))
    if improvements:
        parts.append(f"<details><summary>Improvements since the baseline: {len(improvements)}</summary>{table(improvements)}</details>")
    return f"<div id='qc-baseline'>{''.join(parts)}</div>"


def _png(fig) -> str:
    import base64
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def _layer_series(records: list[Record]) -> dict[str, list[tuple[str, str, list[float], float | None]]]:
    """model -> [(label, panel, per-layer values, threshold)]: weight SQNR per quantized layer and
    activation SQNR per layer in execution order, from the layer gates' records."""
    series: dict[str, list[tuple[str, str, list[float], float | None]]] = {}
    for r in records:
        if r.measured is None or not is_case_record(r):
            continue
        if r.metric == "min_layer_weight_sqnr_db" and isinstance(r.extra.get("per_layer"), dict):
            values, panel = [float(v) for v in r.extra["per_layer"].values()], "weight"
        elif r.metric == "min_layer_activation_sqnr_db" and r.extra.get("layer_activation_sqnr_db"):
            values, panel = [float(v) for _, v in r.extra["layer_activation_sqnr_db"]], "activation"
        else:
            continue
        series.setdefault(r.model, []).append((f"{r.pathway}/{r.device}", panel, values, r.threshold))
    return series


def plots_html(records: list[Record]) -> str:
    """Per model, one row of axes: weight SQNR per quantized layer and activation SQNR per layer in
    execution order, each pathway a line and its threshold drawn dashed in the same colour; the
    speedups against their thresholds. Embedded PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = []
    titles = {"weight": "weight SQNR per quantized layer (graph order)", "activation": "activation SQNR per layer (execution order)"}
    for model, lines in sorted(_layer_series(records).items()):
        panels = [p for p in ("weight", "activation") if any(line[1] == p for line in lines)]
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.2), squeeze=False)
        for ax, panel in zip(axes[0], panels, strict=True):
            for i, (label, _, values, threshold) in enumerate(line for line in lines if line[1] == panel):
                colour = f"C{i}"
                finite = [v if v == v and abs(v) != float("inf") else float("nan") for v in values]
                ax.plot(range(len(finite)), finite, marker=".", color=colour, label=label)
                if threshold is not None:
                    ax.axhline(threshold, color=colour, linestyle="--", linewidth=1, label=f"{label} threshold {threshold:g} dB")
            ax.set(title=f"{model}: {titles[panel]}", xlabel="layer", ylabel="dB")
            ax.legend(fontsize=7)
        images.append(_png(fig))
    speed = sorted((r for r in records if r.metric == "min_speedup"), key=lambda r: r.model)
    if speed:
        fig, ax = plt.subplots(figsize=(12, 0.28 * len(speed) + 1))
        names = [f"{r.pathway} {r.model}" for r in speed]
        colours = ["#1a7f37" if r.outcome == "passed" else "#cf222e" for r in speed]
        ax.barh(names, [r.measured for r in speed], color=colours)
        ax.scatter([r.threshold for r in speed], names, marker="|", s=200, color="black", label="threshold", zorder=3)
        ax.axvline(1.0, color="grey", linestyle=":")
        ax.set(title="speedup over bf16 (bar) against its threshold (|)", xlabel="speedup (x)")
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(loc="lower right")
        images.append(_png(fig))
    return "<div id='qc-plots'><h3>Plots</h3>" + "".join(images) + "</div>" if images else ""


# -- each metric across releases (harness/report/history.py) ---------------------------------


def _history_plot(entry: dict[str, Any], runs: int) -> str:
    """One metric across the runs, newest on the right: its values (failed runs red), its threshold
    dashed, the noise band around the newest value shaded, the drifting window's trend in orange."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    points = entry["points"]
    xs, ys = [p["run"] for p in points], [p["value"] if math.isfinite(p["value"]) else float("nan") for p in points]
    fig, ax = plt.subplots(figsize=(3.6, 1.9))
    ax.plot(xs, ys, marker="o", markersize=4, color="C0", linewidth=1.5)
    failed = [(x, y) for x, y, p in zip(xs, ys, points, strict=True) if p["outcome"] == "failed"]
    if failed:
        ax.scatter(*zip(*failed, strict=True), color="#cf222e", s=14, zorder=3)
    ax.axhline(entry["threshold"], color="#cf222e", linestyle="--", linewidth=1)
    if math.isfinite(ys[-1]):
        ax.axhspan(ys[-1] - entry["band"], ys[-1] + entry["band"], color="grey", alpha=0.2, linewidth=0)
    if entry["drift"]:  # the rule's least-squares line over the drifting window, at the runs it came from
        k = entry["drift"]["releases"]
        slope = entry["drift"]["slope_per_release"] * (1 if entry["direction"] == "max" else -1)
        window = [(x, y) for x, y in zip(xs, ys, strict=True) if y == y][-k:]  # the rule skips non-finite values
        mean = sum(y for _, y in window) / k
        ax.plot([window[0][0], window[-1][0]], [mean - slope * (k - 1) / 2, mean + slope * (k - 1) / 2], color="#bc4c00", linewidth=1, linestyle=":")
    ax.set_xlim(-0.5, max(runs - 0.5, 0.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    ax.tick_params(labelsize=6)
    ax.set_title(f"{entry['metric']}{'  DRIFTING' if entry['flagged'] else ''}", fontsize=7, color="#bc4c00" if entry["flagged"] else "black")
    ax.set_xlabel("run (oldest → newest)", fontsize=6)
    return _png(fig)


def _history_row(entry: dict[str, Any], runs: int, case: str = "") -> str:
    values = ", ".join(f"{p['value']:.4g}" for p in entry["points"][-MAX_SHOWN:])
    d = entry["drift"]
    why = (
        f"<b>drifting</b> over the last {d['releases']} runs: {d['moved']:.3g} toward the threshold (trend {d['fitted_move']:.3g}, "
        f"{d['slope_per_release']:.3g} per run; at this pace it reaches the threshold in about {d['releases_to_threshold']:.1f} runs)"
        if d
        else "no drift beyond the noise band"
    )
    label = f"<td>{_fmt(case)}</td>" if case else ""
    return (
        f"<tr class='{'qc-drift' if d else ''}'>{label}<td>{_fmt(entry['metric'])}<br><small>{_fmt(entry['check'])}</small></td>"
        f"<td><small>{values}</small></td><td>{_op(entry['direction'])} {_fmt(entry['threshold'])}</td><td>±{entry['band']:.3g}</td>"
        f"<td>{why}</td><td>{_history_plot(entry, runs)}</td></tr>"
    )


MAX_SHOWN = 8  # values listed beside a plot: the newest ones (the plot shows all)
HISTORY_HEAD = "<tr><th>Metric</th><th>Values (newest last)</th><th>Threshold</th><th>Noise band</th><th>Drift</th><th>Across runs</th></tr>"


def history_html(trend: dict[str, Any], open_all: bool = False) -> str:
    """Each gated metric across releases: the drifting ones first, open; then every metric per
    pathway x model (collapsed in the run's report, open on the standalone page)."""
    runs, cases = len(trend["runs"]), trend["cases"]
    flagged = [(f"{c['pathway']}/{c['device']} {c['model']}", e) for c in cases for e in c["metrics"] if e["flagged"]]
    colour = "#bc4c00" if flagged else "#1a7f37"
    first, last = trend["runs"][0]["created"], trend["runs"][-1]["created"]
    parts = [
        f"<h3 style='color:{colour}'>Across releases: {len(flagged)} metric(s) drifting toward their threshold, over {runs} runs</h3>",
        f"<p class='qc-small'>Runs from {_fmt(first)} to {_fmt(last)}, ordered by time. Rule: {_fmt(trend['rule'])}. A warning, not a gate.</p>",
    ]
    if flagged:
        head = HISTORY_HEAD.replace("<tr>", "<tr><th>Case</th>", 1)
        parts.append(f"<table class='qc-table'>{head}{''.join(_history_row(e, runs, case) for case, e in flagged)}</table>")
    body = "".join(
        f"<h4>{_fmt(c['pathway'])}/{_fmt(c['device'])} × {_fmt(c['model'])}</h4><table class='qc-table'>{HISTORY_HEAD}{''.join(_history_row(e, runs) for e in c['metrics'])}</table>"
        for c in cases
    )
    count = sum(len(c["metrics"]) for c in cases)
    parts.append(f"<details{' open' if open_all else ''}><summary>Every gated metric across the runs: {count} metric(s) of {len(cases)} case(s)</summary>{body}</details>")
    return f"<div id='qc-history'>{''.join(parts)}</div>"


def history_page(trend: dict[str, Any]) -> str:
    """`qconform report --history`: the cross-release section as a self-contained page."""
    body = STYLE + f"<div id='qc-report'>{history_html(trend, open_all=True)}</div>"
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>qconform across releases: {trend['drifting']} drifting</title></head><body>{body}</body></html>\n"
