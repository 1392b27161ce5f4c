"""Pathways, one module each; importing this package registers them in PATHWAYS."""

from harness.pathways import inc_fp8_ref, inc_int8_qdq, tensorrt, torchao_fp8, torchao_int8  # noqa: F401
from harness.pathways.base import PATHWAYS, Pathway, all_pathways, get_pathway  # noqa: F401
