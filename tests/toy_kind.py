"""A third model kind, added as one module plus its data (tests/data/labeled_sentences.jsonl): a
sequence classifier (any *ForSequenceClassification checkpoint), gated on label agreement with the
fp32 reference and the fraction of labels that flipped. Nothing else of qconform knows it.

Registered by importing this module's `register()`; a child run loads it as a pytest plugin
(`qconform run -p tests.toy_kind ...`), as another package would through the "qconform.kinds" entry
point group. Its thresholds come from a profile table per model (tests/toy_kind_profile.toml): no
policy table [<pathway>.default-sequence-classifier] exists."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.core import Tensors
from harness.judge.gates import register_metric
from harness.judge.metrics import argmax_agreement
from harness.models.kinds import DataKey, ModelKind, read_jsonl, read_lines, register_kind

DATA = Path(__file__).resolve().parent / "data" / "labeled_sentences.jsonl"


class ClassifierLogits(nn.Module):
    """The export wrapper: (input_ids, attention_mask) -> the class logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


class SequenceClassifier(ModelKind):
    name = "sequence-classifier"
    title = "sequence classifier"
    auto_class = "AutoModelForSequenceClassification"
    output_names = ("logits",)
    dynamic_axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "logits": {0: "batch"}}
    default_metrics = ("label_agreement", "label_flips")
    data = (
        DataKey("eval_labeled", str(DATA), ('# Labeled sentences, one JSON object per line: {"text": "...", "label": 1}.',)),
        DataKey("calibration_text", "calibration_sentences.txt", ("# Calibration sentences, one per line (default: shipped).",)),
    )
    init_settings = ("# Tokens per sentence at most, and sentences per batch.", "seq_len = 64", "batch_size = 4")

    @classmethod
    def matches(cls, config: dict[str, Any]) -> bool:
        return any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])

    @classmethod
    def measurable_metrics(cls) -> tuple[str, ...]:
        return (*cls.default_metrics, "label_accuracy_reference", "label_accuracy_candidate")

    def wrap(self, module: nn.Module) -> nn.Module:
        return ClassifierLogits(module)

    def _encode(self, sentences: list[str]) -> Tensors:
        encoded = self.model.tokenizer(sentences, padding="longest", truncation=True, max_length=self.model.seq_len, return_tensors="np")
        return {name: encoded[name].astype(np.int64) for name in self.input_names}

    @functools.cached_property
    def items(self) -> list[dict[str, Any]]:
        return read_jsonl(self.model.data["eval_labeled"], ("text", "label"), numeric=("label",))

    @functools.cached_property
    def _eval_batches(self) -> list[Tensors]:
        encoded, step = self._encode([item["text"] for item in self.items]), self.model.batch_size
        return [{k: v[i : i + step] for k, v in encoded.items()} for i in range(0, len(self.items), step)]

    def eval_batches(self) -> list[Tensors]:
        return self._eval_batches

    def calibration_inputs(self) -> list[Tensors]:
        sentences = read_lines(self.model.data["calibration_text"])
        return [self._encode(sentences[i : i + 4]) for i in range(0, len(sentences), 4)]

    def metrics(self, reference: Tensors, candidate: Tensors) -> dict[str, float]:
        agreement = argmax_agreement(reference["logits"], candidate["logits"])
        labels = np.array([item["label"] for item in self.items])
        return {
            "label_agreement": agreement,
            "label_flips": 1.0 - agreement,
            "label_accuracy_reference": float(np.mean(reference["logits"].argmax(-1) == labels)),
            "label_accuracy_candidate": float(np.mean(np.nan_to_num(candidate["logits"]).argmax(-1) == labels)),
        }

    def task_metric_samples(self, reference: Tensors) -> dict[str, int]:
        return {name: len(self.items) for name in ("label_agreement", "label_flips") if name in self.model.task_metric_names}


def register() -> None:
    """The kind and its two metrics (both proportions over the labeled sentences)."""
    register_metric("min_label_agreement", "min", "fraction of sentences whose predicted label equals the reference's", noise=("abs", 0.01), margin=("minus", 0.03), sample="proportion")
    register_metric("max_label_flips", "max", "fraction of sentences whose predicted label differs from the reference's", noise=("abs", 0.01), margin=("minus", 0.03), sample="proportion")
    register_kind(SequenceClassifier)


def pytest_configure(config) -> None:  # as a plugin of a child run: `-p tests.toy_kind`
    register()
