"""Embedded default models; importing this package registers them."""

from harness.models import minilm, tiny_llama  # noqa: F401
