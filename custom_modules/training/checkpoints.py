"""A trained model in one file: `{"config": ViTConfig fields, "state_dict": weights}`."""

from pathlib import Path

import torch

from custom_modules.atomic_file import replaced_atomically
from custom_modules.vision_transformer import VisionTransformer, ViTConfig


def save_checkpoint(model: VisionTransformer, path: str | Path) -> Path:
    """Config and weights in one file, written under a temporary name and then renamed."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with replaced_atomically(path) as tmp_path:
        torch.save({"config": model.config.to_dict(), "state_dict": state}, tmp_path)
    return path


def load_checkpoint(path: str | Path) -> VisionTransformer:
    """The model saved by `save_checkpoint`, in eval mode on the CPU."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = VisionTransformer(ViTConfig(**checkpoint["config"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
