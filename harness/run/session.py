"""The session: which (model, pathway, device) cases run, their artifacts and runners, the profile per
device class, and the up-front validation that turns a bad option into one usage line.

Suites declare their case axes at the test with `@cases(...)` / `@workloads()`; the plugin only
turns those declarations into parameters."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import platform
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import pytest

from harness.artifacts.errors import ArtifactError, ArtifactFinding
from harness.artifacts.manifest import Artifact
from harness.config import ConfigError, ModelEntry, Project, load_project
from harness.core import FP32_CPU, RECIPE_KEYS, Device, Precision, Runner
from harness.judge.thresholds import Profile, ProfileError, Threshold, detect_profile_name, load_profile, resolve
from harness.measure.localize import LayerErrors, localize
from harness.models.base import MODELS, ModelSpec, all_models, get_model, register_model
from harness.pathways.base import Pathway, all_pathways, get_pathway
from harness.report.progress import phase
from harness.run import memory
from harness.run.references import ReferenceStore, evaluate, fp32_floor_precision, loaded_module, release_memory
from harness.run.scaleout import durations_path
from harness.run.store import ArtifactStore

CaseFilter = Callable[[Pathway, str], bool]
CaseKey = tuple[str, str, str]  # (model id, pathway name, device kind): labels, test ids, the case cache
T = TypeVar("T")
# The checkout's suites/, and the same suites as installed from the wheel (harness/suites).
HARNESS_DIR = Path(__file__).resolve().parents[1]
SUITES_DIRS = (HARNESS_DIR.parent / "suites", HARNESS_DIR / "suites")
DEFAULT_REPORT_DIR = Path("reports")
# Options that make any pytest run a conformance run.
EXPLICIT_OPTIONS = ("profile", "artifacts", "regen_golden", "golden_dir", "baseline", "models", "pathways", "shard", "shard_durations", "model")


def cases(where: CaseFilter | None = None, thresholds: tuple[str, ...] | Callable[[Pathway, ModelSpec], Any] = (), also_uses: Callable[[ModelSpec, Pathway, str], list[tuple[str, str]]] | None = None):
    """Declare that a test runs once per selected (model, pathway, device) case that `where` accepts
    (`where(pathway, device_kind)`); the test receives it as the `case` fixture (or `case_key`: the
    (model, pathway, device kind) objects).
    `thresholds`: the keys its gates ask for (or `f(pathway, model)` giving them), resolved for
    every selected case before any test runs, so a gap is a usage error, not a FAIL.
    `also_uses(model, pathway, kind)`: the (pathway name, device kind) of other cases of the model the
    test reads, kept loaded until it has run (a case is released after the last item that uses it)."""
    return pytest.mark.qconform_cases(where=where or (lambda pathway, kind: True), thresholds=thresholds, also_uses=also_uses)


def workloads(model_level: bool = False, thresholds: tuple[str, ...] = ()):
    """Declare that a test runs once per perf workload of every selected pathway that can be timed:
    the kernel table (a layer shape each), or with `model_level` whole causal LMs' prefill and
    decode points (harness/models/llama8b_perf.py). The test receives it as `perf_case`.
    `thresholds`: the keys its gates ask for, resolved before any test runs (see `cases`)."""
    return pytest.mark.qconform_workloads(model_level=model_level, thresholds=thresholds)


class CaseNotLoaded(RuntimeError):
    """A backend raised while the case's artifact was loaded: an ERROR of each of its items."""


@dataclass
class Case:
    """One (model, pathway, device) combination with its loaded artifact."""

    harness: "Harness"
    model: ModelSpec
    pathway: Pathway
    device: Device
    artifact: Artifact
    runner: Runner | None  # None once only other cases' tests, which read its outputs, are left (Harness.release)
    # What each phase of this case cost (seconds, forward passes, host and GPU memory), by phase:
    # its records carry it (`costs`) and the report's cost table shows it.
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def labels(self) -> dict[str, str]:
        return case_labels(self.model, self.pathway, self.device.kind)

    @functools.cached_property
    def outputs(self) -> dict[str, np.ndarray]:
        with phase(f"candidate outputs of {self.model.id} ({self.pathway.name}/{self.device.kind})", into=self.costs, label="candidate outputs"):
            return evaluate(self.model, self.runner, self.costs, "candidate")  # eval batches (+ greedy generation, labeled task for LLMs)

    def layer_errors(self) -> LayerErrors:
        """Per-layer activation SQNR against the reference (harness/measure/localize.localize), once per case."""
        if getattr(self, "_qc_layer_errors", None) is None:
            with phase(f"localizing {self.pathway.name}'s error in {self.model.id} layer by layer", into=self.costs, label="localization"):
                return localize(self)
        return localize(self)

    @property
    def all_costs(self) -> dict[str, dict[str, Any]]:
        """The reference's costs (shared by every case of the model) and this case's own."""
        return {**self.harness.references.costs.get((self.model.id, self.precision), {}), **self.costs}

    @property
    def precision(self) -> Precision:
        """What this case is gated against: the model as its candidate is made from it, on its device."""
        return self.pathway.reference_precision(self.device.kind)

    @property
    def reference(self) -> dict[str, np.ndarray]:
        return self.harness.reference_outputs(self.model, self.precision)

    @contextlib.contextmanager
    def reference_module(self):
        """(the reference module, its device) for a phase (localization): the resident fp32 one, or
        loaded beside the candidate holding once what quantization left alone, released after."""
        with phase(f"reference {self.model.id} ({self.precision}) beside {self.pathway.name}'s candidate"):
            with loaded_module(self.model, self.precision, beside=getattr(self.runner, "module", None)) as module:
                try:
                    yield module, self.precision.device
                finally:
                    del module  # so that loaded_module's release gives its memory back

    @functools.cached_property
    def precision_floor(self) -> dict[str, Any]:
        """When the reference is not fp32 (bf16 on the GPU): what precision alone costs, the reference
        against the fp32 model on the same data, beside the quantization's numbers; or why not measured."""
        return self.harness.precision_floor(self.model, self.precision)

    @property
    def profile(self) -> Profile:
        return self.harness.profile_for(self.device.kind)

    def threshold(self, key: str) -> Threshold:
        return case_threshold(self.profile, key, self.pathway, self.model, self.device)


@dataclass
class PerfCase:
    """One perf workload (a layer shape, speed only) under one pathway on the GPU."""

    harness: "Harness"
    workload: Any
    pathway: Pathway
    device: Device

    @property
    def labels(self) -> dict[str, str]:
        return case_labels(self.workload, self.pathway, self.device.kind)

    def threshold(self, key: str) -> Threshold:
        # Most specific table first: [pathway.family.name.mM], then [pathway.family.name], [pathway.family].
        table = self.workload.table(self.pathway.name)
        return resolve(self.harness.profile_for("cuda"), key, table, table)


def case_labels(model: Any, pathway: Pathway, kind: str) -> dict[str, str]:
    """What a Record says of a case: the model's (or perf workload's) id, the pathway's name, the device kind."""
    return {"model": model.id, "pathway": pathway.name, "device": kind}


def item_uses(item: pytest.Item) -> list[CaseKey]:
    """The cases an item reads: its own, and those its test declares with `cases(also_uses=...)`."""
    found = item_case(item)
    if found is None:
        return []
    model, pathway, kind = found
    marker = item.get_closest_marker("qconform_cases")
    also = marker.kwargs.get("also_uses") if marker is not None else None
    return [(getattr(model, "id", model), pathway.name, kind), *((getattr(model, "id", model), name, k) for name, k in (also(model, pathway, kind) if also else []))]


def item_case(item: pytest.Item) -> tuple[Any, Pathway, str] | None:
    """The (model or workload, pathway, device kind) an item was parametrized with, or None."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    key = params.get("case_key", params.get("perf_key"))
    return key if isinstance(key, tuple) else None  # an empty parametrization gives pytest's NOTSET


def case_threshold(profile: Profile, key: str, pathway: Pathway, model: ModelSpec, device: Device | None = None) -> Threshold:
    """From the device profile's [pathway.model.<device class>] table (a CPU or GPU class whose
    kernels compute differently), else its [pathway.model]; a key they lack, or a model the profile
    has no table for (a team's first release), from defaults.toml's policy table for the model's kind."""
    kind = getattr(model, "kind", None)
    device_class = [device.device_class] if device is not None else []
    policy = (pathway.name, f"default-{kind}", *device_class) if kind else None
    return resolve(profile, key, (pathway.name, model.id, *device_class), policy)


def declared_thresholds(marker, pathway: Pathway, model: ModelSpec, kind: str) -> tuple[str, ...]:
    """The threshold keys a suite test declares (`@cases(thresholds=...)`) for one case."""
    keys = marker.kwargs.get("thresholds", ())
    return tuple(keys(pathway, model, kind) if callable(keys) else keys)


class Harness:
    def __init__(self, config: pytest.Config):
        self.config = config
        self.device = Device.detect()
        self._profiles: dict[str, Profile] = {}
        self._cases: dict[CaseKey, Case] = {}
        self._uses: Counter[CaseKey] = Counter()  # items left to run per case: its runner is released at 0
        self._own_uses: Counter[CaseKey] = Counter()  # of those, its own (not another case's test reading its outputs)
        self._probes: dict[tuple[str, Device], Any] = {}
        self._findings: dict[CaseKey, ArtifactFinding] = {}  # found on load: artifact_identity, graph_valid
        self._load_failures: dict[CaseKey, tuple[bool, str]] = {}  # (a finding of the artifact?, why): never loaded twice
        self.store = ArtifactStore(config.getoption("qc_cache"), self.artifacts_dir, log=self.log)
        self.references = ReferenceStore(self.store.cache_dir)

    def log(self, message: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(message)
        else:
            print(message, flush=True)

    # -- validation and selection -----------------------------------------------------------

    @functools.cached_property
    def is_conformance_run(self) -> bool:
        """Whether this pytest session gates a release: it runs qconform's suites or names a qconform
        option. Any other pytest run (qconform's own tests, a team's unit tests) is left alone: no
        verdict, no summary.json, no change to the exit status."""
        config = self.config
        if any(config.getoption(name) not in (None, False, []) for name in EXPLICIT_OPTIONS) or self.project is not None:
            return True
        if config.getoption("report_dir") != DEFAULT_REPORT_DIR:
            return True
        paths = [Path(arg.split("::")[0]).resolve() for arg in config.args]
        if config.getoption("pyargs", False):  # `pytest --pyargs harness.suites`: arguments are modules
            paths += [Path(where).resolve() for arg in config.args for where in _module_locations(arg.split("::")[0])]
        return any(path.is_relative_to(suites) for path in paths for suites in SUITES_DIRS)

    def validate(self) -> None:
        """Every option checked before any test runs; a bad one is one line (pytest.UsageError)."""
        option = self.config.getoption
        try:
            if self.project is not None:
                check_project_pathways(self.project)
            _ = (self.models, self.pathways)  # resolving them validates every model and pathway name
            for kind in {"cpu", self.device.kind}:
                self.profile_for(kind)
            for model in self.models:  # checkpoint config, tokenizer and data, no weights loaded
                if model.unavailable() is None:
                    model.validate()
        except (KeyError, ProfileError, ConfigError, ValueError, TypeError, OSError, ArtifactError, ImportError) as exc:
            # A model that cannot be constructed (pickle-only weights, no config.json) lands here too.
            raise pytest.UsageError(" ".join(str(exc).strip('"').split())) from None
        artifacts = self.artifacts_dir
        if artifacts is not None and not Path(artifacts).is_dir():
            raise pytest.UsageError(f"--artifacts {artifacts}: not a directory (expected DIR/<model>/<pathway>/manifest.json)")
        for model, pathway in {(m.id, p.name): (m, p) for m, p, _ in self.selected()}.values() if artifacts is not None else ():
            try:  # manifest, sha256 of every file, ONNX external data: a damaged artifact is a usage line
                self.store.user_artifact(pathway, model)
            except ArtifactFinding:
                pass  # a finding (not the model's, an invalid graph): its check fails with it
            except ArtifactError as exc:
                raise pytest.UsageError(f"--artifacts: {' '.join(str(exc).split())}") from None
        baseline = option("baseline")
        if baseline is not None:
            try:
                json.loads(Path(baseline).read_text())["records"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise pytest.UsageError(f"--baseline {baseline}: not a readable summary.json ({type(exc).__name__}: {exc})") from None
        refused = memory.refusal(self)  # a named pathway's case estimated not to fit this machine's memory
        if refused:
            raise pytest.UsageError(refused)

    def check_thresholds(self, items: list[pytest.Item]) -> None:
        """Every threshold a collected gate will ask for resolves (device profile, else policy),
        before any test runs: a gap is one usage line naming the table and key, never a FAIL."""
        gaps: list[str] = []
        for item in items:
            if any(item.iter_markers("skip")) or item_case(item) is None:
                continue  # what will not run asks for nothing
            model, pathway, kind = item_case(item)
            cases_marker, workloads_marker = item.get_closest_marker("qconform_cases"), item.get_closest_marker("qconform_workloads")
            try:
                if cases_marker is not None:
                    probe = self.probe(pathway, self.target_device(kind))
                    if probe is not None and not probe.ok:
                        continue  # the case fails with the probe's finding before any gate
                    for key in declared_thresholds(cases_marker, pathway, model, kind):
                        case_threshold(self.profile_for(kind), key, pathway, model, self.target_device(kind))
                elif workloads_marker is not None:
                    perf = self.perf_case(model, pathway, kind)
                    for key in workloads_marker.kwargs.get("thresholds", ()):
                        perf.threshold(key)
            except ProfileError as exc:
                if str(exc) not in gaps:
                    gaps.append(str(exc))
        if gaps:
            more = f" (and {len(gaps) - 1} more: {'; '.join(gaps[1:3])}{' ...' if len(gaps) > 3 else ''})" if len(gaps) > 1 else ""
            raise pytest.UsageError(f"{gaps[0]}{more}; add it to the profile, or calibrate one with `qconform calibrate`")

    @functools.cached_property
    def project(self) -> Project | None:
        """The team's qconform.toml (or [tool.qconform]) in the working directory or a parent."""
        try:
            return load_project(Path.cwd())
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None

    @property
    def artifacts_dir(self) -> Path | None:
        return self.config.getoption("artifacts") or (self.project.artifacts if self.project else None)

    @functools.cached_property
    def user_models(self) -> list[ModelSpec]:
        """The team's models: `--model SOURCE` (repeatable), else the project file's [[models]]."""
        specs = user_models(self.config.getoption("model"), self.config.getoption("allow_pickle_checkpoint"), self.project)
        for spec in specs:
            if spec.id not in MODELS:
                register_model(spec)
        return specs

    @functools.cached_property
    def artifact_pairs(self) -> set[tuple[str, str]]:
        """(model id, pathway) of every artifact under the artifacts directory (DIR/<model>/<pathway>/)."""
        root = self.artifacts_dir
        if root is None or not Path(root).is_dir():
            return set()
        return {(path.parent.parent.name, path.parent.name) for path in Path(root).glob("*/*/manifest.json")}

    @functools.cached_property
    def models(self) -> list[ModelSpec]:
        """--models names; else the team's own models when it declares any; else the models the
        artifacts directory holds; else the embedded defaults."""
        user_models = self.user_models  # registered first, so --models can name them
        if self.config.getoption("models"):
            chosen = pick(self.config.getoption("models"), all_models, get_model)
        elif user_models:
            chosen = user_models
        else:
            held = sorted({model for model, _ in self.artifact_pairs})
            chosen = [get_model(model) for model in held] if held else all_models()
        return apply_project_recipes(chosen, self.project)

    @functools.cached_property
    def required(self) -> set[str]:
        """Pathways the user named (--pathways, or the project file), else those the artifacts
        directory holds: each must have a check run, or the verdict is NOT GATED."""
        named = self.config.getoption("pathways") or ",".join(self.project.pathways if self.project else [])
        if not named:
            named = ",".join(sorted({pathway for _, pathway in self.artifact_pairs}))
        return {p.name for p in pick(named, list, get_pathway)}

    @functools.cached_property
    def _pathway_selection(self) -> tuple[list[Pathway], dict[str, str]]:
        """Named pathways; by default every pathway that can run on this machine (the rest are listed
        with the reason, never silently passed)."""
        if self.required:
            return [get_pathway(name) for name in sorted(self.required)], {}
        selected, not_selected = [], {}
        for pathway in all_pathways():
            reasons = [self.case_unavailable(pathway, kind) for kind in pathway.devices]
            if all(reasons):
                not_selected[pathway.name] = "; ".join(dict.fromkeys(reasons))
            else:
                selected.append(pathway)
        return selected, not_selected

    @property
    def pathways(self) -> list[Pathway]:
        return self._pathway_selection[0]

    @property
    def not_selected(self) -> dict[str, str]:
        return self._pathway_selection[1]

    def case_unavailable(self, pathway: Pathway, kind: str, model: ModelSpec | None = None) -> str | None:
        """Why a (model,) pathway, device case cannot run here, or None. A required pathway whose
        probe failed is not skipped: its cases fail with the probe's finding (see `case`)."""
        device = self.target_device(kind)
        reason = (model.unavailable() or model.unavailable_for(pathway) if model else None) or pathway.unavailable(device)
        reason = reason or (None if self.store.user_dir else pathway.build_unavailable())
        if reason is None and pathway.name not in self.required:
            probe = self.probe(pathway, device)
            reason = probe.skip_reason() if probe is not None and not probe.ok else None
        return reason or memory.skip_reason(self, pathway, kind, model)  # estimated not to fit this machine

    def probe(self, pathway: Pathway, device: Device):
        """The pathway's capability probe on `device` (one tiny real operation), once per session."""
        from harness.run import probes

        key = (pathway.name, device)
        if key not in self._probes:
            self._probes[key] = probes.probe(pathway, device) if device.kind in pathway.devices and device.name != "absent" else None
        return self._probes[key]

    def selected(self) -> list[tuple[ModelSpec, Pathway, str]]:
        """The cases: every selected model x pathway x device kind; with an artifacts directory and
        neither --models nor --pathways, exactly the (model, pathway) pairs it holds."""
        pairs = self.artifact_pairs if not (self.config.getoption("models") or self.config.getoption("pathways")) else set()
        return [(m, p, kind) for m in self.models for p in self.pathways for kind in p.devices if not pairs or (m.id, p.name) in pairs]

    def target_device(self, kind: str) -> Device:
        if kind == self.device.kind:
            return self.device
        return Device(kind, "absent")

    # -- profiles, references, cases -------------------------------------------------------

    def profile_for(self, kind: str) -> Profile:
        """The profile gating cases that run on `kind`: --profile if given, else cpu.toml for CPU
        cases and the detected GPU's profile for CUDA cases (one run can hold both)."""
        name = self.config.getoption("profile") or (self.project.profile if self.project else None) or ("cpu" if kind == "cpu" else detect_profile_name(self.device))
        if name not in self._profiles:
            self._profiles[name] = load_profile(name)
        return self._profiles[name]

    def profiles_used(self) -> list[str]:
        return sorted(p.path for p in self._profiles.values())

    @property
    def golden_root(self) -> Path:
        """--golden-dir; else golden/ beside the project file (the team's repository); else the rootdir's."""
        base = self.project.path.parent if self.project else Path(self.config.rootpath)
        return self.config.getoption("golden_dir") or base / "golden"

    @property
    def shard_durations(self) -> Path:
        """--shard-durations; else qconform-durations.json beside the project file when there is one;
        else the embedded run's, shipped with qconform (harness/data/durations.json)."""
        return self.config.getoption("shard_durations") or durations_path(self.project)

    def reference_outputs(self, model: ModelSpec, precision: Precision = FP32_CPU) -> dict[str, np.ndarray]:
        return self.references.outputs(model, precision)

    def precision_floor(self, model: ModelSpec, precision: Precision) -> dict[str, Any]:
        """The reference in `precision` against the model in fp32 (on the GPU when it fits there, else
        on the CPU when it fits host memory), as the model's floor metrics; or {"not_measured": why}."""
        if precision == FP32_CPU:
            return {}
        budget = memory.MemoryCheck.of(self)
        fp32 = fp32_floor_precision(model, precision.device, budget.gpu.bytes if budget.gpu else None, budget.host.bytes)
        if isinstance(fp32, str):
            return {"not_measured": fp32}
        floor = model.floor_metrics(self.reference_outputs(model, fp32), self.reference_outputs(model, precision))
        return {"against": str(fp32), **floor}

    def case(self, model: ModelSpec, pathway: Pathway | str, kind: str) -> Case:
        """The loaded case (`pathway` may be named: a test that compares with another pathway's case);
        a bad artifact or profile fails the asking test with its message. Kept while collected items
        still use it (`count_uses`, `release`); asked for again after that, it is loaded again."""
        pathway = get_pathway(pathway) if isinstance(pathway, str) else pathway
        key = (model.id, pathway.name, kind)
        if key not in self._cases:
            device = self.target_device(kind)
            probe = self.probe(pathway, device)
            if probe is not None and not probe.ok:  # only reached for a required pathway (others skip)
                pytest.fail(f"required pathway cannot run here: {probe.skip_reason()}", pytrace=False)
            if key in self._findings:
                pytest.skip(f"{self._findings[key]} (the {self._findings[key].check} check fails)")
            if key not in self._load_failures:
                try:
                    artifact = self.store.get(pathway, model)
                    with phase(f"loading {pathway.name} artifact of {model.id} ({kind})"):
                        runner = pathway.load(artifact, device, model)
                        release_memory()  # what loading freed (the weights the stored ones replaced)
                    self._cases[key] = Case(self, model, pathway, device, artifact, runner)
                except ArtifactFinding as exc:  # a finding, not a failure to load: FAIL via its check
                    self._findings[key] = exc
                    pytest.skip(f"{exc} (the {exc.check} check fails)")
                except (ArtifactError, ProfileError) as exc:  # the artifact or profile is bad: FAIL
                    self._load_failures[key] = (True, f"{type(exc).__name__}: {exc}")
                except Exception as exc:  # a backend raised: qconform could not measure, ERROR
                    self._load_failures[key] = (False, f"loading the {pathway.name} artifact of {model.id} ({kind}) raised:\n" + "".join(traceback.format_exception(exc)))
                else:
                    return self._cases[key]
                release_memory()  # the failed attempt's frames, and what they held, went with its handler
            # Every item of the case reports the first attempt's cause; a later item does not load
            # again (a 1B model's failed load held 2 GiB each time).
            finding, why = self._load_failures[key]
            if finding:
                pytest.fail(why, pytrace=False)
            raise CaseNotLoaded(why)
        return self._cases[key]

    def finding(self, model: ModelSpec, pathway: Pathway, kind: str) -> ArtifactFinding | None:
        """What loading the case's artifact found (not the model's, an invalid graph), or None."""
        return self._findings.get((model.id, pathway.name, kind))

    def count_uses(self, items: list[pytest.Item]) -> None:
        """How many of the items that will run (after deselection) use each case, and how many of
        those are its own."""
        uses = [item_uses(item) for item in items]
        self._uses = Counter(key for keys in uses for key in keys)
        self._own_uses = Counter(keys[0] for keys in uses if keys)

    def release(self, item: pytest.Item) -> bool:
        """After an item's teardown: drop every case no item left to run uses (its runner, its
        outputs), including one another case's test loaded again after its own items ended; and
        the runner of a case whose own items have run and whose outputs are computed, when only other
        cases' tests (`cases(also_uses=...)`, which read its outputs) are left: its outputs stay.
        Whether memory was let go (it is given back once pytest drops the item's fixtures)."""
        keys = item_uses(item)
        for key in keys:
            self._uses[key] -= 1
        if keys:
            self._own_uses[keys[0]] -= 1
        done = [key for key in self._cases if self._uses[key] <= 0]
        for key in done:
            del self._cases[key]
        outputs_only = [case for key, case in self._cases.items() if self._own_uses[key] <= 0 and case.runner is not None and "outputs" in case.__dict__]
        for case in outputs_only:
            case.runner = None  # a 1B FP8 emulation runner is ~10 GiB; the next case is built and loaded without it
        return bool(done or outputs_only)

    # -- parameters for the declared case axes ---------------------------------------------

    def case_params(self, where: CaseFilter) -> list:
        params = []
        for model, pathway, kind in self.selected():
            if not where(pathway, kind):
                continue
            marks = [getattr(pytest.mark, pathway.marker)]
            if kind == "cuda":
                marks.append(pytest.mark.gpu)
            reason = self.case_unavailable(pathway, kind, model)
            if reason:
                marks.append(pytest.mark.skip(reason=reason))
            params.append(pytest.param((model, pathway, kind), id=f"{pathway.name}-{kind}-{model.id}", marks=marks))
        return params

    def workload_params(self, model_level: bool) -> list:
        from harness.models.llama8b_perf import kernel_workloads, model_workloads

        device = self.target_device("cuda")
        workloads = model_workloads() if model_level else kernel_workloads(self.config.getoption("perf_full"))
        params = []
        for pathway in self.pathways:
            if not pathway.measures_speed:
                continue
            reason = pathway.unavailable(device)
            if model_level and not reason and importlib.util.find_spec("transformers") is None:
                reason = "model-level speed builds the model with transformers, which is not installed"
            for workload in workloads:
                marks = [getattr(pytest.mark, pathway.marker), pytest.mark.gpu, pytest.mark.perf]
                if reason:
                    marks.append(pytest.mark.skip(reason=reason))
                params.append(pytest.param((workload, pathway, "cuda"), id=f"{pathway.name}-{workload.id}", marks=marks))
        return params

    def perf_case(self, workload: Any, pathway: Pathway, kind: str) -> PerfCase:
        return PerfCase(self, workload, pathway, self.target_device(kind))

    # -- what the report shows about this machine ------------------------------------------

    def environment(self) -> dict[str, Any]:
        return {
            "device": self.device.describe(),
            "profile": ", ".join(self.profiles_used()),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "packages": package_versions(),
            "probes": [p.as_dict() for p in self._probes.values() if p is not None],
            **gpu_environment(),
        }


def _module_locations(name: str) -> list[str]:
    """Where an importable module or package lives (none when it is not one)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    return list(spec.submodule_search_locations or []) or ([spec.origin] if spec.origin else [])


def pick(names: str | None, everything: Callable[[], list[T]], lookup: Callable[[str], T]) -> list[T]:
    """Comma-separated names (an option or the project file's list) as objects; none named: all."""
    if not names:
        return everything()
    return [lookup(name.strip()) for name in names.split(",") if name.strip()]


def check_project_pathways(project: Project) -> None:
    """The pathways the project file names are registered ones, and each key its
    [recipes.<pathway>] sets is a build option the pathway takes (with a valid value) or a key a gate
    reads from the payload (RECIPE_KEYS); any other key would be required and never verified
    (ConfigError naming the file and the key)."""
    project.check_pathway_names(p.name for p in all_pathways())
    for name, recipe in project.recipes.items():
        pathway = get_pathway(name)
        for key, value in recipe.items():
            if key not in pathway.recipe_options and key not in RECIPE_KEYS:
                known = sorted({*pathway.recipe_options, *RECIPE_KEYS})
                raise ConfigError(f"{project.label or project.path}: [recipes.{name}] {key}: no gate verifies this key in an artifact; keys qconform checks: {', '.join(known)}")
            problem = pathway.recipe_option_problem(key, value) if key in pathway.recipe_options else None
            if problem:
                raise ConfigError(f"{project.label or project.path}: [recipes.{name}] {key}: {problem}")


def apply_project_recipes(models: list[ModelSpec], project: Project | None) -> list[ModelSpec]:
    """The project's [recipes.<pathway>] tables onto each model of a run (ModelSpec.recipe_overrides):
    the build options they select and what each artifact must hold."""
    if project is not None and project.recipes:
        for model in models:
            model.recipe_overrides = {name: dict(recipe) for name, recipe in project.recipes.items()}
    return models


def model_of(entry: ModelEntry) -> ModelSpec:
    """A project file's [[models]] entry as a model."""
    from harness.models.hf import model_from_source

    return model_from_source(entry.source, **entry.options())


def user_models(sources: list[str] | None, allow_pickle: bool, project: Project | None) -> list[ModelSpec]:
    """The team's models: `--model SOURCE` (repeatable), else the project file's [[models]]."""
    from harness.models.hf import model_from_source

    if sources:
        return [model_from_source(source, **({"allow_pickle": True} if allow_pickle else {})) for source in sources]
    return [model_of(entry) for entry in (project.models if project else [])]


def find_model(name_or_source: str, start: Path) -> ModelSpec:
    """A model for commands outside a run (`qconform build --models`, `qconform import`): a checkpoint
    directory, .onnx file or module:factory; else a [[models]] id of the project file found from
    `start`; else a built-in id."""
    from harness.models.hf import model_from_source

    project = load_project(start)
    if Path(name_or_source).expanduser().exists() or ":" in name_or_source:
        return apply_project_recipes([model_from_source(name_or_source)], project)[0]
    entries = project.models if project else []
    for entry in entries:  # a declared id first: no other entry's checkpoint is opened
        if entry.id == name_or_source:
            return apply_project_recipes([model_of(entry)], project)[0]
    for entry in (e for e in entries if e.id is None):
        spec = model_of(entry)
        if spec.id == name_or_source:
            return apply_project_recipes([spec], project)[0]
    try:
        return apply_project_recipes([get_model(name_or_source)], project)[0]
    except KeyError:
        declared = [e.id or Path(e.source).stem for e in entries]
        where = f"{project.path} [[models]]: {', '.join(declared)}; built-in: " if entries else ""
        raise KeyError(f"unknown model {name_or_source!r}; known: {where}{', '.join(sorted(MODELS))}") from None


PACKAGES = ("qconform", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnx-neural-compressor", "neural-compressor-pt", "torchao", "tensorrt", "transformers", "numpy")


def package_versions() -> dict[str, str]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def gpu_environment() -> dict[str, Any]:
    """GPU, compute capability, CUDA and driver versions, where there is a GPU."""
    from harness.run.probes import driver_version

    try:
        import torch
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {}
    major, minor = torch.cuda.get_device_capability(0)
    env = {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}", "cuda": torch.version.cuda}
    env["driver"] = driver_version() or "unknown (nvidia-smi unavailable)"
    return env
