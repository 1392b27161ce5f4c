"""Your own model: a local Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer
files), an fp32 ONNX file, or `module:factory` for anything else.

Causal LMs (any architecture AutoModelForCausalLM loads: Llama, Qwen2, Mistral, GPT-2 ...) are
gated on perplexity ratio, KL divergence of the next-token distributions, top-1 agreement and
greedy-generation agreement against the fp32 reference; encoders (AutoModel + the pooling the
checkpoint declares in the sentence-transformers layout, else mean pooling) on embedding cosine and
the ranking of labeled sentence pairs. Evaluation data and calibration data are separate files;
qconform ships small English defaults in harness/data/.

Everything is offline: local_files_only=True, trust_remote_code=False, safetensors weights only.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from harness.metrics import generation_agreement, lm_metrics, logprobs_at, rowwise_cosine, spearman, sqnr_db, topk_logprobs
from harness.models.base import ModelSpec, Tensors

CAUSAL_LM, ENCODER = "causal-lm", "encoder"
# Gated by default; any key lm_metrics returns may be declared instead (kl_max, rel_ppl_increase ...).
DEFAULT_METRICS = {
    CAUSAL_LM: ("ppl_ratio_log", "kl_mean", "kl_p99", "top1_agreement", "generation_agreement"),
    ENCODER: ("row_cosine", "ranking_agreement", "rel_task_drop"),
}
GOLDEN_TOP_K = 8  # per position: 8 ids (int32) + 8 log-probs (float32) = 64 bytes, any vocabulary


def default_data(name: str) -> Path:
    """A data file shipped with qconform (harness/data/)."""
    return Path(str(resources.files("harness.data") / name))


def sanitize_id(name: str) -> str:
    """A model id from a directory or file name: lowercase, [a-z0-9._-] only."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.")
    return cleaned or "model"


def check_checkpoint_dir(path: Path, allow_pickle: bool = False) -> None:
    """Refuse what would run code on load. harness/trust.py (another helper's) replaces this guard."""
    try:
        from harness.trust import check_checkpoint_dir as trusted  # type: ignore[import-not-found]
    except ImportError:
        trusted = None
    if trusted is not None:
        trusted(path, allow_pickle)
        return
    if not (path / "config.json").is_file():
        raise ValueError(f"{path}: not a Hugging Face checkpoint directory (no config.json)")
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
        found = f" (found pickle weights {', '.join(pickled)}: convert them to safetensors)" if pickled else ""
        raise ValueError(f"{path}: no *.safetensors weights{found}")


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def read_jsonl(path: Path, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(f"{path}:{number}: missing key(s) {', '.join(missing)}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


class CausalLMLogits(nn.Module):
    """A plain logits tensor from (input_ids, attention_mask): the explicit mask avoids the
    transformers 5 ONNX export failure on its mask construction (`aten::diff`), and no cache."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


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


def checkpoint_kind(config: dict[str, Any]) -> str:
    """Causal LM when the checkpoint's architecture is a *ForCausalLM / *LMHeadModel, else encoder."""
    architectures = config.get("architectures") or []
    return CAUSAL_LM if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in architectures) else ENCODER


class HuggingFaceModel(ModelSpec):
    """A local checkpoint directory, gated on the evaluation data given (or the shipped defaults)."""

    def __init__(
        self,
        path: Path | str,
        *,
        id: str | None = None,
        eval_text: Path | None = None,
        eval_prompts: Path | None = None,
        eval_pairs: Path | None = None,
        calibration_text: Path | None = None,
        metrics: tuple[str, ...] | list[str] | None = None,
        eval_tokens: int = 512,
        seq_len: int = 128,
        batch_size: int = 2,
        calibration_tokens: int = 512,
        new_tokens: int = 16,
        generation_prompts: int = 8,
        int8_keep_float: tuple[str, ...] | list[str] = (),
        allow_pickle: bool = False,
        description: str | None = None,
    ):
        self.path = Path(path).resolve()
        self._check_source(allow_pickle)
        self.kind = self._detect_kind()
        self.id = id or sanitize_id(self.path.stem if self.path.is_file() else self.path.name)
        self.description = description or f"{self.kind} from {self.path}"
        self.eval_text = Path(eval_text) if eval_text else default_data("eval.txt")
        self.eval_prompts = Path(eval_prompts) if eval_prompts else default_data("prompts.jsonl")
        self.eval_pairs = Path(eval_pairs) if eval_pairs else default_data("pairs.jsonl")
        default_calibration = "calibration.txt" if self.kind == CAUSAL_LM else "calibration_sentences.txt"
        self.calibration_text = Path(calibration_text) if calibration_text else default_data(default_calibration)
        self.task_metric_names = tuple(metrics or DEFAULT_METRICS[self.kind])
        self.eval_tokens, self.seq_len, self.batch_size = eval_tokens, seq_len, batch_size
        self.calibration_tokens, self.new_tokens, self.generation_prompts = calibration_tokens, new_tokens, generation_prompts
        self.int8_keep_float = tuple(int8_keep_float)
        self.input_names = ("input_ids", "attention_mask")
        if self.kind == CAUSAL_LM:
            self.output_names = ("logits",)
            axes = {0: "batch", 1: "seq"}
            self.dynamic_axes = {"input_ids": axes, "attention_mask": axes, "logits": axes}
        else:
            self.output_names = ("embedding",)
            self.dynamic_axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}}
        self.primary_output = self.output_names[0]
        self.requires = {"transformers": "pip install transformers", "tokenizers": "pip install tokenizers"}

    # -- the checkpoint --------------------------------------------------------------------------
    def _check_source(self, allow_pickle: bool) -> None:
        check_checkpoint_dir(self.path, allow_pickle)

    def _detect_kind(self) -> str:
        return checkpoint_kind(json.loads((self.path / "config.json").read_text()))

    @property
    def tokenizer_dir(self) -> Path:
        return self.path

    def build_reference(self) -> nn.Module:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: the files are local
        from transformers import AutoModel, AutoModelForCausalLM

        # fp32 eager attention: the numerical reference, and what exports to ONNX and INC patches.
        options = dict(local_files_only=True, trust_remote_code=False, use_safetensors=True, dtype=torch.float32, attn_implementation="eager")
        if self.kind == CAUSAL_LM:
            return CausalLMLogits(AutoModelForCausalLM.from_pretrained(str(self.path), **options))
        pooling, normalize = declared_pooling(self.path)
        try:
            encoder = AutoModel.from_pretrained(str(self.path), add_pooling_layer=False, **options)
        except TypeError:  # encoders without a pooler take no add_pooling_layer
            encoder = AutoModel.from_pretrained(str(self.path), **options)
        return PooledEncoder(encoder, pooling, normalize)

    @functools.cached_property
    def tokenizer(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.tokenizer_dir), local_files_only=True, trust_remote_code=False)

    # -- data: evaluation and calibration are different files ----------------------------------
    def _windows(self, text_file: Path, tokens: int) -> np.ndarray:
        """Fixed windows of seq_len tokens over a text (BOS first when the tokenizer has one,
        as llama.cpp's perplexity does), as many as `tokens` allows (at least one)."""
        ids = self.tokenizer(Path(text_file).read_text(), add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        body = self.seq_len - (bos is not None)
        count = max(1, min(tokens // self.seq_len, len(ids) // body))
        if len(ids) < body:
            raise ValueError(f"{text_file}: {len(ids)} tokens, fewer than one window of {self.seq_len}; give more text or a smaller seq_len")
        windows = [([bos] if bos is not None else []) + ids[i * body : (i + 1) * body] for i in range(count)]
        return np.array(windows, dtype=np.int64)

    def _batches(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> list[Tensors]:
        mask = np.ones_like(input_ids) if attention_mask is None else attention_mask
        step = self.batch_size
        return [{"input_ids": input_ids[i : i + step], "attention_mask": mask[i : i + step]} for i in range(0, len(input_ids), step)]

    def _sentences(self, sentences: list[str]) -> Tensors:
        encoded = self.tokenizer(sentences, padding="max_length", truncation=True, max_length=self.seq_len, return_tensors="np")
        return {"input_ids": encoded["input_ids"].astype(np.int64), "attention_mask": encoded["attention_mask"].astype(np.int64)}

    @functools.cached_property
    def pairs(self) -> list[dict[str, Any]]:
        return read_jsonl(self.eval_pairs, ("a", "b", "label"))

    @functools.cached_property
    def _eval_batches(self) -> list[Tensors]:
        if self.kind == CAUSAL_LM:
            return self._batches(self._windows(self.eval_text, self.eval_tokens))
        encoded = self._sentences([s for pair in self.pairs for s in (pair["a"], pair["b"])])
        step = 2 * self.batch_size  # a pair never straddles two batches
        return [{k: v[i : i + step] for k, v in encoded.items()} for i in range(0, len(encoded["input_ids"]), step)]

    def eval_batches(self) -> list[Tensors]:
        return self._eval_batches

    def eval_inputs(self) -> Tensors:
        return {name: np.concatenate([b[name] for b in self._eval_batches]) for name in self.input_names}

    def calibration_inputs(self) -> list[Tensors]:
        if self.kind == CAUSAL_LM:
            return self._batches(self._windows(self.calibration_text, self.calibration_tokens))
        sentences = read_lines(self.calibration_text)
        return [self._sentences(sentences[i : i + 4]) for i in range(0, len(sentences), 4)]

    @functools.cached_property
    def prompt_ids(self) -> list[list[int]]:
        prompts = [row["prompt"] for row in read_jsonl(self.eval_prompts, ("prompt",))][: self.generation_prompts]
        return [self.tokenizer(p)["input_ids"] for p in prompts]

    def golden_inputs(self) -> Tensors:
        inputs = self.eval_inputs()
        if self.kind == CAUSAL_LM and "generation_agreement" in self.task_metric_names:
            flat = [t for ids in self.prompt_ids for t in [*ids, -1]]
            inputs = {**inputs, "prompt_ids": np.array(flat, dtype=np.int64), "new_tokens": np.array([self.new_tokens])}
        return inputs

    # -- running ---------------------------------------------------------------------------------
    def greedy_generate(self, run: Callable[[Tensors], Tensors]) -> np.ndarray:
        """new_tokens greedy tokens per prompt, one full forward pass over the growing sequence per
        token (no KV cache at these sizes), through any runner: ORT and torch alike."""
        rows = []
        for prompt in self.prompt_ids:
            ids = list(prompt)
            for _ in range(self.new_tokens):
                x = np.array([ids], dtype=np.int64)
                logits = run({"input_ids": x, "attention_mask": np.ones_like(x)})["logits"][0, -1]
                ids.append(int(np.nan_to_num(logits, nan=-np.inf).argmax()))
            rows.append(ids[len(prompt) :])
        return np.array(rows, dtype=np.int64).reshape(len(self.prompt_ids), self.new_tokens)

    def evaluate(self, run: Callable[[Tensors], Tensors]) -> Tensors:
        outputs = super().evaluate(run)
        if self.kind == CAUSAL_LM and "generation_agreement" in self.task_metric_names:
            outputs["generated_ids"] = self.greedy_generate(run)
        return outputs

    # -- metrics -----------------------------------------------------------------------------------
    def _lm_metrics(self, reference: Tensors, candidate: Tensors) -> dict[str, float]:
        measured = lm_metrics(reference["logits"], candidate["logits"], self.eval_inputs()["input_ids"])
        if "generated_ids" in reference and "generated_ids" in candidate:
            measured["generation_agreement"] = generation_agreement(reference["generated_ids"], candidate["generated_ids"])
        return measured

    @staticmethod
    def pair_similarities(embedding: np.ndarray) -> np.ndarray:
        a, b = embedding[0::2].astype(np.float64), embedding[1::2].astype(np.float64)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        return np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0)

    def task_score(self, embedding: np.ndarray) -> float:
        """Spearman correlation of the pairs' cosine similarities with their labels."""
        return spearman(self.pair_similarities(embedding), np.array([float(p["label"]) for p in self.pairs]))

    def _encoder_metrics(self, reference: Tensors, candidate: Tensors) -> dict[str, float]:
        ref, cand = reference["embedding"], candidate["embedding"]
        ref_score, cand_score = self.task_score(ref), self.task_score(cand)
        return {
            "row_cosine": float(rowwise_cosine(ref, cand).min()),
            "ranking_agreement": spearman(self.pair_similarities(ref), self.pair_similarities(cand)),
            "rel_task_drop": (ref_score - cand_score) / ref_score if ref_score else float("nan"),
            "task_score_reference": ref_score,
            "task_score_candidate": cand_score,
        }

    def all_metrics(self, reference: Tensors, candidate: Tensors) -> dict[str, float]:
        return self._lm_metrics(reference, candidate) if self.kind == CAUSAL_LM else self._encoder_metrics(reference, candidate)

    def task_metrics(self, reference: Tensors, candidate: Tensors) -> dict[str, float]:
        measured = self.all_metrics(reference, candidate)
        unknown = [name for name in self.task_metric_names if name not in measured]
        if unknown:
            raise KeyError(f"model {self.id}: metric(s) {', '.join(unknown)} not measured for a {self.kind}; measured: {', '.join(measured)}")
        return {name: measured[name] for name in self.task_metric_names}

    def task_metric_samples(self, reference: Tensors) -> dict[str, tuple[int, str]]:
        """Top-1 agreement is a proportion over every predicted position (each window's last token
        predicts nothing); the ranking a Spearman correlation over the labeled pairs."""
        if self.kind == CAUSAL_LM:
            windows, length = reference["logits"].shape[:2]
            return {"top1_agreement": (windows * (length - 1), "proportion")} if "top1_agreement" in self.task_metric_names else {}
        return {"ranking_agreement": (len(self.pairs), "correlation")} if "ranking_agreement" in self.task_metric_names else {}

    def evidence(self, reference: Tensors, candidate: Tensors) -> dict[str, Any]:
        """{"statistics": every measured number (gated or not), "generations": [{"prompt",
        "reference", "candidate"}] decoded with the tokenizer} for the report."""
        result: dict[str, Any] = {"statistics": self.all_metrics(reference, candidate)}
        if "generated_ids" in reference and "generated_ids" in candidate:
            # Special tokens stay visible: a broken model often emits only <pad> or </s>.
            decode = functools.partial(self.tokenizer.decode, skip_special_tokens=False)
            result["generations"] = [
                {"prompt": self.tokenizer.decode(prompt, skip_special_tokens=True), "reference": decode(ref.tolist()), "candidate": decode(cand.tolist())}
                for prompt, ref, cand in zip(self.prompt_ids, reference["generated_ids"], candidate["generated_ids"], strict=True)
            ]
        return result

    # -- goldens: bounded digests ------------------------------------------------------------------
    def golden_digest(self, outputs: Tensors) -> Tensors:
        if self.kind != CAUSAL_LM:
            return super().golden_digest(outputs)
        ids, logprobs = topk_logprobs(outputs["logits"], GOLDEN_TOP_K)
        digest = {"topk_ids": ids, "topk_logprobs": logprobs}
        if "generated_ids" in outputs:
            digest["generated_ids"] = outputs["generated_ids"].astype(np.int32)
        return digest

    def golden_metrics(self, golden: Tensors, outputs: Tensors) -> dict[str, float]:
        if self.kind != CAUSAL_LM:
            return super().golden_metrics(golden, outputs)
        # The log-probabilities of the golden's top-k tokens now: SQNR against the recorded ones.
        return {"min_golden_sqnr_db": sqnr_db(golden["topk_logprobs"], logprobs_at(outputs["logits"], golden["topk_ids"]))}


class OnnxFileModel(HuggingFaceModel):
    """An fp32 ONNX file (inputs input_ids + attention_mask; output `logits` for a causal LM, else
    an embedding) with tokenizer files beside it. The reference runs on ONNX Runtime's CPU EP;
    pathways that quantize a torch module cannot use it."""

    def _check_source(self, allow_pickle: bool) -> None:
        if not self.path.is_file():
            raise ValueError(f"{self.path}: no such ONNX file")
        if not (self.path.parent / "tokenizer.json").is_file() and not (self.path.parent / "tokenizer_config.json").is_file():
            raise ValueError(f"{self.path}: no tokenizer files (tokenizer.json, tokenizer_config.json) beside the ONNX file")

    @functools.cached_property
    def _session(self):
        import onnxruntime as ort

        return ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])

    def _detect_kind(self) -> str:
        import onnx

        graph = onnx.load(str(self.path), load_external_data=False).graph
        inputs = {i.name for i in graph.input} - {i.name for i in graph.initializer}
        if not {"input_ids", "attention_mask"} <= inputs:
            raise ValueError(f"{self.path}: ONNX inputs {sorted(inputs)}; qconform feeds input_ids and attention_mask")
        outputs = [o.name for o in graph.output]
        self._onnx_outputs = outputs
        return CAUSAL_LM if "logits" in outputs else ENCODER

    @property
    def tokenizer_dir(self) -> Path:
        return self.path.parent

    def build_reference(self) -> nn.Module:
        raise RuntimeError(f"model {self.id} is an ONNX file: it has no torch module")

    def unavailable_for(self, pathway: Any) -> str | None:
        if getattr(pathway, "needs_torch_model", False):
            return f"{pathway.name} quantizes a torch module; model {self.id} is an ONNX file ({self.path.name}): give its Hugging Face checkpoint directory instead"
        return None

    def run_reference(self, inputs: Tensors) -> Tensors:
        names = [o.name for o in self._session.get_outputs()]
        outputs = self._session.run(names[:1], {name: inputs[name] for name in self.input_names})
        return {self.primary_output: outputs[0].astype(np.float32)}

    @functools.cached_property
    def weights_sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def reference_weight(self, layer_name: str) -> np.ndarray | None:
        return None

    def linear_weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}  # no torch module to compare layers with: identity rests on the graph inputs and the weights hash

    def export_onnx(self, path: Path, opset: int = 17) -> Path:
        shutil.copy(self.path, path)
        return path


def model_from_source(source: str, **options: Any) -> ModelSpec:
    """A checkpoint directory, an fp32 .onnx file, or `module:factory` (a callable returning a ModelSpec)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return HuggingFaceModel(path, **options)
    if path.suffix == ".onnx":
        return OnnxFileModel(path, **options)
    if ":" in source and not path.exists():
        module_name, _, factory_name = source.partition(":")
        factory = getattr(importlib.import_module(module_name), factory_name, None)
        if factory is None:
            raise ValueError(f"{source}: module {module_name} has no {factory_name!r}")
        spec = factory(**options)
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"{source}: returned {type(spec).__name__}, not a ModelSpec")
        return spec
    raise ValueError(f"{source}: not a checkpoint directory, an .onnx file, or module:factory")
