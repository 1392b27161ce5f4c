"""Runners grouped by runtime (ONNX Runtime, TensorRT, torch), apart from the pathways that build artifacts."""
