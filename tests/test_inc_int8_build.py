"""The INC INT8 build bounds its memory without changing the artifact: INC's route for graphs over
2 GB (harness/pathways/inc_int8_qdq.py), taken here by tiny-llama's small graph."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from harness.core import Device
from harness.models.base import get_model
from harness.pathways import inc_int8_qdq
from harness.pathways.base import get_pathway


def _initializers(path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t, base_dir=str(path.parent)) for t in onnx.load(str(path), load_external_data=False).graph.initializer}


def test_a_large_graphs_calibration_runs_beside_its_saved_graph_not_its_copy_and_builds_the_same_artifact(tmp_path, monkeypatch):
    """onnx's save clears the weights from INC's augmented copy (their length is 0), but protobuf keeps
    their memory in the copy's arena until the copy goes (5.5 GiB at Llama-3.2-1B's shapes): the
    session must run beside the saved graph loaded without weights, not beside the copy."""
    model = get_model("tiny-llama")
    if reason := get_pathway("inc-int8-qdq").unavailable(Device.detect()):
        pytest.skip(reason)
    from onnx_neural_compressor import onnx_model
    from onnx_neural_compressor.algorithms.post_training_quant import calibrate

    recipe, calib = inc_int8_qdq.int8_qdq_recipe(model), model.calibration_inputs()
    small = inc_int8_qdq.build_qdq(model, calib, tmp_path / "small" / "model.qdq.onnx", recipe)

    built, beside = [], []  # the augmented copy INC made; the graph the calibration session ran beside
    is_large, augment_graph, calib_range = onnx_model.ONNXModel.check_is_large_model, calibrate.ONNXRTAugment.augment_graph, calibrate.ONNXRTAugment.get_activation_tensors_calib_range

    def large(self):
        is_large(self)
        self._is_large_model = True  # INC's flag for a graph over 2 GB: weights loaded, sessions made from files

    def recording_augment_graph(self):
        augment_graph(self)
        built.append(self.augmented_model)

    def recording_calib_range(self, *args, **kwargs):
        beside.append(self.augmented_model)
        return calib_range(self, *args, **kwargs)

    monkeypatch.setattr(onnx_model.ONNXModel, "check_is_large_model", large)
    monkeypatch.setattr(calibrate.ONNXRTAugment, "augment_graph", recording_augment_graph)
    monkeypatch.setattr(calibrate.ONNXRTAugment, "get_activation_tensors_calib_range", recording_calib_range)
    large_path = inc_int8_qdq.build_qdq(model, calib, tmp_path / "large" / "model.qdq.onnx", recipe)
    assert len(built) == len(beside) == 1 and beside[0] is not built[0]
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in beside[0].graph.initializer if not t.raw_data)
    a, b = _initializers(small), _initializers(large_path)
    assert a.keys() == b.keys() and all(np.array_equal(a[name], b[name]) for name in a)
