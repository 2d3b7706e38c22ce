"""Robust fine-tuning under bf16 autocast learns what the fp32 one learns, and records it."""

import pytest
import torch

from custom_modules.training.data import split_mnist
from custom_modules.training.robust import (
    RobustCheck,
    RobustConfig,
    finetune_robust,
    without_dropout,
)
from custom_modules.training.widen import overlapped_patches, widened_mlp
from custom_modules.vision_transformer import VisionTransformer, ViTConfig
from tests.test_pipeline import synthetic_mnist


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_bf16_fine_tuning_moves_the_weights_as_fp32_does(tmp_path) -> None:
    data = split_mnist(synthetic_mnist(n_train=300), val_size=100)
    check = RobustCheck.make(data, torch.rand(20, 1, 28, 28))
    inputs = lambda: (torch.rand(50, 1, 28, 28), check)  # noqa: E731
    config = RobustConfig(epochs=1, lr=3e-3, batch_size=32, non_digit_batch=4, ema_decay=0.5)
    torch.manual_seed(0)
    start = VisionTransformer(ViTConfig(emb_dim=32, num_heads=2, n_layers=2, dropout=0.0))

    def tune(bf16: bool) -> tuple[VisionTransformer, list[dict]]:
        model = without_dropout(start, fused_attention=not bf16)  # the CPU's fast path
        state = tmp_path / f"state-{bf16}.pt"
        return finetune_robust(model, data, inputs, config, state, lambda r: None, bf16=bf16)

    fp32, fp32_history = tune(False)
    bf16, bf16_history = tune(True)
    assert [h["bf16"] for h in fp32_history + bf16_history] == [False, True]
    moved = (_flat(fp32) - _flat(start)).norm()
    assert moved > 0.1
    # bf16 rounding lets the two drift apart a little, far less than either moved
    assert (_flat(bf16) - _flat(fp32)).norm() < 0.25 * moved
    agree = (bf16(check.clean).argmax(1) == fp32(check.clean).argmax(1)).float().mean()
    assert agree > 0.9


def _trained_stand_in() -> tuple[VisionTransformer, torch.Tensor]:
    """A small seeded model in eval mode and images to read with it."""
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(emb_dim=16, num_heads=2, n_layers=2, dropout=0.0))
    return model.eval(), torch.rand(8, 1, 28, 28)


def test_widened_mlps_read_as_before_and_their_new_units_learn() -> None:
    model, images = _trained_stand_in()
    wide = widened_mlp(model, 4)
    assert wide.config.mlp_ratio == 4 and not wide.training
    assert wide.blocks[1].mlp.fc1.weight.shape == (64, 16)
    assert wide.num_parameters() > model.num_parameters()
    torch.testing.assert_close(wide(images), model(images))

    wide(images).logsumexp(1).sum().backward()  # any loss: the new units' way out learns
    new_out = wide.blocks[0].mlp.fc2.weight.grad[:, 32:]
    assert new_out.abs().sum() > 0
    with pytest.raises(ValueError, match="cannot widen an MLP of ratio 2 to 1"):
        widened_mlp(model, 1)


def test_grown_patch_kernels_read_as_before_and_their_new_border_learns() -> None:
    model, images = _trained_stand_in()
    grown = overlapped_patches(model, 2)
    assert grown.config.patch_overlap == 2 and not grown.training
    kernel = grown.patch_embed.proj.weight
    assert kernel.shape == (16, 1, 8, 8)
    torch.testing.assert_close(grown(images), model(images))

    grown(images).logsumexp(1).sum().backward()  # any loss: the border around the old kernel
    border = kernel.grad.clone()
    border[:, :, 2:6, 2:6] = 0.0
    assert border.abs().sum() > 0
    with pytest.raises(ValueError, match="cannot shrink a patch overlap of 2 to 1"):
        overlapped_patches(grown, 1)
