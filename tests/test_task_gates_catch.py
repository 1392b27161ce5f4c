"""Issue 27's planted defects through the labeled-task gates (min_task_recovery, max_task_flip_rate,
and min_task_mcnemar_p, which these runs select as a team that wants MLPerf-like strictness would:
its planted defects prove that option too), on a model that can do the task.

The tiny decoders answer the shipped general-knowledge items (harness/data/choices.jsonl) at chance,
so the task gates cannot show anything there. This module generates a task a tiny decoder can do:
items derived from the text it is trained on (tests/hf_checkpoints.train reads harness/data/*.txt),
context = the first words of a sentence, choices = its next three words and three spans of three
words from other sentences with as many tokens (a choice is scored by the sum of its tokens'
log-probabilities, so a shorter span would win on length alone), in an order shuffled by a seeded
RNG; one item per cut point of every sentence (974 items).

The decoder is the architecture matrix's Falcon trained 350 steps instead of 150: the fewest of
150/300/350/400 steps whose reference reaches accuracy >= 0.8 on these items (measured 0.414 / 0.765
/ 0.882 / 0.898, cpu-x86, 2026-12-02). Not the matrix's Llama: there a clean INC INT8 artifact
itself loses 2.2 points (0.877 -> 0.855 at 200 steps, 36 lost / 15 gained) and fails
min_task_mcnemar_p (p 0.0023), while one MLP output layer x4 costs only 4.4 points (recovery 0.950,
its upper bound 0.967 passes), so the task gates cannot tell the two apart there. Cached under
$QCONFORM_CACHE/checkpoints/falcon-task.

Each artifact runs through the real suites in a child pytest (tests/conftest.run_suites, the policy-only
profile and no golden record of tests/test_planted_defects.py), gated by defaults.toml's policy.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import json
import random
import re
from pathlib import Path

import onnx
import pytest

pytest.importorskip("transformers")

from harness.core import Device  # noqa: E402
from harness.models.hf import HuggingFaceModel  # noqa: E402
from harness.pathways.base import get_pathway  # noqa: E402
from harness.pathways.inc_int8_qdq import PAYLOAD  # noqa: E402
from harness.run.store import ArtifactStore  # noqa: E402
from tests.arch_matrix import ARCHITECTURES, checkpoint  # noqa: E402
from tests.hf_checkpoints import DATA, SEED  # noqa: E402
from tests.hf_plugin import SMALL  # noqa: E402
from tests.planted_defects import ONNX_DEFECTS, one_layer_scales_x4, rewrite_artifact  # noqa: E402
from tests.test_planted_defects import _no_golden, _policy_only  # noqa: E402

DECODER = dataclasses.replace(ARCHITECTURES["falcon"], name="falcon-task", steps=350, note="the matrix's Falcon trained 350 steps: it does the continuation task")
WORDS = 3  # words per choice
CHOICES = 4
TASK_GATES = {"min_task_recovery", "max_task_flip_rate", "min_task_mcnemar_p"}
INT8, FP8 = "inc-int8-qdq", "inc-fp8-ref"
# planted defect -> (planting function, recipe changes, the task gates it must fail), as measured on these items.
DEFECTS = {
    "per-tensor-scales": (*ONNX_DEFECTS["per-tensor-scales"][:2], TASK_GATES),
    # One MLP output layer's weight scales x4, in either layer (Falcon's graph names it model.transformer.h.N.mlp.dense_4h_to_h).
    **{f"layer-{n}-mlp-out-x4": (functools.partial(one_layer_scales_x4, layer=f"model.transformer.h.{n}.mlp.dense_4h_to_h"), {}, {"min_task_recovery", "min_task_mcnemar_p"}) for n in (0, 1)},
}


def sentences() -> list[list[str]]:
    """The training text (hf_checkpoints.training_ids joins the same files), as sentences of words."""
    text = " ".join(p.read_text() for p in sorted(DATA.glob("*.txt")))
    return [s.split() for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s]


def continuation_items(tokenizer, seed: int = SEED) -> list[dict]:
    """One item per sentence and cut after its second word: the words before the cut, the WORDS
    words after it, and CHOICES - 1 distractor spans of other sentences with as many tokens."""
    words = sentences()

    def span(sentence: list[str], start: int) -> str:
        return " " + " ".join(sentence[start : start + WORDS])

    def tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    by_length: dict[int, list[tuple[int, str]]] = {}  # token count -> (sentence, span)
    for i, sentence in enumerate(words):
        for start in range(1, len(sentence) - WORDS + 1):
            text = span(sentence, start)
            by_length.setdefault(tokens(text), []).append((i, text))
    rng = random.Random(seed)
    items = []
    for i, sentence in enumerate(words):
        for cut in range(2, len(sentence) - WORDS + 1):
            answer = span(sentence, cut)
            others = sorted({text for j, text in by_length[tokens(answer)] if j != i and text != answer})
            if len(others) < CHOICES - 1:
                continue
            choices = [answer, *rng.sample(others, CHOICES - 1)]
            rng.shuffle(choices)
            items.append({"context": " ".join(sentence[:cut]), "choices": choices, "answer": choices.index(answer)})
    return items


@pytest.fixture(scope="module")
def task_model(tmp_path_factory) -> HuggingFaceModel:
    """The decoder with the generated items as its eval_choices (a fixed file name: the reference
    cache is keyed by the file's name and content, so a warm run reuses the reference)."""
    path = checkpoint(DECODER)
    items = tmp_path_factory.mktemp("task") / "continuations.jsonl"
    probe = HuggingFaceModel(path, **SMALL)
    items.write_text("".join(json.dumps(item) + "\n" for item in continuation_items(probe.tokenizer)))
    return HuggingFaceModel(path, eval_choices=items, **SMALL)


@functools.cache
def _artifact(model: HuggingFaceModel, pathway_name: str):
    pathway = get_pathway(pathway_name)
    reason = pathway.unavailable(Device("cpu", "cpu")) or pathway.build_unavailable()
    if reason:
        pytest.skip(reason)
    return ArtifactStore().get(pathway, model)  # the user's cache, as tests/conftest._built


@pytest.fixture
def run_task_gates(task_model, run_suites, monkeypatch, tmp_path):
    """Run the accuracy suite's task gates on the artifacts under `artifacts` (tests.hf_plugin
    registers the decoder with the generated items), policy thresholds only, no golden record."""
    monkeypatch.setenv("QCONFORM_TEST_CHECKPOINTS", str(task_model.path))
    monkeypatch.setenv("QCONFORM_TEST_CHOICES", str(task_model.data["eval_choices"]))
    monkeypatch.setenv("QCONFORM_TEST_METRICS", ",".join((*task_model.model_kind.default_metrics, "task_mcnemar_p")))

    def run(artifacts: Path, pathways: str, *extra: str):
        return run_suites("-p", "tests.hf_plugin", f"--artifacts={artifacts}", f"--models={task_model.id}", f"--pathways={pathways}", _no_golden(tmp_path), _policy_only(tmp_path), "-k", "task_metric", *extra)

    return run


def task_records(run, pathway: str) -> dict[str, dict]:
    return {r["metric"]: r for r in run.records(check="task_metric", pathway=pathway) if r.get("metric") in TASK_GATES}


def describe(records: dict[str, dict]) -> str:
    stats = next(iter(records.values()))["statistics"]
    counts = ", ".join(f"{k.removeprefix('task_')} {int(stats[k])}" for k in ("task_both_correct", "task_losses", "task_gains", "task_neither_correct"))
    return f"accuracy {stats['task_accuracy_reference']:.3f} -> {stats['task_accuracy_candidate']:.3f} ({counts}); " + "; ".join(f"{k} {r['outcome']}: {r['message']}" for k, r in sorted(records.items()))


def test_items_come_from_the_training_text(task_model):
    items = [json.loads(line) for line in task_model.data["eval_choices"].read_text().splitlines()]
    text = " ".join(" ".join(s) for s in sentences())
    assert len(items) >= 100
    for item in items:
        assert len(set(item["choices"])) == CHOICES
        assert item["context"] + item["choices"][item["answer"]] in text  # the true continuation
    positions = [sum(item["answer"] == k for item in items) / len(items) for k in range(CHOICES)]
    assert min(positions) > 0.15, positions  # shuffled, not always first


def test_clean_artifacts_pass_every_task_gate(task_model, user_artifacts, run_task_gates):
    """The clean INC INT8 and INC FP8 artifacts pass the three task gates at the policy thresholds,
    on a task the reference does well above chance."""
    targets = [user_artifacts(_artifact(task_model, pathway)) for pathway in (INT8, FP8)]
    run = run_task_gates(targets[0].parent.parent, f"{INT8},{FP8}")
    for pathway in (INT8, FP8):
        records = task_records(run, pathway)
        print(pathway, describe(records))
        assert set(records) == TASK_GATES, run.output[-3000:]
        assert all(r["outcome"] == "passed" for r in records.values()), describe(records)
        stats = records["min_task_recovery"]["statistics"]
        assert stats["task_accuracy_reference"] >= 0.8 and records["min_task_recovery"]["samples"]["min_task_recovery"] >= 100


@pytest.mark.parametrize("defect", DEFECTS)
def test_planted_defect_fails_a_task_gate(defect, task_model, user_artifacts, run_task_gates, tmp_path):
    """Per-tensor INT8 weights and one MLP output layer's weights x4 fail task gates by their own
    numbers (only test_task_metric runs: no SQNR gate is in the child run); the HTML report shows
    the flips as a 2x2 table with the flipped items listed."""
    plant, recipe_changes, expected = DEFECTS[defect]
    clean = _artifact(task_model, INT8)
    target = user_artifacts(clean)
    rewrite_artifact(clean, target, PAYLOAD, plant(onnx.load(str(target / PAYLOAD))), **recipe_changes)
    report = tmp_path / "conformance.html"
    run = run_task_gates(target.parent.parent, INT8, f"--html={report}", "--self-contained-html")
    records = task_records(run, INT8)
    print(defect, describe(records))
    assert run.returncode == 1, run.output[-3000:]
    failed = {key for key, r in records.items() if r["outcome"] == "failed"}
    assert expected <= failed, describe(records)
    assert {r["check"] for r in run.records(outcome="failed")} == {"task_metric"}
    # The report: the 2x2 table of this run and its flipped items (tests/test_report_html.py
    # test_failures_carry_their_evidence checks the same rendering from a hand-made record).
    flips = records["min_task_mcnemar_p"]["task_flips"]
    [[both, lost], [gained, neither]] = flips["table"]
    page = report.read_text()
    assert f"<td>{both}</td><td>{lost}</td>" in page and f"<td>{gained}</td><td>{neither}</td>" in page
    assert f"Flipped items ({lost + gained} in all)" in page and flips["flipped_total"] == lost + gained
    first = flips["flipped"][0]
    assert html.escape(f"{first['context']} → answer {first['answer']}") in page
