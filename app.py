"""ViT Digits: draw a digit, see what a from-scratch Vision Transformer predicts and where it looks.

    streamlit run app.py    # models from ./models; set VIT_DIGITS_MODELS_DIR to use another folder

Serving is torch-free: ONNX Runtime, numpy and Pillow only (custom_modules.serving).
"""

import base64
import functools
import io
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

import explain_view
import grid_tab
from components.stroke_canvas import DrawingError, stroke_canvas
from custom_modules.contract import GRID_SIZE, PATCH_OVERLAP_KEY, PATCH_SIZE, patch_kernel_size
from custom_modules.serving.errors import ModelFileError
from custom_modules.serving.explain import Verdict
from custom_modules.serving.manifest import Manifest, ModelInfo, read_manifest
from custom_modules.serving.model import OnnxViT, Prediction
from custom_modules.serving.overlay import as_uint8, upscale_nearest
from custom_modules.serving.preprocess import ink_box, preprocess_image
from custom_modules.serving.upload import UploadError, read_upload

CANVAS_SIZE = 280
INPUT_DISPLAY_SIZE = 224
UPLOAD_TYPES = ["png", "jpg", "jpeg", "gif"]
PREVIEW_SIDE = 2 * CANVAS_SIZE  # the upload is shown at most this big (sharp on HiDPI screens)
PREVIEW_MAX_ASPECT = 4  # longer thinner uploads are shown padded to this ratio
DRAW, UPLOAD = "Draw", "Upload an image"
# After the answer, the script pauses this long before it computes the rest (chart, model input,
# maps): the CPU-bound script thread otherwise holds the GIL that Streamlit's sender needs, and the
# answer reaches the page behind the rest (docs/benchmarks.md: pen lift to answer 0.38x -> 0.22x
# of the app at 3cfcb59).
ANSWER_PAUSE_S = 0.03


def models_dir() -> Path:
    """`models/` beside this file, unless VIT_DIGITS_MODELS_DIR points elsewhere."""
    return Path(os.environ.get("VIT_DIGITS_MODELS_DIR") or Path(__file__).parent / "models")


@st.cache_resource(max_entries=8, show_spinner="Loading the model…")
def _load_model(path: str, mtime_ns: int, temperature: float, decline_below: float) -> OnnxViT:
    return OnnxViT(path, temperature=temperature, decline_below=decline_below)


def load_model(info: ModelInfo) -> OnnxViT:
    """One ONNX Runtime session per file version, shared by every browser tab."""
    try:
        mtime_ns = info.path.stat().st_mtime_ns
    except OSError:
        mtime_ns = 0  # OnnxViT reports the missing file
    # with its calibration and decline rule from the manifest, as OnnxViT.from_info
    return _load_model(str(info.path), mtime_ns, info.temperature, info.decline_below)


# ---------------------------------------------------------------------------- the controls


def model_caption(info: ModelInfo) -> str:
    return (
        f"{info.params:,} params · {info.test_accuracy:.2%} test accuracy · "
        f"{info.onnx_p50_us / 1000:.2f} ms ONNX"
    )


def architecture(config: dict[str, int]) -> str:
    blocks, heads = config["n_layers"], config["num_heads"]
    return (
        f"{blocks} block{'s' * (blocks != 1)} × {heads} head{'s' * (heads != 1)}, "
        f"embedding {config['emb_dim']}"
    )


def patch_layout(config: dict[str, int]) -> str:
    overlap = config.get(PATCH_OVERLAP_KEY, 0)
    kernel = patch_kernel_size(overlap)
    read = f" read through {kernel}×{kernel} kernels" if overlap else ""
    return f"{PATCH_SIZE}×{PATCH_SIZE} patches{read} on a {GRID_SIZE}×{GRID_SIZE} grid"


def model_switch(manifest: Manifest) -> ModelInfo:
    """The model, chosen above the tabs: on a phone the sidebar starts closed."""
    infos = manifest.models
    name = st.segmented_control(
        "Model",
        list(infos),
        default=next(iter(infos)),
        required=True,
        key="model",
        label_visibility="collapsed",
    )
    info = infos[name]
    st.caption(model_caption(info))
    return info


def sidebar(info: ModelInfo) -> tuple[str, int]:
    """The input kind and the stroke width chosen in the sidebar."""
    with st.sidebar:
        st.header("Settings")
        source = st.radio("Input", [DRAW, UPLOAD], key="source")
        stroke_width = st.slider(
            "Stroke width", 10, 50, 28, key="stroke_width", disabled=source != DRAW
        )
        st.caption(f"{info.name}: {architecture(info.config)}, {patch_layout(info.config)}.")
    return source, stroke_width


# ----------------------------------------------------------------------------------- input


def drawn_image(stroke_width: int) -> tuple[np.ndarray | None, str]:
    """The drawing as RGBA (white ink on black), or None before any ink; and what arrived.

    The key stays when the pen width changes, so the drawing stays; Undo and Clear are the
    surface's own (components/stroke_canvas).
    """
    try:
        drawing = stroke_canvas(key="canvas", size=CANVAS_SIZE, stroke_width=stroke_width)
    except DrawingError as err:
        return None, f"The drawing did not arrive intact ({err}); please draw again."
    box = None if drawing is None else ink_box(drawing.grey > 0)
    if box is None:
        return None, "Draw with the mouse, a finger or a pen."
    strokes = len(drawing.strokes)
    left, top, right, bottom = box
    return drawing.rgba, (
        f"{strokes} stroke{'s' * (strokes != 1)} received · "
        f"ink x {left}–{right}, y {top}–{bottom} of {CANVAS_SIZE}×{CANVAS_SIZE}"
    )


def flat_name(name: str) -> str:
    """A user's file name for one line of text: whitespace collapsed, backticks out, short."""
    flat = " ".join(name.split()).replace("`", "'")
    return flat[:57] + "..." if len(flat) > 60 else flat


def upload_limit_mb() -> int:
    """`server.maxUploadSize` (.streamlit/config.toml): Streamlit refuses bigger uploads."""
    return int(st.get_option("server.maxUploadSize"))


def upload_preview(pixels: np.ndarray) -> np.ndarray:
    """The upload shrunk to PREVIEW_SIDE and padded, in its corner's colour, to at most 4:1.

    st.image alone would fail on a 10000×10 image (it scales the height to 0 px) or show a
    10×10000 one 280 000 px tall.
    """
    image = Image.fromarray(pixels)
    scale = min(1.0, PREVIEW_SIDE / max(image.size))
    width, height = (max(1, round(side * scale)) for side in image.size)
    image = image.resize((width, height), Image.Resampling.BOX)
    padded_width = max(width, math.ceil(height / PREVIEW_MAX_ASPECT))
    padded_height = max(height, math.ceil(width / PREVIEW_MAX_ASPECT))
    padded = Image.new(image.mode, (padded_width, padded_height), image.getpixel((0, 0)))
    padded.paste(image, ((padded_width - width) // 2, (padded_height - height) // 2))
    return np.asarray(padded)


def uploaded_image() -> np.ndarray | None:
    """The uploaded image as uint8 pixels, or None; anything unusable gets a one-line error."""
    limit_mb = upload_limit_mb()
    upload = st.file_uploader(
        f"A PNG, JPEG or GIF of one digit, at most {limit_mb} MB", type=UPLOAD_TYPES, key="upload"
    )
    if upload is None:
        return None
    name = f"`{flat_name(upload.name)}`"  # as code: markdown in a file name stays text
    if upload.size > limit_mb * 1024 * 1024:  # Streamlit's own check, repeated for any other path
        st.error(f"Cannot read {name}: {upload.size:,} bytes is over the {limit_mb} MB limit.")
        return None
    try:
        decoded = read_upload(upload.getvalue())
    except UploadError as err:
        st.error(f"Cannot read {name}: {err}")
        return None
    for caveat in decoded.warnings:
        st.warning(f"{name}: {caveat}")
    st.image(
        upload_preview(decoded.pixels),
        caption=f"{flat_name(upload.name)} · {decoded.description}",
        width=CANVAS_SIZE,
    )
    return decoded.pixels


# ------------------------------------------------------------------------------ prediction


@dataclass(frozen=True, eq=False)
class Reading:
    """One input as one model reads it: the model input and the prediction."""

    x: np.ndarray  # (1, 1, 28, 28)
    prediction: Prediction
    milliseconds: float  # preprocessing + inference

    @property
    def probabilities(self) -> np.ndarray:
        return self.prediction.probabilities[0]

    @functools.cached_property
    def pixels(self) -> np.ndarray:
        return as_uint8(self.x)

    @functools.cached_property
    def model_input(self) -> str:
        """The 28×28 input blown up, as a PNG data URL, encoded once."""
        return png_data_url(
            upscale_nearest(self.pixels, INPUT_DISPLAY_SIZE // self.pixels.shape[0])
        )


# cache_resource, not cache_data: a Reading is never changed, so reruns and tabs share one
# without the copy through pickle (which a class defined in the app script cannot take)
@st.cache_resource(max_entries=64, show_spinner=False)
def read(_model: OnnxViT, model_key: str, image: np.ndarray) -> Reading | None:
    """`image` as the model reads it, or None when it holds no digit; once per model and image."""
    started = time.perf_counter()
    x = preprocess_image(image)
    if x is None:
        return None
    prediction = _model.predict_with_rollout(x)
    return Reading(x, prediction, (time.perf_counter() - started) * 1000)


def model_key(info: ModelInfo) -> str:
    """What a reading depends on besides the image: the file and its calibration."""
    return f"{info.path}|{info.temperature}|{info.decline_below}"


def png_data_url(pixels: np.ndarray) -> str:
    """A small PNG that travels inside the page update: no second request for it."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def probability_chart(probabilities: np.ndarray) -> dict:
    """The ten probabilities as a Vega-Lite bar chart, written out: Altair's validation of the
    same chart takes about 80 ms, on every stroke."""
    predicted = str(int(np.argmax(probabilities)))
    values = [{"digit": str(d), "probability": float(p)} for d, p in enumerate(probabilities)]
    return {
        "height": 220,
        "data": {"values": values},
        "mark": {"type": "bar"},
        "encoding": {
            "x": {"field": "digit", "type": "nominal", "sort": None, "title": None}
            | {"axis": {"labelAngle": 0}},
            "y": {"field": "probability", "type": "quantitative"}
            | {"scale": {"domain": [0, 1]}, "axis": {"format": "%"}},
            "color": {
                "condition": {"test": f"datum.digit === '{predicted}'", "value": "#2ca25f"},
                "value": "#9aa3ad",
            },
            "tooltip": [
                {"field": "digit", "type": "nominal"},
                {"field": "probability", "type": "quantitative", "format": ".2%"},
            ],
        },
    }


def show_answer(probabilities: np.ndarray, judged: Verdict) -> None:
    """Right under the input, so a phone shows it without scrolling: the digit and its
    probability (or a plain "not a digit"), and a close call named."""
    if judged.declined:
        explain_view.show_declined(probabilities)
        return
    digit = judged.digit
    with st.container(horizontal=True, vertical_alignment="bottom", gap="medium"):
        st.metric("Predicted digit", str(digit), width="content")
        st.markdown(f"**{probabilities[digit]:.1%}** probability", width="content")
    if judged.close_call:
        explain_view.show_close_call(probabilities, judged)


def show_probabilities(reading: Reading, judged: Verdict) -> None:
    chart = probability_chart(reading.probabilities)
    if judged.declined:
        with st.expander("Probabilities anyway"):
            st.vega_lite_chart(spec=chart, width="stretch")
    else:
        st.subheader("Every digit's probability")
        st.vega_lite_chart(spec=chart, width="stretch")
    st.caption(f"Preprocessing + inference took {reading.milliseconds:.1f} ms.")


def show_model_input(reading: Reading) -> None:
    st.subheader("What the ViT sees")
    st.image(
        reading.model_input,  # a PNG: JPEG would smear the 8×8 blocks' edges
        caption="the 28×28 model input: cropped, scaled to 20 px, centred by mass",
        width=INPUT_DISPLAY_SIZE,
    )


@st.fragment
def predict_tab(model: OnnxViT, info: ModelInfo, source: str, stroke_width: int) -> None:
    """The input, the answer right under it, what the model sees, why it answered so.

    A fragment: a stroke reruns this function, not the page. Each part goes to the browser as
    soon as it is ready: the answer first, the occlusion maps (the slowest) last.
    """
    input_column, seen_column, result_column = st.columns([1.3, 1, 1.2], gap="large")
    with input_column:
        if source == DRAW:
            image, note = drawn_image(stroke_width)
        else:
            image, note = uploaded_image(), None
        answer = st.container(key="prediction")
    reading = None if image is None else read(model, model_key(info), image)
    if reading is None:
        if image is not None and source == UPLOAD:
            answer.warning("No digit found: the image is blank, too faint or too small.")
        answer.info("Draw a digit (or upload one) to see the prediction.", icon="✏️")
    else:
        judged = explain_view.judge(reading.prediction, model, info)
        with answer:
            show_answer(reading.probabilities, judged)
        time.sleep(ANSWER_PAUSE_S)
    if note:
        input_column.caption(note)
    if reading is None:
        return
    with result_column:
        show_probabilities(reading, judged)
    with seen_column:
        show_model_input(reading)
    explain_view.show_maps(reading.pixels, reading.x, model, reading.prediction, judged, info)


# ------------------------------------------------------------------------------------ page


def main() -> None:
    st.set_page_config(page_title="ViT Digits", page_icon="🔢", layout="wide")
    st.title("ViT Digits")
    st.caption("A Vision Transformer trained from scratch on MNIST, served with ONNX Runtime.")
    try:
        manifest = read_manifest(models_dir())
    except ModelFileError as err:
        st.error(f"No models to serve. {err}")
        st.stop()
    info = model_switch(manifest)
    source, stroke_width = sidebar(info)
    try:
        model = load_model(info)
    except ModelFileError as err:
        st.error(f"The {info.name} model cannot be loaded. {err}")
        st.stop()
    # Only the open tab runs. Filled hidden tabs cost every stroke about 50 ms in the browser
    # (benchmarks/browser_latency.py, median 209 -> 162 ms), redrawing charts nobody sees.
    predict, grid, errors = st.tabs(
        ["Draw & predict", "Grid search", "Error analysis"], key="tab", on_change="rerun"
    )
    if predict.open:
        with predict:
            predict_tab(model, info, source, stroke_width)
    if grid.open:
        with grid:
            grid_tab.grid_search_tab(manifest)
    if errors.open:
        with errors:
            explain_view.error_analysis_tab(manifest, info.name)


main()
