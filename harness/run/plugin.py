"""pytest plugin: options, markers, fixtures and the hooks that turn every test report into Records
and the session's verdict into summary.json, the HTML report and the exit status."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import settings

from harness.judge.gates import PROBLEMS, Record, verdict
from harness.judge.thresholds import ProfileError
from harness.pathways.base import all_pathways
from harness.report import history as report_history
from harness.report import html as report_html
from harness.report import junit as report_junit
from harness.report import progress as report_progress
from harness.report import summary
from harness.report import verdict as report_verdict
from harness.run import memory, scaleout
from harness.run.references import release_memory
from harness.run.session import DEFAULT_REPORT_DIR, Case, Harness, PerfCase, case_labels, item_case, item_uses

# Hypothesis: a bounded profile keeps CI fast; `--hypothesis-profile=thorough` digs deeper.
settings.register_profile("ci", max_examples=40, deadline=None, print_blob=True)
settings.register_profile("thorough", max_examples=1000, deadline=None, print_blob=True)

MARKERS = {
    "gpu": "needs a CUDA GPU",
    "perf": "measures speed (paired timing); never run two at once on one GPU",
    "slow": "takes minutes",
    "qconform_cases(where, thresholds): runs once per selected (model, pathway, device) case (harness.run.session.cases)": None,
    "qconform_workloads(model_level, thresholds): runs once per perf workload of each selected timeable pathway (harness.run.session.workloads)": None,
}
HARNESS = pytest.StashKey[Harness]()
RECORDS = pytest.StashKey[list[Record]]()  # an item's gate Records, as objects (see Gates._record)
CRASH = "qconform_crash"  # a report's user property: the exception that kept its item from measuring (see is_finding)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qconform")
    group.addoption("--profile", help="threshold profile: a built-in name (cpu, h100, rtx5090, generic-gpu) or a .toml path; default: detected from the GPU")
    group.addoption("--artifacts", type=Path, help="directory of your own artifacts: DIR/<model>/<pathway>/manifest.json")
    group.addoption("--regen-golden", action="store_true", help="record the current outputs as the golden outputs")
    group.addoption("--golden-dir", type=Path, help="golden store (default: golden/ beside qconform.toml, else <rootdir>/golden)")
    group.addoption("--baseline", type=Path, help="a previous summary.json (e.g. one of <report-dir>/history/) to compare against: metrics that moved the wrong way beyond their noise band are listed as regressions")
    group.addoption("--report-dir", type=Path, default=DEFAULT_REPORT_DIR, help="where summary.json and history/ go (default: reports)")
    group.addoption("--qc-cache", type=Path, help="artifact build cache (default: $QCONFORM_CACHE or ~/.cache/qconform)")
    group.addoption("--model", action="append", metavar="SOURCE", help="gate your own model: a Hugging Face checkpoint directory, an fp32 .onnx file or module:factory (repeatable; default: the project file's [[models]], else the embedded demos)")
    group.addoption("--allow-pickle-checkpoint", action="store_true", help="accept a pickle-based (.bin/.pt) checkpoint for --model; loaded with torch.load(weights_only=True) (default: safetensors only)")
    group.addoption("--models", help="comma-separated model ids to run (default: all)")
    group.addoption("--pathways", help="comma-separated pathway names; each must be gated (default: every pathway that can run here)")
    group.addoption("--perf-full", action="store_true", help="time the whole kernel table (every M), not the CI subset M = 1, 128, 4096 (also QCONFORM_PERF_FULL=1)")
    group.addoption("--shard", help="run shard K/N of the tests, the N shards balanced by the tests' stored durations (--shard-durations); merge with `qconform merge`")
    group.addoption("--shard-durations", type=Path, help="the tests' durations that --shard balances (default: qconform-durations.json beside qconform.toml, else the embedded run's); refresh it with `qconform durations`")
    group.addoption("--max-gpu-memory", metavar="SIZE", help="GPU memory a case may use, e.g. 24GiB, 32GB or bytes: a case estimated to need more is refused (named pathway) or skipped before any work (default: the project's max_gpu_memory, else GPU 0's total memory)")
    group.addoption("--max-host-memory", metavar="SIZE", help="host memory a case may use, e.g. 16GiB: a case estimated to need more is refused (named pathway) or skipped before any work (default: the project's max_host_memory, else MemAvailable + this process's RSS)")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}" if text else name)
    for pathway in all_pathways():
        config.addinivalue_line("markers", f"{pathway.marker}: cases of the {pathway.name} pathway")
    if not config.getoption("hypothesis_profile", None):
        settings.load_profile("ci")
    scaleout.pin_worker_gpu(config)  # before anything below touches CUDA
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(scaleout.WorkerGpus(scaleout.visible_gpu_count()), "qconform-worker-gpus")
    harness = Harness(config)
    config.stash[HARNESS] = harness
    # Before anything compiles: Inductor/Triton caches persist under the qconform cache.
    from harness.measure.timing import configure_compile_caches

    configure_compile_caches(harness.store.cache_dir)
    config.pluginmanager.register(Reporter(harness), "qconform-reporter")
    install_progress(config, harness)


def install_progress(config: pytest.Config, harness: Harness) -> None:
    """Phase lines (building artifacts, references) on the real terminal, not in pytest's capture:
    the store's log and the first reference of each model go through harness/report/progress.py."""
    # An xdist worker has no terminal: its lines travel with its reports and the controller prints them.
    progress = report_progress.WorkerProgress(config) if _is_worker(config) else report_progress.Progress(config)
    report_progress.install(progress)
    config.pluginmanager.register(progress, "qconform-progress")
    harness.store.log = progress.store_log


def _is_worker(config: pytest.Config) -> bool:
    """An xdist worker: its reports cross to the controller, so what they carry is serialized."""
    return hasattr(config, "workerinput")


def _is_controller(config: pytest.Config) -> bool:
    """The process that writes the verdict: not an xdist worker, and only for conformance runs."""
    return not _is_worker(config) and config.stash[HARNESS].is_conformance_run


# -- parametrization: suites declare their axes with harness.run.session.cases / workloads -------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    harness = metafunc.config.stash[HARNESS]
    declared = metafunc.definition.get_closest_marker("qconform_cases")
    if declared is not None:
        metafunc.parametrize("case_key", harness.case_params(declared.kwargs["where"]))
    declared = metafunc.definition.get_closest_marker("qconform_workloads")
    if declared is not None:
        metafunc.parametrize("perf_key", harness.workload_params(declared.kwargs["model_level"]))


@pytest.fixture(scope="session")
def qc(pytestconfig: pytest.Config) -> Harness:
    return pytestconfig.stash[HARNESS]


@pytest.fixture
def case(case_key: tuple, qc: Harness) -> Case:
    return qc.case(*case_key)  # (model, pathway, device kind): the objects themselves


@pytest.fixture
def perf_case(perf_key: tuple, qc: Harness) -> Iterator[PerfCase]:
    import torch

    case = qc.perf_case(*perf_key)
    with scaleout.exclusive_gpu(str(torch.cuda.get_device_properties(0).uuid)):
        yield case


class Gates:
    """Records every measured value beside its threshold, then fails once, naming each miss."""

    def __init__(self, item: pytest.Item):
        self.item = item

    @property
    def _check(self) -> str:
        return getattr(self.item, "originalname", self.item.name).removeprefix("test_")

    def _record(self, record: Record) -> None:
        self.item.stash.setdefault(RECORDS, []).append(record)
        if _is_worker(self.item.config):  # to the controller with the test report
            self.item.user_properties.append(("qconform_record", record.to_json()))

    def check(
        self,
        case: Case | PerfCase,
        measured: dict[str, float],
        detail: str = "",
        extra: dict[str, Any] | None = None,
        judge: dict[str, float] | None = None,
        notes: dict[str, str] | None = None,
    ) -> None:
        """Gate each measured value on its threshold. `judge` replaces the value the verdict uses
        (a speedup is judged on its interval's upper end: it fails only when clearly below);
        `notes` adds a sentence to one key's record (how that key was judged)."""
        misses = []
        costs = getattr(case, "all_costs", None)  # a case's phases so far (a perf case has none)
        if costs:
            extra = {**(extra or {}), "costs": costs}
        for key, value in measured.items():
            try:
                threshold = case.threshold(key)
            except ProfileError as exc:
                # Still recorded, so `qconform calibrate` can start a profile from this run.
                self._record(Record(check=self._check, **case.labels, outcome="failed", metric=key, measured=float(value), message=f"ProfileError: {exc}", extra=dict(extra or {})))
                misses.append(f"ProfileError: {exc}")
                continue
            passed = threshold.passes((judge or {}).get(key, value))
            self._record(
                Record(
                    check=self._check,
                    **case.labels,
                    outcome="passed" if passed else "failed",
                    metric=key,
                    measured=float(value),
                    threshold=float(threshold.value),
                    direction=threshold.direction,
                    source=threshold.source,
                    explanation=threshold.explanation,
                    message="; ".join(part for part in (detail, (notes or {}).get(key, "")) if part),
                    extra=dict(extra or {}),
                )
            )
            if not passed:
                labels = case.labels
                misses.append(f"{labels['model']} on {labels['pathway']}/{labels['device']}: {key} measured {value:.4g}, needs {threshold.describe()}")
        if misses:
            pytest.fail(f"{self._check} gate failed{': ' + detail if detail else ''}\n" + "\n".join(misses), pytrace=False)

    def expect(self, case: Case | PerfCase, problems: list[str], check: str) -> None:
        """A yes/no artifact check: one Record (measured = number of problems), failing naming each."""
        self._record(
            Record(
                check=self._check,
                **case.labels,
                outcome="failed" if problems else "passed",
                metric=check,
                measured=float(len(problems)),
                threshold=0.0,
                direction=PROBLEMS.direction,
                source="artifact check",
                explanation=PROBLEMS.explanation,
                message="; ".join(problems),
            )
        )
        if problems:
            pytest.fail(f"{check}: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def gate(request: pytest.FixtureRequest) -> Gates:
    return Gates(request.node)


# -- every item is recorded ------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _is_worker(config):  # the controller reads an item's labels from its reports
        for item in items:
            item.user_properties.append(("qconform_item", item_labels(item)))


def grouped_by_case(items: list[pytest.Item]) -> list[pytest.Item]:
    """Each case's items together, where its first item was, in their own order: a case's runner and
    outputs are released after its last item (Harness.release), so one case at a time is resident
    beside the reference instead of every case of the run until the last suite. A case whose outputs
    another case's tests read (`cases(also_uses=...)`: E5M2 for E4M3, the INC FP8 reference for a GPU
    FP8 pathway, the CPU EP for the CUDA EP) runs its items just before that case's: its runner goes
    when its own items end and its outputs stay, so the two runners are never resident together."""
    uses = [item_uses(item) or [position] for position, item in enumerate(items)]  # an item without a case stays where it is
    first: dict[Any, int] = {}
    for position, keys in enumerate(uses):
        first.setdefault(keys[0], position)
    rank: dict[Any, float] = dict(first)  # where each group goes; `first` breaks ties, so two groups never interleave
    for _ in range(len(rank)):  # partners of partners: as many passes as there are groups at most
        moved = False
        for keys in uses:
            for partner in keys[1:]:
                if partner in rank and rank[partner] >= rank[keys[0]]:
                    rank[partner], moved = rank[keys[0]] - 0.5, True
        if not moved:
            break
    return [items[position] for position in sorted(range(len(items)), key=lambda position: (rank[uses[position][0]], first[uses[position][0]], position))]


def item_labels(item: pytest.Item) -> dict[str, str]:
    """What an item checks: its case when it has one, else its pathway marker and device."""
    check = getattr(item, "originalname", item.name).removeprefix("test_")
    case = item_case(item)
    if case is not None:
        return {"check": check, **case_labels(*case)}
    markers = {m.name for m in item.iter_markers()}
    pathway = next((p.name for p in all_pathways() if p.marker in markers), "-")
    return {"check": check, "model": "-", "pathway": pathway, "device": "cuda" if "gpu" in markers else "cpu"}


def records_of(test_report: pytest.TestReport, item: pytest.Item | None = None) -> list[Record]:
    """The Records one test report of `item` contributes: its gates' Records as they were made; the
    report of an xdist worker's item (none here) carries its labels and Records serialized."""
    labels = item_labels(item) if item is not None else dict(test_report.user_properties).get("qconform_item")
    if labels is None:
        return []
    if test_report.when in ("setup", "teardown") and test_report.passed:
        return []
    base = {**labels, "nodeid": test_report.nodeid}
    if test_report.skipped:
        xfail = getattr(test_report, "wasxfail", None)
        if xfail is not None:
            return [Record(**base, outcome="xfailed", message=f"expected failure: {xfail}")]
        reason = test_report.longrepr[2] if isinstance(test_report.longrepr, tuple) else str(test_report.longrepr)
        return [Record(**base, outcome="skipped", message=reason.removeprefix("Skipped: "))]
    if test_report.failed and test_report.when != "call":
        return [Record(**base, outcome="error", message=f"{test_report.when} error: {_crash(test_report)}")]
    if item is not None:
        gates = item.stash.get(RECORDS, [])
    else:
        gates = [Record.from_json(value) for name, value in test_report.user_properties if name == "qconform_record"]
    gates = [dataclasses.replace(g, nodeid=test_report.nodeid) for g in gates]
    if test_report.failed:
        crash = dict(test_report.user_properties).get(CRASH)
        if crash is not None:  # qconform could not measure: an error, beside the gates it recorded before
            return gates + [Record(**base, outcome="error", message=crash)]
        failed = [g for g in gates if g.outcome == "failed"]
        return gates + ([] if failed else [Record(**base, outcome="failed", message=_crash(test_report))])
    if hasattr(test_report, "wasxfail"):
        return [Record(**base, outcome="xpassed", message=f"passed unexpectedly: {test_report.wasxfail}")]
    notes = "; ".join(value for name, value in test_report.user_properties if name == "qconform_note")
    return gates or [Record(**base, outcome="passed", message=notes)]


def is_finding(exc: BaseException) -> bool:
    """Whether an exception from a conformance item's body says that what it checked failed (FAIL),
    not that qconform could not measure (ERROR). Findings: pytest.fail, as the gate fixture fails a
    measured value past its threshold or a failed artifact check, and as a suite fails a check
    deliberately (TEST01 in test_model_speed.py); an assert (a property test's violated
    property). Anything else (a RuntimeError from a runtime, a ValueError from a library) is an
    error naming the exception. Hypothesis groups several failing examples: a finding if each is."""
    group = getattr(exc, "exceptions", None)  # an exception group (BaseExceptionGroup from Python 3.11)
    if isinstance(group, tuple) and group:
        return all(is_finding(e) for e in group)
    return isinstance(exc, (pytest.fail.Exception, AssertionError))


def _is_timed(item: pytest.Item) -> bool:
    """A perf item (a workload timed on the GPU) that will run."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return isinstance(params.get("perf_key"), tuple) and not any(item.iter_markers("skip"))


def _crash(test_report: pytest.TestReport | pytest.CollectReport) -> str:
    crash = getattr(test_report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message[:800]
    text = test_report.longreprtext.strip()
    errors = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]  # pytest's "E   SyntaxError: ..."
    return ("; ".join(errors) or text)[-800:]


class Reporter:
    """Collects Records from test and collection reports; writes the verdict everywhere at the end."""

    def __init__(self, harness: Harness):
        self.harness = harness
        self.records: list[Record] = []
        self.html_report: Any = None
        self._items: dict[str, pytest.Item] = {}  # this process's items by nodeid (none on an xdist controller)
        self._timed: dict[str, int] = {}  # perf items that will run -> their position among them
        self.seconds: dict[str, float] = {}  # each test's time, for <report-dir>/durations.json
        self._released = False  # a case was dropped after the current item: its memory goes back at logfinish
        self._crashes: dict[str, str] = {}  # node id -> the exception that kept the item from measuring

    @property
    def report_dir(self) -> Path:
        return Path(self.harness.config.getoption("report_dir"))

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not _is_controller(session.config):
            return
        # Written first, replaced at the end: a crash or kill never leaves an older PASS behind.
        summary.write_incomplete(self.report_dir, "the run started and has not finished (killed or still running)")
        try:
            self.harness.validate()
        except pytest.UsageError as exc:
            summary.write_incomplete(self.report_dir, f"usage error: {exc}", word="USAGE ERROR")
            raise
        held = memory.hold_gpu_to_budget(memory.MemoryCheck.of(self.harness))
        if held:
            self.harness.log(held)

    @pytest.hookimpl(trylast=True)  # after -k and -m have deselected: the shards split what is left
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        items[:] = grouped_by_case(items)
        self.select_shard(config, items)
        self.harness.count_uses(items)  # each case's runner goes when its last item has run
        self._items = {item.nodeid: item for item in items}
        self._timed = {item.nodeid: i + 1 for i, item in enumerate(i for i in items if _is_timed(i))}
        # xdist workers collect for themselves; there a gap stays a gate-time failure naming the key.
        if not _is_controller(config):
            return
        try:
            self.harness.check_thresholds(items)
        except pytest.UsageError as exc:
            summary.write_incomplete(self.report_dir, f"usage error: {exc}", word="USAGE ERROR")
            raise

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.records.append(Record("collection", "-", "-", "-", "error", message=f"{report.nodeid or 'collection'}: {_crash(report)}", nodeid=report.nodeid))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        """Timing is a phase of its own on the terminal: `timing <pathway> <workload> (3/24) ... done in 12.3 s`."""
        position = self._timed.get(item.nodeid)
        if position is None:
            return (yield)
        workload, pathway, _ = item_case(item)
        with report_progress.phase(f"timing {pathway.name} {getattr(workload, 'id', workload)} ({position}/{len(self._timed)})"):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        """A conformance item whose body raised something other than a finding (is_finding) could
        not measure: its report carries the exception (to the controller too, under xdist)."""
        report = yield
        if call.when == "call" and report.failed and call.excinfo is not None and self.harness.is_conformance_run and not is_finding(call.excinfo.value):
            exc = call.excinfo.value
            report.user_properties.append((CRASH, f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:800]))
        return report

    def pytest_report_teststatus(self, report: pytest.TestReport):
        """pytest counts it as an error too, so its summary line agrees with the verdict's counts."""
        if report.when == "call" and report.failed and CRASH in dict(report.user_properties):
            return "error", "E", "ERROR"
        return None

    def select_shard(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """--shard K/N: keep group K of N duration-balanced groups (each xdist worker computes the same)."""
        shard = config.getoption("shard")
        if not shard:
            return
        index, total = scaleout.parse_shard(shard)
        group = scaleout.shard_groups(items, total, scaleout.read_durations(self.harness.shard_durations))[index - 1]
        config.hook.pytest_deselected(items=group.deselected)
        items[:] = group.selected

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.records.extend(records_of(report, self._items.get(report.nodeid)))
        crash = dict(report.user_properties).get(CRASH)
        if crash is not None:
            self._crashes[report.nodeid] = crash
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration  # setup + call + teardown

    @pytest.hookimpl(trylast=True)  # after pytest has torn the item's fixtures down
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        self._released = self.harness.release(item) or self._released

    def pytest_runtest_logfinish(self) -> None:
        # After pytest has dropped the item's fixture values (item.funcargs): only then is a released
        # case unreachable, and a collection frees what its reference cycles hold.
        if self._released:
            self._released = False
            release_memory()

    def pytest_html_report_title(self, report) -> None:
        self.html_report = report  # titled at the end, once the verdict is known

    @property
    def selected(self) -> list[str]:
        """Pathways that must show a check: the named ones; by default, those selected here that
        kept at least one test after -m/-k/--shard (deselecting a pathway is the user's choice)."""
        if self.harness.required:
            return sorted(self.harness.required)
        return sorted({p.name for p in self.harness.pathways} & {r.pathway for r in self.records})

    @functools.cached_property
    def verdict(self):
        selected = self.selected
        complete = getattr(self, "_exitstatus", 0) != pytest.ExitCode.INTERRUPTED
        return verdict(self.records, selected, self.harness.not_selected, complete)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not _is_controller(session.config):
            return
        self._exitstatus = exitstatus
        if exitstatus == pytest.ExitCode.USAGE_ERROR:
            return
        result = self.verdict
        if self.html_report is not None:
            self.html_report.title = f"qconform release verdict: {result.word} ({summary.counts_text(result)}) on {self.harness.device.describe()}"
        path = summary.write_summary(self.report_dir, self.records, result, self.environment, self.selected, self.comparison)
        summary.keep_history(path)
        if self.seconds:  # what `qconform durations` folds into the stored durations --shard balances
            scaleout.write_run_durations(self.report_dir, self.seconds)
        session.exitstatus = result.exit_code  # the exit status is the verdict's

    @functools.cached_property
    def environment(self) -> dict[str, Any]:
        return self.harness.environment()  # once: summary.json and the HTML page show the same

    @functools.cached_property
    def comparison(self) -> dict | None:
        baseline = self.harness.config.getoption("baseline")
        if baseline is None:
            return None
        return summary.compare_with_baseline(self.records, json.loads(Path(baseline).read_text()))

    @property
    def _has_verdict(self) -> bool:
        return _is_controller(self.harness.config) and getattr(self, "_exitstatus", None) not in (None, pytest.ExitCode.USAGE_ERROR)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        """Before pytest's SKIPPED lines: what failed (measured vs threshold), the regressions against
        --baseline, the pathways no gate ran for. The verdict line itself comes last (unconfigure)."""
        if self._has_verdict:
            lines = report_verdict.terminal_lines(self.records, self.verdict, self.comparison, str(self.harness.config.getoption("baseline") or ""))
            if lines:
                terminalreporter.write_sep("-", "qconform", bold=True)
                for text, markup in lines:
                    terminalreporter.write_line(text, **markup)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """The last line of the run: the verdict in words, its counts, the report, the exit code's meaning."""
        report_progress.install(None)
        xml = config.getoption("xmlpath", None)
        if xml and self._crashes and not _is_worker(config) and Path(xml).is_file():  # junitxml wrote it at sessionfinish
            report_junit.crashes_as_errors(Path(xml), self._crashes)
        if not self._has_verdict:
            return
        html = config.getoption("htmlpath", None)
        where = str(html) if html else str(self.report_dir / summary.SUMMARY)
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        line = report_verdict.final_line(self.verdict, where)
        colour = {"PASS": {"green": True}, "FAIL": {"red": True}, "ERROR": {"red": True}}.get(self.verdict.word, {"yellow": True})
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(line, bold=True, **colour)
        else:
            print(line, flush=True)

    def pytest_html_results_summary(self, prefix: list, summary: list, postfix: list) -> None:
        if not self.harness.is_conformance_run:
            return
        baseline = str(self.harness.config.getoption("baseline") or "")
        prefix.extend(report_html.verdict_html(self.records, self.verdict, self.environment, self.comparison, baseline, self.trend()))

    def trend(self) -> dict | None:
        """Each metric across releases, when history/ holds this run and at least 2 earlier ones
        (the newest few: the page stays cheap as history grows)."""
        files = report_history.history_files(self.report_dir / "history", report_history.RECENT)
        if len(files) < 3:
            return None
        try:
            return report_history.trend(report_history.load(files))
        except summary.SummaryError:
            return None  # a history file that cannot be read costs the section, never the report
