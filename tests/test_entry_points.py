"""Models and pathways from other packages: found through importlib.metadata entry points
(a dist-info folder on sys.path is exactly what `pip install` leaves behind)."""

from __future__ import annotations

import pytest

from harness import core
from harness.models import base as models_base
from harness.pathways import base as pathways_base

PLUGIN = '''
from harness.models.tiny_llama import TinyLlamaSpec
from harness.pathways.inc_int8_qdq import IncInt8Qdq


class WideLlama(TinyLlamaSpec):
    id = "wide-llama"
    dim, hidden = 192, 384


class RenamedQdq(IncInt8Qdq):
    name = "renamed-int8-qdq"
'''


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    def install(entry_points: str) -> None:
        (tmp_path / "team_plugin.py").write_text(PLUGIN)
        info = tmp_path / "team_plugin-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: team-plugin\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(entry_points)
        monkeypatch.syspath_prepend(str(tmp_path))
        # A fresh registry, as in a new process.
        monkeypatch.setattr(core, "_LOADED_GROUPS", set())
        monkeypatch.setattr(models_base, "MODELS", dict(models_base.MODELS))
        monkeypatch.setattr(pathways_base, "PATHWAYS", dict(pathways_base.PATHWAYS))

    return install


def test_models_and_pathways_come_from_entry_points(installed_plugin):
    installed_plugin("[qconform.models]\nwide-llama = team_plugin:WideLlama\n\n[qconform.pathways]\nrenamed = team_plugin:RenamedQdq\n")
    assert models_base.get_model("wide-llama").dim == 192
    assert "wide-llama" in [m.id for m in models_base.all_models()]
    assert pathways_base.get_pathway("renamed-int8-qdq").devices == ("cpu", "cuda")


def test_a_broken_entry_point_is_named(installed_plugin):
    installed_plugin("[qconform.pathways]\nbroken = team_plugin:NoSuchPathway\n")
    with pytest.raises(RuntimeError, match=r"entry point broken = team_plugin:NoSuchPathway \(qconform.pathways, from team-plugin\) failed to load: AttributeError"):
        pathways_base.all_pathways()
