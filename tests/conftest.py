"""Shared fixtures: a tiny exported ViT with a manifest and a grid table, so no test needs the
real shipped models; odd and hostile uploads; recorded figures in the terminal summary."""

import csv
import io
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from custom_modules.grid.results_table import FIELDS

CHROMIUM = Path("/usr/bin/chromium")  # Debian's: Playwright cannot download its own here
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

TINY_CONFIGS = {
    "Fast": {"emb_dim": 16, "num_heads": 2, "n_layers": 2, "mlp_ratio": 2},
    "Large": {"emb_dim": 24, "num_heads": 3, "n_layers": 3, "mlp_ratio": 2},
}


def _export_tiny_vit(config: dict[str, int], path: Path, seed: int) -> int:
    """Export a randomly initialised ViT to `path`; return its parameter count."""
    import torch

    from custom_modules.export.onnx_export import export_onnx
    from custom_modules.vision_transformer import VisionTransformer, ViTConfig

    torch.manual_seed(seed)
    model = VisionTransformer(ViTConfig(**config)).eval()
    export_onnx(model, path)
    return model.num_parameters()


def _manifest_entry(file: str, config: dict[str, int], params: int, accuracy: float) -> dict:
    return {
        "file": file,
        "config": config,
        "params": params,
        "test_accuracy": accuracy,
        "test_precision": accuracy,
        "test_recall": accuracy,
        "test_f1": accuracy,
        "onnx_p50_us": 10.0 * config["n_layers"],
        "torch_p50_us": 30.0 * config["n_layers"],
        "size_bytes": 1000,
        "command": "python grid_search_mnist.py --select",
    }


def _grid_row(config: dict[str, int], params: int, accuracy: float) -> dict:
    run_id = "vit-e{emb_dim}-h{num_heads}-l{n_layers}-m{mlp_ratio}".format(**config)
    row = {field: 0 for field in FIELDS}
    return {
        **row,
        **config,
        "run_id": run_id,
        "params": params,
        "test_accuracy": accuracy,
        "val_accuracy": accuracy,
        "onnx_p50_us": 10.0 * config["n_layers"],
        "torch_p50_us": 30.0 * config["n_layers"],
        "onnx_file": f"onnx/{run_id}.onnx",
        "wandb_run": "",
    }


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder as the app expects it: two tiny ONNX ViTs, manifest.json, grid_results.csv.

    The models are random (untrained); tests only check shapes, plumbing and the page.
    """
    folder = tmp_path_factory.mktemp("models")
    models, rows = {}, []
    for seed, (name, config) in enumerate(TINY_CONFIGS.items()):
        file = f"vit-{name.lower()}.onnx"
        params = _export_tiny_vit(config, folder / file, seed)
        accuracy = 0.9 + 0.01 * seed
        models[name] = _manifest_entry(file, config, params, accuracy)
        rows.append(_grid_row(config, params, accuracy))
    other = {"emb_dim": 8, "num_heads": 1, "n_layers": 1, "mlp_ratio": 1}
    rows.append(_grid_row(other, 1234, 0.5))
    with (folder / "grid_results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    manifest = {"models": models, "grid_results": "grid_results.csv"}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


@pytest.fixture(scope="session")
def tiny_model_path(tiny_models_dir: Path) -> Path:
    """The tiny "Fast" model: 2 blocks of 2 heads, embedding 16."""
    return tiny_models_dir / "vit-fast.onnx"


# ------------------------------------------------------------------------------- uploads

UPLOAD_LIMIT_BYTES = 5 * 1024 * 1024  # server.maxUploadSize in .streamlit/config.toml


def seven(size: tuple[int, int] = (200, 240)) -> Image.Image:
    """A hand-drawn-looking 7 with a bar, white on black, mode L."""
    image = Image.new("L", size, 0)
    pen = ImageDraw.Draw(image)
    width, height = size
    top, corner, foot = (0.2 * width, 0.17 * height), (0.8 * width, 0.17 * height), (0.4, 0.88)
    pen.line([top, corner, (foot[0] * width, foot[1] * height)], fill=255, width=16, joint="curve")
    pen.line([(0.35 * width, 0.5 * height), (0.7 * width, 0.5 * height)], fill=255, width=14)
    return image


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def blank_1_bit_png(width: int, height: int) -> bytes:
    """A valid black 1-bit PNG of any declared size, compressed row by row: a few KB even at
    20000x20000 (400 megapixels), the shape of a decompression bomb."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    chunks = [(b"IHDR", header), (b"IDAT", data), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(_png_chunk(kind, data) for kind, data in chunks)


def animated_gif() -> bytes:
    """Three different frames: the 7, a dimmer 7, the 7 turned."""
    frames = [seven(), seven().point(lambda value: value // 2), seven().rotate(20)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def sixteen_bit_png(scale: int = 257) -> bytes:
    """The 7 as a 16-bit greyscale PNG (mode I;16): ink at 255 * scale."""
    return encode(Image.fromarray(np.asarray(seven()).astype(np.uint16) * scale), "PNG")


def cmyk_jpeg() -> bytes:
    """The 7 in black (K) ink on white paper, as a CMYK JPEG."""
    blank = Image.new("L", (200, 240), 0)
    return encode(Image.merge("CMYK", [blank, blank, blank, seven()]), "JPEG", quality=95)


def transparent_palette_png() -> bytes:
    """Black ink on a transparent page, palette (P) mode with a tRNS chunk."""
    dark_on_light = seven().point(lambda value: 255 - value).convert("P")
    return encode(dark_on_light, "PNG", transparency=dark_on_light.getpixel((0, 0)))


def wide_png() -> bytes:
    """10000x10 px: a dark page with a light dash in the middle."""
    image = Image.new("L", (10000, 10), 0)
    ImageDraw.Draw(image).rectangle([4000, 2, 6000, 7], fill=255)
    return encode(image, "PNG")


def tall_png() -> bytes:
    """10x10000 px: light paper with a dark upright in the middle, in RGB."""
    image = Image.new("RGB", (10, 10000), "white")
    ImageDraw.Draw(image).rectangle([3, 3000, 6, 7000], fill="black")
    return encode(image, "PNG")


UPLOADS: dict[str, Callable[[], bytes]] = {
    "not-an-image.png": lambda: b"A text file, not a picture.\n" * 20,
    "empty.png": lambda: b"",
    "bitmap.png": lambda: encode(seven(), "BMP"),  # a real image, in a format not accepted
    "truncated.png": lambda: encode(seven(), "PNG")[:-40],
    "bomb-20000x20000.png": lambda: blank_1_bit_png(20_000, 20_000),  # Pillow's error
    "bomb-10000x10000.png": lambda: blank_1_bit_png(10_000, 10_000),  # Pillow's warning
    "huge-6000x6000.png": lambda: blank_1_bit_png(6000, 6000),  # under Pillow's limit
    "over-the-limit.png": lambda: encode(seven(), "PNG") + bytes(UPLOAD_LIMIT_BYTES),
    "animated.gif": animated_gif,
    "sixteen-bit.png": sixteen_bit_png,
    "cmyk.jpg": cmyk_jpeg,
    "palette.png": lambda: encode(seven().convert("P"), "PNG"),
    "palette-transparent.png": transparent_palette_png,
    "one-pixel.png": lambda: encode(Image.new("L", (1, 1), 255), "PNG"),
    "wide-10000x10.png": wide_png,
    "tall-10x10000.png": tall_png,
}


@pytest.fixture(scope="session")
def uploads() -> dict[str, bytes]:
    """Every odd or hostile upload of UPLOADS, by file name (built once: about a second)."""
    return {name: build() for name, build in UPLOADS.items()}


# ---------------------------------------------------------------- recorded figures

SUMMARY_SECTIONS = {"fuzz": "fuzzing", "measured": "measured in the browser"}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what tests recorded with `record_property(key, line)`, a section per key.

    "fuzz": how many inputs a fuzzer tried; "measured": what the app showed in the browser.
    """
    for key, title in SUMMARY_SECTIONS.items():
        lines = [
            f"{report.nodeid}: {value}"
            for reports in terminalreporter.stats.values()
            for report in reports
            if isinstance(report, pytest.TestReport) and report.when == "call"
            for recorded_key, value in report.user_properties
            if recorded_key == key
        ]
        if lines:
            terminalreporter.section(title)
            for line in lines:
                terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, shared by a test module's pages (each page its own session)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()
