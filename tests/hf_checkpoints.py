"""Tiny Hugging Face checkpoints built from transformers configs (random, seeded weights) and a
byte-level BPE tokenizer trained on qconform's shipped text: what a user's checkpoint directory
looks like (config.json, model.safetensors, tokenizer.json, tokenizer_config.json), small enough
for CPU tests. Reusable for end-to-end CLI tests: build_llama(dir), build_qwen2(dir), build_bert(dir).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parent.parent / "harness" / "data"
VOCAB = 384
SEED = 20261125
# Dead hidden channels (every RMSNorm gain 0) that carry planted outlier weights; see plant_outliers.
DEAD_CHANNELS = [5, 41]


def build_tokenizer(out: Path, *, bos: str | None = "<s>", eos: str = "</s>", pad: str = "<pad>", vocab_size: int = VOCAB) -> None:
    """Byte-level BPE trained on harness/data/*.txt, saved as tokenizer.json + tokenizer_config.json
    (AutoTokenizer loads it offline as a PreTrainedTokenizerFast)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [t for t in (pad, bos, eos) if t]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train([str(p) for p in sorted(DATA.glob("*.txt"))], trainer)
    if bos:
        from tokenizers import processors

        tokenizer.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tokenizer.token_to_id(bos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, pad_token=pad)
    fast.save_pretrained(str(out))


def plant_outliers(model, ratio: float = 500.0, seed: int = SEED) -> None:
    """Real LLM weights have a few output channels with a far larger range than the rest; this plants
    that profile without changing what the model computes (as harness/models/tiny_llama.py does):
    every RMSNorm zeroes DEAD_CHANNELS, and one row of each Linear reading a normalized input gets
    weights `ratio` x its largest normal weight on those channels. Per-channel weight scales absorb
    it; a per-tensor scale is set by it and rounds every other row to a few levels."""
    gen = torch.Generator().manual_seed(seed)
    dead = torch.tensor(DEAD_CHANNELS)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("layernorm") or name.endswith(".norm"):
                module.weight[dead] = 0.0
        readers = [model.lm_head]
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            readers += [attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj]
        for linear in readers:
            peak = linear.weight.abs().max()
            row = torch.randint(0, linear.out_features, (1,), generator=gen)
            signs = torch.randint(0, 2, (1, len(DEAD_CHANNELS)), generator=gen) * 2 - 1
            linear.weight[row[:, None], dead] = signs.float() * ratio * peak


# The tiny decoder every test checkpoint shares (tests/arch_matrix.py too).
DECODER_CONFIG = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def _decoder_config(config_cls, **extra):
    return config_cls(**DECODER_CONFIG, **extra)


def training_ids(tokenizer_dir: Path) -> torch.Tensor:
    """qconform's shipped text as one token sequence, with the checkpoint's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    return torch.tensor(tokenizer(" ".join(p.read_text() for p in sorted(DATA.glob("*.txt"))), add_special_tokens=False)["input_ids"])


def train(model, tokenizer_dir: Path, steps: int, loss_of, seq_len: int = 64, batch: int = 8) -> None:
    """A few Adam steps on random windows of the shipped text; `loss_of(model, windows, generator)`
    is the objective (next-token, masked-token ...)."""
    ids = training_ids(tokenizer_dir)
    gen = torch.Generator().manual_seed(SEED)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - seq_len - 1, (batch,), generator=gen)
        loss = loss_of(model, torch.stack([ids[s : s + seq_len] for s in starts]), gen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def train_briefly(model, tokenizer_dir: Path, steps: int, seq_len: int = 64, batch: int = 8) -> None:
    """Next-token prediction. Random weights predict near-uniform distributions (perplexity ~
    vocabulary size), where top-1 is a coin toss between near-ties and a perplexity ratio means
    nothing; a briefly trained model has peaked, text-like predictions, as real ones do."""
    train(model, tokenizer_dir, steps, lambda m, x, gen: m(input_ids=x, labels=x).loss, seq_len, batch)


def _save_decoder(model_cls, config, out: Path, steps: int = 150) -> Path:
    torch.manual_seed(SEED)
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(out)
    model = model_cls(config)
    train_briefly(model, out, steps)
    plant_outliers(model)
    model.save_pretrained(str(out))  # config.json + model.safetensors
    return out


def build_llama(out: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    return _save_decoder(LlamaForCausalLM, _decoder_config(LlamaConfig), Path(out))


def build_qwen2(out: Path) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return _save_decoder(Qwen2ForCausalLM, _decoder_config(Qwen2Config), Path(out))


def build_bert(out: Path) -> Path:
    """A BERT encoder in the sentence-transformers layout: mean pooling + normalization declared
    in modules.json and 1_Pooling/config.json. initializer_range 0.1, not 0.02: at 0.02 the random
    layers barely change the embeddings and every quantized embedding measured cosine 1.0000."""
    from transformers import BertConfig, BertModel

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    config = BertConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128, pad_token_id=0, initializer_range=0.1)
    BertModel(config, add_pooling_layer=False).eval().save_pretrained(str(out))
    build_tokenizer(out, bos=None)
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 64, "pooling_mode_mean_tokens": True}))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (out / "modules.json").write_text(json.dumps(modules))
    return out


def build_bert_classifier(out: Path) -> Path:
    """A two-label BertForSequenceClassification (random, seeded): a checkpoint of a kind qconform
    does not ship (tests/toy_kind.py adds it). initializer_range 0.1, as for build_bert."""
    from transformers import BertConfig, BertForSequenceClassification

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    config = BertConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128, pad_token_id=0, initializer_range=0.1, num_labels=2)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        # Near-tied classes: the second row is the first plus a little, so the logit margin is of the
        # order of INT8's rounding of each row and the artifact flips some labels (5 of 24 on a VNNI
        # CPU); with transformers' default init it flipped none there, and the toy-kind test had none
        # to judge.
        weight = model.classifier.weight
        weight[1] = weight[0] + 0.07 * weight[0].std() * torch.randn_like(weight[0])
        model.classifier.bias.zero_()
    model.save_pretrained(str(out))
    build_tokenizer(out, bos=None)
    return out


def build_gpt2(out: Path) -> Path:
    """A GPT-2 (random, seeded): its weight layers are transformers' Conv1D, weight stored (in, out)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    config = GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=128, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    GPT2LMHeadModel(config).eval().save_pretrained(str(out))
    build_tokenizer(out)
    return out


BUILDERS = {"llama": build_llama, "qwen2": build_qwen2, "bert": build_bert}
