"""Phase progress on the real terminal, outside pytest's output capture: building artifacts, the
reference, candidates, timing, each `... done in 12.3 s` (with done/total where there is a count).

The plugin installs one `Progress` per session (`install`); anything may then announce a phase with
`phase(...)` (a context manager) or `note(...)`. Without an installed Progress (a library call, a
command outside pytest) the lines go to stderr. Lines never land inside pytest's progress line: a
line of dots is ended first, and pytest starts its next line cleanly after ours."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

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

    def done(self, what: str, seconds: float | None = None, outcome: str = "done") -> None:
        started = self._started.pop(what, None)
        if seconds is None:
            seconds = time.perf_counter() - started if started is not None else 0.0
        if self._quiet:
            return
        text = f"{outcome} in {seconds:.1f} s"
        with self._terminal() as reporter:
            if self._open == what and self._ours_open(reporter):
                self._write(reporter, f" {text}")
            else:
                self._start_line(reporter)
                self._write(reporter, f"qconform: {what} ... {text}")
            self._end_line(reporter)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report) -> None:
        if (self._open is not None or self._restore) and not self._quiet:
            with self._terminal() as reporter:
                self._give_back(reporter)

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
def phase(what: str) -> Iterator[None]:
    """`with phase("reference tiny-llama (fp32, cpu)"):` prints `qconform: <what> ... done in 1.2 s`
    (`failed after ...` when the block raises)."""
    progress = _current
    start = time.perf_counter()
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
        if progress is None:
            print(f"qconform: {what} ... {outcome} in {seconds:.1f} s", file=sys.stderr, flush=True)
        else:
            progress.done(what, seconds, outcome)


def timed(what: Callable[..., str], function: Callable[..., Any], first_only: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """`function` wrapped in a phase named `what(*args)`; with `first_only(*args)` (a key), only the
    first call per key is a phase (later calls are cached lookups)."""
    seen: set = set()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = first_only(*args) if first_only is not None else None
        if first_only is not None and key in seen:
            return function(*args, **kwargs)
        seen.add(key)
        with phase(what(*args)):
            return function(*args, **kwargs)

    return wrapper
