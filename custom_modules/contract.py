"""The model's interface, defined once: what an exported ViT takes and gives, and its config keys.

Torch-free and dependency-free: the export writes graphs to this contract, serving checks them
against it, and the grid and the manifest name configurations with its keys.

The exported graph takes pixels: `(N, 1, 28, 28)` float32 in [0, 1] (ink light on black, as
MNIST), named `input`. Normalisation with MNIST's mean and standard deviation happens inside the
model (`VisionTransformer`), so it is inside every exported graph too: anyone using an ONNX file
(the app, a browser, another language) needs no constants.
"""

INPUT_NAME = "input"
IMAGE_SIZE = 28
CHANNELS = 1
PATCH_SIZE = 4
GRID_SIZE = IMAGE_SIZE // PATCH_SIZE  # 7x7 patches, so every attention map is 7x7
NUM_CLASSES = 10
PIXEL_MAX = 255  # uint8 images are divided by this to give the model's [0, 1] pixels

# inside the model only: (pixels - MNIST_MEAN) / MNIST_STD
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# the four architecture settings the grid varies; a configuration is a dict of these
CONFIG_KEYS = ("emb_dim", "num_heads", "n_layers", "mlp_ratio")
# and, recorded only where it is not 0: the pixels each patch's kernel reads beyond its patch
PATCH_OVERLAP_KEY = "patch_overlap"


def config_of(row: dict) -> dict[str, int]:
    """The configuration of a results row or manifest entry (values may be strings), with its
    patch overlap where it has one."""
    overlap = int(row.get(PATCH_OVERLAP_KEY) or 0)
    return {key: int(row[key]) for key in CONFIG_KEYS} | (
        {PATCH_OVERLAP_KEY: overlap} if overlap else {}
    )


def patch_kernel_size(overlap: int) -> int:
    """The side of a patch kernel that reads `overlap` pixels beyond its patch on every side."""
    return PATCH_SIZE + 2 * overlap


def output_names(n_layers: int) -> list[str]:
    """The export's outputs: `logits`, one `cls_attention_i` per block, `attention_rollout`.

    Shapes: logits (N, 10), cls_attention_i (N, heads, 7, 7), attention_rollout (N, 7, 7).
    """
    return ["logits", *(f"cls_attention_{i}" for i in range(n_layers)), "attention_rollout"]
