"""The architecture matrix: tiny checkpoints of a dozen model types built by transformers from their
configs (hidden 64, 2 layers, the 384-token BPE vocabulary of tests/hf_checkpoints.build_tokenizer),
trained briefly on the shipped text so that their predictions are peaked, and given the outlier
channels real LLM weights have (plant_outliers_anywhere), so a per-tensor weight scale breaks them as
it breaks a real model.

Decoders train on next-token prediction (tests/hf_checkpoints.train_briefly); encoders on masked-token
prediction (train_masked) through their *ForMaskedLM head, and only the base model is saved, in the
sentence-transformers layout (mean pooling + Normalize), as build_bert does.

Each checkpoint is cached under $QCONFORM_CACHE/checkpoints/<type>/<key> (default
~/.cache/qconform/checkpoints), the key a hash of the model type, its config, the training steps, the
source of every function that builds it and the torch and transformers versions: a second run loads
it in milliseconds instead of training it. `checkpoint(name)` returns the directory and records the
cold build time (BUILD.json beside the weights) and the warm (cache hit) time.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tests import hf_checkpoints as hc
from tests.hf_checkpoints import SEED, VOCAB, build_tokenizer, train_briefly

CAUSAL, ENCODER = "causal-lm", "encoder"
DECODER_STEPS = 150  # as tests/hf_checkpoints._save_decoder: peaked, text-like predictions
ENCODER_STEPS = 100
OUTLIER_RATIO = 500.0  # as tests/hf_checkpoints.plant_outliers


def _decoder(**overrides) -> dict[str, Any]:
    """The common tiny decoder config (tests/hf_checkpoints.DECODER_CONFIG)."""
    return {**hc.DECODER_CONFIG, **overrides}


@dataclass(frozen=True)
class Arch:
    """One model type: its transformers config and model classes and how it is trained."""

    name: str
    kind: str
    config_class: str
    model_class: str  # what is trained (a *ForCausalLM, or a *ForMaskedLM whose base model is saved)
    config: dict[str, Any]
    steps: int
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def make_config(self):
        import transformers

        return getattr(transformers, self.config_class)(**self.config)


_ENCODER = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, pad_token_id=0)

ARCHITECTURES: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch("llama", CAUSAL, "LlamaConfig", "LlamaForCausalLM", _decoder(), DECODER_STEPS, "RMSNorm, RoPE, GQA, SwiGLU"),
        # A window shorter than the evaluation windows (64 tokens), so the sliding-window mask is exported
        # and exercised (with Mistral 7B's 4096 this model is a Llama, weight for weight).
        Arch("mistral", CAUSAL, "MistralConfig", "MistralForCausalLM", _decoder(sliding_window=32), DECODER_STEPS, "Llama + sliding-window attention (window 32)"),
        Arch("qwen2", CAUSAL, "Qwen2Config", "Qwen2ForCausalLM", _decoder(), DECODER_STEPS, "q/k/v biases"),
        # Qwen3's small checkpoints tie the LM head to the embedding; q/k RMSNorm per head.
        Arch("qwen3", CAUSAL, "Qwen3Config", "Qwen3ForCausalLM", _decoder(head_dim=16, tie_word_embeddings=True), DECODER_STEPS, "q/k norms, tied embeddings"),
        # Gemma: RMSNorm scales by (1 + weight), embeddings scaled by sqrt(hidden), tied head.
        Arch("gemma", CAUSAL, "GemmaConfig", "GemmaForCausalLM", _decoder(head_dim=16, tie_word_embeddings=True), DECODER_STEPS, "(1+w) RMSNorm, tied embeddings"),
        Arch("phi3", CAUSAL, "Phi3Config", "Phi3ForCausalLM", _decoder(), DECODER_STEPS, "fused qkv_proj and gate_up_proj"),
        # GPT-2 and OPT tie their heads as the released checkpoints do.
        Arch(
            "gpt2",
            CAUSAL,
            "GPT2Config",
            "GPT2LMHeadModel",
            dict(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_inner=128, n_positions=256, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True),
            DECODER_STEPS,
            "Conv1D weights (in, out), LayerNorm with bias, learned positions, tied embeddings",
        ),
        # Issue 34: a checkpoint fresh from transformers, as a team may gate it first: untrained,
        # every bias zero (the exporter merges equal initializers), no outliers planted.
        Arch(
            "gpt2-untrained",
            CAUSAL,
            "GPT2Config",
            "GPT2LMHeadModel",
            dict(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_inner=128, n_positions=256, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True),
            0,
            "transformers' default initialization, not trained: zero biases, no planted outliers",
        ),
        Arch(
            "opt",
            CAUSAL,
            "OPTConfig",
            "OPTForCausalLM",
            dict(vocab_size=VOCAB, hidden_size=64, ffn_dim=128, word_embed_proj_dim=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True),
            DECODER_STEPS,
            "pre-LN, fc1/fc2, learned positions (offset 2), tied embeddings",
        ),
        Arch(
            "falcon",
            CAUSAL,
            "FalconConfig",
            "FalconForCausalLM",
            dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, multi_query=True, parallel_attn=True, new_decoder_architecture=False, bias=False, alibi=False, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True),
            DECODER_STEPS,
            "FalconLinear, multi-query, parallel attention + MLP, tied embeddings",
        ),
        Arch("bert", ENCODER, "BertConfig", "BertForMaskedLM", dict(**_ENCODER, max_position_embeddings=128), ENCODER_STEPS, "post-LN encoder"),
        # RoBERTa's positions start after padding_idx: 64 tokens need 66 positions.
        Arch("roberta", ENCODER, "RobertaConfig", "RobertaForMaskedLM", dict(**_ENCODER, max_position_embeddings=130, bos_token_id=1, eos_token_id=2, type_vocab_size=1), ENCODER_STEPS, "BERT with offset positions"),
        Arch(
            "distilbert",
            ENCODER,
            "DistilBertConfig",
            "DistilBertForMaskedLM",
            dict(vocab_size=VOCAB, dim=64, hidden_dim=128, n_layers=2, n_heads=4, max_position_embeddings=128, pad_token_id=0),
            ENCODER_STEPS,
            "q_lin/k_lin/v_lin, ffn.lin1/lin2, no token types",
        ),
    )
}


# -- training -------------------------------------------------------------------------------------


def train_masked(model, tokenizer_dir: Path, steps: int, seq_len: int = 64, batch: int = 8, mask_id: int = 2) -> None:
    """A few Adam steps of masked-token prediction on the shipped text (15% of the tokens replaced by
    `mask_id`, the tokenizer's </s>, which the encoders' text never holds): contextual embeddings that
    separate sentences, where random layers leave the token embeddings almost unchanged."""

    def masked_loss(m, x, gen):
        masked = torch.rand(x.shape, generator=gen) < 0.15
        labels = torch.where(masked, x, torch.full_like(x, -100))
        return m(input_ids=torch.where(masked, torch.full_like(x, mask_id), x), attention_mask=torch.ones_like(x), labels=labels).loss

    hc.train(model, tokenizer_dir, steps, masked_loss, seq_len, batch)


# -- outlier channels, whatever the architecture ----------------------------------------------------


def _is_norm(module) -> bool:
    name = type(module).__name__
    return "LayerNorm" in name or "RMSNorm" in name


def _zero_norm_channels(module, dead: torch.Tensor) -> None:
    """Make a norm's output 0 on the dead channels: gain 0 (Gemma's RMSNorm multiplies by 1 + w, so
    w = -1 there) and bias 0."""
    offset = "Gemma" in type(module).__name__
    module.weight[dead] = -1.0 if offset else 0.0
    if getattr(module, "bias", None) is not None:
        module.bias[dead] = 0.0


def _weight_layers(model):
    from transformers.pytorch_utils import Conv1D

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            yield name, module, 1  # weight (out, in): input channels on axis 1
        elif isinstance(module, Conv1D):
            yield name, module, 0  # weight (in, out)


def plant_outliers_anywhere(model, example: dict[str, torch.Tensor], ratio: float = OUTLIER_RATIO, seed: int = SEED) -> list[str]:
    """tests/hf_checkpoints.plant_outliers for any architecture: every norm zeroes DEAD_CHANNELS;
    every weight layer whose input is then exactly 0 on those channels (found by running `example`
    through the model, so no per-architecture list of layer names) gets one output channel with
    weights `ratio` x its largest weight on them. The model computes what it computed with the norms
    zeroed; a per-tensor weight scale is set by the outliers and rounds every other weight to a few
    levels. A layer sharing its weight with the embedding (a tied LM head) is left alone: outliers
    there would enter the residual stream. Returns the layers planted."""
    gen = torch.Generator().manual_seed(seed)
    dead = torch.tensor(hc.DEAD_CHANNELS)
    embedding = model.get_input_embeddings().weight
    readers, hooks = {}, []
    with torch.no_grad():
        for module in model.modules():
            # Norms over the hidden width only (not Qwen3's per-head q/k norms).
            if _is_norm(module) and getattr(module, "weight", None) is not None and module.weight.shape == (embedding.shape[1],):
                _zero_norm_channels(module, dead)
        layers = list(_weight_layers(model))

        def watch(name):
            def hook(module, args):
                x = args[0]
                if x.shape[-1] > max(hc.DEAD_CHANNELS):
                    zero = bool((x[..., dead] == 0).all())
                    readers[name] = readers.get(name, True) and zero

            return hook

        for name, module, _ in layers:
            hooks.append(module.register_forward_pre_hook(watch(name)))
        try:
            model(**example)
        finally:
            for hook in hooks:
                hook.remove()
        planted = []
        for name, module, in_axis in layers:
            if not readers.get(name) or module.weight.data_ptr() == embedding.data_ptr():
                continue
            weight = module.weight
            peak = weight.abs().max()
            out_channels = weight.shape[1 - in_axis]
            row = int(torch.randint(0, out_channels, (1,), generator=gen))
            signs = (torch.randint(0, 2, (len(dead),), generator=gen) * 2 - 1).float()
            if in_axis == 1:
                weight[row, dead] = signs * ratio * peak
            else:
                weight[dead, row] = signs * ratio * peak
            planted.append(name)
    return planted


# -- building and caching -------------------------------------------------------------------------


def _sentence_transformers_layout(out: Path, width: int) -> None:
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": width, "pooling_mode_mean_tokens": True}))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (out / "modules.json").write_text(json.dumps(modules))


def build(arch: Arch, out: Path) -> dict[str, Any]:
    """Train `arch` from its config into `out` (uncached). Returns what was planted."""
    import transformers

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    config = arch.make_config()
    model = getattr(transformers, arch.model_class)(config)
    ids = None
    if arch.kind == CAUSAL:
        build_tokenizer(out)
        train_briefly(model, out, arch.steps)
        target = model
    else:
        build_tokenizer(out, bos=None)
        train_masked(model, out, arch.steps)
        target = model.base_model  # the encoder alone, as a sentence-transformers checkpoint holds it
    planted = []
    if arch.steps:  # an untrained architecture stays as transformers initialized it
        ids = hc.training_ids(out)[:64][None]
        with torch.no_grad():
            planted = plant_outliers_anywhere(target, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    target.save_pretrained(str(out))  # config.json + model.safetensors
    if arch.kind == ENCODER:
        _sentence_transformers_layout(out, target.config.hidden_size if hasattr(target.config, "hidden_size") else target.config.dim)
    return {"planted_outliers": planted}


def _sources() -> str:
    functions = (build, train_masked, plant_outliers_anywhere, _zero_norm_channels, _weight_layers, _is_norm, _sentence_transformers_layout, hc.training_ids, hc.train, train_briefly, build_tokenizer)
    return "\n".join(inspect.getsource(f) for f in functions)


def cache_key(arch: Arch) -> str:
    """The hash a checkpoint is cached under: model type, its full config, training steps, the source
    of the functions that build it, torch and transformers versions."""
    import transformers

    body = {
        "type": arch.name,
        "classes": [arch.config_class, arch.model_class],
        "config": arch.make_config().to_dict(),
        "steps": arch.steps,
        "source": hashlib.sha256(_sources().encode()).hexdigest(),
        "constants": [VOCAB, SEED, hc.DEAD_CHANNELS, OUTLIER_RATIO],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def cache_root() -> Path:
    return Path(os.environ.get("QCONFORM_CACHE") or Path.home() / ".cache" / "qconform") / "checkpoints"


# name -> seconds the last checkpoint() call took in this process, and whether it was a cache hit.
TIMINGS: dict[str, dict[str, Any]] = {}


def checkpoint(name: str | Arch, root: Path | None = None) -> Path:
    """The cached checkpoint directory of architecture `name` (or of an Arch of a test's own, such
    as a variant trained longer), built (and timed) on a miss. A build goes to a temporary directory
    renamed into place, so a concurrent or killed run never leaves a half-written checkpoint under the key."""
    arch = name if isinstance(name, Arch) else ARCHITECTURES[name]
    name = arch.name
    start = time.perf_counter()
    key = cache_key(arch)
    target = (root or cache_root()) / name / key[:16]
    if (target / "BUILD.json").is_file():
        TIMINGS[name] = {"hit": True, "seconds": time.perf_counter() - start, **json.loads((target / "BUILD.json").read_text())}
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
    try:
        info = build(arch, staging)
        info = {"cold_seconds": round(time.perf_counter() - start, 2), "key": key, **info}
        (staging / "BUILD.json").write_text(json.dumps(info, indent=1))
        try:
            staging.rename(target)
        except OSError:  # another run published it first
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    TIMINGS[name] = {"hit": False, "seconds": time.perf_counter() - start, **json.loads((target / "BUILD.json").read_text())}
    return target


def main(argv: list[str] | None = None) -> None:
    """python -m tests.arch_matrix [names...]: build (or find) the checkpoints and print the times."""
    import sys

    names = (argv if argv is not None else sys.argv[1:]) or list(ARCHITECTURES)
    for name in names:
        path = checkpoint(name)
        t = TIMINGS[name]
        print(f"{name:11s} {'hit ' if t['hit'] else 'cold'} {t['seconds']:7.2f}s (cold build {t['cold_seconds']}s) {path}", flush=True)


if __name__ == "__main__":
    main()
