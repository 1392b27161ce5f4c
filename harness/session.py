"""The session: which (model, pathway, device) cases run, their artifacts and runners, the profile per
device class, and the up-front validation that turns a bad option into one usage line.

Suites declare their case axes at the test with `@cases(...)` / `@workloads()`; the plugin only
turns those declarations into parameters."""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from harness.artifacts import Artifact, ArtifactError
from harness.config import ConfigError, Project, load_project
from harness.core import Device, Runner
from harness.models.base import MODELS, ModelSpec, all_models, get_model, register_model
from harness.pathways.base import Pathway, all_pathways, get_pathway
from harness.store import ArtifactStore
from harness.thresholds import Profile, ProfileError, default_profile, detect_profile_name, load_profile

CaseFilter = Callable[[Pathway, str], bool]
# The checkout's suites/, and the same suites as installed from the wheel (harness/suites).
SUITES_DIRS = (Path(__file__).resolve().parent.parent / "suites", Path(__file__).resolve().parent / "suites")
DEFAULT_REPORT_DIR = Path("reports")
# Options that make any pytest run a conformance run.
EXPLICIT_OPTIONS = ("profile", "artifacts", "regen_golden", "golden_dir", "baseline", "models", "pathways", "shard", "model")


def cases(where: CaseFilter | None = None):
    """Declare that a test runs once per selected (model, pathway, device) case that `where` accepts
    (`where(pathway, device_kind)`); the test receives it as the `case` fixture (or `case_key`)."""
    return pytest.mark.qconform_cases(where=where or (lambda pathway, kind: True))


def workloads(model_level: bool = False):
    """Declare that a test runs once per perf workload of every selected pathway that can be timed:
    the kernel table (a layer shape each), or with `model_level` whole causal LMs' prefill and
    decode points (harness/models/llama8b_perf.py). The test receives it as `perf_case`."""
    return pytest.mark.qconform_workloads(model_level=model_level)


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
        """From the device profile's [pathway.model] table; for a model that has none yet (a team's
        first release), from defaults.toml's policy table for its kind of model."""
        try:
            return self.profile.threshold(key, self.pathway.name, self.model.id)
        except ProfileError:
            kind = getattr(self.model, "kind", None)
            if kind is None or self.profile.has_table(self.pathway.name, self.model.id):
                raise  # a calibrated table that lacks the key is an error, not a fallback
            return default_profile().threshold(key, self.pathway.name, f"default-{kind}")


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


class Harness:
    def __init__(self, config: pytest.Config):
        self.config = config
        self.device = Device.detect()
        self._profiles: dict[str, Profile] = {}
        self._cases: dict[tuple[str, str, str], Case] = {}
        self._references: dict[str, dict[str, np.ndarray]] = {}
        self._probes: dict[tuple[str, Device], Any] = {}
        self.store = ArtifactStore(config.getoption("qc_cache"), self.artifacts_dir, log=self.log)

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
        return any(path.is_relative_to(suites) for path in paths for suites in SUITES_DIRS)

    def validate(self) -> None:
        """Every option checked before any test runs; a bad one is one line (pytest.UsageError)."""
        option = self.config.getoption
        try:
            _ = (self.models, self.pathways)  # resolving them validates every model and pathway name
            for kind in {"cpu", self.device.kind}:
                self.profile_for(kind)
        except (KeyError, ProfileError, ConfigError, ValueError, TypeError, OSError) as exc:
            raise pytest.UsageError(str(exc).strip('"')) from None
        artifacts = self.artifacts_dir
        if artifacts is not None and not Path(artifacts).is_dir():
            raise pytest.UsageError(f"--artifacts {artifacts}: not a directory (expected DIR/<model>/<pathway>/manifest.json)")
        baseline = option("baseline")
        if baseline is not None:
            try:
                json.loads(Path(baseline).read_text())["records"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise pytest.UsageError(f"--baseline {baseline}: not a readable summary.json ({type(exc).__name__}: {exc})") from None

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
        from harness.models.hf import model_from_source

        allow_pickle = self.config.getoption("allow_pickle_checkpoint")
        sources = self.config.getoption("model") or []
        if sources:
            specs = [model_from_source(source, **({"allow_pickle": True} if allow_pickle else {})) for source in sources]
        else:
            specs = [entry.spec() for entry in (self.project.models if self.project else [])]
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
            return _pick(self.config.getoption("models"), all_models, get_model)
        if user_models:
            return user_models
        held = sorted({model for model, _ in self.artifact_pairs})
        return [get_model(model) for model in held] if held else all_models()

    @functools.cached_property
    def required(self) -> set[str]:
        """Pathways the user named (--pathways, or the project file), else those the artifacts
        directory holds: each must have a check run, or the verdict is NOT GATED."""
        named = self.config.getoption("pathways") or ",".join(self.project.pathways if self.project else [])
        if not named:
            named = ",".join(sorted({pathway for _, pathway in self.artifact_pairs}))
        return {p.name for p in _pick(named, list, get_pathway)}

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
        return reason

    def probe(self, pathway: Pathway, device: Device):
        """The pathway's capability probe on `device` (one tiny real operation), once per session."""
        from harness import probes

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

    def reference_outputs(self, model: ModelSpec) -> dict[str, np.ndarray]:
        if model.id not in self._references:
            self._references[model.id] = model.evaluate(model.run_reference)
        return self._references[model.id]

    def case(self, model_id: str, pathway_name: str, kind: str) -> Case:
        """The loaded case; a bad artifact or profile fails the asking test with its message."""
        key = (model_id, pathway_name, kind)
        if key not in self._cases:
            model, pathway, device = get_model(model_id), get_pathway(pathway_name), self.target_device(kind)
            probe = self.probe(pathway, device)
            if probe is not None and not probe.ok:  # only reached for a required pathway (others skip)
                pytest.fail(f"required pathway cannot run here: {probe.skip_reason()}", pytrace=False)
            try:
                artifact = self.store.get(pathway, model)
                self._cases[key] = Case(self, model, pathway, device, artifact, pathway.load(artifact, device, model))
            except (ArtifactError, ProfileError) as exc:
                pytest.fail(f"{type(exc).__name__}: {exc}", pytrace=False)
        return self._cases[key]

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
            params.append(pytest.param((model.id, pathway.name, kind), id=f"{pathway.name}-{kind}-{model.id}", marks=marks))
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
                params.append(pytest.param((workload.id, pathway.name, "cuda"), id=f"{pathway.name}-{workload.id}", marks=marks))
        return params

    def perf_case(self, workload_id: str, pathway_name: str, kind: str) -> PerfCase:
        from harness.models.llama8b_perf import get_workload

        return PerfCase(self, get_workload(workload_id), get_pathway(pathway_name), self.target_device(kind))

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


def _pick(option: str | None, everything: Callable[[], list], lookup) -> list:
    if not option:
        return everything()
    return [lookup(name.strip()) for name in option.split(",") if name.strip()]


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
    from harness.probes import driver_version

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
