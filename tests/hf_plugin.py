"""pytest plugin for child runs (`-p tests.hf_plugin`): registers the checkpoint directories listed in
$QCONFORM_TEST_CHECKPOINTS (comma-separated) as models, with the small evaluation settings of
tests/test_hf_models.py (`--model PATH` takes the defaults; a qconform.toml can set the same keys);
$QCONFORM_TEST_CHOICES, when set, is their labeled multiple-choice file (eval_choices), and
$QCONFORM_TEST_METRICS their metrics."""

import os

from harness.models.base import register_model
from harness.models.hf import HuggingFaceModel

SMALL = dict(eval_tokens=256, seq_len=64, new_tokens=8, generation_prompts=4)
# A random BERT ranks the labeled pairs by chance, so it declares no task-score metric.
METRICS = {"test-bert": ("row_cosine", "ranking_agreement")}
# $QCONFORM_TEST_METRICS (comma-separated), when set, is every model's metrics (as a project's
# `metrics` key would be).
SELECTED = tuple(filter(None, os.environ.get("QCONFORM_TEST_METRICS", "").split(","))) or None

CHOICES = os.environ.get("QCONFORM_TEST_CHOICES") or None

for path in filter(None, os.environ.get("QCONFORM_TEST_CHECKPOINTS", "").split(",")):
    model = HuggingFaceModel(path, **SMALL)
    register_model(HuggingFaceModel(path, metrics=SELECTED or METRICS.get(model.id), eval_choices=CHOICES, **SMALL))
