"""Model kinds and embedded default models; importing this package registers them (the kinds
first: an embedded model is built at import and detects its kind)."""

from harness.models import causal_lm, encoder, minilm, tiny_llama  # noqa: F401
