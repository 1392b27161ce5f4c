"""The report as a person sees it: verdict on top, regressions first, plots that render."""

import html as html_lib
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

CASE = ("--pathways=inc-int8-qdq", "--models=tiny-llama")
SUITES = ("test_accuracy.py", "test_artifacts.py")
GREEN, BLUE = np.array([26, 127, 55]), np.array([31, 119, 180])  # verdict PASS; matplotlib's first line colour


def _html(tmp_path, run_suites, *args):
    report = tmp_path / "report.html"
    run = run_suites(*CASE, f"--html={report}", "--self-contained-html", *args, suites=SUITES)
    return run, report.read_text()


def test_planted_regression_is_listed_first(llama_int8, tmp_path, run_suites):
    first = run_suites(*CASE, suites=SUITES)
    baseline = json.loads(json.dumps(first.summary))
    for record in baseline["records"]:
        if record.get("metric") == "min_token_agreement":
            record["measured"] = 0.999  # the baseline was better: now is a regression
        if record.get("metric") == "min_cosine":
            record["measured"] = 0.9  # the baseline was worse: now is an improvement
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline))

    run, html = _html(tmp_path, run_suites, f"--baseline={path}")

    [regression] = run.summary["comparison"]["regressions"]
    assert regression["metric"] == "min_token_agreement" and regression["baseline"] == 0.999
    assert [i["metric"] for i in run.summary["comparison"]["improvements"]] == ["min_cosine"]
    assert html.index("Regressions since the baseline: 1") < html.index("<th>Outcome</th>")
    assert list((tmp_path / "reports" / "history").glob("summary-*.json")), "no history kept"


def test_unchanged_rerun_shows_no_regression(llama_int8, tmp_path, run_suites):
    first = run_suites(*CASE, suites=SUITES)
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(first.summary))
    again = run_suites(*CASE, f"--baseline={path}", suites=SUITES)
    assert again.summary["comparison"] == {"regressions": [], "improvements": []}


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync")
# Read in the rendered page (not the source): where each part of the report lies, top to bottom.
MEASURE = """<script>window.addEventListener('load', () => setTimeout(() => {
  const ids = ['qc-verdict', 'qc-matrix', 'qc-failures', 'qc-not-run', 'qc-plots', 'qc-details', 'environment', 'results-table'];
  const tops = {};
  for (const id of ids) { const e = document.getElementById(id); if (e) tops[id] = e.getBoundingClientRect().top + window.scrollY; }
  const cells = [...document.querySelectorAll('#qc-matrix td')].map(td => td.innerText.split('\\n')[0]);
  const pre = document.createElement('pre'); pre.id = 'qc-measured';
  pre.textContent = JSON.stringify({tops, cells, columns: [...document.querySelectorAll('#qc-matrix tr:first-child th')].map(th => th.innerText)});
  document.body.appendChild(pre);
}, 200));</script>"""


def _chromium():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    return browser


def _rendered_layout(browser: str, tmp_path, page: str) -> dict:
    measured = tmp_path / "measured.html"
    measured.write_text(page.replace("</body>", MEASURE + "</body>"))
    out = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile-dom'}", "--window-size=1400,900", "--virtual-time-budget=10000", "--dump-dom", f"file://{measured}"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    found = re.search(r"<pre id=\"qc-measured\">(.*?)</pre>", out.stdout, re.S)
    assert found, out.stdout[-2000:] + out.stderr[-2000:]
    return json.loads(html_lib.unescape(found.group(1)))


def test_screenshot_shows_verdict_on_top_and_plots(llama_int8, tmp_path, run_suites):
    browser = _chromium()
    run, html = _html(tmp_path, run_suites)
    assert run.returncode == 0, run.output
    assert "<title>qconform release verdict: PASS" in html or "qconform release verdict: PASS" in html
    assert html.count("data:image/png;base64,") >= 1
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,5000", f"--screenshot={shot}", f"file://{tmp_path / 'report.html'}"],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    top = pixels[:700]
    assert (np.abs(top - GREEN).sum(axis=2) < 30).sum() > 200, "the green PASS verdict is not visible near the top"
    assert (np.abs(pixels - BLUE).sum(axis=2) < 30).sum() > 500, "no plot rendered (matplotlib lines missing)"


def test_rendered_page_reads_top_down_with_the_matrix(llama_int8, tmp_path, run_suites):
    """In the rendered page: verdict, matrix, failures, not run, plots, the collapsed details, and only
    then pytest-html's environment and per-test table; the matrix has the case's PASS cell; the
    report's own part fits three screens (900 px each)."""
    browser = _chromium()
    run, html = _html(tmp_path, run_suites)
    assert run.returncode == 0, run.output
    layout = _rendered_layout(browser, tmp_path, html)
    tops = layout["tops"]
    order = ["qc-verdict", "qc-matrix", "qc-failures", "qc-not-run", "qc-plots", "qc-details", "environment", "results-table"]
    assert [k for k in sorted(tops, key=tops.get)] == [k for k in order if k in tops], tops
    assert {"qc-verdict", "qc-matrix", "qc-failures", "qc-details", "results-table"} <= set(tops)
    assert tops["qc-details"] < 3 * 900, f"the report's own part is {tops['qc-details']:.0f} px tall"
    assert layout["columns"][1:] == ["tiny-llama"], layout
    assert layout["cells"][0] == "PASS", layout  # inc-int8-qdq on the CPU: the first row
    assert "got empty parameter set" not in html.split("id='qc-details'")[0]  # noise stays out of the report
