"""Pre-norm transformer encoder block: attention then MLP, each inside a residual branch."""

import torch
from torch import nn

from custom_modules.attention_module import MultiHeadSelfAttention


class MLP(nn.Module):
    """Two linear layers with GELU in between, expanding the width by `mlp_ratio`."""

    def __init__(self, emb_dim: int, mlp_ratio: int, dropout: float = 0.0) -> None:
        super().__init__()
        hidden_dim = mlp_ratio * emb_dim
        self.fc1 = nn.Linear(emb_dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, emb_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """`x + MHSA(LN(x))`, then `x + MLP(LN(x))`."""

    def __init__(
        self,
        emb_dim: int,
        num_heads: int,
        mlp_ratio: int,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        fused_attention: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(emb_dim)
        self.attn = MultiHeadSelfAttention(
            emb_dim, num_heads, attn_dropout, dropout, fused=fused_attention
        )
        self.norm2 = nn.LayerNorm(emb_dim)
        self.mlp = MLP(emb_dim, mlp_ratio, dropout)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False, cls_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`cls_only` computes the CLS token's output alone (all tokens are still attended to)."""
        attn_out, attention = self.attn(self.norm1(x), return_attention, cls_only)
        x = x[:, :1] if cls_only else x
        x = x + attn_out
        x = x + self.mlp(self.norm2(x))
        return x, attention  # (B, N, D) or (B, 1, D); (B, heads, N or 1, N) or None
