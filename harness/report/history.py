"""Each gated metric across releases, and the one drift rule: from the summaries that
harness/report/summary.py keep_history copies into reports/history/ (or any list of summaries),
per pathway x model, every threshold gate's value run by run (oldest first, by "created"), with
its threshold, its noise band and whether it drifts toward the threshold. `qconform report
--history` prints this object and harness/report/html.py draws it; the run's report shows it too.

The drift rule (`drift`): a metric drifts when, for some trailing window of its last k
measurements, 3 <= k <= MAX_WINDOW,
  - the newest value is more than the noise band closer to the threshold than the window's first
    (the actual move), and
  - the least-squares line through the window moves toward the threshold by more than the noise
    band over the window (slope x (k - 1)): a trend, so a window that merely starts at an old
    outlier does not count.
Each step may be small and every run may pass: it is the sum that counts. Values that all lie
within one noise band of each other are never flagged (their actual move cannot exceed the band),
however they wander. For k = 3 the line's move equals the actual move, so a jump of more than the
band over the last two runs is flagged too (it is also a regression: `--baseline`). The flag
warns; it is not a gate and changes no verdict."""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

from harness.judge.gates import METRICS, noise_band
from harness.report.summary import read_summary, records_from
from harness.report.verdict import ARTIFACT_CHECK, is_case_record

MAX_WINDOW = 8  # longer drifts are still caught by their last 8 runs; older runs do not dilute the trend
RECENT = 20  # the run's report reads only the newest 20 history files: the page stays cheap as history grows
RULE = (
    "drifting: over the last k = 3..8 measurements, the newest value is more than the noise band closer to the "
    "threshold than the first, and the least-squares trend over those k moves toward the threshold by more than the band"
)


def history_files(directory: Path, last: int | None = None) -> list[Path]:
    """The history copies in a directory (reports/history/summary-<time>.json), the newest `last`."""
    files = sorted(directory.glob("summary-*.json"))
    return files[-last:] if last else files


def load(paths: list[Path]) -> list[dict[str, Any]]:
    """Finished runs' summaries (read_summary refuses others), oldest first by their "created" time;
    each remembers its file as "summary"."""
    summaries = [{**read_summary(path), "summary": str(path)} for path in paths]
    return sorted(summaries, key=lambda s: _time(s.get("created", "")))


def _time(created: str) -> datetime.datetime:
    try:
        stamp = datetime.datetime.fromisoformat(created)
    except ValueError:
        return datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=datetime.timezone.utc)


def _toward(direction: str) -> float:
    """+1 where a rising value nears the threshold (a max_ metric), -1 where a falling one does."""
    return 1.0 if direction == "max" else -1.0


def _slope(values: list[float]) -> float:
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    return sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values)) / sum((i - mean_x) ** 2 for i in range(n))


def drift(values: list[float], direction: str, threshold: float, band: float) -> dict[str, Any] | None:
    """The module docstring's rule over finite values, oldest first: the longest trailing window that
    drifts (its length, actual and fitted move toward the threshold, slope per release, releases
    until the trend reaches the threshold at this pace), or None."""
    toward = _toward(direction)
    values = [v for v in values if math.isfinite(v)]
    for k in range(min(len(values), MAX_WINDOW), 2, -1):
        window = values[-k:]
        moved = toward * (window[-1] - window[0])
        slope = toward * _slope(window)
        if moved > band and slope * (k - 1) > band:
            margin = toward * (threshold - window[-1])  # > 0 while it passes
            return {
                "releases": k,
                "moved": moved,
                "fitted_move": slope * (k - 1),
                "slope_per_release": slope,
                "releases_to_threshold": margin / slope if margin > 0 else 0.0,
            }
    return None


def trend(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The cross-release object: the runs (oldest first), the rule, and per pathway x device x model
    each threshold gate's series with its newest threshold, noise band and drift (flagged first)."""
    series: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
    for index, summary in enumerate(summaries):
        for r in records_from(summary):
            if r.outcome not in ("passed", "failed") or None in (r.metric, r.measured, r.threshold) or not is_case_record(r) or r.source == ARTIFACT_CHECK:
                continue
            direction = r.direction or (METRICS[r.metric].direction if r.metric in METRICS else None)
            if direction not in ("min", "max"):
                continue
            entry = series.setdefault((r.pathway, r.device, r.model, r.nodeid, r.metric), {"check": r.check, "metric": r.metric, "direction": direction, "nodeid": r.nodeid, "points": []})
            entry["points"].append({"run": index, "created": summary.get("created", ""), "value": float(r.measured), "threshold": float(r.threshold), "outcome": r.outcome})
            entry.update(threshold=float(r.threshold), source=r.source or "")  # the newest run's
    cases: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for (pathway, device, model, _, _), entry in sorted(series.items()):
        newest = entry["points"][-1]["value"]
        entry["band"] = noise_band(entry["metric"], newest)
        entry["drift"] = drift([p["value"] for p in entry["points"]], entry["direction"], entry["threshold"], entry["band"])
        entry["flagged"] = entry["drift"] is not None
        cases.setdefault((pathway, device, model), []).append(entry)
    out = [{"pathway": p, "device": d, "model": m, "metrics": sorted(ms, key=lambda e: not e["flagged"])} for (p, d, m), ms in cases.items()]
    return {
        "runs": [{"created": s.get("created", ""), "verdict": s["verdict"], "summary": s.get("summary", "")} for s in summaries],
        "rule": RULE,
        "max_window": MAX_WINDOW,
        "drifting": sum(e["flagged"] for case in out for e in case["metrics"]),
        "cases": sorted(out, key=lambda c: (not any(e["flagged"] for e in c["metrics"]), c["pathway"], c["device"], c["model"])),
    }
