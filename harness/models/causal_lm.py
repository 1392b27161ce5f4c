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

from harness.core import Tensors, costed
from harness.judge.metrics import generation_agreement, lm_metric_names, lm_metrics, log_softmax, logprobs_at, sqnr_db, topk_logprobs
from harness.judge.paired import PairedTask
from harness.models.kinds import DataKey, ModelKind, read_jsonl, register_kind

GOLDEN_TOP_K = 8  # per position: 8 ids (int32) + 8 log-probs (float32) = 64 bytes, any vocabulary
# The labeled multiple-choice task's gated metrics (harness/judge/paired.py).
TASK_METRICS = ("task_recovery", "task_flip_rate", "task_mcnemar_p")
FLIPPED_SHOWN = 20  # flipped items listed in the report
# Logits elements one batched forward of generation or the labeled task may return (256 MB in fp32):
# prompts and items are batched up to it, so the forwards are few at a small vocabulary and memory stays bounded at a large one.
LOGITS_PER_FORWARD = 2**26


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
    # McNemar's test of any net task loss is not a default: the recovery gate tests a loss beyond the
    # budget (harness/judge/paired.py); a team that wants MLPerf-like strictness adds task_mcnemar_p.
    default_metrics = ("ppl_ratio_log", "kl_mean", "kl_p99", "top1_agreement", "generation_agreement", "task_recovery", "task_flip_rate")
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
        DataKey(
            "eval_choices",
            "choices.jsonl",
            (
                '# Labeled multiple-choice items, one JSON object per line: {"context": "...", "choices": [" a", " b"], "answer": 0},',
                "# each choice scored by its log-likelihood after the context, as lm-evaluation-harness scores them (default: shipped).",
            ),
            required_by=TASK_METRICS,
        ),
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
        "# GPU pathways' own-model speed points, BATCHxTOKENS (default: batch 8 under 3B parameters, else 1;",
        "# 2048-token prefill, decode after 512 tokens).",
        '# speed_prefill = "8x2048"',
        '# speed_decode = "8x512"',
    )

    @classmethod
    def matches(cls, config: dict[str, Any]) -> bool:
        """A *ForCausalLM / *LMHeadModel architecture."""
        return any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in config.get("architectures") or [])

    @classmethod
    def measurable_metrics(cls) -> tuple[str, ...]:
        return (*lm_metric_names(), "generation_agreement", *TASK_METRICS)

    def wrap(self, module: nn.Module) -> nn.Module:
        return CausalLMLogits(module)

    @property
    def generates(self) -> bool:
        return "generation_agreement" in self.model.task_metric_names

    @property
    def scores_choices(self) -> bool:
        return any(name in self.model.task_metric_names for name in TASK_METRICS)

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

    @functools.cached_property
    def choice_items(self) -> list[dict[str, Any]]:
        """The labeled items, each with its tokenized (context + choice) sequences and where each
        choice's tokens start: lm-evaluation-harness's split (encode the whole string, the
        continuation is what follows the context's tokens)."""
        path = self.model.data["eval_choices"]
        tokenizer = self.model.tokenizer
        items = []
        for number, row in enumerate(read_jsonl(path, ("context", "choices", "answer")), start=1):
            choices, answer = row["choices"], row["answer"]
            if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
                raise ValueError(f"{path}: item {number}: choices must be a list of at least two non-empty strings")
            if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
                raise ValueError(f"{path}: item {number}: answer {answer!r} is not an index into its {len(choices)} choices")
            context_ids = tokenizer(row["context"])["input_ids"]
            sequences = [tokenizer(row["context"] + choice)["input_ids"] for choice in choices]
            starts = [min(len(context_ids), len(seq) - 1) for seq in sequences]
            items.append({"context": row["context"], "choices": choices, "answer": answer, "sequences": sequences, "starts": starts})
        return items

    @property
    def uses_lm_eval(self) -> bool:
        return bool(getattr(self.model, "lm_eval_tasks", ()))

    def check_data(self) -> None:
        super().check_data()
        if self.generates:
            _ = self.prompt_ids
        if self.scores_choices and self.uses_lm_eval:
            from harness.models.lm_eval_tasks import check_tasks, unavailable

            reason = unavailable()
            if reason:
                raise ValueError(f"model {self.model.id}: lm_eval_tasks {list(self.model.lm_eval_tasks)}: {reason}")
            check_tasks(self.model.lm_eval_include, list(self.model.lm_eval_tasks))
        elif self.scores_choices:
            _ = self.choice_items

    # -- running -------------------------------------------------------------------------------------
    def _padded(self, sequences: list[list[int]]) -> Tensors:
        """Right-padded ids and mask: under causal attention a row's real positions do not see its padding."""
        ids = np.full((len(sequences), max(len(seq) for seq in sequences)), self.model.tokenizer.pad_token_id or 0, dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, seq in enumerate(sequences):
            ids[i, : len(seq)], mask[i, : len(seq)] = seq, 1
        return {"input_ids": ids, "attention_mask": mask}

    def _groups(self, sizes: list[tuple[int, int]]) -> list[slice]:
        """Consecutive groups of (rows, longest length) units whose batched logits stay within
        LOGITS_PER_FORWARD elements (at least one unit per forward)."""
        vocab, groups, start, rows, longest = len(self.model.tokenizer), [], 0, 0, 0
        for end, (unit_rows, length) in enumerate(sizes):
            if end > start and (rows + unit_rows) * max(longest, length) * vocab > LOGITS_PER_FORWARD:
                groups.append(slice(start, end))
                start, rows, longest = end, 0, 0
            rows, longest = rows + unit_rows, max(longest, length)
        return groups + [slice(start, len(sizes))]

    def greedy_generate(self, run: Callable[[Tensors], Tensors]) -> np.ndarray:
        """new_tokens greedy tokens per prompt, one full forward pass over the growing sequences per
        token (no KV cache at these sizes), the prompts batched (right-padded, each row's next token
        read at its own last position), through any runner: ORT and torch alike."""
        prompts, new_tokens = self.prompt_ids, self.model.new_tokens
        rows = [list(prompt) for prompt in prompts]
        for group in self._groups([(1, len(prompt) + new_tokens) for prompt in prompts]):
            for _ in range(new_tokens):
                batch = self._padded(rows[group])
                logits = run(batch)["logits"]
                for i, ids in enumerate(rows[group]):
                    ids.append(int(np.nan_to_num(logits[i, len(ids) - 1], nan=-np.inf).argmax()))
        return np.array([ids[len(prompt) :] for ids, prompt in zip(rows, prompts, strict=True)], dtype=np.int64).reshape(len(prompts), new_tokens)

    def forced_top1(self, run: Callable[[Tensors], Tensors], tokens: np.ndarray, prompts: list[list[int]] | None = None) -> float:
        """Fraction of positions where `run`, given each prompt (the generation prompts, or the first
        of them that `prompts` names) followed by its row of `tokens`, predicts the next of them
        (teacher forcing: one forward per prompt)."""
        hits = 0
        for prompt, row in zip(self.prompt_ids if prompts is None else prompts, tokens, strict=True):
            x = np.array([list(prompt) + [int(t) for t in row]], dtype=np.int64)
            logits = run({"input_ids": x, "attention_mask": np.ones_like(x)})["logits"][0, len(prompt) - 1 : x.shape[1] - 1]
            hits += int(np.sum(np.nan_to_num(logits, nan=-np.inf).argmax(axis=-1) == row))
        return hits / tokens.size

    def choice_logprobs(self, run: Callable[[Tensors], Tensors]) -> np.ndarray:
        """(items, most choices) summed log-likelihood of each choice's tokens after its context
        (-inf where an item has fewer choices): the items' (context + choice) sequences in
        right-padded batches."""
        items = self.choice_items
        out = np.full((len(items), max(len(item["choices"]) for item in items)), -np.inf)
        for group in self._groups([(len(item["sequences"]), max(map(len, item["sequences"]))) for item in items]):
            sequences = [(row, i, seq, start) for row, item in enumerate(items[group], start=group.start) for i, (seq, start) in enumerate(zip(item["sequences"], item["starts"], strict=True))]
            logits = run(self._padded([seq for _, _, seq, _ in sequences]))["logits"]
            for k, (row, i, seq, start) in enumerate(sequences):
                lp = log_softmax(np.asarray(logits[k, start - 1 : len(seq) - 1], dtype=np.float64))
                out[row, i] = float(np.sum(lp[np.arange(len(seq) - start), seq[start:]]))
        return out

    def evaluate(self, run: Callable[[Tensors], Tensors], costs: dict[str, Any] | None = None) -> Tensors:
        outputs = super().evaluate(run, costs)
        if self.generates:
            outputs["generated_ids"] = costed(costs, "greedy generation", run, self.greedy_generate)
        if self.scores_choices and self.uses_lm_eval:
            from harness.models.lm_eval_tasks import per_document_scores

            scores = costed(costs, "labeled task", run, lambda counted: per_document_scores(self.model.lm_eval_include, list(self.model.lm_eval_tasks), self.model.tokenizer, counted, self.model.seq_len))
            outputs["task_correct"] = np.concatenate([scores[name] for name in self.model.lm_eval_tasks]) >= 0.5
            outputs["task_documents"] = np.array([f"{name}#{i}" for name in self.model.lm_eval_tasks for i in range(len(scores[name]))])
        elif self.scores_choices:
            outputs["choice_logprobs"] = costed(costs, "labeled task", run, self.choice_logprobs)
            answers = np.array([item["answer"] for item in self.choice_items])
            outputs["task_correct"] = np.nan_to_num(outputs["choice_logprobs"], nan=-np.inf).argmax(axis=1) == answers
        return outputs

    def paired_task(self, reference: Tensors, candidate: Tensors) -> PairedTask:
        return PairedTask.from_items(reference["task_correct"], candidate["task_correct"])

    # -- metrics -------------------------------------------------------------------------------------
    def metrics(self, reference: Tensors, candidate: Tensors) -> dict[str, float]:
        measured = lm_metrics(reference["logits"], candidate["logits"], self.model.eval_inputs()["input_ids"])
        if "generated_ids" in reference and "generated_ids" in candidate:
            measured["generation_agreement"] = generation_agreement(reference["generated_ids"], candidate["generated_ids"])
        if "task_correct" in reference and "task_correct" in candidate:
            task = self.paired_task(reference, candidate)
            measured.update(task_recovery=task.recovery, task_flip_rate=task.flip_rate, task_mcnemar_p=task.mcnemar_p)
            measured.update(task_accuracy_reference=task.reference_accuracy, task_accuracy_candidate=task.candidate_accuracy, **task.counts())
        return measured

    FLOOR_METRICS = ("kl_mean", "kl_p99", "top1_agreement", "ppl_ratio_log")

    def floor_metrics(self, fp32: Tensors, reference: Tensors) -> dict[str, float]:
        measured = lm_metrics(fp32["logits"], reference["logits"], self.model.eval_inputs()["input_ids"])
        return {name: measured[name] for name in self.FLOOR_METRICS}

    def task_metric_samples(self, reference: Tensors) -> dict[str, int]:
        """lm_metrics are measured over every predicted position (each window's last token predicts
        nothing); generation agreement over the generated tokens."""
        windows, length = reference["logits"].shape[:2]
        names = self.model.task_metric_names
        samples = {name: windows * (length - 1) for name in names if name != "generation_agreement"}
        if "generation_agreement" in names and "generated_ids" in reference:
            samples["generation_agreement"] = int(reference["generated_ids"].size)
        for name in TASK_METRICS:
            samples.pop(name, None)
            if name in names and "task_correct" in reference:
                samples[name] = len(reference["task_correct"])
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
        if "task_correct" in reference and "task_correct" in candidate:
            task = self.paired_task(reference, candidate)
            changed = np.flatnonzero(reference["task_correct"] != candidate["task_correct"])
            if "choice_logprobs" in reference:
                picks = [np.nan_to_num(outputs["choice_logprobs"], nan=-np.inf).argmax(axis=1) for outputs in (reference, candidate)]
                items = self.choice_items
                flipped = [{"context": items[i]["context"], "answer": items[i]["choices"][items[i]["answer"]], "reference": items[i]["choices"][picks[0][i]], "candidate": items[i]["choices"][picks[1][i]]} for i in changed]
            else:  # lm-eval documents: named by task and index
                flipped = [{"document": str(reference["task_documents"][i]), "reference": "correct" if reference["task_correct"][i] else "wrong", "candidate": "correct" if candidate["task_correct"][i] else "wrong"} for i in changed]
            result["task_flips"] = {"table": task.table, "rows": ["reference correct", "reference wrong"], "columns": ["candidate correct", "candidate wrong"], "flipped": flipped[:FLIPPED_SHOWN], "flipped_total": len(flipped)}
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
