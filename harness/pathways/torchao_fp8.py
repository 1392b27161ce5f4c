"""torchao-fp8-rowwise: TorchAO Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
on GPUs with compute capability >= 8.9."""

from harness.pathways.base import Planned, register


@register
class TorchaoFp8Rowwise(Planned):
    name = "torchao-fp8-rowwise"
    description = "TorchAO FP8 rowwise dynamic activation + weight quantization (CUDA, sm_89+)"
    devices = ("cuda",)
    issue = 4
