"""Golden: each pathway's outputs against the outputs it produced when last approved. Same device
class and toolchain: the strict threshold; another GPU class or toolchain (a torch release, a GPU
with no golden yet): the nearest golden made the same way under the cross-context tolerance,
naming what changed. No golden made the same way: a skip naming the command that records one."""

import datetime

import pytest

from harness.measure.golden import GoldenError, NoGolden, find_golden, golden_dir, made_like, write_golden
from harness.run.session import cases


def rerecord_command(case, qc) -> str:
    """The command that records this case's golden again: its model as the run named it (by source
    when it came from --model SOURCE, which --models cannot name), its pathway, the same artifacts
    directory (else a built artifact would be recorded) and golden store."""
    option = qc.config.getoption
    source = next((s for s, spec in zip(option("model") or [], qc.user_models, strict=False) if spec.id == case.model.id), None)
    words = ["qconform run --regen-golden", f"--model {source}" if source else f"--models {case.model.id}", f"--pathways {case.pathway.name}"]
    words += [f"--{name.replace('_', '-')} {option(name)}" for name in ("artifacts", "golden_dir") if option(name)]
    return " ".join(words) + ", review and commit it"


@cases(thresholds=("min_golden_sqnr_db", "min_golden_cross_sqnr_db"))
def test_golden(case, qc, gate):
    inputs = case.model.golden_inputs()
    tools = case.pathway.tool_versions()
    if qc.config.getoption("regen_golden"):
        directory = golden_dir(qc.golden_root, case.model.id, case.pathway.name, case.device.device_class)
        meta = {
            "created": datetime.date.today().isoformat(),
            "device": case.device.describe(),
            "device_class": case.device.device_class,
            **made_like(case.pathway, case.device.kind),
            "runner": case.runner.describe(),
            "artifact_digest": case.artifact.digest,
            "tool_versions": tools,
        }
        write_golden(directory, case.model.golden_digest(case.outputs), inputs, meta)
        pytest.skip(f"recorded a new golden in {directory}; review and commit it")
    try:
        match = find_golden(qc.golden_root, case.model.id, case.pathway, case.device, tools, inputs)
    except NoGolden as exc:
        # Goldens detect change, and a first release (or a new device kind) has nothing to compare
        # with: the case's other gates judge it, and a pathway gated by nothing else is NOT GATED.
        pytest.skip(f"{exc}; record one with: {rerecord_command(case, qc)}")
    except GoldenError as exc:
        # This class's golden exists but cannot be used (corrupt, old format, other inputs): a stale record fails.
        gate.expect(case, [f"GoldenError: {exc}; re-record it with: {rerecord_command(case, qc)}"], "golden record valid")
    measured = case.model.golden_metrics(match.golden.outputs, case.outputs)
    if match.same_context:
        gate.check(case, measured, f"golden {match.golden.path}: same device class and tool versions")
        return
    cross = {"min_golden_cross_sqnr_db": measured.pop("min_golden_sqnr_db"), **measured}
    detail = f"golden {match.golden.path} from another context ({'; '.join(match.changes)}): cross-context tolerance; to re-record in this context: {rerecord_command(case, qc)}"
    gate.check(case, cross, detail, extra={"golden_context_changes": match.changes})
