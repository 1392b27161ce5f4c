"""Reliability: parallel workers, shards, hung backends, interrupted builds, bad inputs."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from harness.artifacts.errors import ArtifactError
from harness.artifacts.manifest import load_artifact
from harness.cli import main
from harness.core import Device
from harness.measure import golden
from harness.models.base import get_model
from harness.pathways.base import get_pathway
from harness.pathways.inc_int8_qdq import PAYLOAD
from tests.conftest import REPO
from tests.planted_defects import rewrite_artifact

CASE = ("--pathways=inc-int8-qdq", "--models=tiny-llama")
SUITES = ("test_accuracy.py", "test_artifacts.py", "test_golden.py")


def _keys(summary):
    return sorted((r["nodeid"], r.get("metric", "")) for r in summary["records"])


def test_xdist_workers_merge_into_one_report(llama_int8, run_suites):
    serial = run_suites(*CASE, suites=SUITES)
    parallel = run_suites(*CASE, "-n", "2", suites=SUITES)
    assert serial.returncode == parallel.returncode == 0, parallel.output
    assert _keys(parallel.summary) == _keys(serial.summary) and len(serial.summary["records"]) >= 7


def test_shards_merge_back_into_the_whole_run(llama_int8, run_suites, tmp_path):
    whole = run_suites(*CASE, suites=SUITES)
    timed = json.loads((tmp_path / "reports" / "durations.json").read_text())  # every test, by key
    # Planted: one test outweighs all the others together, so the balanced split gives it a shard alone.
    heavy = sorted(timed)[0]
    planted = tmp_path / "planted-durations.json"
    planted.write_text(json.dumps({**timed, heavy: 1000.0}))
    shards, ran = [], []
    for k in (1, 2):
        shard = run_suites(*CASE, f"--shard={k}/2", f"--shard-durations={planted}", suites=SUITES)
        assert shard.returncode == 0, shard.output
        ran.append(set(json.loads((tmp_path / "reports" / "durations.json").read_text())))
        path = tmp_path / f"shard{k}.json"
        path.write_text(json.dumps(shard.summary))
        shards.append(path)
    assert not ran[0] & ran[1] and ran[0] | ran[1] == set(timed)  # each test in exactly one shard
    assert {heavy} in ran
    out = tmp_path / "merged"
    assert main(["merge", *map(str, shards), "--out", str(out)]) == 0
    merged = json.loads((out / "summary.json").read_text())
    assert _keys(merged) == _keys(whole.summary)
    assert "Release verdict: PASS" in (out / "conformance-merged.html").read_text()


# Runs in a child pytest: each case is dropped (runner, outputs) once its last item has run; a test
# that asks for a released case again (the cross-runtime tests do) gets it loaded again.
RELEASE_SUITE = """
from harness.run.session import cases

CPU = {"where": lambda pathway, kind: kind == "cpu"}
LOADED = {}


def _key(case):
    return (case.model.id, case.pathway.name, case.device.kind)


@cases(**CPU)
def test_first(case, qc):
    LOADED[("first", _key(case))] = set(qc._cases)


@cases(**CPU)
def test_second(case, qc):
    LOADED[("second", _key(case))] = set(qc._cases)


@cases(where=lambda pathway, kind: kind == "cpu" and pathway.name == "inc-int8-qdq")
def test_borrows_a_released_case(case, qc):
    fp8 = ("tiny-llama", "inc-fp8-ref", "cpu")
    assert set(qc._cases) == {_key(case)}  # FP8's items have all run: released
    assert qc.case(case.model, "inc-fp8-ref", "cpu").outputs and fp8 in qc._cases  # loaded again


def test_nothing_is_left_loaded(qc):
    fp8, int8 = ("tiny-llama", "inc-fp8-ref", "cpu"), ("tiny-llama", "inc-int8-qdq", "cpu")
    # Each case's items run together (FP8's, then INT8's): one case is loaded at a time.
    assert LOADED[("first", fp8)] == LOADED[("second", fp8)] == {fp8}
    assert LOADED[("first", int8)] == LOADED[("second", int8)] == {int8}
    assert qc._cases == {}  # and what the borrowing test loaded again went with its teardown
"""


def test_each_runner_is_released_after_its_last_item(llama_int8, llama_fp8, run_suites, tmp_path):
    suite = tmp_path / "test_release.py"
    suite.write_text(RELEASE_SUITE)
    run = run_suites("--pathways=inc-fp8-ref,inc-int8-qdq", "--models=tiny-llama", f"--rootdir={REPO}", suites=(str(suite),))
    assert run.returncode == 0, run.output[-3000:]
    assert len(run.records(outcome="passed")) == 6, run.output[-3000:]


# Runs in a child pytest: a case another case's test reads (cases(also_uses=...), as E4M3 reads
# E5M2's outputs) runs its own items first, then keeps its outputs and lets its runner go, so that the
# next case is loaded without it.
PARTNER_SUITE = """
from harness.run.session import cases

FP8 = {"where": lambda pathway, kind: kind == "cpu" and pathway.name in ("inc-fp8-ref", "inc-fp8-ref-e5m2")}
E4M3, E5M2 = ("tiny-llama", "inc-fp8-ref", "cpu"), ("tiny-llama", "inc-fp8-ref-e5m2", "cpu")
SEEN = []


@cases(**FP8)
def test_own(case, qc):
    SEEN.append((case.pathway.name, {key: c.runner is not None for key, c in qc._cases.items()}))
    assert case.outputs


@cases(where=lambda pathway, kind: kind == "cpu" and pathway.name == "inc-fp8-ref", also_uses=lambda model, pathway, kind: [("inc-fp8-ref-e5m2", kind)])
def test_reads_the_partner(case, qc):
    partner = qc.case(case.model, "inc-fp8-ref-e5m2", "cpu")
    assert partner.runner is None and partner.outputs  # its outputs, kept; nothing loaded again


def test_partner_ran_first_and_was_never_resident_beside(qc):
    # E5M2 (collected second) ran first; E4M3 was loaded with E5M2's runner gone.
    assert SEEN == [("inc-fp8-ref-e5m2", {E5M2: True}), ("inc-fp8-ref", {E5M2: False, E4M3: True})]
    assert qc._cases == {}
"""


def test_a_case_read_by_another_keeps_its_outputs_not_its_runner(llama_fp8, run_suites, tmp_path):
    suite = tmp_path / "test_partner.py"
    suite.write_text(PARTNER_SUITE)
    run = run_suites("--pathways=inc-fp8-ref,inc-fp8-ref-e5m2", "--models=tiny-llama", f"--rootdir={REPO}", suites=(str(suite),))
    assert run.returncode == 0, run.output[-3000:]
    assert len(run.records(outcome="passed")) == 4, run.output[-3000:]


def _profile_with_table(tmp_path: Path, pathway: str) -> Path:
    """cpu.toml plus a table for a planted pathway: the INT8 QDQ thresholds it inherits its build from."""
    cpu = (REPO / "harness/profiles/cpu.toml").read_text()
    table = cpu[cpu.index("[inc-int8-qdq.tiny-llama]") :].split("\n[", 1)[0].replace("[inc-int8-qdq.tiny-llama]", f"[{pathway}.tiny-llama]")
    path = tmp_path / "planted.toml"
    path.write_text(cpu + "\n" + table + "\n")
    return path


def test_a_hung_backend_fails_its_test_and_the_run_goes_on(llama_int8, run_suites, tmp_path):
    run = run_suites(
        "-p",
        "tests.planted_pathways",
        "--pathways=planted-hang,inc-int8-qdq",
        "--models=tiny-llama",
        "--timeout=20",
        "-k",
        "output_agreement",
        "--profile",
        str(_profile_with_table(tmp_path, "planted-hang")),
    )
    assert run.returncode == 1, run.output
    [hung] = run.records(pathway="planted-hang", device="cpu")
    assert hung["outcome"] == "failed" and "Timeout" in hung["message"]
    assert run.records(pathway="inc-int8-qdq", outcome="passed"), "the run stopped at the hung test"


def test_killed_build_leaves_the_cache_valid(tmp_path):
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "harness.cli", "build", "--models=tiny-llama", "--pathways=inc-int8-qdq", f"--cache={cache}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(cache.glob("artifacts/*/*/.build-*")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = [p for p in cache.glob("artifacts/*/*/*") if not p.name.startswith(".")]
    for path in finished:  # whatever was published is whole
        load_artifact(path)
    # A later build succeeds and publishes a valid artifact despite the leftover staging dir.
    assert subprocess.run(cmd, cwd=REPO, capture_output=True).returncode == 0
    [artifact] = [p for p in cache.glob("artifacts/*/*/*") if not p.name.startswith(".")]
    load_artifact(artifact, pathway="inc-int8-qdq", model_id="tiny-llama")


def test_failed_golden_write_keeps_the_old_golden(tmp_path, monkeypatch):
    inputs = {"x": np.arange(4, dtype=np.int64)}
    golden.write_golden(tmp_path, {"y": np.ones(3, np.float32)}, inputs, {})

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(golden, "save_file", broken_save)
    with pytest.raises(OSError):
        golden.write_golden(tmp_path, {"y": np.zeros(3, np.float32)}, inputs, {})
    assert golden.read_golden(tmp_path, inputs).outputs["y"].tolist() == [1.0, 1.0, 1.0]


def test_missing_scale_initializer_is_a_clear_error(llama_int8, user_artifacts):
    target = user_artifacts(llama_int8)
    model = onnx.load(str(target / PAYLOAD))
    scale = next(n.input[1] for n in model.graph.node if n.op_type == "DequantizeLinear")
    model.graph.initializer.remove(next(i for i in model.graph.initializer if i.name == scale))
    rewrite_artifact(llama_int8, target, PAYLOAD, model)
    with pytest.raises(ArtifactError, match=f"{PAYLOAD}: not a valid ONNX model"):
        get_pathway("inc-int8-qdq").load(load_artifact(target), Device("cpu", "cpu"), get_model("tiny-llama"))


def test_inputs_that_do_not_fit_the_graph_are_named(llama_int8):
    runner = get_pathway("inc-int8-qdq").load(llama_int8, Device("cpu", "cpu"), get_model("tiny-llama"))
    with pytest.raises(ValueError, match=r"inputs missing for the ONNX graph: \['input_ids'\]"):
        runner({"tokens": np.zeros((1, 4), np.int64)})


def test_unknown_pathway_or_model_is_named(run_suites):
    run = run_suites("--pathways=inc-int4")
    assert run.returncode != 0 and "unknown pathway 'inc-int4'; known: " in run.output
