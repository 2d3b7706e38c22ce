"""Function-preserving widening of a trained ViT (Net2WiderNet, Chen et al. 2016): wider MLPs or
larger patch kernels to fine-tune from a model's weights instead of training them from scratch."""

from dataclasses import replace

import torch
import torch.nn.functional as F

from custom_modules.vision_transformer import VisionTransformer


def widened_mlp(model: VisionTransformer, mlp_ratio: int, seed: int = 0) -> VisionTransformer:
    """`model` with every MLP `mlp_ratio` times its width wide, giving the same outputs: the
    new hidden units start as a fresh model's (seeded) but their outgoing weights are zero."""
    old_ratio = model.config.mlp_ratio
    if mlp_ratio < old_ratio:
        raise ValueError(f"cannot widen an MLP of ratio {old_ratio} to {mlp_ratio}")
    with torch.random.fork_rng():  # the caller's random stream goes on as if untouched
        torch.manual_seed(seed)
        wide = VisionTransformer(replace(model.config, mlp_ratio=mlp_ratio))
    weights = wide.state_dict()
    for key, trained in model.state_dict().items():
        new = weights[key]
        hidden = trained.shape[0] if key.endswith(("fc1.weight", "fc1.bias")) else None
        if new.shape == trained.shape:
            weights[key] = trained
        elif hidden is not None:  # (hidden, D) or (hidden,): the trained units first
            new[:hidden] = trained
            if key.endswith("bias"):
                new[hidden:] = 0.0
        elif key.endswith("fc2.weight"):  # (D, hidden): nothing flows from the new units yet
            new.zero_()
            new[:, : trained.shape[1]] = trained
        else:
            raise ValueError(f"{key}: {tuple(trained.shape)} -> {tuple(new.shape)} is no MLP")
    wide.load_state_dict(weights)
    return wide.train(model.training)


def overlapped_patches(model: VisionTransformer, overlap: int) -> VisionTransformer:
    """`model` with patch kernels reading `overlap` pixels beyond each patch, giving the same
    outputs: the trained kernel sits in the centre of the larger one, zeros around it."""
    grow = overlap - model.config.patch_overlap
    if grow < 0:
        raise ValueError(
            f"cannot shrink a patch overlap of {model.config.patch_overlap} to {overlap}"
        )
    wide = VisionTransformer(replace(model.config, patch_overlap=overlap))
    weights = model.state_dict()
    kernel = weights["patch_embed.proj.weight"]  # (D, C, k, k)
    grown = F.pad(kernel, (grow, grow, grow, grow))  # (D, C, k+2g, k+2g), zeros around
    weights["patch_embed.proj.weight"] = grown
    wide.load_state_dict(weights)
    return wide.train(model.training)
