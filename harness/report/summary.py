"""summary.json: the one writer, reader and merger of a run's Records and verdict (also the
INCOMPLETE / USAGE ERROR placeholder, the baseline comparison and the history copy)."""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Any

from harness.artifacts.manifest import write_json_atomic
from harness.judge.gates import EXIT_CODES, Record, Verdict, noise_band, verdict
from harness.judge.repetitions import SPEED_METRICS, Repetition, agreement_band, judge_repetitions

ORDER = {"error": 0, "failed": 0, "xpassed": 1, "skipped": 2, "xfailed": 3, "passed": 4}
SUMMARY = "summary.json"


class SummaryError(Exception):
    """A summary.json that is missing, unreadable, or from a run that did not finish."""

    def __init__(self, message: str, word: str = "INCOMPLETE"):
        super().__init__(message)
        self.exit_code = EXIT_CODES[word]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_incomplete(report_dir: Path, why: str, word: str = "INCOMPLETE") -> Path:
    """The summary a run leaves until it finishes: never an older PASS."""
    path = report_dir / SUMMARY
    write_json_atomic(path, {"verdict": word, "exit_code": EXIT_CODES[word], "line": f"{word}: {why}", "created": _now(), "records": []})
    return path


def counts_text(result: Verdict) -> str:
    return ", ".join(f"{n} {k}" for k, n in result.counts.items() if n) or "no tests"


def summary_of(records: list[Record], result: Verdict, env: dict[str, Any], selected: list[str], comparison: dict | None = None) -> dict[str, Any]:
    """The one shape of summary.json, for a run and for merged shards alike: the verdict and the
    Records it was computed from, with the environment they were measured in."""
    summary = {
        "verdict": result.word,
        "exit_code": result.exit_code,
        "line": result.line(),
        "counts": result.counts,
        "gates": result.gates,
        "selected": selected,
        "not_gated": result.not_gated,
        "not_selected": result.not_selected,
        "created": _now(),
        "environment": env,
        "records": [r.to_json() for r in records],
    }
    if comparison is not None:
        summary["comparison"] = comparison
    return summary


def write_summary(report_dir: Path, records: list[Record], result: Verdict, env: dict[str, Any], selected: list[str], comparison: dict | None = None) -> Path:
    """summary.json of a finished run (`qconform run`, pytest) or of merged shards (`qconform merge`)."""
    path = report_dir / SUMMARY
    write_json_atomic(path, json_safe(summary_of(records, result, env, selected, comparison)))
    return path


def read_summary(path: Path) -> dict[str, Any]:
    """A finished run's summary; refuses a missing, unreadable or INCOMPLETE one in one line."""
    if not path.is_file():
        raise SummaryError(f"no summary at {path}: run `qconform run` first (or pass the path of one)")
    try:
        summary = json.loads(path.read_text())
        summary["verdict"], summary["records"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SummaryError(f"{path}: not a qconform summary.json ({type(exc).__name__}: {exc})") from None
    if summary["verdict"] in ("INCOMPLETE", "USAGE ERROR"):
        raise SummaryError(f"{path}: {summary.get('line', summary['verdict'])}: that run did not finish, so it has no verdict", summary["verdict"])
    return summary


def records_from(summary: dict[str, Any]) -> list[Record]:
    return [Record.from_json(r) for r in summary["records"]]


def json_safe(value: Any) -> Any:
    # JSON has no inf/nan; write them as strings so the file stays standard.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def merge_summaries(summaries: list[dict[str, Any]]) -> tuple[list[Record], Verdict, dict[str, Any], list[str]]:
    """The shards of one run (each ran a disjoint set of tests, each summary from `read_summary`) as
    one set of Records and one verdict: what `write_summary` writes as the merged summary.json."""
    records = [r for s in summaries for r in records_from(s)]
    selected = sorted({p for s in summaries for p in s.get("selected", [])})
    not_selected = {k: v for s in summaries for k, v in s.get("not_selected", {}).items() if k not in selected}
    devices = sorted({s["environment"]["device"] for s in summaries})
    environment = {**summaries[0]["environment"], "device": ", ".join(devices), "shards": len(summaries)}
    return records, verdict(records, selected, not_selected), environment, selected


def merge_repetitions(summaries: list[dict[str, Any]]) -> tuple[list[Record], Verdict, dict[str, Any], list[str]]:
    """Independent repetitions of one run (fresh processes; the first summary may hold the whole
    run, later ones only its speed tests, `-m perf`): the first summary's Records, each speed gate
    measured in two or more of them judged across its repetitions (harness/judge/repetitions.py).
    An UNSTABLE gate is an error record: neither PASS nor FAIL."""
    runs = [records_from(s) for s in summaries]
    seen: dict[tuple[str, str], list[Record]] = {}
    for run in runs:
        for r in run:
            if r.metric in SPEED_METRICS and r.outcome in ("passed", "failed") and "timing" in r.extra:
                seen.setdefault((r.nodeid, r.metric), []).append(r)
    records = []
    for r in runs[0]:
        repeated = seen.get((r.nodeid, r.metric), [])
        if len(repeated) < 2:
            records.append(r)
            continue
        judged = judge_repetitions([Repetition(x.measured, x.extra["timing"]["ci_low"], x.extra["timing"]["ci_high"]) for x in repeated], r.threshold, agreement_band(r.check))
        outcome = "error" if judged.outcome == "unstable" else judged.outcome
        extra = {**r.extra, "repetitions": [{"speedup": x.measured, **{k: x.extra["timing"][k] for k in ("ci_low", "ci_high")}, "speed_context": x.extra.get("speed_context")} for x in repeated]}
        records.append(Record(**{**r.__dict__, "outcome": outcome, "measured": judged.speedup, "message": judged.why, "extra": extra}))
    selected = summaries[0].get("selected", [])
    environment = {**summaries[0]["environment"], "repetitions": len(summaries)}
    return records, verdict(records, selected, summaries[0].get("not_selected", {})), environment, selected


def compare_with_baseline(records: list[Record], baseline: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every metric that moved beyond its noise band since the baseline, worse first."""
    before = {(r["nodeid"], r["metric"]): r for r in baseline.get("records", []) if "metric" in r}
    moved: dict[str, list[dict[str, Any]]] = {"regressions": [], "improvements": []}
    for r in records:
        old = before.get((r.nodeid, r.metric))
        if old is None or r.measured is None:
            continue
        now, was = float(r.measured), float(old["measured"])  # summary.json spells inf as "inf"
        if now == was:
            continue
        band = noise_band(r.metric, was)
        delta = now - was
        if math.isfinite(delta) and abs(delta) <= band:
            continue
        better = delta > 0 if r.direction == "min" else delta < 0
        entry = {"pathway": r.pathway, "device": r.device, "model": r.model, "check": r.check, "metric": r.metric, "baseline": was, "current": now, "delta": delta, "band": band, "nodeid": r.nodeid}
        moved["improvements" if better else "regressions"].append(entry)
    moved["regressions"].sort(key=lambda e: -abs(e["delta"]) / (e["band"] or 1))
    return moved


def keep_history(summary_path: Path) -> Path:
    """Copy this run's summary into reports/history/, named by its time, atomically."""
    summary = json.loads(summary_path.read_text())
    stamp = summary["created"].replace(":", "").replace("-", "").replace("+0000", "Z")
    target = summary_path.parent / "history" / f"summary-{stamp}.json"
    write_json_atomic(target, summary)
    return target


# -- plots ------------------------------------------------------------------------------------


