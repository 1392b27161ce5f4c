"""qconform: may this quantized model ship? The commands a release pipeline calls.

commands:
  init          write a starting qconform.toml for your model, every key explained
  build         build (or validate the cached) artifacts of the chosen models and pathways
  import        wrap an artifact your own pipeline made in a manifest, checked against the model
  run           run the conformance suites: HTML report, junit.xml, summary.json, the verdict
  report        print the verdict of a summary.json (--json: one JSON object for CI;
                --markdown: a summary for a CI job page or PR comment; --history: each
                gated metric across releases, drifts toward a threshold flagged)
  merge         merge shards' summary.json files into one summary and HTML page
  durations     fold runs' durations.json into the stored durations that --shard balances
  calibrate     measure this device and write a threshold profile with margins
  hash-weights  print the source-weights sha256 of a checkpoint, .safetensors or .onnx

The same option names in every command: --models ID,... (model ids: a [[models]] id of
qconform.toml or a built-in), --model SOURCE (a checkpoint directory, fp32 .onnx file or
module:factory), --pathways NAME,..., --qc-cache DIR, --report-dir DIR.

exit codes (every command, the same table as the verdict's):
  0 PASS  1 FAIL  2 INCOMPLETE  3 ERROR  4 USAGE ERROR  6 NOT GATED
A usage problem (a missing file, a bad argument, an unknown model or pathway, an existing
qconform.toml) is 4 with one line on stderr, `qconform <command>: <why>`."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from harness import importer
from harness.artifacts.errors import ArtifactError
from harness.config import ConfigError, load_project
from harness.core import Device
from harness.judge.gates import EXIT_CODES
from harness.models.base import all_models
from harness.pathways.base import all_pathways, get_pathway
from harness.report.html import standalone_html, table_rows
from harness.report.summary import SummaryError, merge_repetitions, merge_summaries, read_summary, records_from, write_summary
from harness.run.session import check_project_pathways, find_model, pick, user_models
from harness.run.store import ArtifactStore

USAGE_ERROR = EXIT_CODES["USAGE ERROR"]  # pytest's code for bad options: the same for qconform's own commands

REPO_ROOT = Path(__file__).resolve().parent.parent


DEPRECATIONS: list[str] = []  # this command's deprecation lines, printed when it did not end in a usage error


class DeprecatedAlias(argparse.Action):
    """An old option name, kept one release: it still works, and the command says which name replaces
    it (on stderr, after the command; a usage error stays its one line)."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        DEPRECATIONS.append(f"{parser.prog}: {option_string} is deprecated, use {self.new} (the old name goes in the next release)")
        setattr(namespace, self.dest, values)


def _model_id_as_source(args: argparse.Namespace) -> None:
    """`qconform import --model ID`: --model takes a source everywhere; an id there still works."""
    source = getattr(args, "model", None)
    if isinstance(source, str) and not Path(source).expanduser().exists() and ":" not in source:
        DEPRECATIONS.append(f"qconform import: --model {source}: a model id is deprecated here, use --models {source} (--model takes a checkpoint directory, .onnx file or module:factory)")


def version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("qconform")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


class UsageError(Exception):
    """A usage problem of a subcommand: printed as `qconform <command>: <why>`, exit 4."""


def usage_line(command: str, problem: BaseException | str) -> str:
    text = problem.args[0] if isinstance(problem, KeyError) and problem.args else str(problem)
    return f"qconform {command}: {' '.join(str(text).split())}"


# What a bad model, pathway, checkpoint or data file raises while it is resolved.
INPUT_ERRORS = (UsageError, KeyError, ValueError, TypeError, OSError, ImportError, ArtifactError, ConfigError)


def build_selection(args: argparse.Namespace) -> tuple[list, list]:
    """(models, pathways) as `qconform run` picks them: --model SOURCE; else --models ids (a project
    [[models]] id, else a built-in); else the project file's models; else the embedded defaults.
    Pathways: --pathways, else the project file's, else all. Each model's inputs are validated."""
    project = load_project(Path.cwd())
    if project is not None:
        check_project_pathways(project)
    if args.models and not args.model:
        models = pick(args.models, all_models, lambda name: find_model(name, Path.cwd()))
    else:
        models = user_models(args.model, args.allow_pickle_checkpoint, project) or all_models()
    for model in models:
        if model.unavailable() is None:
            model.validate()  # tokenizer, data, architecture: before anything is built
    names = args.pathways or ",".join(project.pathways if project else [])
    return models, pick(names, all_pathways, get_pathway)


def cmd_build(args: argparse.Namespace) -> int:
    """Build (or validate the cached) artifacts of every available pathway for the chosen models."""
    try:
        models, pathways = build_selection(args)
    except INPUT_ERRORS as exc:
        print(usage_line("build", exc), file=sys.stderr)
        return USAGE_ERROR
    device = Device.detect()
    store = ArtifactStore(args.qc_cache)
    failed = 0
    for model in models:
        for pathway in pathways:
            kind = device.kind if device.kind in pathway.devices else pathway.devices[0]
            reason = model.unavailable() or pathway.unavailable(device if kind == device.kind else Device(kind, "absent")) or pathway.build_unavailable()
            if reason:
                print(f"skip  {pathway.name:22} {model.id:12} {reason}")
                continue
            try:
                artifact = store.get(pathway, model)
            except (ArtifactError, RuntimeError, ValueError) as exc:
                failed += 1
                print(f"FAIL  {pathway.name:22} {model.id:12} {exc}")
                continue
            print(f"ok    {pathway.name:22} {model.id:12} {artifact.path}")
    return 1 if failed else 0


# The suites as installed from a wheel (pyproject maps suites/ to harness.suites).
PACKAGED_SUITES = Path(__file__).resolve().parent / "suites"


def find_suites(explicit: Path | None) -> Path:
    for candidate in (explicit, Path.cwd() / "suites", REPO_ROOT / "suites", PACKAGED_SUITES):
        if candidate is not None and candidate.is_dir():
            return candidate
    raise UsageError(f"cannot find the suites directory{f' {explicit}' if explicit else ''}; run from a qconform checkout or pass --suites DIR")


def _pytest_options() -> list[tuple[tuple[str, ...], dict]]:
    """qconform's own pytest options, read from the plugin's pytest_addoption (the one place they
    are declared), so `qconform run --help` lists them and passes them on."""
    from harness.run import plugin

    class Collect:
        def __init__(self):
            self.options = []

        def getgroup(self, name):
            return self

        def addoption(self, *flags, **kwargs):
            self.options.append((flags, kwargs))

    collected = Collect()
    plugin.pytest_addoption(collected)
    return collected.options


# What `qconform run --help` shows for the value of each plugin option: the same words as the other
# commands' options and the README (the plugin declares the options without them).
METAVARS = {
    "--profile": "NAME|PATH",
    "--artifacts": "DIR",
    "--golden-dir": "DIR",
    "--baseline": "SUMMARY",
    "--qc-cache": "DIR",
    "--models": "ID,...",
    "--pathways": "NAME,...",
    "--shard": "K/N",
}


def add_pytest_options(parser: argparse.ArgumentParser) -> None:
    taken = set(parser._option_string_actions)
    group = parser.add_argument_group("qconform options (passed to pytest)")
    for flags, kwargs in _pytest_options():
        if not taken.intersection(flags):
            options = {k: v for k, v in kwargs.items() if k != "default"}
            if flags[0] in METAVARS and "metavar" not in options and options.get("action") not in ("store_true", "store_false"):
                options["metavar"] = METAVARS[flags[0]]
            group.add_argument(*flags, **options, default=None)


def pytest_option_args(args: argparse.Namespace) -> list[str]:
    out = []
    for flags, _ in _pytest_options():
        value = getattr(args, flags[0].lstrip("-").replace("-", "_"), None)
        if value is True:
            out.append(flags[0])
        elif isinstance(value, list):  # a repeatable option (--model)
            out += [f"{flags[0]}={item}" for item in value]
        elif value not in (None, False) and flags[0] != "--report-dir":
            out.append(f"{flags[0]}={value}")
    return out


def pytest_plugin_args(suites: Path) -> list[str]:
    """Make sure the plugin is loaded: the checkout's conftest.py or the installed entry point
    register it; suites run from elsewhere without either get it by module name."""
    import importlib.metadata

    if any(ep.value == "harness.run.plugin" for ep in importlib.metadata.entry_points(group="pytest11")):
        return ["-p", "qconform"]  # also when PYTEST_DISABLE_PLUGIN_AUTOLOAD is set
    if (suites.parent / "conftest.py").is_file():
        return []
    return ["-p", "harness.run.plugin"]


def cmd_run(args: argparse.Namespace, pytest_args: list[str]) -> int:
    """Run the conformance suites and write the HTML report, JUnit XML and summary.json."""
    import pytest

    try:
        suites = find_suites(args.suites)
    except UsageError as exc:
        print(usage_line("run", exc), file=sys.stderr)
        return USAGE_ERROR
    report_dir = Path(args.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    # A checkout is its own rootdir (conftest.py, golden/); installed suites run in the user's directory.
    rootdir = Path.cwd() if suites == PACKAGED_SUITES else suites.parent
    argv = [
        str(suites),
        f"--rootdir={rootdir}",
        *pytest_plugin_args(suites),
        *pytest_option_args(args),
        f"--html={report_dir / 'conformance.html'}",
        "--self-contained-html",
        f"--junitxml={report_dir / 'junit.xml'}",
        f"--report-dir={report_dir}",
        "-o", "render_collapsed=all",  # pytest-html's per-test rows start collapsed: the verdict block reads first
        *pytest_args,
    ]
    print("qconform: pytest " + " ".join(argv), flush=True)
    stderr, sys.stderr = sys.stderr, UsageLinePrefix(sys.stderr, "run")
    try:
        code = int(pytest.main(argv, plugins=[]))
    finally:
        sys.stderr = stderr
    return code  # the plugin's last line said the verdict, its exit code's meaning and the report


class UsageLinePrefix:
    """stderr while pytest runs under `qconform <command>`: pytest's usage-error line (`ERROR: ...`,
    one line, exit 4) reads `qconform <command>: ...` as every other subcommand's does."""

    PATTERN = re.compile(r"^((?:\x1b\[[0-9;]*m)*)ERROR: ", re.MULTILINE)

    def __init__(self, stream, command: str):
        self._stream, self._prefix = stream, f"qconform {command}: "

    def write(self, text: str) -> int:
        return self._stream.write(self.PATTERN.sub(lambda m: m.group(1) + self._prefix, text))

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def read_summaries(command: str, paths: list[str]) -> list[dict] | int:
    """The summaries of finished runs, or the exit code after one stderr line: a missing or unreadable
    file is a usage error (4); a run that did not finish keeps its own word (INCOMPLETE 2, USAGE ERROR 4)."""
    summaries = []
    for name in paths:
        path = Path(name)
        try:
            summaries.append(read_summary(path))
        except SummaryError as exc:
            print(usage_line(command, exc), file=sys.stderr)
            return exc.exit_code if _unfinished_run(path) else USAGE_ERROR
    return summaries


def _unfinished_run(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("verdict") in ("INCOMPLETE", "USAGE ERROR")
    except (OSError, ValueError, AttributeError):
        return False


def cmd_report(args: argparse.Namespace) -> int:
    """Print the verdict of a summary.json: one line per failed or skipped gate (or, with --json, one
    JSON object for CI); exit with its code."""
    if args.history is not None:
        return report_history(args.history or ["reports/history"], Path(args.html))
    if args.json:
        return report_json(Path(args.summary))
    if args.markdown:
        return report_markdown(Path(args.summary))
    summaries = read_summaries("report", [args.summary])
    if isinstance(summaries, int):
        return summaries
    summary = summaries[0]
    from harness.report.verdict import final_line, is_noise, verdict_of

    print(f"verdict: {summary.get('line', summary['verdict'])}")
    for record in table_rows([r for r in records_from(summary) if not is_noise(r)]):
        if record.outcome != "passed":
            measured = f" {record.metric}={record.measured} threshold {record.threshold}" if record.metric else ""
            print(f"  {record.outcome:7} {record.pathway}/{record.device} {record.model} {record.check}{measured} {record.message}")
    if "counts" in summary:  # the last line, as a run's: the verdict in words
        print(final_line(verdict_of(summary), _report_page(Path(args.summary))))
    return EXIT_CODES[summary["verdict"]]


def report_json(path: Path) -> int:
    """`qconform report --json`: the verdict object of harness/report/verdict.py on stdout. A run that
    did not finish is an object too ({"verdict": "INCOMPLETE", ...}): a bot always gets JSON."""
    from harness.report.summary import json_safe
    from harness.report.verdict import exit_meaning, verdict_object, verdict_of

    try:
        summary = read_summary(path)
    except SummaryError as exc:
        word = _no_verdict_word(path)
        print(json.dumps({"verdict": word, "exit_code": EXIT_CODES[word], "meaning": exit_meaning(word), "line": usage_line("report", exc), "summary": str(path)}, indent=2))
        return EXIT_CODES[word]
    obj = verdict_object(summary, records_from(summary), verdict_of(summary), _report_page(path))
    obj["summary"] = str(path)
    print(json.dumps(json_safe(obj), indent=2))
    return obj["exit_code"]


def report_markdown(path: Path) -> int:
    """`qconform report --markdown`: the markdown page of harness/report/markdown.py on stdout, for
    $GITHUB_STEP_SUMMARY or a PR comment. A summary with no verdict is a page too (the job page says
    why) and its one usage line on stderr, with the exit code `report --json` gives."""
    from harness.report.markdown import markdown_no_verdict, markdown_summary
    from harness.report.verdict import verdict_of

    try:
        summary = read_summary(path)
    except SummaryError as exc:
        word, line = _no_verdict_word(path), usage_line("report", exc)
        print(line, file=sys.stderr)
        print(markdown_no_verdict(word, line), end="")
        return EXIT_CODES[word]
    result = verdict_of(summary)
    print(markdown_summary(summary, records_from(summary), result, _report_page(path)), end="")
    return result.exit_code


def report_history(sources: list[str], page: Path) -> int:
    """`qconform report --history`: each gated metric across releases (harness/report/history.py) as
    one JSON object on stdout and an HTML page; exit 0 (a drift warns, it is no verdict), 4 for
    fewer than 2 finished runs or a file that is not one."""
    from harness.report import history
    from harness.report.html import history_page
    from harness.report.summary import json_safe

    files: list[Path] = []
    for source in map(Path, sources):
        if not source.exists():
            print(usage_line("report", f"--history {source}: no such file or directory"), file=sys.stderr)
            return USAGE_ERROR
        files += history.history_files(source) if source.is_dir() else [source]
    try:
        summaries = history.load(files)
    except SummaryError as exc:
        print(usage_line("report", exc), file=sys.stderr)
        return USAGE_ERROR
    if len(summaries) < 2:
        print(usage_line("report", f"--history needs at least 2 finished runs, found {len(summaries)} in {', '.join(sources)}"), file=sys.stderr)
        return USAGE_ERROR
    trend = history.trend(summaries)
    try:
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(history_page(trend))
    except OSError as exc:
        print(usage_line("report", f"--html {page}: {exc.strerror or exc}"), file=sys.stderr)
        return USAGE_ERROR
    print(json.dumps(json_safe({**trend, "html": str(page)}), indent=2))
    return 0


def _no_verdict_word(path: Path) -> str:
    """The word of a summary read_summary refused: a run that did not finish keeps its own
    (INCOMPLETE, USAGE ERROR); a missing or unreadable file is a usage error."""
    return json.loads(path.read_text())["verdict"] if _unfinished_run(path) else "USAGE ERROR"


def _report_page(path: Path) -> str:
    """The HTML page beside a summary (a run's or merged shards'), else the summary itself."""
    pages = [page for page in (path.parent / "conformance.html", path.parent / "conformance-merged.html") if page.is_file()]
    return str(pages[0] if pages else path)


def _table_of(record: dict) -> tuple[str, ...]:
    from harness.models.llama8b_perf import get_workload

    try:
        return get_workload(record["model"]).table(record["pathway"])
    except KeyError:
        return (record["pathway"], record["model"])


def cmd_calibrate(args: argparse.Namespace, pytest_args: list[str]) -> int:
    """Measure this device `--runs` times (or take given summaries) and write a profile with margins."""
    from harness.judge.thresholds import calibrated_profile

    out = Path(args.out)
    if out.is_dir() or not out.parent.is_dir():  # before three runs, not after them
        print(usage_line("calibrate", f"--out {out}: {'is a directory' if out.is_dir() else f'no directory {out.parent}'}"), file=sys.stderr)
        return USAGE_ERROR
    summaries = [Path(p) for p in args.summaries]
    if not summaries:
        for run in range(args.runs):
            report_dir = Path(args.report_dir) / f"calibrate-{run + 1}"
            print(f"qconform: calibration run {run + 1}/{args.runs} -> {report_dir}", flush=True)
            run_args = argparse.Namespace(suites=args.suites, report_dir=str(report_dir))
            cmd_run(run_args, pytest_args)  # gates may fail here: the thresholds are what we are making
            summaries.append(report_dir / "summary.json")
    records, devices = [], set()
    read = read_summaries("calibrate", [str(path) for path in summaries])
    if isinstance(read, int):
        return read
    for summary in read:
        records += summary["records"]
        devices.add(summary["environment"]["device"])
    if not any(r.get("metric") and r.get("measured") is not None and r.get("outcome") in ("passed", "failed") for r in records):
        verdicts = ", ".join(dict.fromkeys(summary["verdict"] for summary in read))
        print(usage_line("calibrate", f"no gate measured anything in {len(summaries)} run(s) ({verdicts}): nothing to calibrate, no profile written"), file=sys.stderr)
        return EXIT_CODES["NOT GATED"]
    provenance = f"{len(summaries)} run(s) on {', '.join(sorted(devices))}"
    text = calibrated_profile(args.name, args.description or f"calibrated on {', '.join(sorted(devices))}", records, _table_of, provenance)
    try:
        out.write_text(text)
    except OSError as exc:
        print(usage_line("calibrate", f"--out {out}: {exc.strerror or exc}"), file=sys.stderr)
        return USAGE_ERROR
    print(f"qconform: wrote {out} from {len(records)} records of {len(summaries)} run(s)")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """Merge the summary.json files of shards (several CI machines) into one summary and page."""
    summaries = read_summaries("merge", args.summaries)
    if isinstance(summaries, int):
        return summaries
    records, result, env, selected = (merge_repetitions if args.repetitions else merge_summaries)(summaries)
    out = Path(args.out)
    write_summary(out, records, result, env, selected)
    (out / "conformance-merged.html").write_text(standalone_html(records, result, env))
    print(f"qconform: merged {len(args.summaries)} {'repetition' if args.repetitions else 'shard'}(s): {result.line()} -> {out}")
    return result.exit_code


def cmd_durations(args: argparse.Namespace) -> int:
    """Refresh the stored test durations that `qconform run --shard K/N` balances from runs' (each
    shard's) <report-dir>/durations.json."""
    import pytest

    from harness.run.scaleout import durations_path, refresh_durations

    try:
        out = Path(args.out) if args.out else durations_path(load_project(Path.cwd()), for_writing=True)
        updated, stored = refresh_durations([Path(s) for s in args.sources], out)
    except (pytest.UsageError, ConfigError, OSError) as exc:
        print(usage_line("durations", exc), file=sys.stderr)
        return USAGE_ERROR
    print(f"qconform: {updated} test duration(s) from {len(args.sources)} run(s) -> {out} ({stored} stored)")
    return 0


class Parser(argparse.ArgumentParser):
    """A bad argument is one line, `qconform <command>: <why>`, and exit 4 (argparse's is usage + 2)."""

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: {message}\n")


def build_parser() -> tuple[argparse.ArgumentParser, Any]:
    """(the `qconform` parser, its subparsers action: `.choices` maps each command to its parser)."""
    parser = Parser(prog="qconform", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"qconform {version()}", help="print qconform's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")  # subcommands are Parsers too

    build = sub.add_parser("build", help="build the artifacts of the project's models (else the embedded defaults) into the cache")
    build.add_argument("--models", metavar="ID,...", help="comma-separated model ids: a [[models]] id of qconform.toml or a built-in (default: the project's models, else all)")
    build.add_argument("--model", action="append", metavar="SOURCE", help="a Hugging Face checkpoint directory, fp32 .onnx file or module:factory (repeatable)")
    build.add_argument("--allow-pickle-checkpoint", action="store_true", help="accept a pickle-based (.bin) checkpoint for --model, loaded with weights_only=True")
    build.add_argument("--pathways", metavar="NAME,...", help="comma-separated pathway names (default: the project's, else all)")
    build.add_argument("--qc-cache", type=Path, metavar="DIR", help="artifact build cache (default: $QCONFORM_CACHE or ~/.cache/qconform)")
    build.add_argument("--cache", dest="qc_cache", type=Path, metavar="DIR", action=DeprecatedAlias, new="--qc-cache", help="deprecated: use --qc-cache")

    run = sub.add_parser(
        "run",
        help="run the conformance suites; extra arguments go to pytest",
        description="Run the conformance suites. Any argument not listed here goes to pytest (-k, -m gpu, -n auto, ...).",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=28, width=200),  # one line per option
    )
    run.add_argument("--suites", type=Path, metavar="DIR", help="suites directory (default: ./suites, else the checkout's, else the installed package's)")
    run.add_argument("--report-dir", default="reports", metavar="DIR", help="where the HTML report, junit.xml, summary.json and history/ go (default: reports)")
    add_pytest_options(run)

    calibrate = sub.add_parser("calibrate", help="measure this device and write a threshold profile with margins; extra arguments go to pytest")
    calibrate.add_argument("--runs", type=int, default=3, help="repeated runs; the worst value of each metric counts (default: 3)")
    calibrate.add_argument("--from", dest="summaries", action="append", default=[], metavar="SUMMARY", help="use an existing summary.json instead of running (repeatable)")
    calibrate.add_argument("--name", required=True, help="profile name, e.g. rtx5090")
    calibrate.add_argument("--description", default="", help="the profile's description line (default: the devices it was calibrated on)")
    calibrate.add_argument("--out", required=True, metavar="TOML", help="where to write the profile TOML")
    calibrate.add_argument("--suites", type=Path, metavar="DIR", help="suites directory, as for `qconform run`")
    calibrate.add_argument("--report-dir", default="reports", metavar="DIR", help="where each run's reports go, as calibrate-<n>/ (default: reports)")

    merge = sub.add_parser("merge", help="merge shards' summary.json files into one summary and HTML page")
    merge.add_argument("summaries", nargs="+", metavar="SUMMARY", help="each shard's summary.json (`qconform run --shard K/N`)")
    merge.add_argument("--out", default="reports/merged", metavar="DIR", help="where the merged summary.json and conformance-merged.html go (default: reports/merged)")
    merge.add_argument("--repetitions", action="store_true", help="the summaries are independent repetitions of one run (fresh processes; later ones may be `-m perf` only): each speed gate is judged across them, FAIL only when every repetition establishes the slowdown, UNSTABLE (an error) when they disagree")

    durations = sub.add_parser("durations", help="fold runs' durations.json into the stored durations that --shard balances")
    durations.add_argument("sources", nargs="+", metavar="DIR|DURATIONS", help="a run's report directory or its durations.json (each shard's)")
    durations.add_argument("--out", metavar="JSON", help="the stored durations to update (default: qconform-durations.json beside qconform.toml, else the embedded run's harness/data/durations.json)")

    init = sub.add_parser("init", help="write a starting qconform.toml for your model, every key explained")
    init.add_argument("--model", type=Path, required=True, metavar="SOURCE", help="Hugging Face checkpoint directory or fp32 .onnx file")
    init.add_argument("--out", type=Path, default=Path("qconform.toml"), help="where to write it (default: qconform.toml; an existing file is never overwritten)")

    report = sub.add_parser("report", help="print the verdict of a summary.json (--json: one JSON object for CI; --markdown: for a CI job page); exits with the run's code")
    report.add_argument("summary", nargs="?", default="reports/summary.json", help="a finished run's summary.json (default: reports/summary.json)")
    form = report.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print one JSON object: verdict, exit code, counts, per pathway x model cell, failures with metric/value/threshold/source")
    form.add_argument("--markdown", action="store_true", help="print a short markdown summary for a CI job page ($GITHUB_STEP_SUMMARY) or a PR comment")
    form.add_argument("--history", nargs="*", metavar="DIR|SUMMARY", help="each gated metric across releases, from history directories or summaries (default: reports/history): one JSON object with each metric's series, threshold, noise band and drift flag, and an HTML page (--html)")
    report.add_argument("--html", default="reports/history.html", metavar="PATH", help="with --history: where the HTML page with a plot per metric goes (default: reports/history.html)")

    importer.add_parsers(sub, DeprecatedAlias)  # import, hash-weights (harness/importer.py)
    return parser, sub


def main(argv: list[str] | None = None) -> int:
    parser, sub = build_parser()
    DEPRECATIONS.clear()
    code = _dispatch(parser, sub, argv)
    if code != USAGE_ERROR:
        for line in DEPRECATIONS:
            print(line, file=sys.stderr)
    return code


def _dispatch(parser: argparse.ArgumentParser, sub, argv: list[str] | None) -> int:
    try:
        args, rest = parser.parse_known_args(argv)
        if args.command not in ("run", "calibrate") and rest:
            sub.choices[args.command].error(f"unrecognized arguments: {' '.join(rest)}")
    except SystemExit as exc:  # --help (0) or a bad argument (4): returned, as every other outcome
        return exc.code if isinstance(exc.code, int) else USAGE_ERROR
    if args.command == "run":
        return cmd_run(args, rest)
    if args.command == "calibrate":
        return cmd_calibrate(args, rest)
    if args.command == "init":
        return cmd_init(args.model, args.out)
    if args.command == "import":
        _model_id_as_source(args)
    if args.command in importer.COMMANDS:
        return importer.COMMANDS[args.command](args)
    return {"build": cmd_build, "report": cmd_report, "merge": cmd_merge, "durations": cmd_durations}[args.command](args)


# -- `qconform init --model PATH` ------------------------------------------------------------------


def cmd_init(model: Path, out: Path = Path("qconform.toml")) -> int:
    """Write a starting project file for a checkpoint directory or .onnx file, every key explained."""
    from harness.project_init import init_project

    try:
        init_project(model, out)
    except (FileExistsError, ValueError, OSError) as exc:
        print(usage_line("init", exc), file=sys.stderr)
        return USAGE_ERROR
    print(
        f"wrote {out}: review it, then `qconform run --regen-golden` (a first release: the policy thresholds of "
        "defaults.toml gate it and its golden outputs are recorded for review); `qconform calibrate` later measures "
        "thresholds of its own (docs/runbook.md)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
