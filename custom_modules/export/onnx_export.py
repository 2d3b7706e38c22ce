"""ONNX export of a trained ViT with its attention maps, checked against ONNX Runtime.

The graph follows `custom_modules.contract`: pixels in [0, 1] in (the model normalises them
inside the graph), logits, every block's CLS attention and the rollout out.
"""

import logging
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from custom_modules.atomic_file import replaced_atomically
from custom_modules.contract import INPUT_NAME, output_names
from custom_modules.serving.model import onnx_session
from custom_modules.vision_transformer import VisionTransformer


class ExportError(RuntimeError):
    """The exported graph does not reproduce PyTorch's outputs."""


class ExportedViT(nn.Module):
    """The graph that is exported: logits, every block's CLS attention and the rollout map."""

    def __init__(self, model: VisionTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, cls_attentions, rollout = self.model.forward_with_attention(images)
        return (logits, *cls_attentions, rollout)


def max_output_difference(
    graph: nn.Module, session: ort.InferenceSession, images: np.ndarray
) -> float:
    """Largest absolute difference over all outputs between PyTorch and ONNX Runtime."""
    with torch.no_grad():
        expected = graph(torch.from_numpy(images))
    actual = session.run(None, {INPUT_NAME: images})
    return max(float(np.abs(a - e.numpy()).max()) for a, e in zip(actual, expected, strict=True))


def export_onnx(model: VisionTransformer, path: str | Path, atol: float = 1e-4) -> Path:
    """Export to `path` (dynamic batch), verify with ONNX Runtime, and only then move into place.

    Writes to a temporary file first, so a crash or a failed check leaves no model behind.
    """
    path = Path(path)
    config = model.config
    graph = ExportedViT(model).to("cpu").eval()
    example = torch.zeros(2, config.in_channels, config.image_size, config.image_size)
    # torch.onnx warns once per missing torchvision op; none is used here
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with replaced_atomically(path) as tmp_path:
        with warnings.catch_warnings():
            # torch.export's pytree code trips one of torch's own FutureWarnings; nothing to do
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            torch.onnx.export(
                graph,
                (example,),
                str(tmp_path),
                input_names=[INPUT_NAME],
                output_names=output_names(config.n_layers),
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        session = onnx_session(tmp_path)
        rng = np.random.default_rng(0)
        for batch in (1, 7):
            shape = (batch, config.in_channels, config.image_size, config.image_size)
            images = rng.random(shape, dtype=np.float32)  # pixels in [0, 1]
            diff = max_output_difference(graph, session, images)
            if not diff <= atol:
                raise ExportError(
                    f"{path}: ONNX Runtime differs from PyTorch by {diff:.2e} (> {atol:.0e}) "
                    f"at batch {batch}; the export is not trusted and was not kept"
                )
    return path
