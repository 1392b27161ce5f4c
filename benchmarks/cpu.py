"""CPU benchmark (issue 33): a real checkpoint through the CPU pathways, cold (empty cache: the
artifacts built, the fp32 reference computed) then warm (both from the cold run's cache), each run a
fresh `qconform run --model DIR` process: wall time, peak host RSS, verdict, and each case's phases
from its records (reference, candidate, localization, labeled task ...). Writes cpu.json and a
markdown table (cpu.md) to --out.

    python benchmarks/cpu.py --model DIR --out /tmp/cpu [--project qconform.toml] \\
        [--pathways inc-int8-qdq,inc-fp8-ref,inc-fp8-ref-e5m2,torchao-int8-dynamic] [--runs cold,warm] [--each]

--project: a project file whose [recipes.<pathway>] the runs build with (e.g. INC INT8's SmoothQuant
recipe for an LLM with activation outliers); --each: one process per pathway instead of one run of
them all (which shares the fp32 reference, as a team's run does).

Targets (issue 33, this 2-core 24 GB machine class): SmolLM2-135M's four pathways <= 5 min cold,
<= 2 min warm, <= 3 GB; Gemma-3-270M's <= 10 min cold, <= 6 GB. Not a test: minutes of CPU; its
table is in the README.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from scale import gate  # benchmarks/scale.py: one `qconform run` in a child process, measured

PATHWAYS = "inc-int8-qdq,inc-fp8-ref,inc-fp8-ref-e5m2,torchao-int8-dynamic"


def phases(report: Path) -> dict[str, dict[str, float]]:
    """Each case's phases (seconds, forward passes) from the run's records (`costs`)."""
    summary = report / "summary.json"
    out: dict[str, dict[str, float]] = {}
    for record in json.loads(summary.read_text()).get("records", []) if summary.is_file() else []:
        for phase, cost in (record.get("costs") or {}).items():
            out.setdefault(f"{record.get('pathway')}/{record.get('device')}", {})[phase] = cost.get("seconds")
    return out


def table(rows: list[dict]) -> str:
    lines = ["| pathways | run | wall | peak RSS | verdict |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['pathways']} | {r['run']} | {r['wall_s']:.0f} s | {r['peak_rss_gib']:.2f} GiB | {r['verdict']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a checkpoint directory (or any --model source)")
    parser.add_argument("--out", type=Path, required=True, help="caches, logs, reports, cpu.json and cpu.md go here")
    parser.add_argument("--pathways", default=PATHWAYS)
    parser.add_argument("--runs", default="cold,warm", help="cold (empty cache) and/or warm (the previous run's cache)")
    parser.add_argument("--project", type=Path, help="a qconform.toml for the runs (its [recipes.<pathway>])")
    parser.add_argument("--each", action="store_true", help="one process per pathway")
    parser.add_argument("--deadline", type=float, help="seconds a run may take")
    parser.add_argument("qconform_args", nargs="*", help="after --: more `qconform run` options")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.project:
        shutil.copy(args.project, args.out / "qconform.toml")  # each run starts in a folder of --out and finds it there
    groups = args.pathways.split(",") if args.each else [args.pathways]
    rows = []
    for pathways in groups:
        work = args.out / pathways.replace(",", "+")
        work.mkdir(exist_ok=True)
        for run in args.runs.split(","):
            label = f"{run}-{len(rows)}"
            row = {"model": str(args.model), "pathways": pathways, "run": run, **gate(args.model, pathways, work, label, args.qconform_args, args.deadline, cold=run == "cold")}
            row["phases"] = phases(work / f"report-{label}")
            rows.append(row)
            (args.out / "cpu.json").write_text(json.dumps(rows, indent=1))
            print(json.dumps({k: v for k, v in row.items() if k != "phases"}), flush=True)
    (args.out / "cpu.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
