"""The verdict a release manager reads: one table (pathway x check, measured vs threshold) at the
top of the pytest-html report, and the same numbers in summary.json for machines."""

from __future__ import annotations

import datetime
import html
import importlib.metadata
import json
import math
import platform
import subprocess
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.artifacts import write_json_atomic

if TYPE_CHECKING:
    from harness.plugin import Harness

PACKAGES = ("qconform", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnx-neural-compressor", "neural-compressor-pt", "torchao", "tensorrt", "numpy")
ORDER = {"failed": 0, "error": 0, "passed": 2, "skipped": 1}


def gpu_environment() -> dict[str, Any]:
    """GPU, compute capability, CUDA and driver versions, where there is a GPU."""
    try:
        import torch
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {}
    major, minor = torch.cuda.get_device_capability(0)
    env = {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}", "cuda": torch.version.cuda}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        env["driver"] = out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        env["driver"] = "unknown (nvidia-smi unavailable)"
    return env


def environment(harness: "Harness") -> dict[str, Any]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "device": harness.device.describe(),
        "profile": ", ".join(harness.profiles_used()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        **gpu_environment(),
    }


def verdict(records: list[dict[str, Any]]) -> tuple[str, Counter]:
    counts = Counter(r["outcome"] for r in records)
    failed = counts["failed"] + counts["error"]
    if failed:
        return "FAIL", counts
    return ("PASS" if counts["passed"] else "NO GATE RAN"), counts


def write_summary(harness: "Harness", report_dir: Path, comparison: dict | None = None) -> Path:
    word, counts = verdict(harness.records)
    summary = {
        "verdict": word,
        "counts": dict(counts),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(harness),
        "records": harness.records,
    }
    if comparison is not None:
        summary["comparison"] = comparison
    path = report_dir / "summary.json"
    write_json_atomic(path, json_safe(summary))
    return path


def json_safe(value: Any) -> Any:
    # JSON has no inf/nan; write them as strings so the file stays standard.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def table_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failures first; skips that share a pathway, device and reason fold into one row."""
    rows, folded = [], {}
    for r in records:
        if r["outcome"] != "skipped":
            rows.append(r)
            continue
        key = (r["pathway"], r["device"], r.get("reason", ""))
        group = folded.setdefault(key, {**r, "models": set(), "checks": 0})
        group["models"].add(r["model"])
        group["checks"] += 1
    for group in folded.values():
        models = sorted(group.pop("models"))
        group["model"] = ", ".join(models) if len(models) <= 4 else f"{len(models)} models/workloads ({models[0]} … {models[-1]})"
        group["check"] = f"{group.pop('checks')} check(s)"
        rows.append(group)
    return sorted(rows, key=lambda r: (ORDER.get(r["outcome"], 3), r["pathway"], r["model"], r["check"]))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value)) if value is not None else ""


def speedup_html(records: list[dict[str, Any]]) -> str:
    """Speedup by shape (rows) and token count M (columns), each cell beside its threshold."""
    cells: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in records:
        if r.get("metric") == "min_speedup" and "shape" in r:
            row = (r["pathway"], r["model"].rsplit("-m", 1)[0])
            cells.setdefault(row, {})[r["shape"]["m"]] = r
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
            t = r.get("timing", {})
            interval = f"<br><small>CI {t['ci_low']:.2f}-{t['ci_high']:.2f}</small>" if "ci_low" in t else ""
            tds.append(f"<td class='qc-{r['outcome']}'><b>{r['measured']:.2f}x</b> (>= {r['threshold']:g}){interval}</td>")
        body.append(f"<tr><td>{_fmt(pathway)}</td><td>{_fmt(shape)}</td>{''.join(tds)}</tr>")
    return (
        "<h3>Speedup over bf16 (median of paired repeats; threshold; 95% interval)</h3>"
        f"<table class='qc-table'><tr><th>Pathway</th><th>Workload</th>{head}</tr>{''.join(body)}</table>"
    )


def verdict_html(records: list[dict[str, Any]], env: dict[str, Any], comparison: dict | None = None, baseline_path: str = "") -> list[str]:
    word, counts = verdict(records)
    colour = {"PASS": "#1a7f37", "FAIL": "#cf222e"}.get(word, "#9a6700")
    body = []
    for r in table_rows(records):
        op = {"min": "≥", "max": "≤"}.get(r.get("direction", ""), "")
        threshold = f"{op} {_fmt(r['threshold'])}" if "threshold" in r else ""
        why = r.get("reason") or r.get("explanation", "")
        source = f"<br><small>{_fmt(r['source'])}</small>" if r.get("source") else ""
        body.append(
            f"<tr class='qc-{r['outcome']}'><td><b>{r['outcome'].upper()}</b></td><td>{_fmt(r['pathway'])}</td>"
            f"<td>{_fmt(r['device'])}</td><td>{_fmt(r['model'])}</td><td>{_fmt(r['check'])}</td>"
            f"<td>{_fmt(r.get('metric', ''))}</td><td>{_fmt(r.get('measured'))}</td><td>{threshold}</td>"
            f"<td>{_fmt(why)}{source}</td></tr>"
        )
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    gpu_line = f" (compute capability {env['compute_capability']}, CUDA {env['cuda']}, driver {env['driver']})" if "gpu" in env else ""
    return [
        "<style>.qc-table{border-collapse:collapse;margin:8px 0}.qc-table td,.qc-table th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        ".qc-failed,.qc-error{background:#ffebe9}.qc-passed{background:#dafbe1}.qc-skipped{background:#fff8c5}</style>",
        f"<h2 id='qc-verdict' style='color:{colour}'>Release verdict: {word}</h2>",
        comparison_html(comparison, baseline_path),
        f"<p>{counts['passed']} gate(s) passed, {counts['failed'] + counts['error']} failed, {counts['skipped']} skipped. "
        f"Device: {_fmt(env['device'])}{gpu_line}. Profile: {_fmt(env['profile'])}.<br><small>{_fmt(packages)}</small></p>",
        "<table class='qc-table'><tr><th>Verdict</th><th>Pathway</th><th>Device</th><th>Model</th><th>Check</th>"
        "<th>Metric</th><th>Measured</th><th>Threshold</th><th>What it means / why</th></tr>" + "".join(body) + "</table>",
        speedup_html(records),
        plots_html(records),
        proven_html(),
    ]


def proven_html() -> str:
    """Per gate, the planted defects qconform's own tests prove it catches."""
    from harness.catalog import by_gate

    items = "".join(f"<li><b>{_fmt(gate)}</b>: {_fmt('; '.join(entry.defect for entry in entries))}</li>" for gate, entries in sorted(by_gate().items()))
    return f"<details><summary>What each gate is proven to catch (planted defects in tests/)</summary><ul>{items}</ul></details>"


def merge_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary from the shards of a run (each shard ran a disjoint set of tests)."""
    records = [r for s in summaries for r in s["records"]]
    word, counts = verdict(records)
    devices = sorted({s["environment"]["device"] for s in summaries})
    environment = {**summaries[0]["environment"], "device": ", ".join(devices), "shards": len(summaries)}
    return {
        "verdict": word,
        "counts": dict(counts),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment,
        "records": records,
    }


def standalone_html(summary: dict[str, Any]) -> str:
    """A self-contained verdict page for a summary.json (used for merged shards)."""
    body = "".join(verdict_html(summary["records"], summary["environment"]))
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>qconform verdict</title></head><body>{body}</body></html>\n"


# -- baseline comparison and history --------------------------------------------------------

# How far a metric may move between two clean runs before it counts: ("rel" | "abs", size).
NOISE_BANDS = {
    "min_speedup": ("rel", 0.05),
    "min_sqnr_db": ("abs", 0.5),
    "min_golden_sqnr_db": ("abs", 1.0),
    "min_token_agreement": ("abs", 0.01),
}
DEFAULT_BAND = ("abs", 0.005)


def compare_with_baseline(records: list[dict[str, Any]], baseline: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every metric that moved beyond its noise band since the baseline, worse first."""
    before = {(r["nodeid"], r["metric"]): r for r in baseline.get("records", []) if "metric" in r}
    moved: dict[str, list[dict[str, Any]]] = {"regressions": [], "improvements": []}
    for r in records:
        old = before.get((r.get("nodeid"), r.get("metric")))
        if old is None:
            continue
        now, was = float(r["measured"]), float(old["measured"])  # summary.json spells inf as "inf"
        if now == was:
            continue
        kind, size = NOISE_BANDS.get(r["metric"], DEFAULT_BAND)
        band = size * abs(was) if kind == "rel" and math.isfinite(was) else size
        delta = now - was
        if math.isfinite(delta) and abs(delta) <= band:
            continue
        better = delta > 0 if r["direction"] == "min" else delta < 0
        entry = {
            "pathway": r["pathway"],
            "device": r["device"],
            "model": r["model"],
            "check": r["check"],
            "metric": r["metric"],
            "baseline": was,
            "current": now,
            "delta": delta,
            "band": band,
            "nodeid": r["nodeid"],
        }
        moved["improvements" if better else "regressions"].append(entry)
    moved["regressions"].sort(key=lambda e: -abs(e["delta"]) / (e["band"] or 1))
    return moved


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


def keep_history(summary_path: Path) -> Path:
    """Copy this run's summary into reports/history/, named by its time, atomically."""
    summary = json.loads(summary_path.read_text())
    stamp = summary["created"].replace(":", "").replace("-", "").replace("+0000", "Z")
    target = summary_path.parent / "history" / f"summary-{stamp}.json"
    write_json_atomic(target, summary)
    return target


# -- plots ------------------------------------------------------------------------------------


def _png(fig) -> str:
    import base64
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def plots_html(records: list[dict[str, Any]]) -> str:
    """Error histograms, per-layer weight SQNR and speedup against threshold, as embedded PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = []
    outputs = [r for r in records if "error_histogram" in r and r.get("metric") == "min_sqnr_db"]
    if outputs:
        fig, (hist, layers) = plt.subplots(1, 2, figsize=(12, 3.6))
        for r in outputs:
            label = f"{r['pathway']}/{r['device']} {r['model']}"
            edges, counts = r["error_histogram"]["edges"], r["error_histogram"]["counts"]
            hist.stairs([c / max(sum(counts), 1) for c in counts], edges, label=label)
            per_layer = list(r.get("layer_weight_sqnr_db", {}).values())
            if per_layer:
                layers.plot(range(len(per_layer)), per_layer, marker=".", label=label)
        hist.set(title="output error vs fp32 reference", xlabel="log10 |error|", ylabel="fraction of values")
        layers.set(title="weight SQNR per quantized layer", xlabel="layer (graph order)", ylabel="dB")
        hist.legend(fontsize=7)
        layers.legend(fontsize=7)
        images.append(_png(fig))
    speed = sorted((r for r in records if r.get("metric") == "min_speedup"), key=lambda r: r["model"])
    if speed:
        fig, ax = plt.subplots(figsize=(12, 0.28 * len(speed) + 1))
        names = [f"{r['pathway']} {r['model']}" for r in speed]
        colours = ["#1a7f37" if r["outcome"] == "passed" else "#cf222e" for r in speed]
        ax.barh(names, [r["measured"] for r in speed], color=colours)
        ax.scatter([r["threshold"] for r in speed], names, marker="|", s=200, color="black", label="threshold", zorder=3)
        ax.axvline(1.0, color="grey", linestyle=":")
        ax.set(title="speedup over bf16 (bar) against its threshold (|)", xlabel="speedup (x)")
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(loc="lower right")
        images.append(_png(fig))
    return "<h3>Plots</h3>" + "".join(images) if images else ""
