"""The verdict a release manager reads: one table (pathway x check, measured vs threshold) at the
top of the pytest-html report, and the same numbers in summary.json for machines."""

from __future__ import annotations

import datetime
import html
import importlib.metadata
import math
import platform
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.artifacts import write_json_atomic

if TYPE_CHECKING:
    from harness.plugin import Harness

PACKAGES = ("qconform", "torch", "onnx", "onnxruntime", "neural-compressor", "onnx-neural-compressor", "torchao", "tensorrt", "numpy")
ORDER = {"failed": 0, "error": 0, "passed": 2, "skipped": 1}


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
    }


def verdict(records: list[dict[str, Any]]) -> tuple[str, Counter]:
    counts = Counter(r["outcome"] for r in records)
    failed = counts["failed"] + counts["error"]
    if failed:
        return "FAIL", counts
    return ("PASS" if counts["passed"] else "NO GATE RAN"), counts


def write_summary(harness: "Harness", report_dir: Path) -> Path:
    word, counts = verdict(harness.records)
    summary = {
        "verdict": word,
        "counts": dict(counts),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(harness),
        "records": harness.records,
    }
    path = report_dir / "summary.json"
    write_json_atomic(path, _finite(summary))
    return path


def _finite(value: Any) -> Any:
    # JSON has no inf/nan; write them as strings so the file stays standard.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
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
        group["model"] = ", ".join(sorted(group.pop("models")))
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


def verdict_html(records: list[dict[str, Any]], env: dict[str, Any]) -> list[str]:
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
    return [
        "<style>.qc-table{border-collapse:collapse;margin:8px 0}.qc-table td,.qc-table th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        ".qc-failed,.qc-error{background:#ffebe9}.qc-passed{background:#dafbe1}.qc-skipped{background:#fff8c5}</style>",
        f"<h2 id='qc-verdict' style='color:{colour}'>Release verdict: {word}</h2>",
        f"<p>{counts['passed']} gate(s) passed, {counts['failed'] + counts['error']} failed, {counts['skipped']} skipped. "
        f"Device: {_fmt(env['device'])}. Profile: {_fmt(env['profile'])}.<br><small>{_fmt(packages)}</small></p>",
        "<table class='qc-table'><tr><th>Verdict</th><th>Pathway</th><th>Device</th><th>Model</th><th>Check</th>"
        "<th>Metric</th><th>Measured</th><th>Threshold</th><th>What it means / why</th></tr>" + "".join(body) + "</table>",
        speedup_html(records),
        proven_html(),
    ]


def proven_html() -> str:
    """Per gate, the planted defects qconform's own tests prove it catches."""
    from harness.catalog import by_gate

    items = "".join(
        f"<li><b>{_fmt(gate)}</b>: {_fmt('; '.join(entry.defect for entry in entries))}</li>" for gate, entries in sorted(by_gate().items())
    )
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
