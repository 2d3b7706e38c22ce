"""The ViT's parts: shapes, attention maps, the fused and explicit attention paths."""

import pytest
import torch

from custom_modules.attention_module import MultiHeadSelfAttention
from custom_modules.image_encoder import PatchEmbedding
from custom_modules.transformer_block import TransformerBlock
from custom_modules.vision_transformer import VisionTransformer, ViTConfig, attention_rollout


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_patch_embedding_makes_49_tokens() -> None:
    tokens = PatchEmbedding(emb_dim=32, patch_size=4)(torch.randn(3, 1, 28, 28))
    assert tokens.shape == (3, 49, 32)


def test_patch_embedding_token_sees_only_its_patch() -> None:
    embed = PatchEmbedding(emb_dim=8, patch_size=4)
    images = torch.zeros(1, 1, 28, 28)
    changed = images.clone()
    changed[0, 0, 4:8, 8:12] = 1.0  # patch row 1, column 2 -> token 1 * 7 + 2
    diff = (embed(changed) - embed(images)).abs().sum(dim=-1)[0]
    assert diff.nonzero().flatten().tolist() == [9]


def test_overlapping_patches_keep_the_grid_and_reach_into_their_neighbours() -> None:
    embed = PatchEmbedding(emb_dim=8, patch_size=4, overlap=2)
    assert embed(torch.randn(3, 1, 28, 28)).shape == (3, 49, 8)
    images = torch.zeros(1, 1, 28, 28)
    inner, corner = images.clone(), images.clone()
    inner[0, 0, 5, 7] = 1.0  # patch (1, 1); within 2 pixels of patches (0, *) and (*, 2)
    corner[0, 0, 1, 1] = 1.0  # patch (0, 0), 3 pixels from the next patch either way
    touched = lambda x: (embed(x) - embed(images)).abs().sum(dim=-1)[0].nonzero().flatten()  # noqa: E731
    assert touched(inner).tolist() == [1, 2, 8, 9]
    assert touched(corner).tolist() == [0]


def test_attention_rejects_indivisible_heads() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadSelfAttention(emb_dim=30, num_heads=4)


@pytest.mark.parametrize("training", [False, True])
def test_fused_and_explicit_attention_agree(training: bool) -> None:
    fused = MultiHeadSelfAttention(48, 4, fused=True)
    explicit = MultiHeadSelfAttention(48, 4, fused=False)
    explicit.load_state_dict(fused.state_dict())
    fused.train(training)
    explicit.train(training)  # no dropout configured, so train mode must match too
    x = torch.randn(5, 50, 48)
    out_fused, none = fused(x)
    out_explicit, attention = explicit(x)
    assert none is None and attention is not None
    torch.testing.assert_close(out_fused, out_explicit, atol=1e-5, rtol=1e-5)
    out_asked, _ = fused(x, return_attention=True)
    torch.testing.assert_close(out_asked, out_fused, atol=1e-5, rtol=1e-5)


def test_cls_attention_is_row_zero_of_the_softmax() -> None:
    attn = MultiHeadSelfAttention(32, 4).eval()
    x = torch.randn(2, 50, 32)
    _, attention = attn(x, return_attention=True)
    # the softmax recomputed by hand from the module's own projections
    q, k, _ = attn.qkv_proj(x).split(32, dim=-1)
    q, k = (t.view(2, 50, 4, 8).transpose(1, 2) for t in (q, k))
    full = torch.softmax(q @ k.transpose(-2, -1) / 8**0.5, dim=-1)  # (B, heads, N, N)
    torch.testing.assert_close(attention, full)

    cls = MultiHeadSelfAttention.cls_attention(attention, grid_size=7)
    assert cls.shape == (2, 4, 7, 7)
    torch.testing.assert_close(cls.flatten(2), full[:, :, 0, 1:])
    sums = cls.sum(dim=(-2, -1))
    assert torch.all(sums <= 1 + 1e-6)
    torch.testing.assert_close(sums, 1 - full[:, :, 0, 0])  # only the CLS-to-CLS share is missing


def test_block_is_pre_norm_residual() -> None:
    block = TransformerBlock(emb_dim=16, num_heads=2, mlp_ratio=2).eval()
    x = torch.randn(2, 50, 16)
    expected = x + block.attn(block.norm1(x))[0]
    expected = expected + block.mlp(block.norm2(expected))
    out, attention = block(x)
    torch.testing.assert_close(out, expected)
    assert attention is None


def test_mlp_hidden_size_is_ratio_times_width() -> None:
    block = TransformerBlock(emb_dim=16, num_heads=2, mlp_ratio=4)
    assert block.mlp.fc1.out_features == 64 and block.mlp.fc2.in_features == 64


@pytest.mark.parametrize("n_layers", [1, 3])
def test_vit_shapes_and_attention_outputs(n_layers: int) -> None:
    config = ViTConfig(emb_dim=32, num_heads=4, n_layers=n_layers, mlp_ratio=2)
    model = VisionTransformer(config).eval()
    images = torch.randn(4, 1, 28, 28)
    logits = model(images)
    logits_too, cls_attentions, rollout = model.forward_with_attention(images)
    assert logits.shape == (4, 10)
    torch.testing.assert_close(logits, logits_too, atol=1e-5, rtol=1e-5)
    assert len(cls_attentions) == n_layers
    assert all(a.shape == (4, 4, 7, 7) for a in cls_attentions)
    assert rollout.shape == (4, 7, 7)
    assert torch.all(rollout >= 0) and torch.all(rollout.sum(dim=(-2, -1)) <= 1 + 1e-6)
    assert model.pos_embed.shape == (1, 50, 32) and model.cls_token.shape == (1, 1, 32)


def test_rollout_of_one_block_is_half_attention_plus_identity() -> None:
    attention = torch.softmax(torch.randn(2, 3, 50, 50), dim=-1)
    rollout = attention_rollout([attention], grid_size=7)
    expected = 0.5 * attention.mean(dim=1)[:, 0, 1:]
    torch.testing.assert_close(rollout.flatten(1), expected)


def test_rollout_multiplies_blocks_in_order() -> None:
    first, second = (torch.softmax(torch.randn(1, 2, 50, 50), dim=-1) for _ in range(2))
    eye = torch.eye(50)
    mixed = [0.5 * a.mean(dim=1) + 0.5 * eye for a in (first, second)]
    expected = (mixed[1] @ mixed[0])[:, 0, 1:]
    torch.testing.assert_close(attention_rollout([first, second], 7).flatten(1), expected)


def test_initialisation_is_small_truncated_normal() -> None:
    model = VisionTransformer(ViTConfig(emb_dim=64))
    weight = model.blocks[0].mlp.fc1.weight
    assert weight.abs().max() <= 2 * 0.02 + 1e-6 and 0.01 < weight.std() < 0.03
    assert torch.all(model.head.bias == 0)


def test_model_learns_a_tiny_problem() -> None:
    """A few steps on two fixed images must drive the loss down (the graph is trainable)."""
    model = VisionTransformer(ViTConfig(emb_dim=16, num_heads=2, n_layers=1, dropout=0.0))
    images, labels = torch.randn(2, 1, 28, 28), torch.tensor([3, 7])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


@pytest.mark.parametrize("n_layers", [1, 2])
def test_the_cls_only_last_block_gives_what_the_full_block_gives(n_layers: int) -> None:
    config = ViTConfig(emb_dim=32, num_heads=4, n_layers=n_layers, mlp_ratio=2)
    model = VisionTransformer(config).eval()
    images = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        x, attentions = model._tokens(images), []
        for block in model.blocks:  # every token through every block
            x, attention = block(x, return_attention=True)
            attentions.append(attention)
        logits, cls_attentions, rollout = model.forward_with_attention(images)
    torch.testing.assert_close(logits, model._classify(x))
    for full, cls_only in zip(attentions, cls_attentions, strict=True):
        torch.testing.assert_close(cls_only, MultiHeadSelfAttention.cls_attention(full, 7))
    torch.testing.assert_close(rollout, attention_rollout(attentions, 7))


def test_a_config_records_its_patch_overlap_only_where_it_has_one() -> None:
    # states and checkpoints saved before the field existed must still match a plain config
    assert "patch_overlap" not in ViTConfig().to_dict()
    overlapped = ViTConfig(patch_overlap=2)
    assert overlapped.to_dict()["patch_overlap"] == 2
    assert ViTConfig(**overlapped.to_dict()) == overlapped
