"""Causal language models (any architecture AutoModelForCausalLM loads: Llama, Qwen2, Mistral, GPT-2
...): gated on perplexity ratio, KL divergence of the next-token distributions, top-1 agreement and
greedy-generation agreement against the fp32 reference, over fixed windows of an evaluation text and
greedy continuations of JSONL prompts. Any number harness.judge.metrics.lm_metrics returns may be declared
as a metric; a golden keeps the top-k log-probabilities per position (bounded for any vocabulary).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from harness.core import Tensors
from harness.judge.metrics import generation_agreement, lm_metric_names, lm_metrics, logprobs_at, sqnr_db, topk_logprobs
from harness.models.kinds import DataKey, ModelKind, read_jsonl, register_kind

GOLDEN_TOP_K = 8  # per position: 8 ids (int32) + 8 log-probs (float32) = 64 bytes, any vocabulary


class CausalLMLogits(nn.Module):
    """A plain logits tensor from (input_ids, attention_mask): the explicit mask avoids the
    transformers 5 ONNX export failure on its mask construction (`aten::diff`), and no cache."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


class CausalLM(ModelKind):
    name = "causal-lm"
    title = "causal LM"
    auto_class = "AutoModelForCausalLM"
    output_names = ("logits",)
    dynamic_axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    # Gated by default; any key lm_metrics returns may be declared instead (kl_max, rel_ppl_increase ...).
    default_metrics = ("ppl_ratio_log", "kl_mean", "kl_p99", "top1_agreement", "generation_agreement")
    data = (
        DataKey(
            "eval_text",
            "eval.txt",
            (
                "# Evaluation text: perplexity and KL divergence over fixed windows of seq_len tokens",
                "# (default: qconform's shipped English text). Keep it apart from the calibration text.",
            ),
        ),
        DataKey("eval_prompts", "prompts.jsonl", ('# Prompts for greedy generation, one JSON object per line: {"prompt": "..."} (default: shipped).',), required_by="generation_agreement"),
        DataKey("calibration_text", "calibration.txt", ("# Text the quantizer calibrates activation ranges on (default: a different shipped text).",)),
    )
    init_settings = (
        "# Evaluation tokens in total, window length, windows per batch.",
        "eval_tokens = 512",
        "seq_len = 128",
        "batch_size = 2",
        "# Calibration tokens (windows of seq_len).",
        "calibration_tokens = 512",
        "# Greedy generation: tokens per prompt and how many prompts.",
        "new_tokens = 16",
        "generation_prompts = 8",
    )

    @classmethod
    def matches(cls, config: dict[str, Any]) -> bool:
        """A *ForCausalLM / *LMHeadModel architecture."""
        return any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in config.get("architectures") or [])

    @classmethod
    def measurable_metrics(cls) -> tuple[str, ...]:
        return (*lm_metric_names(), "generation_agreement")

    def wrap(self, module: nn.Module) -> nn.Module:
        return CausalLMLogits(module)

    @property
    def generates(self) -> bool:
        return "generation_agreement" in self.model.task_metric_names

    # -- data: fixed windows of a text; prompts for greedy generation ------------------------------
    def windows(self, text_file: Path, tokens: int) -> np.ndarray:
        """Fixed windows of seq_len tokens over a text (BOS first when the tokenizer has one,
        as llama.cpp's perplexity does), as many as `tokens` allows (at least one)."""
        tokenizer, seq_len = self.model.tokenizer, self.model.seq_len
        ids = tokenizer(Path(text_file).read_text(), add_special_tokens=False)["input_ids"]
        bos = tokenizer.bos_token_id
        body = seq_len - (bos is not None)
        count = max(1, min(tokens // seq_len, len(ids) // body))
        if len(ids) < body:
            raise ValueError(f"{text_file}: {len(ids)} tokens, fewer than one window of {seq_len}; give more text or a smaller seq_len")
        windows = [([bos] if bos is not None else []) + ids[i * body : (i + 1) * body] for i in range(count)]
        return np.array(windows, dtype=np.int64)

    def _batches(self, input_ids: np.ndarray) -> list[Tensors]:
        mask, step = np.ones_like(input_ids), self.model.batch_size
        return [{"input_ids": input_ids[i : i + step], "attention_mask": mask[i : i + step]} for i in range(0, len(input_ids), step)]

    @functools.cached_property
    def _eval_batches(self) -> list[Tensors]:
        return self._batches(self.windows(self.model.data["eval_text"], self.model.eval_tokens))

    def eval_batches(self) -> list[Tensors]:
        return self._eval_batches

    def calibration_inputs(self) -> list[Tensors]:
        return self._batches(self.windows(self.model.data["calibration_text"], self.model.calibration_tokens))

    @functools.cached_property
    def prompt_ids(self) -> list[list[int]]:
        prompts = [row["prompt"] for row in read_jsonl(self.model.data["eval_prompts"], ("prompt",))][: self.model.generation_prompts]
        return [self.model.tokenizer(p)["input_ids"] for p in prompts]

    def check_data(self) -> None:
        super().check_data()
        if self.generates:
            _ = self.prompt_ids

    # -- running -------------------------------------------------------------------------------------
    def greedy_generate(self, run: Callable[[Tensors], Tensors]) -> np.ndarray:
        """new_tokens greedy tokens per prompt, one full forward pass over the growing sequence per
        token (no KV cache at these sizes), through any runner: ORT and torch alike."""
        rows, new_tokens = [], self.model.new_tokens
        for prompt in self.prompt_ids:
            ids = list(prompt)
            for _ in range(new_tokens):
                x = np.array([ids], dtype=np.int64)
                logits = run({"input_ids": x, "attention_mask": np.ones_like(x)})["logits"][0, -1]
                ids.append(int(np.nan_to_num(logits, nan=-np.inf).argmax()))
            rows.append(ids[len(prompt) :])
        return np.array(rows, dtype=np.int64).reshape(len(self.prompt_ids), new_tokens)

    def evaluate(self, run: Callable[[Tensors], Tensors]) -> Tensors:
        outputs = super().evaluate(run)
        if self.generates:
            outputs["generated_ids"] = self.greedy_generate(run)
        return outputs

    # -- metrics -------------------------------------------------------------------------------------
    def metrics(self, reference: Tensors, candidate: Tensors) -> dict[str, float]:
        measured = lm_metrics(reference["logits"], candidate["logits"], self.model.eval_inputs()["input_ids"])
        if "generated_ids" in reference and "generated_ids" in candidate:
            measured["generation_agreement"] = generation_agreement(reference["generated_ids"], candidate["generated_ids"])
        return measured

    def task_metric_samples(self, reference: Tensors) -> dict[str, int]:
        """lm_metrics are measured over every predicted position (each window's last token predicts
        nothing); generation agreement over the generated tokens."""
        windows, length = reference["logits"].shape[:2]
        names = self.model.task_metric_names
        samples = {name: windows * (length - 1) for name in names if name != "generation_agreement"}
        if "generation_agreement" in names and "generated_ids" in reference:
            samples["generation_agreement"] = int(reference["generated_ids"].size)
        return samples

    def evidence(self, reference: Tensors, candidate: Tensors) -> dict[str, Any]:
        """{"statistics": every measured number (gated or not), "generations": [{"prompt",
        "reference", "candidate"}] decoded with the tokenizer} for the report."""
        result = super().evidence(reference, candidate)
        if "generated_ids" in reference and "generated_ids" in candidate:
            # Special tokens stay visible: a broken model often emits only <pad> or </s>.
            tokenizer = self.model.tokenizer
            decode = functools.partial(tokenizer.decode, skip_special_tokens=False)
            result["generations"] = [
                {"prompt": tokenizer.decode(prompt, skip_special_tokens=True), "reference": decode(ref.tolist()), "candidate": decode(cand.tolist())}
                for prompt, ref, cand in zip(self.prompt_ids, reference["generated_ids"], candidate["generated_ids"], strict=True)
            ]
        return result

    # -- goldens: bounded digests --------------------------------------------------------------------
    def golden_inputs(self) -> Tensors:
        inputs = self.model.eval_inputs()
        if self.generates:
            flat = [t for ids in self.prompt_ids for t in [*ids, -1]]
            inputs = {**inputs, "prompt_ids": np.array(flat, dtype=np.int64), "new_tokens": np.array([self.model.new_tokens])}
        return inputs

    def golden_digest(self, outputs: Tensors) -> Tensors:
        ids, logprobs = topk_logprobs(outputs["logits"], GOLDEN_TOP_K)
        digest = {"topk_ids": ids, "topk_logprobs": logprobs}
        if "generated_ids" in outputs:
            digest["generated_ids"] = outputs["generated_ids"].astype(np.int32)
        return digest

    def golden_metrics(self, golden: Tensors, outputs: Tensors) -> dict[str, float]:
        # The log-probabilities of the golden's top-k tokens now: SQNR against the recorded ones.
        return {"min_golden_sqnr_db": sqnr_db(golden["topk_logprobs"], logprobs_at(outputs["logits"], golden["topk_ids"]))}


register_kind(CausalLM)
