"""One verdict: summary.json, `qconform report`, `qconform merge` and the exit status agree, and PASS
means gates ran. Each way a run can go wrong is planted and must end non-zero and not PASS."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from harness.cli import main, pytest_plugin_args
from harness.core import Device
from harness.judge.gates import EXIT_CODES, Record, verdict
from harness.pathways.inc_int8_qdq import PAYLOAD
from tests.conftest import REPO
from tests.planted_defects import ONNX_DEFECTS, reseal, rewrite_artifact
from tests.test_reliability import _profile_with_table
from tests.test_report_json import _report

INT8 = ("--pathways=inc-int8-qdq", "--models=tiny-llama")


def _pytest(tmp_path: Path, *args: str, test_file: str | None = None, timeout: int = 600) -> tuple[int, str, dict]:
    """A child pytest with the qconform plugin, as a user's run: exit code, output, summary.json."""
    report_dir = tmp_path / "reports"
    targets = [test_file] if test_file else [str(REPO / "suites" / "test_accuracy.py")]
    cmd = [sys.executable, "-m", "pytest", *targets, *pytest_plugin_args(Path(targets[0]).parent), f"--report-dir={report_dir}", "-p", "no:cacheprovider", f"--rootdir={REPO}", *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    path = report_dir / "summary.json"
    return proc.returncode, proc.stdout + proc.stderr, json.loads(path.read_text()) if path.exists() else {}


def _report_and_merge_agree(tmp_path: Path, summary: dict, code: int) -> None:
    """`qconform report` and `qconform merge` give the run's own exit code."""
    path = tmp_path / "given.json"
    path.write_text(json.dumps(summary))
    assert main(["report", str(path)]) == code
    assert main(["merge", str(path), "--out", str(tmp_path / "merged")]) == code


def _planted_suite(tmp_path: Path, body: str) -> str:
    path = tmp_path / "test_planted_suite.py"
    path.write_text("import pytest\nfrom hypothesis import given, strategies as st\n\n" + body)
    return str(path)


def test_a_failing_property_fails_summary_report_merge_and_run(llama_int8, tmp_path):
    # A property violation is not a (model, pathway) case: it must still reach the verdict.
    suite = _planted_suite(
        tmp_path,
        "@pytest.mark.inc_int8_qdq\n@given(st.floats(0, 1))\ndef test_roundtrip_bound_too_tight(x):\n    assert x < 0.5, 'round trip off by more than the bound'\n",
    )
    code, out, summary = _pytest(tmp_path, *INT8, test_file=suite)
    assert code == 1 and summary["verdict"] == "FAIL", out
    [record] = [r for r in summary["records"] if r["check"] == "roundtrip_bound_too_tight"]
    assert record["outcome"] == "failed" and record["pathway"] == "inc-int8-qdq" and "round trip off" in record["message"]
    _report_and_merge_agree(tmp_path, summary, 1)
    run = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--suites", str(tmp_path), "--report-dir", str(tmp_path / "cli"), "-p", "no:cacheprovider", *INT8], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout + run.stderr
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["verdict"] == "FAIL"


def test_a_backend_that_raises_is_an_error_not_a_pass(tmp_path):
    suite = _planted_suite(tmp_path, "@pytest.fixture\ndef backend():\n    raise RuntimeError('CUDA error: an illegal memory access')\n\n@pytest.mark.inc_int8_qdq\ndef test_uses_backend(backend):\n    pass\n")
    code, out, summary = _pytest(tmp_path, *INT8, test_file=suite)
    assert code == EXIT_CODES["ERROR"] == 3 and summary["verdict"] == "ERROR", out
    assert "illegal memory access" in next(r["message"] for r in summary["records"] if r["outcome"] == "error")
    _report_and_merge_agree(tmp_path, summary, 3)


def _with_crashing_copy(artifact, user_artifacts, tmp_path: Path, planted: str = "planted-crash") -> tuple[Path, str]:
    """(the --artifacts directory, the --profile option): the artifact, and a copy of it for
    `planted`: planted-crash, whose runtime raises inside test_output_agreement's body."""
    target = user_artifacts(artifact)
    reseal(shutil.copytree(target, target.parent / planted), artifact, pathway=planted)
    return target.parent.parent, f"--profile={_profile_with_table(tmp_path, planted)}"


CRASH = ("-p", "tests.planted_pathways", "--models=tiny-llama", "-k", "output_agreement")
CRASH_MESSAGE = "RuntimeError: [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION"


def test_a_backend_crash_inside_a_gate_is_an_error_not_a_fail(llama_int8, user_artifacts, run_suites, tmp_path, capsys):
    """qconform could not measure: ERROR (exit 3) everywhere, the record naming the exception."""
    artifacts, profile = _with_crashing_copy(llama_int8, user_artifacts, tmp_path)
    html, junit = tmp_path / "page.html", tmp_path / "junit.xml"
    run = run_suites(f"--artifacts={artifacts}", "--pathways=planted-crash", profile, *CRASH, f"--html={html}", "--self-contained-html", f"--junitxml={junit}")
    assert run.returncode == EXIT_CODES["ERROR"] == 3 and run.summary["verdict"] == "ERROR", run.output[-3000:]
    xml = junit.read_text()  # a CI system reads the same: an error, not a failure
    assert '<error message="qconform could not measure: RuntimeError' in xml and "<failure" not in xml and 'errors="1"' in xml and 'failures="0"' in xml, xml[-2000:]
    [crash] = run.records(pathway="planted-crash", device="cpu")
    assert crash["check"] == "output_agreement" and crash["outcome"] == "error" and crash["message"].startswith(CRASH_MESSAGE), crash
    assert run.summary["counts"]["error"] == 1 and re.search(r"\b1 error\b", run.output), run.output[-3000:]  # pytest counts it so too
    page = html.read_text()
    assert "qconform release verdict: ERROR (1 error" in page and "ERROR planted-crash/cpu tiny-llama: output_agreement" in page
    path = tmp_path / "reports" / "summary.json"
    code, obj = _report(path, capsys)
    assert code == 3 and obj["verdict"] == "ERROR" and obj["counts"]["error"] == 1
    [failure] = obj["failures"]
    assert (failure["pathway"], failure["check"], failure["outcome"]) == ("planted-crash", "output_agreement", "error") and CRASH_MESSAGE in failure["message"]
    _report_and_merge_agree(tmp_path, run.summary, 3)


def test_an_artifact_whose_loading_raises_errors_every_item_and_is_loaded_once(llama_int8, user_artifacts, run_suites, tmp_path, monkeypatch):
    """A backend that raises while loading: every item of the case is an ERROR naming the cause,
    and the case is not loaded again for each item (a 1B model's failed load held 2 GiB each time)."""
    artifacts, profile = _with_crashing_copy(llama_int8, user_artifacts, tmp_path, "planted-load-crash")
    attempts = tmp_path / "loads.txt"
    monkeypatch.setenv("QCONFORM_TEST_LOADS", str(attempts))
    run = run_suites(f"--artifacts={artifacts}", "--pathways=planted-load-crash", profile, "-p", "tests.planted_pathways", "--models=tiny-llama", suites=("test_accuracy.py", "test_artifacts.py"))
    assert run.returncode == 3 and run.summary["verdict"] == "ERROR", run.output[-3000:]
    records = run.records(pathway="planted-load-crash", device="cpu")
    assert len(records) >= 5 and all(r["outcome"] == "error" and "bad allocation (planted, while loading)" in r["message"] for r in records), records
    assert attempts.read_text() == "load\n", f"loaded {attempts.read_text().count('load')} times for {len(records)} items"


def test_a_failed_gate_beside_a_crash_is_a_fail_listing_the_error(llama_int8, user_artifacts, run_suites, tmp_path, capsys):
    """A gate that measured a bad artifact decides the verdict (FAIL); the crash is listed beside it."""
    artifacts, profile = _with_crashing_copy(llama_int8, user_artifacts, tmp_path)
    plant, recipe_changes, _ = ONNX_DEFECTS["scales-2x"]
    target = artifacts / "tiny-llama" / "inc-int8-qdq"
    rewrite_artifact(llama_int8, target, PAYLOAD, plant(onnx.load(str(target / PAYLOAD))), **recipe_changes)
    run = run_suites(f"--artifacts={artifacts}", "--pathways=inc-int8-qdq,planted-crash", profile, *CRASH)
    assert run.returncode == 1 and run.summary["verdict"] == "FAIL", run.output[-3000:]
    assert run.records(pathway="inc-int8-qdq", check="output_agreement", outcome="failed", metric="min_sqnr_db")
    [crash] = run.records(pathway="planted-crash", device="cpu")
    assert crash["outcome"] == "error" and crash["message"].startswith(CRASH_MESSAGE)
    code, obj = _report(tmp_path / "reports" / "summary.json", capsys)
    assert code == 1 and obj["verdict"] == "FAIL"
    assert [(f["pathway"], f["outcome"]) for f in obj["failures"]][-1] == ("planted-crash", "error")  # after the failed gates
    assert {f["outcome"] for f in obj["failures"][:-1]} == {"failed"}
    _report_and_merge_agree(tmp_path, run.summary, 1)


def test_a_collection_error_is_an_error_and_replaces_an_old_pass(llama_int8, tmp_path):
    code, out, summary = _pytest(tmp_path, *INT8)
    assert code == 0 and summary["verdict"] == "PASS", out
    broken = _planted_suite(tmp_path, "def test_broken(:\n    pass\n")
    code, out, summary = _pytest(tmp_path, *INT8, test_file=broken)
    assert code == 3 and summary["verdict"] == "ERROR", out
    assert any(r["check"] == "collection" and "SyntaxError" in r["message"] for r in summary["records"])
    _report_and_merge_agree(tmp_path, summary, 3)


@pytest.mark.parametrize(
    "args, message",
    [
        (("--profile", "/nonexistent/mine.toml"), "/nonexistent/mine.toml: profile file does not exist"),
        (("--pathways", "bogus"), "unknown pathway 'bogus'; known: "),
        (("--models", "my-llama"), "unknown model 'my-llama'; known: "),
        (("--artifacts", "/nonexistent/dir"), "--artifacts /nonexistent/dir: not a directory"),
    ],
)
def test_bad_options_are_one_usage_line_before_any_test(tmp_path, args, message):
    code, out, summary = _pytest(tmp_path, *args)
    assert code == 4, out
    assert message in out and "Traceback" not in out and len(out.strip().splitlines()) <= 3, out
    assert summary["verdict"] == "USAGE ERROR" and not summary["records"]
    _report_and_merge_agree(tmp_path, summary, 4)


def test_a_malformed_profile_is_refused_before_any_test(tmp_path):
    profile = tmp_path / "broken.toml"
    profile.write_text("[inc-int8-qdq.tiny-llama]\nmin_sqnr_db = 'twenty'\n")
    code, out, summary = _pytest(tmp_path, "--profile", str(profile), *INT8)
    assert code == 4 and "min_sqnr_db must be a number" in out and "passed" not in out, out
    assert summary["verdict"] == "USAGE ERROR"


def test_a_killed_run_leaves_incomplete_not_an_old_pass(llama_int8, tmp_path):
    code, out, summary = _pytest(tmp_path, *INT8)
    assert summary["verdict"] == "PASS", out
    report_dir = tmp_path / "reports"
    hang = _planted_suite(tmp_path, "import time\n\n@pytest.mark.inc_int8_qdq\ndef test_hangs():\n    time.sleep(600)\n")
    cmd = [sys.executable, "-m", "pytest", hang, *pytest_plugin_args(tmp_path), f"--report-dir={report_dir}", "-p", "no:cacheprovider", f"--rootdir={REPO}", *INT8]
    child = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and json.loads((report_dir / "summary.json").read_text())["verdict"] != "INCOMPLETE":
            time.sleep(0.2)
        time.sleep(1)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["verdict"] == "INCOMPLETE"
    assert main(["report", str(report_dir / "summary.json")]) == 2
    assert main(["merge", str(report_dir / "summary.json"), "--out", str(tmp_path / "merged")]) == 2


def test_no_gate_ran_is_not_a_pass(tmp_path):
    if Device.detect().kind == "cuda":
        pytest.skip("needs a machine without CUDA, where every GPU case skips")
    code, out, summary = _pytest(tmp_path, "-m", "gpu", *INT8)
    assert code == EXIT_CODES["NOT GATED"] == 6 and summary["verdict"] == "NOT GATED", out
    assert "needs a CUDA GPU" in summary["not_gated"]["inc-int8-qdq"]
    _report_and_merge_agree(tmp_path, summary, 6)


def test_a_missing_golden_is_skipped_with_the_command_that_records_one(llama_int8, tmp_path):
    """Goldens detect change and a first release has none: the golden gate alone gates nothing
    (NOT GATED, never PASS) and its skip names the command that records one."""
    code, out, summary = _pytest(tmp_path, f"--golden-dir={tmp_path / 'no-goldens'}", *INT8, test_file=str(REPO / "suites" / "test_golden.py"))
    assert code == 6 and summary["verdict"] == "NOT GATED", out
    [record] = [r for r in summary["records"] if r["check"] == "golden" and r["device"] == "cpu"]
    assert record["outcome"] == "skipped" and "no golden of inc-int8-qdq (made from float32 on cpu, run on cpu)" in record["message"]
    assert "record one with: qconform run --regen-golden --models tiny-llama --pathways inc-int8-qdq" in record["message"]


def test_a_skipped_golden_leaves_the_case_to_its_other_gates():
    gate = Record("output_agreement", "a", "m", "cuda", "passed", metric="min_sqnr_db", measured=30.0, threshold=20.0, nodeid="t1")
    golden = Record("golden", "a", "m", "cuda", "skipped", message="no golden of a (made from bfloat16 on cuda, run on cuda) under golden/m/a", nodeid="t2")
    result = verdict([gate, golden], {"a"})
    assert result.word == "PASS" and result.counts["skipped"] == 1 and result.counts["passed"] == 1


def test_one_set_of_counts_in_summary_title_and_pytest_html(llama_int8, tmp_path):
    html = tmp_path / "page.html"
    code, out, summary = _pytest(tmp_path, *INT8, f"--html={html}", "--self-contained-html")
    assert code == 0, out
    counts = summary["counts"]
    page = html.read_text()
    title = f"qconform release verdict: PASS ({counts['passed']} passed, {counts['skipped']} skipped)" if counts["skipped"] else f"qconform release verdict: PASS ({counts['passed']} passed)"
    assert title in page
    assert f"{counts['passed']} passed" in out and "Tests: " + title.split("(")[1].rstrip(")") in page


def test_pass_requires_a_gate_for_every_selected_pathway():
    gate = Record("output_agreement", "a", "m", "cpu", "passed", metric="min_sqnr_db", measured=30.0, threshold=20.0, nodeid="t1")
    skipped = Record("output_agreement", "b", "m", "cuda", "skipped", message="b: needs a CUDA GPU", nodeid="t2")
    assert verdict([gate], {"a"}).word == "PASS"
    result = verdict([gate, skipped], {"a", "b"})
    assert result.word == "NOT GATED" and result.exit_code == 6 and result.not_gated == {"b": "b: needs a CUDA GPU"}
    assert "no gate ran for b (b: needs a CUDA GPU)" in result.line()
    assert verdict([Record(**{**gate.__dict__, "outcome": "failed"})], {"a"}).word == "FAIL"
    error = Record("output_agreement", "b", "m", "cpu", "error", message="RuntimeError: boom", nodeid="t3")
    assert verdict([gate, error], {"a"}).word == "ERROR"
    assert verdict([Record(**{**gate.__dict__, "outcome": "failed"}), error], {"a"}).word == "FAIL"  # what was measured decides
    assert verdict([gate], {"a"}, complete=False).word == "INCOMPLETE"
