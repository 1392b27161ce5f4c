"""The terminal as a person watching a run sees it: phase lines (building, reference, timing) on the
real terminal, outside pytest's capture and never inside its line of dots; failures, regressions
and policy thresholds before pytest's SKIPPED lines; the verdict in words as the very last line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from harness.judge.gates import Record, Verdict
from harness.report.verdict import failure_line, final_line, terminal_lines

CASE = ("--pathways=inc-int8-qdq", "--models=tiny-llama", "-k", "output_agreement")
PROGRESS_TEST = '''
import time

from harness.report import progress
from harness.run.plugin import HARNESS


def test_builds(request):
    store = request.config.stash[HARNESS].store
    print("captured-by-pytest")
    store.log("qconform: building inc-int8-qdq artifact for tiny-llama -> /tmp/somewhere")
    time.sleep(0.05)
    print("inc prints while it builds")
    store.log("qconform: built inc-int8-qdq for tiny-llama in 1.2s")


def test_phase():
    with progress.phase("reference outputs of tiny-llama"):
        print("captured too")


def test_plain():
    pass
'''


def _pytest_in(directory, *args: str) -> str:
    """A child pytest in `directory` (real fd capture, the qconform plugin from its entry point)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=directory, capture_output=True, text=True, timeout=600)
    return proc.stdout + proc.stderr


def _lines(text: str) -> list[str]:
    return [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in text.splitlines()]


def test_phase_lines_reach_the_terminal_not_the_capture(tmp_path):
    """The store's build messages and a phase become whole lines on the terminal (fd capture is on:
    a subprocess), the test's own output stays captured, and pytest's dots stay on their own line."""
    (tmp_path / "test_progress.py").write_text(PROGRESS_TEST)
    html = tmp_path / "page.html"
    lines = _lines(_pytest_in(tmp_path, "test_progress.py", f"--html={html}", "--self-contained-html"))
    assert "qconform: building inc-int8-qdq for tiny-llama ... done in 1.2 s" in lines, lines
    assert any(re.fullmatch(r"qconform: reference outputs of tiny-llama \.\.\. done in \d+\.\d s(, host .*)?", line) for line in lines), lines
    # pytest's own progress: the three results on one line of its own, the phase lines apart.
    assert any(re.match(r"test_progress\.py \.+\s", line) for line in lines), lines
    assert not [line for line in lines if "qconform:" in line and not line.startswith("qconform:")], lines
    assert "inc prints while it builds" not in "\n".join(line for line in lines if line.startswith("qconform:"))
    page = html.read_text()
    assert "captured-by-pytest" in page  # the test's output is captured into the report...
    assert "building inc-int8-qdq for tiny-llama" not in page  # ...and the phase line is not


def test_verdict_line_is_last_after_failures_regressions_and_skips(tmp_path, llama_int8, run_suites):
    """A failing gate (a threshold no INT8 model reaches), a planted regression against --baseline:
    both named in the terminal before the SKIPPED lines; the verdict in words is the last line."""
    profile = tmp_path / "team.toml"
    profile.write_text('[profile]\nname = "team"\n\n[inc-int8-qdq.tiny-llama]\nmin_sqnr_db = 99.0\n')
    first = run_suites(*CASE)
    assert first.returncode == 0, first.output[-3000:]
    baseline = json.loads(json.dumps(first.summary))
    for record in baseline["records"]:
        if record.get("metric") == "min_sqnr_db":
            # The baseline was 5 dB better (noise band 0.5 dB): a regression on either CPU class.
            # (min_cosine cannot be planted better on a VNNI CPU: its 0.9974 is within its 0.005 band of 1.)
            record["measured"] += 5.0
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline))

    html = tmp_path / "reports" / "page.html"
    run = run_suites(*CASE, f"--profile={profile}", f"--baseline={path}", f"--html={html}", "--self-contained-html", "-rs")
    assert run.returncode == 1, run.output[-3000:]
    lines = _lines(run.output)
    stdout_lines = [line for line in lines if line.strip()]
    last = stdout_lines[-1]
    assert last.startswith("qconform verdict: FAIL (exit 1: a gate failed) - "), last
    counts = run.summary["counts"]
    assert f" - {_counts(run.summary)} - " in last and counts["failed"] == 1 and last.endswith(str(html))
    text = "\n".join(lines)
    failure = next(line for line in lines if line.startswith("FAIL  inc-int8-qdq/cpu tiny-llama output_agreement: min_sqnr_db"))
    assert "(>= 99, margin -" in failure and "team.toml [inc-int8-qdq.tiny-llama]" in failure
    assert "regressed inc-int8-qdq/cpu tiny-llama min_sqnr_db: " in text, [line for line in lines if "regress" in line]
    assert "threshold(s) came from the policy defaults (defaults.toml)" in text  # min_cosine: team.toml has none
    assert text.index("regressed inc-int8-qdq") < text.index("short test summary info") < text.index(last)
    # A real run's phase lines: the candidate's outputs always (the reference's only when it is not cached yet).
    assert any(re.match(r"qconform: (reference|candidate) outputs of tiny-llama \([^)]*\) \.\.\. done in ", line) for line in lines), text[-3000:]


def test_plain_pytest_ends_with_the_summary_path(run_suites, llama_int8, tmp_path):
    """Without --html (plain pytest), the last line names summary.json."""
    run = run_suites(*CASE)
    last = [line for line in _lines(run.output) if line.strip()][-1]
    assert last == f"qconform verdict: PASS (exit 0: every selected pathway was gated and nothing failed) - {_counts(run.summary)} - {tmp_path / 'reports' / 'summary.json'}"


def _counts(summary: dict) -> str:
    from harness.report.verdict import counts_words

    return counts_words(summary["counts"])


def test_qconform_run_prints_nothing_after_the_verdict(tmp_path, llama_int8):
    """`qconform run`: the plugin's verdict line is the command's last line too."""
    cmd = [sys.executable, "-m", "harness.cli", "run", *CASE, "--report-dir", str(tmp_path / "r"), "-p", "no:cacheprovider", "-m", "not perf"]
    from tests.conftest import REPO

    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    last = [line for line in _lines(proc.stdout) if line.strip()][-1]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert last.startswith("qconform verdict: PASS (exit 0: ") and last.endswith(str(tmp_path / "r" / "conformance.html")), last


def test_final_line_words():
    result = Verdict("NOT GATED", {"passed": 3, "skipped": 2}, 3, {"tensorrt": "not installed"}, {})
    assert final_line(result, "reports/conformance.html") == (
        "qconform verdict: NOT GATED (exit 6: a selected pathway had no gate on its artifacts) - 3 passed, 2 skipped - no gate ran for tensorrt - reports/conformance.html"
    )


def test_failure_and_policy_lines():
    miss = Record("task_metric", "inc-int8-qdq", "m", "cpu", "failed", metric="min_top1_agreement", measured=0.41, threshold=0.8, direction="min", source="defaults.toml [inc-int8-qdq.default-causal-lm]", message="judged on its lower bound")
    error = Record("output_agreement", "p", "m", "cpu", "error", message="setup error: ArtifactError: boom\nmore")
    assert failure_line(miss) == "FAIL  inc-int8-qdq/cpu m task_metric: min_top1_agreement 0.41 (>= 0.8, margin -0.39) [defaults.toml [inc-int8-qdq.default-causal-lm] policy]; judged on its lower bound"
    assert failure_line(error) == "ERROR p/cpu m output_agreement: setup error: ArtifactError: boom more"
    lines = [text for text, _ in terminal_lines([error, miss], Verdict("FAIL", {}, 1, {}, {}), None)]
    assert lines[0].startswith("FAIL") and lines[1].startswith("ERROR")  # what decides the verdict first
    assert lines[-1].startswith("1 threshold(s) came from the policy defaults")


def test_failed_artifact_check_line_says_what_it_found_not_a_margin():
    """A yes/no check (gate.expect: source "artifact check", measured 1 vs threshold 0) has no margin
    to print: its line names the check and what it found."""
    missing = Record("golden", "inc-int8-qdq", "llama", "cpu", "failed", metric="golden record present and valid", measured=1, threshold=0, direction="max", source="artifact check", message="no golden record; record one with: qconform run --regen-golden ...")
    assert failure_line(missing) == "FAIL  inc-int8-qdq/cpu llama golden: golden record present and valid; no golden record; record one with: qconform run --regen-golden ..."


def test_progress_outside_pytest_goes_to_stderr(capsys, monkeypatch):
    from harness.report import progress

    monkeypatch.setattr(progress, "_current", None)  # as in `qconform build` or a library call
    with progress.phase("building x for y"):
        pass
    err = capsys.readouterr().err
    assert "qconform: building x for y ..." in err and re.search(r"building x for y \.\.\. done in \d+\.\d s(, host .*)?", err)


def test_timing_items_are_phases(tmp_path):
    """A perf item (perf_key parameter) runs as `timing <pathway> <workload> (i/n) ... done in`."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent('''
        import pytest
        from types import SimpleNamespace

        def pytest_generate_tests(metafunc):
            if "perf_key" in metafunc.fixturenames:
                keys = [(SimpleNamespace(id=f"w{i}"), SimpleNamespace(name="p", marker="p"), "cuda") for i in (1, 2)]
                metafunc.parametrize("perf_key", keys, ids=["w1", "w2"])
    '''))
    (tmp_path / "test_perf.py").write_text("def test_speed(perf_key):\n    pass\n")
    lines = _lines(_pytest_in(tmp_path, "test_perf.py"))
    assert any(re.fullmatch(r"qconform: timing p w1 \(1/2\) \.\.\. done in \d+\.\d s(, host .*)?", line) for line in lines), lines
    assert any(re.fullmatch(r"qconform: timing p w2 \(2/2\) \.\.\. done in \d+\.\d s(, host .*)?", line) for line in lines), lines


def test_phase_lines_of_xdist_workers_are_printed_by_the_controller(tmp_path):
    """Under pytest-xdist (`-n 2`) a worker has no terminal and its stderr is captured into the test's
    log: each phase line travels with the worker's test report and the controller prints it whole,
    `[gw0] qconform: ...`, never inside the line of dots and never in the HTML log."""
    pytest.importorskip("xdist")
    (tmp_path / "test_progress.py").write_text(PROGRESS_TEST)
    html = tmp_path / "page.html"
    lines = _lines(_pytest_in(tmp_path, "test_progress.py", "-n", "2", f"--html={html}", "--self-contained-html"))
    assert any(re.fullmatch(r"\[gw[01]\] qconform: building inc-int8-qdq for tiny-llama \.\.\. done in 1\.2 s", line) for line in lines), lines
    assert any(re.fullmatch(r"\[gw[01]\] qconform: reference outputs of tiny-llama \.\.\. done in \d+\.\d s(, host .*)?", line) for line in lines), lines
    assert not [line for line in lines if "qconform:" in line and not re.match(r"\[gw\d+\] qconform: ", line) and not line.startswith("qconform verdict")], lines
    assert not [line for line in lines if "qconform: " in line and " ... " in line and " done in " not in line], lines  # no half lines
    page = html.read_text()
    assert "captured-by-pytest" in page and "building inc-int8-qdq for tiny-llama" not in page and "reference outputs of tiny-llama" not in page


def test_worker_progress_sends_its_lines_with_the_report(monkeypatch):
    """A worker (PYTEST_XDIST_WORKER set, as xdist sets it) keeps whole lines, writes nothing to a
    terminal, and hands them to the next report; the attribute survives pytest's serialization
    (what xdist sends to the controller)."""
    from types import SimpleNamespace

    from _pytest.reports import TestReport, _report_to_json

    from harness.report import progress

    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    worker = progress.WorkerProgress(SimpleNamespace())  # no pluginmanager: any terminal use would raise
    monkeypatch.setattr(progress, "_current", worker)
    with progress.phase("candidate outputs of m (p/cpu)"):
        pass
    worker.store_log("qconform: building p artifact for m -> /tmp/x")
    worker.store_log("qconform: built p for m in 2.5s")
    progress.note("a note")
    assert len(worker.pending) == 3 and worker.pending[1:] == ["[gw3] qconform: building p for m ... done in 2.5 s", "[gw3] qconform: a note"]
    assert re.fullmatch(r"\[gw3\] qconform: candidate outputs of m \(p/cpu\) \.\.\. done in \d+\.\d s(, host .*)?", worker.pending[0])
    report = TestReport("t.py::test", ("t.py", 0, "test"), {}, "passed", None, "call")
    hook = worker.pytest_runtest_makereport(None, None)
    next(hook)
    with pytest.raises(StopIteration) as stop:
        hook.send(report)
    assert stop.value.value is report and worker.pending == []
    sent = TestReport._from_json(_report_to_json(report))
    assert getattr(sent, progress.WORKER_LINES)[1] == "[gw3] qconform: building p for m ... done in 2.5 s"


def test_setup_and_call_phases_leave_no_empty_prefix_line(tmp_path):
    """A phase in a fixture (building) and one in the test (reference): pytest's file prefix is given
    back only before a result letter, so the two phase lines follow each other (no line holding the
    bare `test_gap.py` between them), with -v as without."""
    (tmp_path / "test_gap.py").write_text(textwrap.dedent('''
        import pytest
        from harness.report import progress

        @pytest.fixture
        def built():
            with progress.phase("building p for m"):
                pass

        def test_a(built):
            with progress.phase("reference outputs of m"):
                pass

        def test_b():
            pass
    '''))
    for extra in ((), ("-v",)):
        lines = _lines(_pytest_in(tmp_path, "test_gap.py", *extra))
        first = next(i for i, line in enumerate(lines) if line.startswith("qconform: building p for m ... done in "))
        assert lines[first + 1].startswith("qconform: reference outputs of m ... done in "), lines
        assert re.match(r"test_gap\.py(::test_a PASSED| \.\.)", lines[first + 2]), lines
