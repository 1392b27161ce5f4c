"""The verdict a release manager reads: one table (pathway x check, measured vs threshold) at the
top of the pytest-html report, plots and generations; summary.json (harness/report/summary.py)
holds the same numbers for machines."""

from __future__ import annotations

import html
from typing import Any

from harness.judge.gates import Record, Verdict
from harness.report.summary import ORDER, counts_text


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


def verdict_html(records: list[Record], result: Verdict, env: dict[str, Any], comparison: dict | None = None, baseline_path: str = "") -> list[str]:
    body = []
    for r in table_rows(records):
        op = {"min": "≥", "max": "≤"}.get(r.direction or "", "")
        threshold = f"{op} {_fmt(r.threshold)}" if r.threshold is not None else ""
        why = r.message or r.explanation or ""
        source = f"<br><small>{_fmt(r.source)}</small>" if r.source else ""
        body.append(
            f"<tr class='qc-{r.outcome}'><td><b>{r.outcome.upper()}</b></td><td>{_fmt(r.pathway)}</td>"
            f"<td>{_fmt(r.device)}</td><td>{_fmt(r.model)}</td><td>{_fmt(r.check)}</td>"
            f"<td>{_fmt(r.metric or '')}</td><td>{_fmt(r.measured)}</td><td>{threshold}</td>"
            f"<td>{_fmt(why)}{source}</td></tr>"
        )
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    gpu_line = f" (compute capability {env['compute_capability']}, CUDA {env['cuda']}, driver {env['driver']})" if "gpu" in env else ""
    missing = "".join(f"<li><b>{_fmt(p)}</b>: {_fmt(why)}</li>" for p, why in sorted(result.not_gated.items()))
    missing = f"<p><b>Selected but no gate ran</b> (this alone makes the verdict NOT GATED):</p><ul>{missing}</ul>" if missing else ""
    skipped = "".join(f"<li><b>{_fmt(p)}</b>: {_fmt(why)}</li>" for p, why in sorted(result.not_selected.items()))
    skipped = f"<p><b>Not run on this machine</b> (not selected; name them with --pathways to require them):</p><ul>{skipped}</ul>" if skipped else ""
    return [
        "<style>.qc-table{border-collapse:collapse;margin:8px 0}.qc-table td,.qc-table th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        ".qc-failed,.qc-error{background:#ffebe9}.qc-passed{background:#dafbe1}.qc-skipped,.qc-xfailed{background:#fff8c5}</style>",
        f"<h2 id='qc-verdict' style='color:{COLOURS.get(result.word, '#9a6700')}'>Release verdict: {result.word} (exit {result.exit_code})</h2>",
        comparison_html(comparison, baseline_path),
        f"<p>Tests: {counts_text(result)}; {result.gates} check(s) ran (threshold gates, artifact checks, properties). "
        f"Device: {_fmt(env.get('device', ''))}{gpu_line}. Profile: {_fmt(env.get('profile', ''))}.<br><small>{_fmt(packages)}</small></p>",
        missing,
        skipped,
        "<table class='qc-table'><tr><th>Outcome</th><th>Pathway</th><th>Device</th><th>Model</th><th>Check</th>"
        "<th>Metric</th><th>Measured</th><th>Threshold</th><th>What it means / why</th></tr>" + "".join(body) + "</table>",
        generations_html(records),
        speedup_html(records),
        plots_html(records),
        probes_html(env.get("probes", [])),
        proven_html(),
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
    if comparison is None:
        return ""
    parts = []
    for title, key, colour in (("Regressions since the baseline", "regressions", "#cf222e"), ("Improvements since the baseline", "improvements", "#1a7f37")):
        rows = "".join(
            f"<tr><td>{_fmt(e['pathway'])}/{_fmt(e['device'])}</td><td>{_fmt(e['model'])}</td><td>{_fmt(e['metric'])}</td>"
            f"<td>{_fmt(e['baseline'])}</td><td>{_fmt(e['current'])}</td><td>{e['delta']:+.4g} (noise band {e['band']:.3g})</td></tr>"
            for e in comparison[key]
        )
        count = len(comparison[key])
        parts.append(
            f"<h3 style='color:{colour}'>{title}: {count}</h3>"
            + (f"<table class='qc-table'><tr><th>Pathway</th><th>Model</th><th>Metric</th><th>Baseline</th><th>Now</th><th>Change</th></tr>{rows}</table>" if count else "")
        )
    return f"<div id='qc-baseline'><p>Compared with {_fmt(baseline_path)}</p>{''.join(parts)}</div>"


def _png(fig) -> str:
    import base64
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def plots_html(records: list[Record]) -> str:
    """Error histograms, per-layer weight SQNR and speedup against threshold, as embedded PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = []
    outputs = [r for r in records if "error_histogram" in r.extra and r.metric == "min_sqnr_db"]
    if outputs:
        fig, (hist, layers) = plt.subplots(1, 2, figsize=(12, 3.6))
        for r in outputs:
            label = f"{r.pathway}/{r.device} {r.model}"
            edges, counts = r.extra["error_histogram"]["edges"], r.extra["error_histogram"]["counts"]
            hist.stairs([c / max(sum(counts), 1) for c in counts], edges, label=label)
            per_layer = list(r.extra.get("layer_weight_sqnr_db", {}).values())
            if per_layer:
                layers.plot(range(len(per_layer)), per_layer, marker=".", label=label)
        hist.set(title="output error vs fp32 reference", xlabel="log10 |error|", ylabel="fraction of values")
        layers.set(title="weight SQNR per quantized layer", xlabel="layer (graph order)", ylabel="dB")
        hist.legend(fontsize=7)
        layers.legend(fontsize=7)
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
    return "<h3>Plots</h3>" + "".join(images) if images else ""
