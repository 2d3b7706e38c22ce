"""Export: the ONNX graph with its attention maps, INT8 and fused variants, latency timing.

Imports torch, onnx and onnxruntime, the model and `serving` (for its one ONNX Runtime session
helper); nothing from the grid. This file imports nothing: import the module you need.
"""
