"""ViT Digits: draw a digit, see what a from-scratch Vision Transformer predicts and where it looks.

    streamlit run app.py    # models from ./models; set VIT_DIGITS_MODELS_DIR to use another folder

Serving is torch-free: ONNX Runtime, numpy and Pillow only (custom_modules.serving).
"""

import math
import os
import time
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image
from streamlit_drawable_canvas import st_canvas

import explain_view
import grid_tab
from custom_modules.serving.errors import ModelFileError
from custom_modules.serving.explain import Verdict
from custom_modules.serving.manifest import Manifest, ModelInfo, read_manifest
from custom_modules.serving.model import OnnxViT
from custom_modules.serving.overlay import as_uint8, upscale_nearest
from custom_modules.serving.preprocess import ink_box, preprocess_image
from custom_modules.serving.upload import UploadError, read_upload

CANVAS_SIZE = 280
INPUT_DISPLAY_SIZE = 224
UPLOAD_TYPES = ["png", "jpg", "jpeg", "gif"]
PREVIEW_SIDE = 2 * CANVAS_SIZE  # the upload is shown at most this big (sharp on HiDPI screens)
PREVIEW_MAX_ASPECT = 4  # longer thinner uploads are shown padded to this ratio
DRAW, UPLOAD = "Draw", "Upload an image"


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


# --------------------------------------------------------------------------------- sidebar


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


def sidebar(manifest: Manifest) -> tuple[ModelInfo, str, int]:
    """The model, the input kind and the stroke width chosen in the sidebar."""
    with st.sidebar:
        st.header("Settings")
        infos = manifest.models
        name = st.radio(
            "Model", list(infos), captions=[model_caption(i) for i in infos.values()], key="model"
        )
        info = infos[name]
        source = st.radio("Input", [DRAW, UPLOAD], key="source")
        stroke_width = st.slider(
            "Stroke width", 10, 50, 28, key="stroke_width", disabled=source != DRAW
        )
        st.caption(f"ViT: {architecture(info.config)}, 4×4 patches on a 7×7 grid.")
    return info, source, stroke_width


# ----------------------------------------------------------------------------------- input


def clear_canvas() -> None:
    st.session_state.canvas_generation = st.session_state.get("canvas_generation", 0) + 1


def drawn_image(stroke_width: int) -> np.ndarray | None:
    """The canvas as an RGBA array (white ink on black), or None before anything is drawn.

    The canvas key changes only on "Clear": a key that changed with a setting would remount
    the component and drop what was drawn.
    """
    generation = st.session_state.setdefault("canvas_generation", 0)
    result = st_canvas(
        stroke_width=stroke_width,
        stroke_color="#FFFFFF",
        background_color="#000000",
        update_streamlit=True,
        height=CANVAS_SIZE,
        width=CANVAS_SIZE,
        drawing_mode="freedraw",
        return_image_data=True,
        key=f"canvas-{generation}",
    )
    st.button("Clear", on_click=clear_canvas, icon=":material/delete:")
    strokes = len((result.json_data or {}).get("objects", []))
    image = result.image_data
    # the lit pixels of the canvas (RGBA, black background)
    box = None if image is None else ink_box(image[..., :3].max(axis=-1) > 0)
    if box is None:
        st.caption("Draw with the mouse, a finger or a pen.")
        return None
    left, top, right, bottom = box
    st.caption(
        f"{strokes} stroke{'s' * (strokes != 1)} received · "
        f"ink x {left}–{right}, y {top}–{bottom} of {CANVAS_SIZE}×{CANVAS_SIZE}"
    )
    return image


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


def probability_chart(probabilities: np.ndarray) -> alt.Chart:
    table = pd.DataFrame({"digit": [str(d) for d in range(10)], "probability": probabilities})
    predicted = str(int(np.argmax(probabilities)))
    return (
        alt.Chart(table, height=220)
        .mark_bar()
        .encode(
            x=alt.X("digit:N", sort=None, axis=alt.Axis(labelAngle=0), title=None),
            y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            color=alt.condition(
                alt.datum.digit == predicted, alt.value("#2ca25f"), alt.value("#9aa3ad")
            ),
            tooltip=["digit", alt.Tooltip("probability:Q", format=".2%")],
        )
    )


def show_prediction(probabilities: np.ndarray, milliseconds: float, judged: Verdict) -> None:
    """The digit (or, when declined, a plain "not a digit"), a close call named, the chart."""
    if judged.declined:
        explain_view.show_declined(probabilities)
        with st.expander("Probabilities anyway"):
            st.altair_chart(probability_chart(probabilities), width="stretch")
    else:
        digit = judged.digit
        st.metric("Predicted digit", str(digit))
        st.markdown(f"**{probabilities[digit]:.1%}** probability")
        if judged.close_call:
            explain_view.show_close_call(probabilities, judged)
        st.altair_chart(probability_chart(probabilities), width="stretch")
    st.caption(f"Preprocessing + inference took {milliseconds:.1f} ms.")


def show_model_input(pixels: np.ndarray) -> None:
    st.subheader("What the ViT sees")
    st.image(
        upscale_nearest(pixels, INPUT_DISPLAY_SIZE // pixels.shape[0]),
        caption="the 28×28 model input: cropped, scaled to 20 px, centred by mass",
        width=INPUT_DISPLAY_SIZE,
        output_format="PNG",  # exact pixels: JPEG would smear the 8×8 blocks' edges
    )


def predict_tab(model: OnnxViT, info: ModelInfo, source: str, stroke_width: int) -> None:
    """The input, what the model sees, its prediction and its attention maps."""
    input_column, seen_column, result_column = st.columns([1.15, 1, 1.25], gap="large")
    with input_column:
        st.subheader("Your digit")
        image = drawn_image(stroke_width) if source == DRAW else uploaded_image()
    started = time.perf_counter()
    x = None if image is None else preprocess_image(image)
    if x is None:
        if image is not None and source == UPLOAD:
            input_column.warning("No digit found: the image is blank, too faint or too small.")
        seen_column.info("Draw a digit (or upload one) to see the prediction.", icon="✏️")
        return
    prediction = model.predict_with_rollout(x)
    milliseconds = (time.perf_counter() - started) * 1000
    judged = explain_view.judge(prediction, model, info)
    pixels = as_uint8(x)
    with seen_column:
        show_model_input(pixels)
    with result_column:
        show_prediction(prediction.probabilities[0], milliseconds, judged)
    # the prediction is on the page (Streamlit sends it as it comes); then the occlusions
    explain_view.show_maps(pixels, x, model, prediction, judged)


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
    info, source, stroke_width = sidebar(manifest)
    try:
        model = load_model(info)
    except ModelFileError as err:
        st.error(f"The {info.name} model cannot be loaded. {err}")
        st.stop()
    predict, grid, errors = st.tabs(["Draw & predict", "Grid search", "Error analysis"])
    with predict:
        predict_tab(model, info, source, stroke_width)
    with grid:
        grid_tab.grid_search_tab(manifest)
    with errors:
        explain_view.error_analysis_tab(manifest, info.name)


main()
