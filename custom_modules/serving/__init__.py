"""Serving, torch-free: preprocessing, uploads, the ONNX model, overlays and the manifest.

Imports numpy, Pillow, onnxruntime, the standard library and `custom_modules.contract` only (a
test walks the imports), so the app runs where PyTorch is not installed. This file imports
nothing: import the module you need, e.g. `from custom_modules.serving.model import OnnxViT`.
"""
