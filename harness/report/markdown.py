"""`qconform report --markdown`: the verdict as a CI job page ($GITHUB_STEP_SUMMARY) or a PR comment
shows it, in a few screens: the verdict and its exit code's meaning, the pathway x model matrix,
failures with measured vs threshold and its source, regressions against the baseline, what was not
gated or not run, by reason. Cells, counts, failures and groups come from harness/report/verdict.py,
as the terminal's, the HTML page's and `report --json`'s do; long lists are capped, saying how many
were left out (the HTML report and summary.json have them all)."""

from __future__ import annotations

from typing import Any

from harness.judge.gates import Record, Verdict
from harness.report.verdict import (
    ARTIFACT_CHECK,
    counts_words,
    failures,
    is_policy,
    margin,
    margin_text,
    matrix,
    not_run_groups,
    policy_records,
    regression_line,
    verdict_words,
)

# Caps that keep the page to a few screens; GitHub also limits a comment to 65,536 characters.
MAX_ROWS, MAX_COLUMNS, MAX_FAILURES, MAX_REGRESSIONS, MAX_GROUPS = 20, 6, 10, 10, 10
MAX_TEXT = 160  # characters of a message or reason in one table cell

WORDS = {"failed": "FAIL", "error": "ERROR"}  # a failure's outcome as the terminal's lines say it
ICONS = {"PASS": "✅", "FAIL": "❌", "ERROR": "💥", "NOT RUN": "➖", "NOT GATED": "⚠️", "INCOMPLETE": "⏳", "USAGE ERROR": "⛔"}


def text(value: Any, limit: int = MAX_TEXT) -> str:
    """One table cell's text: one line, pipes escaped, no tag GitHub would render (`<`), capped."""
    flat = " ".join(str(value).split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return flat.replace("|", "\\|").replace("<", "&lt;")


def heading(word: str) -> str:
    return f"## {ICONS[word]} qconform verdict: {verdict_words(word)}"


def left_out(shown: int, total: int, what: str) -> list[str]:
    return ["", f"_… and {total - shown} more {what}: see the HTML report or summary.json._"] if total > shown else []


def gate_text(r: Record) -> str:
    """`min_sqnr_db 16.4 (>= 20, margin -3.6)`; a yes/no artifact check names only its metric."""
    if r.source == ARTIFACT_CHECK or margin(r) is None:
        return r.metric or r.check
    return f"{r.metric} {margin_text(r)}"


def cell_text(cell) -> str:
    """A matrix cell: its status, and its worst gate (or why it errored or did not run)."""
    head = f"{ICONS[cell.status]} {cell.status}"
    if cell.status == "NOT RUN":
        return f"{head}: {text(cell.reason, 80)}"
    if cell.status == "ERROR":
        return f"{head}: {text(next((r.message for r in cell.records if r.outcome == 'error'), ''), 80)}"
    worst = cell.worst
    if worst is None:
        return f"{head} ({sum(1 for r in cell.records if r.outcome == 'passed')} check(s))"
    return f"{head}<br>{text(gate_text(worst))}{' (policy)' if is_policy(worst) else ''}"


def matrix_lines(records: list[Record], result: Verdict, selected: list[str] | None) -> list[str]:
    rows, columns, cells = matrix(records, result, selected)
    if not rows:
        return ["No pathway ran a case on an artifact in this selection."]
    shown = columns[:MAX_COLUMNS]
    lines = ["| pathway | " + " | ".join(text(c) for c in shown) + " |", "| --- |" + " --- |" * len(shown)]
    for pathway, device in rows[:MAX_ROWS]:
        tds = [cell_text(cells[(pathway, device, c)]) if (pathway, device, c) in cells else "-" for c in shown]
        where = f" ({text(device)})" if device != "-" else ""  # "-": a pathway not run here
        lines.append(f"| **{text(pathway)}**{where} | " + " | ".join(tds) + " |")
    lines += left_out(len(shown), len(columns), "model column(s)")
    lines += left_out(min(len(rows), MAX_ROWS), len(rows), "pathway row(s)")
    return lines


def failure_lines(records: list[Record]) -> list[str]:
    found = failures(records)
    if not found:
        return []
    lines = [f"### Failures: {len(found)}", "", "| | case | check | measured vs threshold | threshold from | why |", "| --- | --- | --- | --- | --- | --- |"]
    for r in found[:MAX_FAILURES]:
        numbers = "" if r.outcome == "error" else text(gate_text(r))
        source = "" if r.outcome == "error" or r.source in ("", None, ARTIFACT_CHECK) else text(r.source) + (" (policy)" if is_policy(r) else "")
        case = f"{r.pathway}/{r.device} {r.model}" if r.pathway not in ("", "-") else (r.nodeid or "-")  # "-": a collection error
        lines.append(f"| **{WORDS[r.outcome]}** | {text(case)} | {text(r.check)} | {numbers} | {source} | {text(r.message or '')} |")
    return lines + left_out(min(len(found), MAX_FAILURES), len(found), "failure(s)")


def regression_lines(comparison: dict | None) -> list[str]:
    if comparison is None:
        return []
    regressions, improvements = comparison.get("regressions", []), comparison.get("improvements", [])
    lines = [f"### Regressions since the baseline: {len(regressions)} ({len(improvements)} improvement(s))"]
    if regressions:
        lines.append("")
        lines += [f"- {text(regression_line(entry), 300)}" for entry in regressions[:MAX_REGRESSIONS]]
    return lines + left_out(min(len(regressions), MAX_REGRESSIONS), len(regressions), "regression(s)")


def not_run_lines(records: list[Record], result: Verdict) -> list[str]:
    """Pathways no gate ran for, pathways not run on this machine, then skipped tests by reason."""
    groups = not_run_groups(records)
    if not (result.not_gated or result.not_selected or groups):
        return []
    lines = [f"### Not gated or not run: {result.counts.get('skipped', 0)} test(s) skipped, {len(groups)} reason(s)"]
    pathways = [f"- **NOT GATED** {text(p)}: {text(why)}" for p, why in sorted(result.not_gated.items())]
    pathways += [f"- **not run on this machine** {text(p)}: {text(why)}" for p, why in sorted(result.not_selected.items())]
    if pathways:
        lines += ["", *pathways]
    if groups:
        lines += ["", "| why not run | tests | pathways |", "| --- | --- | --- |"]
        lines += [f"| {text(g['reason'])} | {g['count']} | {text(', '.join(g['pathways']) or '-')} |" for g in groups[:MAX_GROUPS]]
        lines += left_out(min(len(groups), MAX_GROUPS), len(groups), "reason(s)")
    return lines


def markdown_summary(summary: dict[str, Any], records: list[Record], result: Verdict, report: str = "") -> str:
    """The whole page, top-down as the HTML report: verdict, matrix, failures, regressions, not run."""
    env = summary.get("environment", {})
    facts = [counts_words(result.counts), f"{result.gates} check(s) ran"]
    facts += [f"{key} {text(env[key])}" for key in ("device", "gpu", "profile") if env.get(key)]
    policy = policy_records(records)
    if policy:
        facts.append(f"{len(policy)} threshold(s) from the policy defaults (defaults.toml)")
    if report:
        facts.append(f"full report: `{text(report)}`")
    sections = [
        [heading(result.word), "", " · ".join(facts)],
        ["### Pathway × model", "", *matrix_lines(records, result, summary.get("selected"))],
        failure_lines(records),
        regression_lines(summary.get("comparison")),
        not_run_lines(records, result),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def markdown_no_verdict(word: str, line: str) -> str:
    """A summary that is missing or from a run that did not finish: the page still says so."""
    return f"{heading(word)}\n\n{text(line, 500)}\n"
