"""pytest plugin: options, markers, the (model, pathway, device) cases, gates, and the report hooks."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from hypothesis import settings

from harness import report as report_module
from harness import scaleout
from harness.artifacts import Artifact, ArtifactError
from harness.models.base import ModelSpec, all_models, get_model
from harness.core import Device, Runner
from harness.pathways.base import Pathway, all_pathways, get_pathway
from harness.store import ArtifactStore
from harness.thresholds import Profile, ProfileError, detect_profile_name, load_profile

# Hypothesis: a bounded profile keeps CI fast; `--hypothesis-profile=thorough` digs deeper.
settings.register_profile("ci", max_examples=40, deadline=None, print_blob=True)
settings.register_profile("thorough", max_examples=1000, deadline=None, print_blob=True)

BASE_MARKERS = {
    "gpu": "needs a CUDA GPU",
    "perf": "measures speed (paired timing); never run two at once on one GPU",
    "slow": "takes minutes",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qconform")
    group.addoption("--profile", help="threshold profile: a built-in name (cpu, h100, rtx5090, generic-gpu) or a .toml path; default: detected from the GPU")
    group.addoption("--artifacts", type=Path, help="directory of your own artifacts: DIR/<model>/<pathway>/manifest.json")
    group.addoption("--regen-golden", action="store_true", help="record the current outputs as the golden outputs")
    group.addoption("--golden-dir", type=Path, help="golden store (default: <rootdir>/golden)")
    group.addoption("--baseline", type=Path, help="a previous summary.json to compare against")
    group.addoption("--report-dir", type=Path, default=Path("reports"), help="where summary.json goes (default: reports)")
    group.addoption("--qc-cache", type=Path, help="artifact build cache (default: $QCONFORM_CACHE or ~/.cache/qconform)")
    group.addoption("--models", help="comma-separated model ids to run (default: all)")
    group.addoption("--pathways", help="comma-separated pathway names to run (default: all)")
    group.addoption("--shard", help="run shard K/N of the tests (stable split by test id); merge with `qconform merge`")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in BASE_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    for pathway in all_pathways():
        config.addinivalue_line("markers", f"{pathway.marker}: cases of the {pathway.name} pathway")
    if not config.getoption("hypothesis_profile", None):
        settings.load_profile("ci")
    scaleout.pin_worker_gpu(config)  # before anything below touches CUDA
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(scaleout.WorkerGpus(scaleout.visible_gpu_count()), "qconform-worker-gpus")
    harness = Harness(config)
    config.stash[HARNESS] = harness
    config.pluginmanager.register(Reporter(harness), "qconform-reporter")


# -- the session's harness ------------------------------------------------------------------


@dataclass
class Case:
    """One (model, pathway, device) combination with its loaded artifact."""

    harness: "Harness"
    model: ModelSpec
    pathway: Pathway
    device: Device
    artifact: Artifact
    runner: Runner

    @property
    def labels(self) -> dict[str, str]:
        return {"model": self.model.id, "pathway": self.pathway.name, "device": self.device.kind}

    @functools.cached_property
    def outputs(self) -> dict[str, np.ndarray]:
        return self.model.evaluate(self.runner)  # eval batches (+ greedy generation for LLMs)

    @property
    def reference(self) -> dict[str, np.ndarray]:
        return self.harness.reference_outputs(self.model)

    @property
    def profile(self) -> Profile:
        return self.harness.profile_for(self.device.kind)

    def threshold(self, key: str):
        return self.profile.threshold(key, self.pathway.name, self.model.id)


@dataclass
class PerfCase:
    """One perf workload (a layer shape, speed only) under one pathway on the GPU."""

    harness: "Harness"
    workload: Any
    pathway: Pathway
    device: Device

    @property
    def labels(self) -> dict[str, str]:
        return {"model": self.workload.id, "pathway": self.pathway.name, "device": self.device.kind}

    def threshold(self, key: str):
        # Most specific table first: [pathway.family.name.mM], then [pathway.family.name], [pathway.family].
        return self.harness.profile_for("cuda").threshold(key, *self.workload.table(self.pathway.name))


HARNESS = pytest.StashKey["Harness"]()


class Harness:
    def __init__(self, config: pytest.Config):
        self.config = config
        self.device = Device.detect()
        self.records: list[dict[str, Any]] = []
        self._profiles: dict[str, Profile] = {}
        self._cases: dict[tuple[str, str, str], Case] = {}
        self._references: dict[str, dict[str, np.ndarray]] = {}
        self.store = ArtifactStore(config.getoption("qc_cache"), config.getoption("artifacts"), log=self._log)

    def _log(self, message: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(message)
        else:
            print(message, flush=True)

    def profile_for(self, kind: str) -> Profile:
        """The profile gating cases that run on `kind`: --profile if given, else cpu.toml for CPU
        cases and the detected GPU's profile for CUDA cases (one run can hold both)."""
        name = self.config.getoption("profile") or ("cpu" if kind == "cpu" else detect_profile_name(self.device))
        if name not in self._profiles:
            self._profiles[name] = load_profile(name)
        return self._profiles[name]

    @property
    def profile(self) -> Profile:
        return self.profile_for(self.device.kind)

    def profiles_used(self) -> list[str]:
        return sorted(p.path for p in self._profiles.values()) or [self.profile.path]

    @property
    def golden_root(self) -> Path:
        return self.config.getoption("golden_dir") or Path(self.config.rootpath) / "golden"

    def selected(self) -> list[tuple[ModelSpec, Pathway, str]]:
        models = _pick(self.config.getoption("models"), all_models(), get_model)
        pathways = _pick(self.config.getoption("pathways"), all_pathways(), get_pathway)
        return [(m, p, kind) for m in models for p in pathways for kind in p.devices]

    def target_device(self, kind: str) -> Device:
        if kind == self.device.kind:
            return self.device
        return Device(kind, "absent")

    def reference_outputs(self, model: ModelSpec) -> dict[str, np.ndarray]:
        if model.id not in self._references:
            self._references[model.id] = model.evaluate(model.run_reference)
        return self._references[model.id]

    def case(self, model_id: str, pathway_name: str, kind: str) -> Case:
        """The loaded case; a bad artifact or profile fails the asking test with its message."""
        key = (model_id, pathway_name, kind)
        if key not in self._cases:
            model, pathway, device = get_model(model_id), get_pathway(pathway_name), self.target_device(kind)
            try:
                artifact = self.store.get(pathway, model)
                self._cases[key] = Case(self, model, pathway, device, artifact, pathway.load(artifact, device, model))
            except (ArtifactError, ProfileError) as exc:
                pytest.fail(f"{type(exc).__name__}: {exc}", pytrace=False)
        return self._cases[key]


def _pick(option: str | None, everything: list, lookup) -> list:
    if not option:
        return everything
    return [lookup(name.strip()) for name in option.split(",") if name.strip()]


# -- parametrization: suites ask for `case` -------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    harness = metafunc.config.stash[HARNESS]
    for key, keep in CASE_KEYS.items():
        if key in metafunc.fixturenames:
            metafunc.parametrize(key, _case_params(harness, keep))
    if "perf_key" in metafunc.fixturenames:
        metafunc.parametrize("perf_key", _perf_params(harness))


# Suites ask for one of these keys; each selects the (model, pathway, device) cases it applies to.
CASE_KEYS = {
    "case_key": lambda pathway, kind: True,
    # CUDA cases of pathways that also run on the CPU: the two runtimes must agree.
    "cross_key": lambda pathway, kind: kind == "cuda" and "cpu" in pathway.devices,
    # Cases of pathways checked against a numerical reference pathway (GPU FP8 vs INC FP8).
    "reference_key": lambda pathway, kind: pathway.reference_pathway is not None,
    # FP8 reference cases that have an E5M2 sibling to be compared with.
    "e4m3_key": lambda pathway, kind: pathway.name == "inc-fp8-ref",
}


def _case_params(harness: Harness, keep) -> list:
    """One param per selected (model, pathway, device) that `keep` accepts."""
    params = []
    for model, pathway, kind in harness.selected():
        if not keep(pathway, kind):
            continue
        marks = [getattr(pytest.mark, pathway.marker)]
        if kind == "cuda":
            marks.append(pytest.mark.gpu)
        reason = model.unavailable() or model.unavailable_for(pathway) or pathway.unavailable(harness.target_device(kind))
        reason = reason or (None if harness.store.user_dir else pathway.build_unavailable())
        if reason:
            marks.append(pytest.mark.skip(reason=reason))
        params.append(pytest.param((model.id, pathway.name, kind), id=f"{pathway.name}-{kind}-{model.id}", marks=marks))
    return params


def _perf_params(harness: Harness) -> list:
    from harness.models.llama8b_perf import WORKLOADS

    device = harness.target_device("cuda")
    params = []
    for pathway in _pick(harness.config.getoption("pathways"), all_pathways(), get_pathway):
        if not pathway.measures_speed:
            continue
        reason = pathway.unavailable(device)
        for workload in WORKLOADS:
            marks = [getattr(pytest.mark, pathway.marker), pytest.mark.gpu, pytest.mark.perf]
            if reason:
                marks.append(pytest.mark.skip(reason=reason))
            params.append(pytest.param((workload.id, pathway.name, "cuda"), id=f"{pathway.name}-{workload.id}", marks=marks))
    return params


@pytest.fixture(scope="session")
def qc(pytestconfig: pytest.Config) -> Harness:
    return pytestconfig.stash[HARNESS]


@pytest.fixture
def case(case_key: tuple[str, str, str], qc: Harness) -> Case:
    return qc.case(*case_key)


@pytest.fixture
def perf_case(perf_key: tuple[str, str, str], qc: Harness) -> Iterator[PerfCase]:
    import torch

    from harness.models.llama8b_perf import get_workload

    workload_id, pathway_name, kind = perf_key
    case = PerfCase(qc, get_workload(workload_id), get_pathway(pathway_name), qc.target_device(kind))
    with scaleout.exclusive_gpu(str(torch.cuda.get_device_properties(0).uuid)):
        yield case


class Gates:
    """Records every measured value beside its threshold, then fails once, naming each miss."""

    def __init__(self, item: pytest.Item, harness: Harness):
        self.item, self.harness = item, harness

    def check(
        self,
        case: Case | PerfCase,
        measured: dict[str, float],
        detail: str = "",
        extra: dict[str, Any] | None = None,
        judge: dict[str, float] | None = None,
    ) -> None:
        """Gate each measured value on its threshold. `judge` replaces the value the verdict uses
        (a speedup is judged on its interval's upper end: it fails only when clearly below)."""
        misses = []
        for key, value in measured.items():
            try:
                threshold = case.threshold(key)
            except ProfileError as exc:
                pytest.fail(f"ProfileError: {exc}", pytrace=False)
            passed = threshold.passes((judge or {}).get(key, value))
            self.item.user_properties.append(
                (
                    "qconform",
                    {
                        **case.labels,
                        **(extra or {}),
                        "metric": key,
                        "measured": float(value),
                        "threshold": threshold.value,
                        "direction": threshold.direction,
                        "source": threshold.source,
                        "explanation": threshold.explanation,
                        "passed": passed,
                    },
                )
            )
            if not passed:
                labels = case.labels
                misses.append(f"{labels['model']} on {labels['pathway']}/{labels['device']}: {key} measured {value:.4g}, needs {threshold.describe()}")
        if misses:
            check = getattr(self.item, "originalname", self.item.name).removeprefix("test_")
            pytest.fail(f"{check} gate failed{': ' + detail if detail else ''}\n" + "\n".join(misses), pytrace=False)


    def expect(self, case: Case | PerfCase, problems: list[str], check: str) -> None:
        """A yes/no artifact check: records one gate row, and fails naming every problem."""
        self.item.user_properties.append(("qconform", {**case.labels, "metric": check, "measured": float(len(problems)), "threshold": 0.0, "direction": "max", "source": "artifact check", "explanation": check, "passed": not problems}))
        if problems:
            pytest.fail(f"{check}: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def gate(request: pytest.FixtureRequest, qc: Harness) -> Gates:
    return Gates(request.node, qc)


# -- reporting --------------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = config.getoption("shard")
    if shard:
        index, total = scaleout.parse_shard(shard)
        keep = [item for item in items if scaleout.in_shard(item.nodeid, index, total)]
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep
    # Tag each case's test with what it checks, so skips and errors reach the verdict table too.
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        key = next((params[k] for k in (*CASE_KEYS, "perf_key") if k in params), None)
        if isinstance(key, tuple):  # an empty parametrization gives pytest's NOTSET
            model, pathway, device = key
            check = getattr(item, "originalname", item.name).removeprefix("test_")
            item.user_properties.append(("qconform_case", {"model": model, "pathway": pathway, "device": device, "check": check}))


class Reporter:
    """Collects verdict records from test reports (also those sent back by xdist workers)."""

    def __init__(self, harness: Harness):
        self.harness = harness

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.harness.records.extend(records_of(report))

    html_report: Any = None

    def pytest_html_report_title(self, report) -> None:
        self.html_report = report  # titled at the end, once the verdict is known

    def _title_html_report(self) -> None:
        # The verdict is the first thing a reader sees, above pytest-html's own tables.
        if self.html_report is not None and self.harness.records:
            word, counts = report_module.verdict(self.harness.records)
            failed = counts["failed"] + counts["error"]
            self.html_report.title = f"qconform release verdict: {word} ({failed} failed, {counts['skipped']} skipped) on {self.harness.device.describe()}"

    @functools.cached_property
    def _comparison(self) -> dict | None:
        return self.comparison()

    def comparison(self) -> dict | None:
        baseline = self.harness.config.getoption("baseline")
        if baseline is None or not self.harness.records:
            return None
        try:
            data = json.loads(Path(baseline).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise pytest.UsageError(f"--baseline {baseline}: not a readable summary.json ({exc})") from exc
        return report_module.compare_with_baseline(self.harness.records, data)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self._title_html_report()
        if self.harness.records and not hasattr(session.config, "workerinput"):
            path = report_module.write_summary(self.harness, Path(session.config.getoption("report_dir")), self._comparison)
            report_module.keep_history(path)

    def pytest_html_results_summary(self, prefix: list, summary: list, postfix: list) -> None:
        if self.harness.records:
            baseline = str(self.harness.config.getoption("baseline") or "")
            prefix.extend(report_module.verdict_html(self.harness.records, report_module.environment(self.harness), self._comparison, baseline))


def records_of(test_report: pytest.TestReport) -> list[dict[str, Any]]:
    props = dict((name, value) for name, value in test_report.user_properties if name == "qconform_case")
    case_info = props.get("qconform_case")
    if case_info is None:
        return []
    if test_report.when == "setup" and test_report.passed:
        return []
    if test_report.when == "teardown" and not test_report.failed:
        return []
    base = {**case_info, "nodeid": test_report.nodeid}
    gates = [{**base, **value, "outcome": "passed" if value["passed"] else "failed"} for name, value in test_report.user_properties if name == "qconform"]
    if gates:
        return gates
    if test_report.skipped:
        reason = test_report.longrepr[2] if isinstance(test_report.longrepr, tuple) else str(test_report.longrepr)
        return [{**base, "outcome": "skipped", "reason": reason.removeprefix("Skipped: ")}]
    if test_report.failed:
        crash = getattr(test_report.longrepr, "reprcrash", None)
        reason = crash.message if crash is not None else test_report.longreprtext.strip()
        return [{**base, "outcome": "failed", "reason": reason[:500]}]
    notes = [value for name, value in test_report.user_properties if name == "qconform_note"]
    return [{**base, "outcome": "passed", **({"reason": "; ".join(notes)} if notes else {})}]
