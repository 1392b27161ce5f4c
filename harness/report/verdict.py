"""The verdict as people and CI bots read it, computed once from the Records: the verdict in words
with its exit code's meaning, the pathway x model matrix (each cell's status and worst gate), the
failures with their evidence, the cases that did not run grouped by reason, and the one-object JSON
verdict of `qconform report --json`. The terminal, the HTML page and the JSON all use these, so
they show the same counts and the same cells."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.judge.gates import EXIT_CODES, Record, Verdict, item_outcomes

# What each exit code means, in the words the last terminal line and `qconform report` use.
MEANINGS = {
    "PASS": "every selected pathway was gated and nothing failed",
    "FAIL": "a gate failed",
    "INCOMPLETE": "the run did not finish",
    "ERROR": "no evidence could be produced",
    "USAGE ERROR": "a bad option, profile, model or data file",
    "NOT GATED": "a selected pathway had no gate on its artifacts",
}

# pytest's words for the item counts (its own summary line uses the same), in reading order.
COUNT_WORDS = (("passed", "passed"), ("failed", "failed"), ("error", "errors"), ("skipped", "skipped"), ("xfailed", "xfailed"), ("xpassed", "xpassed"))

# The checks that time perf workloads (suites/test_speedup.py, test_model_speed.py): their records'
# "model" is a workload id; the matrix folds them into one column.
PERF_CHECKS = ("speedup", "model_speedup")
PERF_COLUMN = "speed workloads"

# pytest's skip for a test whose case axis is empty in this selection: not a finding.
EMPTY_PARAMETERS = "got empty parameter set"
NO_CASE_REASON = "no case of this selection applies (no model or pathway it parametrizes over was selected)"

POLICY_SOURCE = "defaults.toml"
ARTIFACT_CHECK = "artifact check"  # the source of a yes/no check's record (gate.expect): no threshold to be near


def exit_meaning(word: str) -> str:
    return MEANINGS.get(word, "")


def verdict_words(word: str) -> str:
    """`FAIL (exit 1: a gate failed)`."""
    return f"{word} (exit {EXIT_CODES[word]}: {exit_meaning(word)})"


def counts_words(counts: dict[str, int]) -> str:
    """`12 passed, 1 failed, 30 skipped`: test items by outcome, as pytest counts them."""
    return ", ".join(f"{counts[key]} {word}" for key, word in COUNT_WORDS if counts.get(key)) or "no tests"


def final_line(result: Verdict, report: str) -> str:
    """The last line of a run's terminal output: the verdict in words, its counts, where the report is."""
    text = f"qconform verdict: {verdict_words(result.word)} - {counts_words(result.counts)}"
    if result.not_gated:
        text += f" - no gate ran for {', '.join(sorted(result.not_gated))}"
    return f"{text} - {report}"


def is_policy(record: Record) -> bool:
    """Whether the record's threshold is a policy default (defaults.toml), not a calibrated one."""
    return bool(record.source) and record.source.startswith(POLICY_SOURCE)


def is_noise(record: Record) -> bool:
    return record.outcome == "skipped" and EMPTY_PARAMETERS in (record.message or "")


def column_of(record: Record) -> str:
    return PERF_COLUMN if record.check in PERF_CHECKS else record.model


def is_case_record(record: Record) -> bool:
    """A record of one artifact case (a model or workload under a pathway), not a library property
    test (model "-") or a collection error (pathway "-")."""
    return record.model not in ("", "-") and record.pathway not in ("", "-")


def margin(record: Record) -> float | None:
    """How far the measured value is on the passing side of its threshold (negative: failing side),
    relative to the threshold's size; None for a record without both numbers."""
    if record.measured is None or record.threshold is None or record.direction not in ("min", "max"):
        return None
    measured, threshold = float(record.measured), float(record.threshold)
    if math.isnan(measured):
        return -math.inf
    diff = measured - threshold if record.direction == "min" else threshold - measured
    return diff / abs(threshold) if threshold else diff


def distance(record: Record) -> float:
    """measured - threshold on the passing side (negative: how far it missed), in the metric's units."""
    measured, threshold = float(record.measured), float(record.threshold)
    return measured - threshold if record.direction == "min" else threshold - measured


def margin_text(record: Record) -> str:
    """`27.91 (>= 25, margin +2.91)`."""
    op = ">=" if record.direction == "min" else "<="
    return f"{float(record.measured):.4g} ({op} {float(record.threshold):g}, margin {distance(record):+.3g})"


def worst_gate(records: list[Record]) -> Record | None:
    """The gate nearest to, or furthest past, its threshold: a failed gate first; among passes,
    threshold gates only (a yes/no artifact check that found nothing has no margin to speak of)."""
    failed = [r for r in records if r.outcome == "failed" and margin(r) is not None]
    if failed:
        return min(failed, key=margin)
    gates = [r for r in records if r.outcome == "passed" and margin(r) is not None and r.source != ARTIFACT_CHECK]
    return min(gates, key=margin) if gates else None


@dataclass
class Cell:
    """One pathway (on one device) x model: its status over all of its records."""

    pathway: str
    device: str
    model: str
    status: str  # PASS, FAIL, ERROR, NOT RUN
    records: list[Record] = field(default_factory=list)
    reason: str = ""  # NOT RUN: why (the skip reasons, or why the pathway was not selected)

    @property
    def anchor(self) -> str:
        return "qc-cell-" + "-".join("".join(c if c.isalnum() else "_" for c in part) for part in (self.pathway, self.device, self.model))

    @property
    def worst(self) -> Record | None:
        return worst_gate(self.records)

    @property
    def failures(self) -> list[Record]:
        return [r for r in self.records if r.outcome in ("failed", "error")]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"pathway": self.pathway, "device": self.device, "model": self.model, "status": self.status}
        counts = item_outcomes(self.records)
        data["tests"] = {k: v for k, v in sorted(_count(counts.values()).items())}
        worst = self.worst
        if worst is not None:
            data["worst_gate"] = {"check": worst.check, "metric": worst.metric, "value": _num(worst.measured), "threshold": _num(worst.threshold), "direction": worst.direction, "margin": _num(distance(worst)), "source": worst.source}
        if self.reason:
            data["reason"] = self.reason
        return data


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _num(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def cell_status(records: list[Record]) -> str:
    """As the verdict (harness/judge/gates.verdict): a failed check before an error."""
    outcomes = {r.outcome for r in records}
    if "failed" in outcomes:
        return "FAIL"
    if "error" in outcomes:
        return "ERROR"
    if "passed" in outcomes:
        return "PASS"
    return "NOT RUN"


def matrix(records: list[Record], result: Verdict, selected: list[str] | None = None) -> tuple[list[tuple[str, str]], list[str], dict[tuple[str, str, str], Cell]]:
    """(rows (pathway, device), columns (models), cells): every case record in its cell; a pathway
    that was selected but never gated, or not selected on this machine, is a row of NOT RUN cells
    with the reason."""
    cells: dict[tuple[str, str, str], Cell] = {}
    columns: list[str] = []
    for r in records:
        if not is_case_record(r):
            continue
        column = column_of(r)
        if column not in columns:
            columns.append(column)
        key = (r.pathway, r.device, column)
        cells.setdefault(key, Cell(r.pathway, r.device, column, "")).records.append(r)
    columns.sort(key=lambda c: (c == PERF_COLUMN, c))
    rows = sorted({(p, d) for p, d, _ in cells})
    for cell in cells.values():
        cell.status = cell_status(cell.records)
        if cell.status == "NOT RUN":
            cell.reason = "; ".join(sorted({r.message for r in cell.records if r.message})) or "skipped"
    present = {p for p, _ in rows}
    missing = {**result.not_selected, **result.not_gated}
    absent = [p for p in dict.fromkeys([*(selected or []), *sorted(missing)]) if p not in present]
    if absent and not columns:
        columns = ["-"]
    for pathway in absent:
        device = next((r.device for r in records if r.pathway == pathway), "-")
        rows.append((pathway, device))
        why = missing.get(pathway, "none of its tests ran in this selection")
        for column in columns:
            cells[(pathway, device, column)] = Cell(pathway, device, column, "NOT RUN", reason=why)
    return rows, columns, cells


def not_run_groups(records: list[Record]) -> list[dict[str, Any]]:
    """The tests that did not run, one group per reason: reason, count of tests, pathways, checks.
    pytest's "got empty parameter set" (a test with no case in this selection) is one plain group."""
    groups: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for r in records:
        if r.outcome != "skipped":
            continue
        key = r.nodeid or f"{r.check}:{r.pathway}:{r.model}:{r.device}"
        if key in seen:
            continue
        seen.add(key)
        reason = NO_CASE_REASON if is_noise(r) else (r.message or "skipped")
        group = groups.setdefault(reason, {"reason": reason, "count": 0, "pathways": set(), "checks": set(), "models": set()})
        group["count"] += 1
        if r.pathway not in ("", "-"):
            group["pathways"].add(r.pathway)
        if r.model not in ("", "-"):
            group["models"].add(column_of(r))
        group["checks"].add(r.check)
    out = []
    for group in sorted(groups.values(), key=lambda g: (g["reason"] == NO_CASE_REASON, -g["count"], g["reason"])):
        out.append({**group, "pathways": sorted(group["pathways"]), "checks": sorted(group["checks"]), "models": sorted(group["models"])})
    return out


def failures(records: list[Record]) -> list[Record]:
    """Failed gates and errors in the order the verdict weighs them: failed gates by how far they
    missed, then errors (what could not be measured)."""

    def order(r: Record) -> tuple:
        m = margin(r)
        return (r.outcome == "error", m if m is not None else 0.0, r.pathway, r.model, r.check)

    return sorted((r for r in records if r.outcome in ("failed", "error")), key=order)


def first_bad_layer(records: list[Record], case: tuple[str, str, str]) -> str:
    """Where the error of a case starts, from its per-layer activation SQNR record (if it has one)."""
    from harness.measure.localize import describe_first_bad

    for r in records:
        if (r.pathway, r.device, r.model) == case and r.extra.get("layer_activation_sqnr_db") and r.threshold is not None and r.metric == "min_layer_activation_sqnr_db":
            errors = [(str(name), float(value)) for name, value in r.extra["layer_activation_sqnr_db"]]
            return describe_first_bad(errors, float(r.threshold))
    for r in records:
        if (r.pathway, r.device, r.model) == case and "error starts at layer" in (r.message or ""):
            return "error starts at layer" + r.message.split("error starts at layer", 1)[1].split(";")[0]
    return ""


def generations(records: list[Record], case: tuple[str, str, str]) -> list[dict[str, str]]:
    for r in records:
        if (r.pathway, r.device, r.model) == case and r.extra.get("generations"):
            return list(r.extra["generations"])
    return []


def policy_records(records: list[Record]) -> list[Record]:
    return [r for r in records if is_policy(r)]


def failure_json(r: Record) -> dict[str, Any]:
    data = {"pathway": r.pathway, "device": r.device, "model": r.model, "check": r.check, "outcome": r.outcome}
    if r.metric:
        data.update(metric=r.metric, value=_num(r.measured), threshold=_num(r.threshold), direction=r.direction, source=r.source)
        if is_policy(r):
            data["policy_threshold"] = True
    if r.message:
        data["message"] = r.message
    if r.nodeid:
        data["nodeid"] = r.nodeid
    return data


def verdict_of(summary: dict[str, Any]) -> Verdict:
    """The verdict a summary.json records (as written: never recomputed, so it cannot disagree)."""
    return Verdict(summary["verdict"], {k: int(v) for k, v in summary.get("counts", {}).items()}, int(summary.get("gates", 0)), dict(summary.get("not_gated", {})), dict(summary.get("not_selected", {})))


def verdict_object(summary: dict[str, Any], records: list[Record], result: Verdict, report: str = "") -> dict[str, Any]:
    """`qconform report --json`: one JSON object a CI bot reads (documented in README.md, "CI")."""
    rows, columns, cells = matrix(records, result, summary.get("selected"))
    out: dict[str, Any] = {
        "verdict": result.word,
        "exit_code": result.exit_code,
        "meaning": exit_meaning(result.word),
        "line": final_line(result, report) if report else result.line(),
        "counts": {key: result.counts.get(key, 0) for key, _ in COUNT_WORDS},
        "checks_run": result.gates,
        "cells": [cells[(p, d, c)].to_json() for p, d in rows for c in columns if (p, d, c) in cells],
        "failures": [failure_json(r) for r in failures(records)],
        "not_gated": result.not_gated,
        "not_selected": result.not_selected,
        "not_run": [{"reason": g["reason"], "count": g["count"], "pathways": g["pathways"]} for g in not_run_groups(records)],
        "policy_thresholds": len(policy_records(records)),
    }
    comparison = summary.get("comparison")
    if comparison is not None:
        out["regressions"] = comparison.get("regressions", [])
    env = summary.get("environment", {})
    out["environment"] = {k: env[k] for k in ("device", "profile", "gpu", "compute_capability", "cuda", "driver") if k in env}
    out["created"] = summary.get("created")
    return out


def failure_line(r: Record) -> str:
    """`FAIL  inc-int8-qdq/cpu tiny-llama task_metric: min_token_agreement 0.41 (>= 0.89, margin -0.48) [cpu.toml [...]]; why`."""
    where = f"{r.pathway}/{r.device} {r.model}" if r.pathway not in ("", "-") else (r.nodeid or r.check)
    if r.outcome == "error":
        return f"ERROR {where} {r.check}: {' '.join((r.message or '').split())[:300]}"
    if r.source == ARTIFACT_CHECK:  # a yes/no check: its 1 vs 0 is no measurement, its message says what it found
        text = f"FAIL  {where} {r.check}: {r.metric}" if r.metric else f"FAIL  {where} {r.check}"
    elif margin(r) is not None:
        policy = " policy" if is_policy(r) else ""
        text = f"FAIL  {where} {r.check}: {r.metric} {margin_text(r)} [{r.source}{policy}]"
    else:
        text = f"FAIL  {where} {r.check}"
    message = " ".join((r.message or "").split())
    return f"{text}; {message[:300]}" if message else text


def regression_line(entry: dict[str, Any]) -> str:
    return (
        f"regressed {entry['pathway']}/{entry['device']} {entry['model']} {entry['metric']}: "
        f"{entry['baseline']:.4g} -> {entry['current']:.4g} ({entry['delta']:+.3g}, noise band {entry['band']:.3g})"
    )


def terminal_lines(records: list[Record], result: Verdict, comparison: dict | None, baseline: str = "") -> list[tuple[str, dict[str, bool]]]:
    """The terminal's qconform section, before pytest's SKIPPED lines: failures with measured vs
    threshold, regressions against the baseline, pathways no gate ran for (text, markup)."""
    lines: list[tuple[str, dict[str, bool]]] = []
    found = failures(records)
    for r in found[:20]:
        lines.append((failure_line(r), {"red": True}))
    if len(found) > 20:
        lines.append((f"... and {len(found) - 20} more failures (the report lists them all)", {"red": True}))
    if comparison is not None:
        regressions, improvements = comparison.get("regressions", []), comparison.get("improvements", [])
        head = f"{len(regressions)} regression(s), {len(improvements)} improvement(s) beyond the noise band since the baseline {baseline}".rstrip()
        lines.append((head, {"red": True} if regressions else {"green": True}))
        for entry in regressions[:20]:
            lines.append(("  " + regression_line(entry), {"red": True}))
    for pathway, why in sorted(result.not_gated.items()):
        lines.append((f"NOT GATED {pathway}: {' '.join(why.split())[:300]}", {"yellow": True}))
    policy = policy_records(records)
    if policy:
        cases = sorted({f"{r.pathway}/{r.model}" for r in policy})
        lines.append((f"{len(policy)} threshold(s) came from the policy defaults (defaults.toml), not a calibrated profile: {', '.join(cases[:6])}{' ...' if len(cases) > 6 else ''}", {"yellow": True}))
    return lines
