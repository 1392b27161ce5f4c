"""Phase progress on the real terminal, outside pytest's output capture: building artifacts, the
reference, candidates, timing, each `... done in 12.3 s` (with done/total where there is a count).

The plugin installs one `Progress` per session (`install`); anything may then announce a phase with
`phase(...)` (a context manager) or `note(...)`. Without an installed Progress (a library call, a
command outside pytest) the lines go to stderr. Lines never land inside pytest's progress line: a
line of dots is ended first, and pytest starts its next line cleanly after ours. A pytest-xdist
worker has no terminal: its `WorkerProgress` sends each line with its next test report, and the
controller prints it (`[gw0] qconform: ... done in 1.2 s`)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

_BUILDING = re.compile(r"^qconform: building (?P<pathway>\S+) artifact for (?P<model>\S+) -> (?P<path>.+)$")
_BUILT = re.compile(r"^qconform: built (?P<pathway>\S+) for (?P<model>\S+) in (?P<seconds>[0-9.]+)s$")


class Progress:
    """Writes phase lines to pytest's terminal writer with capture suspended."""

    def __init__(self, config: Any):
        self.config = config
        self._open: str | None = None  # the phase whose line is open (no newline yet)
        self._written = ""  # the terminal's current line as we left it
        self._restore = False  # pytest's line was ended for ours: give its prefix back before its next letter
        self._started: dict[str, float] = {}

    @property
    def _reporter(self):
        return self.config.pluginmanager.get_plugin("terminalreporter")

    @contextlib.contextmanager
    def _terminal(self) -> Iterator[Any]:
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
            yield self._reporter

    @property
    def _uncaptured(self) -> bool:
        """With -s nothing is captured: a library's own prints would land inside an open line."""
        return self.config.getoption("capture", "fd") == "no"

    def _start_line(self, reporter) -> None:
        # End whatever is on the terminal's current line: pytest's line of dots, or our open one.
        if getattr(reporter._tw, "_current_line", ""):
            reporter._tw.line()

    def _end_line(self, reporter) -> None:
        reporter._tw.line()
        self._open, self._written, self._restore = None, "", True

    def _give_back(self, reporter) -> None:
        """Before pytest writes its next result letter: its file prefix (or verbose location) on a
        line of its own again (pytest 9 writes letters without re-printing it)."""
        if self._ours_open(reporter):
            reporter._tw.line()
        if self._restore and not getattr(reporter._tw, "_current_line", ""):
            current = reporter.currentfspath
            if isinstance(current, Path):
                reporter._tw.write(os.path.relpath(current, reporter.startpath) + " ", flush=True)
            elif isinstance(current, str):
                reporter._tw.write(current, flush=True)
        self._open, self._written, self._restore = None, "", False

    def _write(self, reporter, text: str) -> None:
        reporter._tw.write(text, flush=True)
        self._written = getattr(reporter._tw, "_current_line", text)

    def _ours_open(self, reporter) -> bool:
        return bool(self._written) and getattr(reporter._tw, "_current_line", None) == self._written

    @property
    def _quiet(self) -> bool:
        reporter = self._reporter
        return reporter is None or getattr(reporter, "verbosity", 0) < -1

    def line(self, text: str) -> None:
        """One whole line."""
        if self._quiet:
            return
        with self._terminal() as reporter:
            self._start_line(reporter)
            self._write(reporter, text)
            self._end_line(reporter)

    def start(self, what: str) -> None:
        """`qconform: building inc-int8-qdq for tiny-llama ...`, left open for `done` (with -s, where
        a library's own prints would land on it, ended at once)."""
        self._started[what] = time.perf_counter()
        if self._quiet:
            return
        with self._terminal() as reporter:
            self._start_line(reporter)
            self._write(reporter, f"qconform: {what} ...")
            self._open = what
            if self._uncaptured:
                self._end_line(reporter)

    def done(self, what: str, seconds: float | None = None, outcome: str = "done", note: str = "") -> None:
        started = self._started.pop(what, None)
        if seconds is None:
            seconds = time.perf_counter() - started if started is not None else 0.0
        if self._quiet:
            return
        text = f"{outcome} in {seconds:.1f} s{note}"
        with self._terminal() as reporter:
            if self._open == what and self._ours_open(reporter):
                self._write(reporter, f" {text}")
            else:
                self._start_line(reporter)
                self._write(reporter, f"qconform: {what} ... {text}")
            self._end_line(reporter)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report) -> None:
        for text in getattr(report, WORKER_LINES, None) or ():  # an xdist worker's phase lines (WorkerProgress)
            self.line(str(text))
        if (self._open is None and not self._restore) or self._quiet:
            return
        with self._terminal() as reporter:
            if self._writes_something(report):
                self._give_back(reporter)
            elif self._ours_open(reporter):
                self._end_line(reporter)  # the prefix waits for the report that writes a letter

    def _writes_something(self, report) -> bool:
        """Whether pytest's terminal writes a letter (or, with -v, a word) for this report: a passed
        setup or teardown writes nothing, so its file prefix is not given back on a line that the
        next phase line would leave empty."""
        try:
            status = self.config.hook.pytest_report_teststatus(report=report, config=self.config)
        except Exception:  # noqa: BLE001 - a plugin's own status hook must not break the progress lines
            return True
        return not status or bool(status[1] or status[2])

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        reporter = self._reporter
        if reporter is not None and self._ours_open(reporter):
            reporter._tw.line()
        self._open, self._restore = None, False

    def store_log(self, message: str) -> None:
        """The artifact store's log (harness/run/store.py): its build messages become one phase line."""
        building, built = _BUILDING.match(message), _BUILT.match(message)
        if building:
            self.start(f"building {building['pathway']} for {building['model']}")
        elif built:
            self.done(f"building {built['pathway']} for {built['model']}", float(built["seconds"]))
        else:
            self.line(message)


# The test report attribute that carries a worker's phase lines to the controller.
WORKER_LINES = "qconform_progress"


def worker_id(config: Any) -> str | None:
    """The pytest-xdist worker this process is (`gw0`, ...), or None in the controller or without
    xdist. PYTEST_XDIST_WORKER is what xdist sets in every worker's environment."""
    workerinput = getattr(config, "workerinput", None)
    if isinstance(workerinput, dict) and workerinput.get("workerid"):
        return str(workerinput["workerid"])
    return os.environ.get("PYTEST_XDIST_WORKER") or None


class WorkerProgress(Progress):
    """Phase lines on a pytest-xdist worker, which has no terminal of its own (and whose stderr
    pytest captures into the test's log, so the lines must not go there): each line is kept whole
    and leaves with the worker's next test report (the `qconform_progress` attribute, which pytest
    serializes for the controller); the controller's Progress prints it, `[gw0] qconform: ...`."""

    def __init__(self, config: Any, worker: str | None = None):
        super().__init__(config)
        self.worker = worker or worker_id(config) or "worker"
        self.pending: list[str] = []

    def line(self, text: str) -> None:
        self.pending.append(f"[{self.worker}] {text}")

    def start(self, what: str) -> None:
        self._started[what] = time.perf_counter()

    def done(self, what: str, seconds: float | None = None, outcome: str = "done", note: str = "") -> None:
        started = self._started.pop(what, None)
        if seconds is None:
            seconds = time.perf_counter() - started if started is not None else 0.0
        self.line(f"qconform: {what} ... {outcome} in {seconds:.1f} s{note}")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        if self.pending:
            setattr(report, WORKER_LINES, self.pending)
            self.pending = []
        return report

    def pytest_runtest_logreport(self, report) -> None:
        """Nothing to do on the worker: the controller prints what the report carries."""

    def pytest_sessionfinish(self) -> None:
        """No terminal line to end on a worker."""


_current: Progress | None = None


def install(progress: Progress | None) -> None:
    global _current
    _current = progress


def current() -> Progress | None:
    return _current


def note(text: str) -> None:
    if _current is not None:
        _current.line(f"qconform: {text}")
    else:
        print(f"qconform: {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def phase(what: str, into: dict[str, Any] | None = None, label: str | None = None) -> Iterator[None]:
    """`with phase("reference tiny-llama (fp32, cpu)"):` prints `qconform: <what> ... done in 1.2 s,
    host 2.6 GiB (peak 9.4 GiB, +6.8 here)` (`failed after ...` when the block raises). The host
    numbers are the process's resident memory at the end and its peak so far (ru_maxrss), and how
    much this phase raised that peak: the phase that sets a run's peak names itself.
    `into`: a case's cost table; the phase's cost lands there under `label` (seconds, host numbers,
    GPU peak), for its records and the report."""
    progress = _current
    start = time.perf_counter()
    peak_before = host_peak_gib()
    gpu = _gpu_in_use()
    if gpu is not None:
        gpu.reset_peak_memory_stats()
    if progress is None:
        print(f"qconform: {what} ...", file=sys.stderr, flush=True)
    else:
        progress.start(what)
    outcome = "failed after"
    try:
        yield
        outcome = "done"
    finally:
        seconds = time.perf_counter() - start
        rss = host_rss_gib()
        peak = max(host_peak_gib(), rss)
        cost = {"seconds": round(seconds, 2), "host_gib": round(rss, 2), "host_peak_gib": round(peak, 2), "host_peak_raised_gib": round(max(peak - peak_before, 0.0), 2)}
        note = f", host {cost['host_gib']:.1f} GiB (peak {cost['host_peak_gib']:.1f} GiB, +{cost['host_peak_raised_gib']:.1f} here)"
        if gpu is not None:
            cost["gpu_peak_reserved_gib"] = round(gpu.max_memory_reserved() / 2**30, 2)
            note += f", GPU peak {cost['gpu_peak_reserved_gib']:.1f} GiB reserved"
        if into is not None and outcome == "done":
            into[label or what] = cost
        if progress is None:
            print(f"qconform: {what} ... {outcome} in {seconds:.1f} s{note}", file=sys.stderr, flush=True)
        else:
            progress.done(what, seconds, outcome, note)


def host_rss_gib() -> float:
    """This process's resident memory now (Linux /proc; elsewhere its peak)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (OSError, ValueError, IndexError):
        return host_peak_gib()


def host_peak_gib() -> float:
    """This process's peak resident memory so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


def _gpu_in_use():
    """torch.cuda when this process has initialized CUDA (a phase's GPU peak is then shown), else None."""
    torch = sys.modules.get("torch")
    return torch.cuda if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized() else None
