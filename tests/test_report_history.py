"""Each gated metric across releases (harness/report/history.py, `qconform report --history`): a
slow drift toward a threshold is flagged while every run passes; noise within the band is not."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from harness.cli import main
from harness.judge.gates import Record, passes, verdict
from harness.report.history import drift, history_files
from harness.report.summary import keep_history, write_summary

ENV = {"device": "cpu: x86_64", "profile": "harness/profiles/cpu.toml"}
CASES = {  # model -> (check, metric, threshold)
    "tiny-llama": ("output_agreement", "min_sqnr_db", 20.0),
    "minilm-l6": ("output_agreement", "min_sqnr_db", 20.0),
}
DRIFT = [24.0 - 0.3 * i for i in range(6)]  # 0.3 dB a release toward 20 dB: each step within the 0.5 dB band
NOISE = [30.0, 30.2, 30.0, 29.8, 30.1, 29.9]  # +-0.2 dB around 30 dB, with a falling stretch of 0.4 dB


def gate(model: str, value: float, pathway: str = "inc-int8-qdq") -> Record:
    check, metric, threshold = CASES[model]
    return Record(
        check=check, pathway=pathway, model=model, device="cpu", outcome="passed" if passes(metric, value, threshold) else "failed",
        metric=metric, measured=value, threshold=threshold, direction=metric[:3], source=f"cpu.toml [{pathway}.{model}]",
        nodeid=f"suites/test_accuracy.py::test_{check}[{pathway}-cpu-{model}]",
    )


def plant_history(report_dir: Path, series: dict[str, list[float]]) -> list[Path]:
    """One run per release, a week apart, written as a run writes them (write_summary, then
    keep_history's copy into report_dir/history/): model -> its value in each run."""
    start = datetime.datetime(2026, 1, 5, tzinfo=datetime.timezone.utc)
    copies = []
    for i in range(len(next(iter(series.values())))):
        records = [gate(model, values[i]) for model, values in series.items()]
        path = write_summary(report_dir, records, verdict(records, ["inc-int8-qdq"]), ENV, ["inc-int8-qdq"])
        summary = json.loads(path.read_text())
        summary["created"] = (start + datetime.timedelta(weeks=i)).isoformat()
        path.write_text(json.dumps(summary))
        copies.append(keep_history(path))
    return copies


def _history(capsys, *args: str) -> tuple[int, dict]:
    code = main(["report", "--history", *args])
    out = capsys.readouterr()
    return code, json.loads(out.out) if code == 0 else {"stderr": out.err}


def _metric(obj: dict, model: str) -> dict:
    [case] = [c for c in obj["cases"] if c["model"] == model]
    [entry] = case["metrics"]
    return entry


def test_slow_drift_is_flagged_while_each_run_passes_and_noise_is_not(tmp_path, capsys):
    plant_history(tmp_path / "reports", {"tiny-llama": DRIFT, "minilm-l6": NOISE})
    page = tmp_path / "history.html"
    code, obj = _history(capsys, str(tmp_path / "reports" / "history"), "--html", str(page))
    assert code == 0
    drifting, noisy = _metric(obj, "tiny-llama"), _metric(obj, "minilm-l6")
    # The JSON lists per metric its series (oldest first), threshold, noise band and flag.
    assert [p["value"] for p in drifting["points"]] == DRIFT and {p["outcome"] for p in drifting["points"]} == {"passed"}
    assert (drifting["threshold"], drifting["band"], drifting["direction"]) == (20.0, 0.5, "min")
    assert drifting["flagged"] and drifting["drift"]["releases"] == 6
    assert abs(drifting["drift"]["moved"] - 1.5) < 1e-9 and abs(drifting["drift"]["releases_to_threshold"] - 2.5 / 0.3) < 1e-6
    assert [p["value"] for p in noisy["points"]] == NOISE and not noisy["flagged"] and noisy["drift"] is None
    assert obj["drifting"] == 1 and obj["cases"][0]["model"] == "tiny-llama"  # the drifting case first
    assert len(obj["runs"]) == 6 and obj["runs"][0]["created"] < obj["runs"][-1]["created"] and "least-squares" in obj["rule"]
    assert obj["html"] == str(page)
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 2 + 1  # a plot per metric, the drifting one again on top
    assert "drifting</b> over the last 6 runs" in html


def test_runs_are_ordered_by_created_time_not_by_argument_order(tmp_path, capsys):
    copies = plant_history(tmp_path / "reports", {"tiny-llama": DRIFT[:4]})
    code, obj = _history(capsys, *map(str, reversed(copies)), "--html", str(tmp_path / "h.html"))
    assert code == 0
    assert [p["value"] for p in _metric(obj, "tiny-llama")["points"]] == DRIFT[:4]
    assert _metric(obj, "tiny-llama")["flagged"]  # 0.9 dB over 4 runs


def test_history_needs_two_finished_runs(tmp_path, capsys):
    plant_history(tmp_path / "reports", {"tiny-llama": DRIFT[:1]})
    code, out = _history(capsys, str(tmp_path / "reports" / "history"), "--html", str(tmp_path / "h.html"))
    assert code == 4 and out["stderr"].startswith("qconform report: --history needs at least 2 finished runs, found 1")
    code, out = _history(capsys, str(tmp_path / "missing"))
    assert code == 4 and out["stderr"].strip() == f"qconform report: --history {tmp_path / 'missing'}: no such file or directory"


def test_the_rule_on_its_edges():
    band = 0.5
    assert drift([24.0, 23.7, 23.4], "min", 20.0, band)["releases"] == 3  # 0.6 dB in 3 runs
    assert drift([24.0, 23.7], "min", 20.0, band) is None  # two runs are a step, not a trend
    assert drift([30.2, 30.0, 29.8], "min", 20.0, band) is None  # monotone, but within the band in total
    assert drift([20.0, 20.3, 20.6, 20.9], "min", 20.0, band) is None  # moving away from the threshold
    assert drift([0.010, 0.014, 0.018], "max", 0.05, 0.005)["releases"] == 3  # a max_ metric rises toward it
    # A trend, not one outlier: a window starting at an old high value over a flat level moved
    # 0.6 dB first to newest, but the line through it moves 0.48 dB, within the band.
    assert drift([30.6, 30.0, 30.0, 30.0, 30.0], "min", 20.0, band) is None
    assert drift([30.0, 30.0, 29.0], "min", 20.0, band)["releases"] == 3  # a jump beyond the band: also a regression
    # Older flat runs do not hide a recent drift (0.6 dB over the last 3 runs).
    assert drift([30.0] * 5 + [29.7, 29.4], "min", 20.0, band) is not None


def test_history_files_are_the_newest(tmp_path):
    copies = plant_history(tmp_path / "reports", {"tiny-llama": DRIFT})
    assert history_files(tmp_path / "reports" / "history", 3) == copies[-3:]


def test_readme_names_every_key_of_a_metric(tmp_path, capsys):
    from tests.conftest import REPO

    plant_history(tmp_path / "reports", {"tiny-llama": DRIFT[:3]})
    _, obj = _history(capsys, str(tmp_path / "reports" / "history"), "--html", str(tmp_path / "h.html"))
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("qconform report --history") :][:1500]
    for key in ("points", "value", "threshold", "outcome", "band", "flagged", "drift", "created"):
        assert f"`{key}`" in section, key
    assert set(_metric(obj, "tiny-llama")) >= {"points", "threshold", "band", "flagged", "drift"}
