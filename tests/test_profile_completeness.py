"""Profiles are complete by construction: every threshold a suite's gate asks for resolves, for every
built-in profile, pathway and model kind, from the device profile or else the policy defaults; a gap
is refused before any test runs, in one line naming the table and the key."""

from __future__ import annotations

import importlib
import inspect

import pytest

from harness.judge.gates import threshold_key
from harness.judge.thresholds import ProfileError, load_profile, resolve
from harness.models.base import ModelSpec, get_model
from harness.models.hf import DEFAULT_METRICS
from harness.models.llama8b_perf import WORKLOADS, model_workloads
from harness.pathways.base import Pathway, all_pathways
from harness.run.session import case_threshold, declared_thresholds

SUITES = ("test_accuracy", "test_artifacts", "test_golden", "test_cross_pathway", "test_speedup", "test_model_speed", "test_properties")
PROFILES = {"cpu": "cpu", "h100": "cuda", "rtx5090": "cuda", "generic-gpu": "cuda"}


class KindOnly(ModelSpec):
    """A team's model qconform has no table for: only its kind and metrics are known."""

    def __init__(self, kind: str):
        self.id, self.kind, self.task_metric_names = f"team-{kind}", kind, DEFAULT_METRICS[kind]

    def calibration_inputs(self) -> list:
        return []  # recipes count calibration batches; nothing here is run


def declarations(marker_name: str):
    """(test name, marker) of every suite test that declares case or workload axes."""
    for module_name in SUITES:
        module = importlib.import_module(f"suites.{module_name}")
        for name, function in inspect.getmembers(module, inspect.isfunction):
            for mark in getattr(function, "pytestmark", []):
                if mark.name == marker_name:
                    yield f"{module_name}::{name}", mark


def models() -> list[ModelSpec]:
    found = [KindOnly("causal-lm"), KindOnly("encoder"), get_model("tiny-llama")]
    minilm = get_model("minilm-l6")
    return found + ([minilm] if minilm.unavailable() is None else [])


def test_suites_declare_what_their_gates_ask_for():
    declared = dict(declarations("qconform_cases"))
    assert "test_golden::test_golden" in declared and "test_accuracy::test_task_metric" in declared
    assert declared["test_golden::test_golden"].kwargs["thresholds"] == ("min_golden_sqnr_db", "min_golden_cross_sqnr_db")


@pytest.mark.parametrize("profile_name", sorted(PROFILES))
def test_every_case_gate_resolves_in_every_builtin_profile(profile_name):
    profile, kind = load_profile(profile_name), PROFILES[profile_name]
    gaps, resolved = [], 0
    for test, mark in declarations("qconform_cases"):
        for pathway in all_pathways():
            if kind not in pathway.devices or not mark.kwargs["where"](pathway, kind):
                continue
            for model in models():
                for key in declared_thresholds(mark, pathway, model, kind):
                    try:
                        case_threshold(profile, key, pathway, model)
                        resolved += 1
                    except ProfileError as exc:
                        gaps.append(f"{test} {pathway.name} {model.id}: {exc}")
    assert not gaps, "\n".join(gaps)
    assert resolved > 50


@pytest.mark.parametrize("profile_name", ["h100", "rtx5090", "generic-gpu"])
def test_every_perf_gate_resolves_in_every_gpu_profile(profile_name):
    profile = load_profile(profile_name)
    speed = [p for p in all_pathways() if p.measures_speed]
    for _, mark in declarations("qconform_workloads"):
        for workload in WORKLOADS if not mark.kwargs["model_level"] else model_workloads():
            for pathway in speed:
                table = workload.table(pathway.name)
                for key in mark.kwargs["thresholds"]:
                    resolve(profile, key, table, table)


def test_a_calibrated_table_lacking_a_key_falls_back_to_policy_and_says_so():
    profile, pathway = load_profile("generic-gpu"), next(p for p in all_pathways() if p.name == "torchao-fp8-rowwise")
    threshold = case_threshold(profile, "min_golden_cross_sqnr_db", pathway, get_model("tiny-llama"))
    assert threshold.source == "defaults.toml [torchao-fp8-rowwise.default-causal-lm]"
    assert case_threshold(profile, "min_sqnr_db", pathway, get_model("tiny-llama")).source == "generic-gpu.toml [torchao-fp8-rowwise.tiny-llama]"


def test_a_model_without_a_kind_or_a_plugin_pathway_without_policy_names_the_gap(tmp_path):
    class Plugin(Pathway):
        name = "team-int4"

    class NoKind(ModelSpec):
        id, task_metric_names = "mystery", ("token_agreement",)

    profile = load_profile("cpu")
    with pytest.raises(ProfileError, match=r"no threshold 'min_sqnr_db' for \[team-int4.mystery\]: neither harness/profiles/cpu.toml .*declares no kind"):
        case_threshold(profile, "min_sqnr_db", Plugin(), NoKind())
    with pytest.raises(ProfileError, match=r"nor defaults.toml \[team-int4.default-causal-lm\]"):
        case_threshold(profile, threshold_key("token_agreement"), Plugin(), KindOnly("causal-lm"))
