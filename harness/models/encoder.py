"""Sentence encoders (AutoModel + the pooling the checkpoint declares in the sentence-transformers
layout, else mean pooling): gated on embedding cosine to the fp32 reference, the ranking of labeled
sentence pairs (Spearman of pair similarities, candidate vs reference) and the relative loss of the
task score (Spearman of the pair similarities with the labels). The kind of every checkpoint no
other kind matches.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.core import Tensors
from harness.judge.metrics import rowwise_cosine, spearman
from harness.models.kinds import DataKey, ModelKind, read_jsonl, read_lines, register_kind


class PooledEncoder(nn.Module):
    """Encoder + pooling over real tokens (mean, cls or max) + optional L2 normalization."""

    def __init__(self, model: nn.Module, pooling: str, normalize: bool):
        super().__init__()
        self.model, self.pooling, self.normalize = model, pooling, normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = (hidden - (1 - mask) * 1e9).max(dim=1).values
        else:
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=-1) if self.normalize else pooled


def declared_pooling(path: Path) -> tuple[str, bool]:
    """(pooling, normalize) from a sentence-transformers layout (modules.json, */config.json of
    its Pooling module); mean pooling without normalization when the checkpoint declares none."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return "mean", False
    modules = json.loads(modules_file.read_text())
    pooling, normalize = "mean", any(m.get("type", "").endswith(".Normalize") for m in modules)
    for module in modules:
        if module.get("type", "").endswith(".Pooling"):
            config = json.loads((path / module.get("path", "") / "config.json").read_text())
            for mode in ("cls", "max", "mean"):
                if config.get(f"pooling_mode_{mode}_token" if mode == "cls" else f"pooling_mode_{mode}_tokens"):
                    pooling = mode
                    break
    return pooling, normalize


def pair_similarities(embedding: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair (rows 2i, 2i+1)."""
    a, b = embedding[0::2].astype(np.float64), embedding[1::2].astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0)


class Encoder(ModelKind):
    name = "encoder"
    title = "encoder"
    fallback = True  # AutoModel loads most architectures
    auto_class = "AutoModel"
    load_options = {"add_pooling_layer": False}  # encoders without a pooler take none
    output_names = ("embedding",)
    dynamic_axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}}
    default_metrics = ("row_cosine", "ranking_agreement", "rel_task_drop")
    data = (
        DataKey(
            "eval_pairs",
            "pairs.jsonl",
            (
                '# Labeled sentence pairs, one JSON object per line: {"a": "...", "b": "...", "label": 2}',
                "# (higher label = more similar; default: qconform's shipped 24 pairs).",
            ),
        ),
        DataKey("calibration_text", "calibration_sentences.txt", ("# Calibration sentences, one per line (default: shipped).",)),
    )
    init_settings = (
        "# Tokens per sentence (padded/truncated) and pairs per batch.",
        "seq_len = 64",
        "batch_size = 2",
    )

    @classmethod
    def matches(cls, config: dict[str, Any]) -> bool:
        return True  # the fallback: any architecture AutoModel loads

    @classmethod
    def measurable_metrics(cls) -> tuple[str, ...]:
        return (*cls.default_metrics, "task_score_reference", "task_score_candidate")

    def wrap(self, module: nn.Module) -> nn.Module:
        return PooledEncoder(module, *declared_pooling(self.model.path))

    # -- data: labeled sentence pairs ----------------------------------------------------------------
    def sentences(self, sentences: list[str]) -> Tensors:
        seq_len = self.model.seq_len
        encoded = self.model.tokenizer(sentences, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
        return {"input_ids": encoded["input_ids"].astype(np.int64), "attention_mask": encoded["attention_mask"].astype(np.int64)}

    @functools.cached_property
    def pairs(self) -> list[dict[str, Any]]:
        return read_jsonl(self.model.data["eval_pairs"], ("a", "b", "label"), numeric=("label",))

    @functools.cached_property
    def _eval_batches(self) -> list[Tensors]:
        encoded = self.sentences([s for pair in self.pairs for s in (pair["a"], pair["b"])])
        step = 2 * self.model.batch_size  # a pair never straddles two batches
        return [{k: v[i : i + step] for k, v in encoded.items()} for i in range(0, len(encoded["input_ids"]), step)]

    def eval_batches(self) -> list[Tensors]:
        return self._eval_batches

    def calibration_inputs(self) -> list[Tensors]:
        sentences = read_lines(self.model.data["calibration_text"])
        return [self.sentences(sentences[i : i + 4]) for i in range(0, len(sentences), 4)]

    # -- metrics -------------------------------------------------------------------------------------
    def task_score(self, embedding: np.ndarray) -> float:
        """Spearman correlation of the pairs' cosine similarities with their labels."""
        return spearman(pair_similarities(embedding), np.array([float(p["label"]) for p in self.pairs]))

    def metrics(self, reference: Tensors, candidate: Tensors) -> dict[str, float]:
        ref, cand = reference["embedding"], candidate["embedding"]
        ref_score, cand_score = self.task_score(ref), self.task_score(cand)
        return {
            "row_cosine": float(rowwise_cosine(ref, cand).min()),
            "ranking_agreement": spearman(pair_similarities(ref), pair_similarities(cand)),
            "rel_task_drop": (ref_score - cand_score) / ref_score if ref_score else float("nan"),
            "task_score_reference": ref_score,
            "task_score_candidate": cand_score,
        }

    def task_metric_samples(self, reference: Tensors) -> dict[str, int]:
        """The ranking and the task score are measured over the labeled pairs."""
        samples = {"ranking_agreement": len(self.pairs), "rel_task_drop": len(self.pairs)}
        return {name: n for name, n in samples.items() if name in self.model.task_metric_names}


register_kind(Encoder)
