"""The team's lm-evaluation-harness tasks (the `lm-eval` extra), run through qconform's runners.

A project names lm-eval task configs (YAML files in a directory, with local data files: e.g.
`dataset_path: json` and `dataset_kwargs.data_files`); lm-eval's own task definitions build the
requests and score them, and qconform answers the requests with the reference and with the
candidate runner (ONNX Runtime, torch, ...), so both are scored on the same documents. Each
document's correctness ("acc", or the task's first metric) feeds the paired task gates
(harness/judge/paired.py). Offline: HF_DATASETS_OFFLINE is set, data files are local.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.core import Tensors
from harness.judge.metrics import log_softmax

INSTALL_HINT = "pip install 'qconform[lm-eval]'"


def unavailable() -> str | None:
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        return f"lm-evaluation-harness is not installed ({INSTALL_HINT})"
    return None


def _runner_lm(tokenizer, run: Callable[[Tensors], Tensors], max_length: int):
    """An lm_eval LM answering loglikelihood and greedy generation requests with `run`."""
    from lm_eval.api.model import LM

    class RunnerLM(LM):
        def _logprobs(self, context: str, continuation: str) -> tuple[float, bool]:
            # lm-eval's split: the continuation is what the whole string's tokens add to the context's.
            context_ids = tokenizer(context)["input_ids"] if context else [tokenizer.bos_token_id or tokenizer.eos_token_id]
            whole = tokenizer(context + continuation)["input_ids"] if context else [*context_ids, *tokenizer(continuation, add_special_tokens=False)["input_ids"]]
            whole = whole[-max_length:]
            start = max(1, len(whole) - max(len(whole) - len(context_ids), 1))
            ids = np.array([whole], dtype=np.int64)
            logits = np.asarray(run({"input_ids": ids, "attention_mask": np.ones_like(ids)})["logits"][0, start - 1 : len(whole) - 1], dtype=np.float64)
            targets = np.array(whole[start:])
            lp = log_softmax(logits)
            return float(np.sum(lp[np.arange(len(targets)), targets])), bool(np.all(logits.argmax(axis=-1) == targets))

        def loglikelihood(self, requests) -> list[tuple[float, bool]]:
            return [self._logprobs(*request.args) for request in requests]

        def loglikelihood_rolling(self, requests) -> list[float]:
            out = []
            for request in requests:
                ids = tokenizer(request.args[0])["input_ids"]
                total = 0.0
                for begin in range(1, len(ids), max_length - 1):  # every token predicted once
                    window = ids[max(0, begin - 1) : begin + max_length - 1]
                    x = np.array([window], dtype=np.int64)
                    lp = log_softmax(np.asarray(run({"input_ids": x, "attention_mask": np.ones_like(x)})["logits"][0, :-1], dtype=np.float64))
                    total += float(np.sum(lp[np.arange(len(window) - 1), window[1:]]))
                out.append(total)
            return out

        def generate_until(self, requests) -> list[str]:
            out = []
            for request in requests:
                context, kwargs = request.args
                until = [u for u in (kwargs.get("until") or []) if u]
                ids = tokenizer(context)["input_ids"]
                generated: list[int] = []
                for _ in range(int(kwargs.get("max_gen_toks", 64))):
                    x = np.array([(ids + generated)[-max_length:]], dtype=np.int64)
                    token = int(np.nan_to_num(run({"input_ids": x, "attention_mask": np.ones_like(x)})["logits"][0, -1], nan=-np.inf).argmax())
                    if token == tokenizer.eos_token_id:
                        break
                    generated.append(token)
                    text = tokenizer.decode(generated, skip_special_tokens=True)
                    if any(stop in text for stop in until):
                        break
                text = tokenizer.decode(generated, skip_special_tokens=True)
                for stop in until:
                    text = text.split(stop)[0]
                out.append(text)
            return out

    return RunnerLM()


def check_tasks(include: Path, names: list[str]) -> None:
    """Every named task is defined by a config under `include` (ValueError naming the missing)."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include), include_defaults=False)
    missing = [name for name in names if name not in manager.all_tasks]
    if missing:
        raise ValueError(f"lm_eval_include {include}: no task config defines {', '.join(missing)} (found: {', '.join(sorted(manager.all_tasks)) or 'none'})")


def per_document_scores(include: Path, names: list[str], tokenizer, run: Callable[[Tensors], Tensors], max_length: int, limit: int | None = None) -> dict[str, np.ndarray]:
    """task -> each document's score (its first metric, 1.0 = correct), in document order."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include), include_defaults=False)
    results: dict[str, Any] = simple_evaluate(
        model=_runner_lm(tokenizer, run, max_length), tasks=list(names), task_manager=manager, log_samples=True, limit=limit, bootstrap_iters=0, verbosity="ERROR"
    )
    scores = {}
    for name in names:
        samples = sorted(results["samples"][name], key=lambda s: s["doc_id"])
        metric = results["configs"][name]["metric_list"][0]["metric"]
        scores[name] = np.array([float(s[metric]) for s in samples])
    return scores
