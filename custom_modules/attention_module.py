"""Multi-head self-attention, written out, that can hand back its attention weights."""

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadSelfAttention(nn.Module):
    """Scaled dot-product self-attention over all tokens, split into `num_heads` heads.

    Training uses PyTorch's fused kernel (`fused=True`); when the weights are asked for, or with
    `fused=False`, the softmax is computed explicitly. Both paths give the same output.
    """

    def __init__(
        self,
        emb_dim: int,
        num_heads: int,
        attn_dropout: float = 0.0,
        proj_dropout: float = 0.0,
        fused: bool = True,
    ) -> None:
        super().__init__()
        if emb_dim % num_heads != 0:
            raise ValueError(f"emb_dim {emb_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = emb_dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused = fused
        # q, k and v projections as one matrix: one matmul instead of three
        self.qkv_proj = nn.Linear(emb_dim, 3 * emb_dim)
        self.out_proj = nn.Linear(emb_dim, emb_dim)
        self.attn_dropout = attn_dropout
        self.attn_drop = nn.Dropout(attn_dropout)
        self.proj_drop = nn.Dropout(proj_dropout)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False, cls_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attended tokens `(B, N, D)` and, if asked, the softmaxed weights `(B, heads, N, N)`.

        With `cls_only`, only the CLS token (the first) queries: `(B, 1, D)` and `(B, heads, 1, N)`.
        """
        B, N, D = x.shape
        qkv = self.qkv_proj(x).view(B, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, hd)
        if cls_only:
            q = q[:, :, :1]  # (B, heads, 1, hd)

        attention = None
        if self.fused and not return_attention:
            dropout_p = self.attn_dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B, heads, N, hd)
        else:
            scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, heads, N, N)
            attention = scores.softmax(dim=-1)
            out = self.attn_drop(attention) @ v  # (B, heads, N, hd)

        out = out.transpose(1, 2).reshape(B, q.shape[2], D)
        return self.proj_drop(self.out_proj(out)), attention

    @staticmethod
    def cls_attention(attention: torch.Tensor, grid_size: int) -> torch.Tensor:
        """The CLS token's attention over the patches, on the patch grid: `(B, heads, g, g)`.

        Row 0 of the softmaxed matrix (full or CLS-only) with the CLS-to-CLS entry dropped, so
        it sums to at most 1.
        """
        return attention[:, :, 0, 1:].unflatten(-1, (grid_size, grid_size))
