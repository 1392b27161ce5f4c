"""Golden: each pathway's outputs against the outputs it produced when last approved on this device class."""

import datetime

import pytest

from harness.golden import GoldenError, describe_drift, golden_dir, read_golden, write_golden
from harness.session import cases


@cases()
def test_golden(case, qc, gate):
    inputs = case.model.golden_inputs()
    directory = golden_dir(qc.golden_root, case.model.id, case.pathway.name, case.profile.name)
    tools = case.pathway.tool_versions()
    if qc.config.getoption("regen_golden"):
        meta = {
            "created": datetime.date.today().isoformat(),
            "device": case.device.describe(),
            "runner": case.runner.describe(),
            "artifact_digest": case.artifact.digest,
            "tool_versions": tools,
        }
        write_golden(directory, case.model.golden_digest(case.outputs), inputs, meta)
        pytest.skip(f"recorded a new golden in {directory}; review and commit it")
    try:
        golden = read_golden(directory, inputs)
    except GoldenError as exc:
        # A selected case without an approved record fails: a skip here would hide an ungated case.
        how = f"record one with: qconform run --regen-golden --models {case.model.id} --pathways {case.pathway.name}, review and commit it"
        gate.expect(case, [f"{exc}; {how}" if "no golden record" in str(exc) else f"GoldenError: {exc}"], "golden record present and valid")
    gate.check(case, case.model.golden_metrics(golden.outputs, case.outputs), f"tool versions since the golden: {describe_drift(golden.meta, tools)}")
