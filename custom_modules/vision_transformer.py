"""A small Vision Transformer (ViT) for 28x28 grey-level digits."""

from dataclasses import asdict, dataclass

import torch
from torch import nn

from custom_modules.attention_module import MultiHeadSelfAttention
from custom_modules.contract import MNIST_MEAN, MNIST_STD
from custom_modules.image_encoder import PatchEmbedding
from custom_modules.transformer_block import TransformerBlock


@dataclass(frozen=True)
class ViTConfig:
    """Everything that fixes the architecture; the grid search varies emb_dim to mlp_ratio."""

    image_size: int = 28
    patch_size: int = 4
    in_channels: int = 1
    num_classes: int = 10
    dropout: float = 0.1
    attn_dropout: float = 0.0
    emb_dim: int = 64
    num_heads: int = 4
    n_layers: int = 2
    mlp_ratio: int = 2
    patch_overlap: int = 0  # pixels each patch's kernel reads beyond its patch, on every side

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    def to_dict(self) -> dict:
        """The fields, `patch_overlap` only where it is not 0: what was saved before the field
        existed (checkpoints, training states' setups) still matches."""
        fields = asdict(self)
        if not self.patch_overlap:
            del fields["patch_overlap"]
        return fields


class VisionTransformer(nn.Module):
    """Patch tokens + CLS token + learnable positions -> pre-norm blocks -> LayerNorm -> head."""

    def __init__(self, config: ViTConfig, fused_attention: bool = True) -> None:
        super().__init__()
        if config.image_size % config.patch_size != 0:
            raise ValueError(f"image_size {config.image_size} is not a multiple of patch_size")
        self.config = config
        D = config.emb_dim
        self.patch_embed = PatchEmbedding(
            D, config.patch_size, config.in_channels, config.patch_overlap
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, D))
        self.pos_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                D,
                config.num_heads,
                config.mlp_ratio,
                config.dropout,
                config.attn_dropout,
                fused_attention,
            )
            for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        _trunc_normal(self.pos_embed)
        _trunc_normal(self.cls_token)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                _trunc_normal(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _tokens(self, images: torch.Tensor) -> torch.Tensor:
        # the one place the MNIST normalisation happens: in training, evaluation and every export
        x = self.patch_embed((images - MNIST_MEAN) / MNIST_STD)  # (B, P, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (B, P+1, D)
        return self.pos_drop(x)

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x)[:, 0])  # (B, classes), read off the CLS token

    def cls_feature(self, images: torch.Tensor) -> torch.Tensor:
        """The CLS token after the last block `(B, D)`: what the final norm and head read."""
        x = self._tokens(images)
        for i, block in enumerate(self.blocks):
            x, _ = block(x, cls_only=i == len(self.blocks) - 1)  # only the CLS row is read
        return x[:, 0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits `(B, num_classes)` for images `(B, C, H, W)` of pixels in [0, 1]."""
        x = self._tokens(images)
        for block in self.blocks:
            x, _ = block(x)
        return self._classify(x)

    def forward_with_attention(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Logits, each block's CLS attention `(B, heads, g, g)` and the rollout map `(B, g, g)`.

        Takes pixels in [0, 1], as `forward`; this is the graph that is exported.
        """
        x = self._tokens(images)
        attentions = []
        for i, block in enumerate(self.blocks):
            # the outputs read only the CLS row of the last block: skip its other tokens' work
            last = i == len(self.blocks) - 1
            x, attention = block(x, return_attention=True, cls_only=last)
            attentions.append(attention)  # (B, heads, N, N); (B, heads, 1, N) for the last
        grid = self.config.grid_size
        cls_attentions = [MultiHeadSelfAttention.cls_attention(a, grid) for a in attentions]
        return self._classify(x), cls_attentions, attention_rollout(attentions, grid)


def _trunc_normal(tensor: torch.Tensor, std: float = 0.02) -> None:
    # cut at two standard deviations (trunc_normal_'s defaults cut at +-2 absolute, i.e. 100 std)
    nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


def attention_rollout(attentions: list[torch.Tensor], grid_size: int) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): CLS attention to patches through all blocks.

    Each block's head-averaged attention gets the residual path added (0.5 A + 0.5 I), and the
    blocks' matrices are multiplied from the first to the last. Returns `(B, g, g)`.
    """
    N = grid_size**2 + 1
    identity = torch.eye(N, dtype=attentions[0].dtype, device=attentions[0].device)
    rollout = None
    for attention in attentions:  # the last may hold the CLS row alone: (B, heads, 1, N)
        rows = attention.shape[-2]
        mixed = 0.5 * attention.mean(dim=1) + 0.5 * identity[:rows]  # (B, rows, N), rows sum to 1
        rollout = mixed if rollout is None else mixed @ rollout
    return rollout[:, 0, 1:].unflatten(-1, (grid_size, grid_size))  # (B, g, g)
