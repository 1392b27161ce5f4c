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
ORANGE, RED = np.array([188, 76, 0]), np.array([207, 34, 46])  # a drift's heading; a threshold line


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


def _screenshot(browser: str, page, shot, height: int = 5000) -> np.ndarray:
    """The page as headless chromium draws it, 1400 px wide: its pixels (RGB, int)."""
    subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={shot.parent / 'profile'}", f"--window-size=1400,{height}", f"--screenshot={shot}", f"file://{page}"],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return np.asarray(Image.open(shot).convert("RGB")).astype(int)


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
    pixels = _screenshot(browser, tmp_path / "report.html", tmp_path / "shot.png")
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


def test_run_report_shows_each_metric_across_releases(llama_int8, tmp_path, run_suites):
    """With this run and at least 2 earlier ones in reports/history/, the run's page has the
    cross-release section after the failures; a planted 0.3 dB-a-release SQNR drift is flagged while
    the verdict stays PASS (a drift warns, it is no gate)."""
    from harness.report.summary import keep_history

    first, html = _html(tmp_path, run_suites)
    assert first.returncode == 0 and "qc-history" not in html  # one run: nothing across releases yet
    for weeks, offset in ((2, 0.6), (1, 0.3)):  # earlier releases had a better SQNR
        earlier = json.loads(json.dumps(first.summary))
        earlier["created"] = f"{int(first.summary['created'][:4]) - weeks}{first.summary['created'][4:]}"  # years apart: order is all that counts
        for record in earlier["records"]:
            if record.get("metric") == "min_sqnr_db":
                record["measured"] += offset
        planted = tmp_path / "reports" / "earlier.json"
        planted.write_text(json.dumps(earlier))
        keep_history(planted)
        planted.unlink()

    run, html = _html(tmp_path, run_suites)
    assert run.returncode == 0 and run.summary["verdict"] == "PASS", run.output
    assert "Across releases: 1 metric(s) drifting toward their threshold, over 4 runs" in html
    assert html.index("id='qc-failures'") < html.index("id='qc-history'") < html.index("id='qc-plots'")
    section = html[html.index("id='qc-history'") : html.index("id='qc-plots'")]
    assert "min_sqnr_db" in section.split("<details")[0] and section.count("data:image/png;base64,") >= 2


def test_history_page_screenshot_shows_a_plot_per_metric(tmp_path, capsys):
    """`qconform report --history` on planted releases, drawn by headless chromium: not blank, the
    drifting metric's orange heading on top, the plots' lines and dashed red thresholds visible."""
    from harness.cli import main
    from tests.test_report_history import DRIFT, NOISE, plant_history

    browser = _chromium()
    plant_history(tmp_path / "reports", {"tiny-llama": DRIFT, "minilm-l6": NOISE})
    page = tmp_path / "history.html"
    assert main(["report", "--history", str(tmp_path / "reports" / "history"), "--html", str(page)]) == 0
    assert json.loads(capsys.readouterr().out)["drifting"] == 1
    assert page.read_text().count("<img alt='plot' src='data:image/png;base64,") == 3  # two metrics; the drifting one again on top
    pixels = _screenshot(browser, page, tmp_path / "history.png", height=1200)
    assert (pixels < 250).any(axis=2).mean() > 0.05, "the page is blank"
    assert (np.abs(pixels[:60] - ORANGE).sum(axis=2) < 40).sum() > 200, "the orange 'drifting' heading is not on top"
    assert (np.abs(pixels - BLUE).sum(axis=2) < 40).sum() > 300, "no plot rendered (matplotlib lines missing)"
    assert (np.abs(pixels - RED).sum(axis=2) < 40).sum() > 100, "no threshold drawn (dashed red lines missing)"
