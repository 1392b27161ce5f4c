"""inc-fp8-ref: Intel Neural Compressor FP8 (E4M3/E5M2) in CPU QDQ emulation, the FP8 reference."""

from harness.pathways.base import Planned, register


@register
class IncFp8Reference(Planned):
    name = "inc-fp8-ref"
    description = "Intel Neural Compressor FP8 quantization in CPU QDQ emulation (numerical reference)"
    devices = ("cpu",)
    issue = 5
