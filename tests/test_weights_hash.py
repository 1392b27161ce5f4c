"""The source-weights hash: what docs/artifacts.md tells a user to compute is what qconform uses."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from harness.artifacts.weights import hash_weights
from harness.cli import main
from harness.models.base import get_model
from harness.schema import WEIGHTS_HASH_SNIPPET


def documented_hash(files) -> str:
    namespace: dict = {}
    exec(WEIGHTS_HASH_SNIPPET.rsplit("\nprint(", 1)[0], namespace)  # the function as printed, without its example call
    return namespace["weights_sha256"](files)


def test_model_hash_is_the_documented_hash_of_its_checkpoint(tmp_path, capsys):
    model = get_model("tiny-llama")
    state = {k: v.contiguous().clone() for k, v in model.reference.state_dict().items()}
    save_file(state, tmp_path / "model.safetensors")
    assert documented_hash([tmp_path / "model.safetensors"]) == model.weights_sha256 == hash_weights(tmp_path)
    assert main(["hash-weights", str(tmp_path / "model.safetensors")]) == 0
    assert capsys.readouterr().out.strip() == model.weights_sha256


def test_sharding_does_not_change_the_hash(tmp_path):
    state = {"b.weight": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3), "a.weight": torch.ones(4), "c": torch.zeros(2, dtype=torch.int8)}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    save_file(state, tmp_path / "one" / "model.safetensors")
    save_file({"b.weight": state["b.weight"]}, tmp_path / "two" / "model-00001-of-00002.safetensors")
    save_file({k: state[k] for k in ("a.weight", "c")}, tmp_path / "two" / "model-00002-of-00002.safetensors")
    assert hash_weights(tmp_path / "one") == hash_weights(tmp_path / "two") == documented_hash((tmp_path / "two").glob("*.safetensors"))
    changed = dict(state, c=torch.tensor([0, 1], dtype=torch.int8))
    save_file(changed, tmp_path / "one" / "model.safetensors")
    assert hash_weights(tmp_path / "one") != hash_weights(tmp_path / "two")


def test_hash_weights_refuses_what_it_cannot_hash(tmp_path, capsys):
    assert main(["hash-weights", str(tmp_path)]) == 4  # USAGE ERROR, as from every subcommand
    assert "no *.safetensors files" in capsys.readouterr().err


def test_onnx_initializers_hash_like_the_same_tensors_in_safetensors(tmp_path):
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2], dtype=np.int8)}
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [], [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()])
    onnx.save(helper.make_model(graph), tmp_path / "m.onnx")
    save_file({k: torch.from_numpy(v) for k, v in weights.items()}, tmp_path / "m.safetensors")
    assert hash_weights(tmp_path / "m.onnx") == hash_weights(tmp_path / "m.safetensors")
