"""Every defect in harness.judge.catalog is planted here (or in the test named for it) and fails the gate
the catalog names, with the cause in the message. A clean artifact passes the same gates."""

import importlib
import shutil

import onnx
import pytest

from harness.artifacts.manifest import write_manifest
from harness.core import Device
from harness.judge.catalog import CATALOG, GOLDEN_ONLY
from harness.pathways.inc_int8_qdq import PAYLOAD
from tests.planted_defects import FP8_DEFECTS, ONE_LAYER, ONNX_DEFECTS, TORCHAO_INT8_DEFECTS, reseal, rewrite_artifact
from tests.test_property_checks_catch import PROPERTY_DEFECTS

CASE = ("--pathways=inc-int8-qdq", "--models=tiny-llama")
# Single-layer defects whose failing output gate must name the layer where the error starts.
NAMES_LAYER = {"one-layer-scales-x4": ONE_LAYER, "torchao-int8-one-layer-scales-x4": ONE_LAYER}
# Defects proven by a dedicated test elsewhere: catalog id -> (module, test function).
ELSEWHERE = {
    "truncated-onnx": ("tests.test_bad_artifacts", "test_truncated_onnx_is_rejected_before_running"),
    "hash-mismatch": ("tests.test_bad_artifacts", "test_hash_mismatch_is_rejected"),
    "outputs-drifted": ("tests.test_golden_context", "test_same_context_drift_fails_the_strict_threshold"),
    "slow-kernel": ("tests.test_speed_gate", "test_slow_candidate_fails_the_speedup_gate"),
    "runtimes-disagree": ("tests.test_cross_gate", "test_cross_gate_passes_agreeing_runners_and_fails_a_diverging_one"),
    "e5m2-artifact-declared-e4m3": ("tests.test_planted_defects", "test_e5m2_declared_as_e4m3_fails_the_format_gates"),
    "nondeterministic-runner": ("tests.test_planted_defects", "test_nondeterministic_runner_fails_the_determinism_property"),
    "wrong-model": ("tests.test_bad_artifacts", "test_payload_of_another_model_is_refused_by_name"),
    "future-token-leak": ("tests.test_planted_defects", "test_candidate_seeing_the_next_token_fails_the_lower_ppl_bound"),
}


def _no_golden(tmp_path) -> str:
    """Every defect must be caught with no golden record at all (a first release has none)."""
    empty = tmp_path / "no-golden"
    empty.mkdir(exist_ok=True)
    return f"--golden-dir={empty}"


def test_catalog_and_planted_tests_are_the_same_list():
    planted = set(ONNX_DEFECTS) | set(FP8_DEFECTS) | set(TORCHAO_INT8_DEFECTS) | set(PROPERTY_DEFECTS) | set(ELSEWHERE)
    assert planted == {entry.id for entry in CATALOG}
    for module, function in ELSEWHERE.values():
        assert hasattr(importlib.import_module(module), function), f"{module}.{function} is gone"


def test_every_defect_is_caught_by_a_gate_other_than_golden():
    """The golden gate detects change; it does not exist for a first release and is reset by
    --regen-golden. Each artifact defect must fail another gate (the planted tests run without a
    golden record); only the golden gate's own proof, a drifted record, is exempt."""
    assert GOLDEN_ONLY == {"outputs-drifted"}
    for entry in CATALOG:
        assert entry.gate != "golden" or entry.id in GOLDEN_ONLY, f"{entry.id} is caught only by the golden gate"


def test_clean_artifact_passes_every_gate(llama_int8, user_artifacts, run_suites, tmp_path):
    """Control: the unmodified artifact, supplied the same way, passes (no false alarm)."""
    target = user_artifacts(llama_int8)
    run = run_suites(f"--artifacts={target.parent.parent}", *CASE, _no_golden(tmp_path), suites=("test_accuracy.py", "test_artifacts.py"))
    assert run.returncode == 0, run.output
    assert run.records(outcome="passed", metric="min_token_agreement")
    assert run.records(outcome="passed", metric="min_layer_activation_sqnr_db")


@pytest.mark.parametrize("entry", [e for e in CATALOG if e.id in ONNX_DEFECTS], ids=lambda e: e.id)
def test_planted_artifact_defect_fails_its_gate(entry, llama_int8, user_artifacts, run_suites, tmp_path):
    plant, recipe_changes, suites = ONNX_DEFECTS[entry.id]
    target = user_artifacts(llama_int8)
    rewrite_artifact(llama_int8, target, PAYLOAD, plant(onnx.load(str(target / PAYLOAD))), **recipe_changes)

    run = run_suites(f"--artifacts={target.parent.parent}", *CASE, _no_golden(tmp_path), suites=suites)

    assert run.returncode == 1, run.output
    failed = {r["check"] for r in run.records(outcome="failed")}
    assert entry.gate in failed, f"{entry.gate} did not fail; failed: {failed}\n{run.output}"
    assert entry.cause in run.output
    if entry.id in NAMES_LAYER:  # the output gate fails and says where the error starts
        assert "output_agreement" in failed, run.output
        assert f"error starts at layer {NAMES_LAYER[entry.id]} (SQNR" in run.output, run.output


@pytest.mark.parametrize("entry", [e for e in CATALOG if e.id in FP8_DEFECTS], ids=lambda e: e.id)
def test_planted_fp8_statistics_fail_their_gate(entry, llama_fp8, user_artifacts, run_suites, tmp_path):
    target = user_artifacts(llama_fp8)
    FP8_DEFECTS[entry.id](target)
    reseal(target, llama_fp8)

    run = run_suites(f"--artifacts={target.parent.parent}", "--pathways=inc-fp8-ref", "--models=tiny-llama", _no_golden(tmp_path), suites=("test_artifacts.py",))

    assert run.returncode == 1, run.output
    failed = {r["check"] for r in run.records(outcome="failed")}
    assert entry.gate in failed, f"{entry.gate} did not fail; failed: {failed}\n{run.output}"
    assert entry.cause in run.output


def test_clean_fp8_artifact_passes_every_gate(llama_fp8, user_artifacts, run_suites, tmp_path):
    target = user_artifacts(llama_fp8)
    run = run_suites(f"--artifacts={target.parent.parent}", "--pathways=inc-fp8-ref", "--models=tiny-llama", _no_golden(tmp_path), suites=("test_accuracy.py", "test_artifacts.py"))
    assert run.returncode == 0, run.output
    assert run.records(outcome="passed", metric="max_input_amax_ratio")


INT8_CASE = ("--pathways=torchao-int8-dynamic", "--models=tiny-llama", "-k", "cpu")


@pytest.mark.parametrize("entry", [e for e in CATALOG if e.id in TORCHAO_INT8_DEFECTS], ids=lambda e: e.id)
def test_planted_torchao_int8_defect_fails_its_gate(entry, llama_torchao_int8, user_artifacts, run_suites, tmp_path):
    """The same defect classes in a torchao state dict (Int8Tensor weights), found by the same gates."""
    plant, recipe_changes, suites = TORCHAO_INT8_DEFECTS[entry.id]
    target = user_artifacts(llama_torchao_int8)
    plant(target)
    reseal(target, llama_torchao_int8, recipe={**llama_torchao_int8.manifest["recipe"], **recipe_changes})

    run = run_suites(f"--artifacts={target.parent.parent}", *INT8_CASE, _no_golden(tmp_path), suites=suites)

    assert run.returncode == 1, run.output
    failed = {r["check"] for r in run.records(outcome="failed")}
    assert entry.gate in failed, f"{entry.gate} did not fail; failed: {failed}\n{run.output}"
    assert entry.cause in run.output
    if entry.id in NAMES_LAYER:  # the output gate fails and says where the error starts
        assert "output_agreement" in failed, run.output
        assert f"error starts at layer {NAMES_LAYER[entry.id]} (SQNR" in run.output, run.output


def test_clean_torchao_int8_artifact_passes_every_gate(llama_torchao_int8, user_artifacts, run_suites, tmp_path):
    """Control for the torchao int8 defects: the unmodified artifact passes the same gates."""
    target = user_artifacts(llama_torchao_int8)
    run = run_suites(f"--artifacts={target.parent.parent}", *INT8_CASE, _no_golden(tmp_path), suites=("test_accuracy.py", "test_artifacts.py"))
    assert run.returncode == 0, run.output
    assert run.records(outcome="passed", metric="min_token_agreement")
    assert run.records(outcome="passed", metric="min_code_range_use")


def test_per_tensor_scales_turn_the_decoder_to_garbage(llama_int8, user_artifacts, run_suites):
    """The headline failure, with numbers: almost no greedy token survives per-tensor scales."""
    plant, recipe_changes, suites = ONNX_DEFECTS["per-tensor-scales"]
    target = user_artifacts(llama_int8)
    rewrite_artifact(llama_int8, target, PAYLOAD, plant(onnx.load(str(target / PAYLOAD))), **recipe_changes)
    run = run_suites(f"--artifacts={target.parent.parent}", *CASE, suites=suites)
    [agreement] = run.records(metric="min_token_agreement")
    assert agreement["outcome"] == "failed" and agreement["measured"] < 0.2


def test_nondeterministic_runner_fails_the_determinism_property(llama_int8, run_suites):
    run = run_suites("-p", "tests.planted_pathways", "--pathways=planted-nondeterministic", "--models=tiny-llama", "-k", "runner_deterministic", suites=("test_properties.py",))
    assert run.returncode == 1, run.output
    [failure] = run.records(outcome="failed")
    assert failure["check"] == "runner_deterministic"
    assert "property 'deterministic' violated" in failure["message"]


def test_e5m2_declared_as_e4m3_fails_the_format_gates(tmp_path, run_suites):
    """An E5M2 artifact (measured stats and scales) whose manifest says E4M3: loading quantizes as
    declared, with scales made for E5M2's range, and both the accuracy gate and the
    E4M3-vs-E5M2 gate fail."""
    from harness.models.base import get_model
    from harness.pathways.base import get_pathway
    from harness.run.store import ArtifactStore

    model, store = get_model("tiny-llama"), ArtifactStore()
    reason = get_pathway("inc-fp8-ref").unavailable(Device("cpu", "cpu")) or get_pathway("inc-fp8-ref").build_unavailable()
    if reason:
        pytest.skip(reason)
    e5m2 = store.get(get_pathway("inc-fp8-ref-e5m2"), model)
    root = tmp_path / "artifacts"
    shutil.copytree(e5m2.path, root / "tiny-llama" / "inc-fp8-ref-e5m2")
    planted = root / "tiny-llama" / "inc-fp8-ref"
    shutil.copytree(e5m2.path, planted)
    m = e5m2.manifest
    recipe = {**m["recipe"], "fp8_format": "E4M3", "weight_dtype": "float8_e4m3fn"}
    write_manifest(
        planted,
        pathway="inc-fp8-ref",
        model_id="tiny-llama",
        recipe=recipe,
        source_weights_sha256=m["source_weights_sha256"],
        tool_versions=m["tool_versions"],
        built_on=m["built_on"],
    )

    run = run_suites(f"--artifacts={root}", "--pathways=inc-fp8-ref,inc-fp8-ref-e5m2", "--models=tiny-llama", suites=("test_accuracy.py", "test_cross_pathway.py"))

    assert run.returncode == 1, run.output
    failed = {(r["pathway"], r["check"]): r for r in run.records(outcome="failed")}
    expected = {"e4m3_at_least_as_accurate_as_e5m2", "output_agreement", "task_metric", "layer_activation_sqnr"}
    assert set(failed) == {("inc-fp8-ref", check) for check in expected}, run.output
    assert failed[("inc-fp8-ref", "e4m3_at_least_as_accurate_as_e5m2")]["measured"] < 0
    assert "e4m3_at_least_as_accurate_as_e5m2 gate failed" in run.output


def test_scales_off_by_2x_fail_every_sentence_task_gate(minilm_int8, user_artifacts, run_suites):
    """On the embedding model the task gates (worst sentence cosine, pair ranking, task-score drop)
    each fail on their own numbers, not only the output SQNR."""
    plant, recipe_changes, _ = ONNX_DEFECTS["scales-2x"]
    target = user_artifacts(minilm_int8)
    rewrite_artifact(minilm_int8, target, PAYLOAD, plant(onnx.load(str(target / PAYLOAD))), **recipe_changes)
    run = run_suites(f"--artifacts={target.parent.parent}", "--pathways=inc-int8-qdq", "--models=minilm-l6")
    failed = {r["metric"] for r in run.records(outcome="failed", check="task_metric")}
    assert failed == {"min_row_cosine", "min_ranking_agreement", "max_rel_task_drop"}, run.output


# Defects that change what the model computes. Under the policy alone (a first release: no
# calibrated table, every threshold from defaults.toml), each must fail an output or task gate, not
# only a layer gate. (int8-activations-expected-uint8 computes the same numbers; layer-left-float is
# more accurate; one-layer-coarse-codes measured logits SQNR 16.41 dB against the clean artifact's
# 16.38 on cpu-x86, and zero-point-off-by-one shifts each weight by one code: within clean
# quantization noise, so the layer and artifact gates catch those.)
OUTPUT_CHANGING = ("per-tensor-scales", "scales-2x", "scales-wrong-axis", "one-layer-scales-x4", "one-layer-permuted", "transposed-weights", "calibration-tiny-range")
OUTPUT_GATES = {"output_agreement", "task_metric"}


def _policy_only(tmp_path) -> str:
    """A profile with no tables: every threshold resolves to the policy of defaults.toml."""
    profile = tmp_path / "policy-only.toml"
    profile.write_text('[profile]\nname = "policy-only"\ndescription = "no calibrated tables: policy defaults only"\n')
    return f"--profile={profile}"


def test_clean_artifact_passes_the_policy(llama_int8, user_artifacts, run_suites, tmp_path):
    target = user_artifacts(llama_int8)
    run = run_suites(f"--artifacts={target.parent.parent}", *CASE, _no_golden(tmp_path), _policy_only(tmp_path), "-k", "output_agreement or task_metric")
    assert run.returncode == 0, run.output
    sources = {r["source"] for r in run.records(outcome="passed") if r.get("metric") in ("min_sqnr_db", "min_token_agreement")}
    assert sources and all("defaults.toml" in source for source in sources), sources


@pytest.mark.parametrize("defect", OUTPUT_CHANGING)
def test_output_changing_defect_fails_an_output_gate_under_the_policy(defect, llama_int8, user_artifacts, run_suites, tmp_path):
    plant, recipe_changes, _ = ONNX_DEFECTS[defect]
    target = user_artifacts(llama_int8)
    rewrite_artifact(llama_int8, target, PAYLOAD, plant(onnx.load(str(target / PAYLOAD))), **recipe_changes)
    run = run_suites(f"--artifacts={target.parent.parent}", *CASE, _no_golden(tmp_path), _policy_only(tmp_path), "-k", "output_agreement or task_metric")
    failed = {(r["check"], r.get("metric")) for r in run.records(outcome="failed")}
    assert run.returncode == 1 and {check for check, _ in failed} & OUTPUT_GATES, f"{defect}: no output or task gate failed under the policy\n{run.output[-3000:]}"


def test_candidate_seeing_the_next_token_fails_the_lower_ppl_bound(tmp_path, run_suites):
    """A candidate far BETTER than its reference is wrong too: the planted runner raises the logit of
    the token that really comes next (a dropped causal mask), its ln PPL ratio falls far under the
    policy's min_ppl_ratio_log, and the verdict is FAIL naming that bound. The planted pathway is
    judged by the INT8 causal-LM policy (tests/planted_profiles.inheriting_profile)."""
    from tests.hf_checkpoints import build_llama
    from tests.planted_profiles import inheriting_profile

    profile = tmp_path / "leak.toml"
    profile.write_text(inheriting_profile("cpu", "planted-future-leak", "inc-int8-qdq", "leak-llama", "causal-lm"))
    checkpoint = build_llama(tmp_path / "leak-llama")
    run = run_suites(
        "-p", "tests.planted_pathways", f"--model={checkpoint}", "--pathways=planted-future-leak", f"--profile={profile}",
        f"--qc-cache={tmp_path / 'cache'}", _no_golden(tmp_path), "-k", "task_metric",
    )
    assert run.returncode == 1 and run.summary.get("verdict") == "FAIL", run.output[-3000:]
    failed = {r["metric"]: r for r in run.records(outcome="failed", check="task_metric")}
    assert "min_ppl_ratio_log" in failed, run.output[-3000:]
    assert failed["min_ppl_ratio_log"]["measured"] < -0.5
    assert "min_ppl_ratio_log measured" in run.output


def test_a_planted_pathway_inherits_the_gates_of_the_pathway_it_imitates(tmp_path):
    """The planted slow FP8 artifact on a team's checkpoint is judged on the H100 by torchao FP8's own
    speed gates (the policy's own-model prefill/decode speedups), and on the CPU by the INT8 policy
    of its CPU class: the same numbers, from the same tables."""
    from harness.judge.thresholds import load_profile, resolve
    from tests.planted_profiles import inheriting_profile

    path = tmp_path / "planted.toml"
    path.write_text(inheriting_profile("h100", "planted-slow-fp8-artifact", "torchao-fp8-rowwise", "ckpt-0.1b", "causal-lm"))
    planted = load_profile(str(path))
    for key in ("min_prefill_speedup", "min_decode_speedup", "min_sqnr_db"):
        real = resolve(load_profile("h100"), key, ("torchao-fp8-rowwise", "ckpt-0.1b", "h100"), ("torchao-fp8-rowwise", "default-causal-lm", "h100"))
        assert planted.threshold(key, "planted-slow-fp8-artifact", "ckpt-0.1b", "h100").value == real.value
    path.write_text(inheriting_profile("cpu", "planted-crash", "inc-int8-qdq", "leak-llama", "causal-lm"))
    planted = load_profile(str(path))
    for device_class in ("cpu-x86-vnni", "cpu-x86"):
        real = resolve(load_profile("cpu"), "min_sqnr_db", ("inc-int8-qdq", "leak-llama", device_class), ("inc-int8-qdq", "default-causal-lm", device_class))
        assert planted.threshold("min_sqnr_db", "planted-crash", "leak-llama", device_class).value == real.value
