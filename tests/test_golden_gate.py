"""The golden gate fails when outputs drift from the approved record."""

import shutil

import numpy as np
from safetensors.numpy import load_file, save_file

from tests.conftest import REPO

CASE = ("--pathways=inc-int8-qdq", "--models=tiny-llama", "--profile=cpu")


def test_golden_drift_fails_the_golden_gate(llama_int8, tmp_path, run_suites):
    golden = tmp_path / "golden"
    shutil.copytree(REPO / "golden", golden)
    path = golden / "tiny-llama" / "inc-int8-qdq" / "cpu" / "outputs.safetensors"
    outputs = load_file(str(path))
    noise = np.random.default_rng(0).normal(scale=0.05 * outputs["logits"].std(), size=outputs["logits"].shape)
    save_file({"logits": (outputs["logits"] + noise).astype(np.float32)}, str(path))  # ~26 dB away

    clean = run_suites(*CASE, f"--golden-dir={REPO / 'golden'}", suites=("test_golden.py",))
    drifted = run_suites(*CASE, f"--golden-dir={golden}", suites=("test_golden.py",))

    assert clean.returncode == 0, clean.output
    assert drifted.returncode == 1, drifted.output
    [failure] = drifted.records(outcome="failed")
    assert failure["metric"] == "min_golden_sqnr_db" and 20 < failure["measured"] < 32
