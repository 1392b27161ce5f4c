"""Measuring: layout checks, per-layer localization, the golden store, timing, roofline, quantizer properties."""
