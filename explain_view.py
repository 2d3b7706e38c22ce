"""The app's explanations: the verdict (a digit, "not sure", "not a digit"), the maps that show
cause, and the error-analysis tab. app.py calls these; torch-free like the rest of the app.

The map benchmarks/faithfulness.py measured most faithful for the model comes first (rollout or
occlusion, from the manifest), then the other, then the raw per-head attention. Occlusion runs
on every stroke only for models fast enough for it (serving/explain.occlusion_by_default).
"""

import contextlib
import time

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from custom_modules.serving.error_analysis import (
    ErrorAnalysis,
    artifact_path,
    file_sha256,
    load_error_analysis,
)
from custom_modules.serving.explain import (
    OCCLUSION_BUDGET_MACS,
    Explanation,
    Verdict,
    explain,
    inked_patches,
    is_declined,
    occlusion_by_default,
    verdict,
)
from custom_modules.serving.manifest import Manifest, ModelInfo
from custom_modules.serving.model import OnnxViT, Prediction
from custom_modules.serving.overlay import attention_overlay, signed_overlay

MAP_SIZE = 168
HEAD_SIZE = 112
DIGIT_MAP_SIZE = 84
GALLERY_SIZE = 84
GALLERY_SHOWN = 60
ROLLOUT_CAPTION = "attention rollout, all blocks"


def most_faithful(info: ModelInfo) -> str:
    """The map benchmarks/faithfulness.py measured most faithful for this model (written into
    the manifest by its --write-manifest); rollout for a model it has not measured."""
    return info.extra.get("faithfulness", {}).get("most_faithful", "rollout")


FAITHFUL_NOTE = " (most faithful here, see docs/explanations.md)"
HOW_TO_READ = {
    "rollout": "**Rollout**{note}: where the CLS token draws from through all blocks; the same "
    "map whatever digit you ask about.",
    "occlusion": "**Occlusion**{note}: blank one 4×4 patch, run the model again. Green patches "
    "lower p({digit}) when blanked (the ink that makes it a {digit}), magenta ones raise it.",
    "contrast": "**Why {a} and not {b}**: green patches speak for {a}, magenta ones for {b} "
    "(how p({a}) − p({b}) falls when the patch is blanked).",
    "heads": "**Raw attention per head**: where each head of each block looked (each scaled to "
    "its own maximum). Where a head looks is not what made the model decide.",
}


# ------------------------------------------------------------------------------ verdict


@st.cache_data(max_entries=16, show_spinner=False)
def _load_analysis(path: str, mtime_ns: int) -> ErrorAnalysis | None:
    return load_error_analysis(path)


@st.cache_data(max_entries=16, show_spinner=False)
def _model_sha256(path: str, mtime_ns: int) -> str:
    return file_sha256(path)


def error_analysis_of(info: ModelInfo) -> ErrorAnalysis | None:
    """The model's error-analysis file beside its ONNX file, or None."""
    path = artifact_path(info.path.parent, info.name)
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError:
        return None
    return _load_analysis(str(path), mtime_ns)


def is_stale(analysis: ErrorAnalysis, info: ModelInfo) -> bool:
    """Was the analysis made with another version of the model's ONNX file?"""
    try:
        mtime_ns = info.path.stat().st_mtime_ns
    except OSError:
        return True
    return analysis.model_sha256 != _model_sha256(str(info.path), mtime_ns)


def judge(prediction: Prediction, model: OnnxViT, info: ModelInfo) -> Verdict:
    """Declined, close call or a clear answer (serving/explain.py decides declining)."""
    analysis = error_analysis_of(info)
    fresh = analysis is not None and not is_stale(analysis, info)
    threshold = analysis.decline_threshold if fresh else float("nan")
    declined = is_declined(prediction, model, threshold)
    return verdict(prediction.probabilities[0], declined)


def show_declined(probabilities: np.ndarray) -> None:
    """The plain message for an input the model declines: no big digit."""
    st.warning(
        "**This does not look like a digit** to the model, so it gives no answer. "
        "Try drawing a single digit, large and centred.",
        icon=":material/help:",
    )
    best = int(np.argmax(probabilities))
    st.caption(f"Its best guess would be {best}, at {probabilities[best]:.1%}.")


def show_close_call(probabilities: np.ndarray, judged: Verdict) -> None:
    a, b = judged.digit, judged.runner_up
    st.info(
        f"**Not sure: {a} or {b}.** The two are close: {a} at {probabilities[a]:.0%}, "
        f"{b} at {probabilities[b]:.0%}.",
        icon=":material/balance:",
    )


# -------------------------------------------------------------------------------- maps


def show_maps(
    pixels: np.ndarray,
    x: np.ndarray,
    model: OnnxViT,
    prediction: Prediction,
    judged: Verdict,
    info: ModelInfo,
) -> None:
    """Every map, most faithful first; in an expander when the input was declined.

    The occlusions run here, after the prediction is on the page: the input's inked patches,
    each blanked, in one batch; for a model too slow for that on every stroke, only when the
    user turns them on."""
    place = (
        st.expander("The maps anyway (for a drawing the model declined)")
        if judged.declined
        else contextlib.nullcontext()
    )
    with place:
        _maps(pixels, x, model, prediction, judged, info)


def _occlusion(x: np.ndarray, model: OnnxViT, prediction: Prediction, info: ModelInfo):
    """The occlusions and a line on their cost, or None and a line on how to turn them on."""
    patches = len(inked_patches(x))
    if not st.toggle(
        "Occlusion maps",
        value=occlusion_by_default(info.params),
        key=f"occlusion-{info.name}",
        help="Runs the model once more per inked patch. On by default for models small enough "
        f"that 49 runs take at most {OCCLUSION_BUDGET_MACS / 1e6:.0f} M multiply-adds.",
    ):
        return None, (
            f"Occlusion is off: it would run {info.name} {patches} more times on every stroke "
            f"(about {patches * info.onnx_p50_us / 1000:.0f} ms at its measured speed). "
            "Turn on **Occlusion maps** to see which patches made the answer."
        )
    started = time.perf_counter()
    explanation = explain(model, x, prediction)
    milliseconds = (time.perf_counter() - started) * 1000
    return explanation, (
        f"Occlusion maps: {patches} inked patches blanked one at a time, run as one batch in "
        f"{milliseconds:.1f} ms."
    )


def _maps(
    pixels: np.ndarray,
    x: np.ndarray,
    model: OnnxViT,
    prediction: Prediction,
    judged: Verdict,
    info: ModelInfo,
) -> None:
    digit = judged.digit
    st.subheader(f"Why its best guess is {digit}" if judged.declined else f"Why {digit}?")
    explanation, timing = _occlusion(x, model, prediction, info)
    st.caption(timing)
    first = most_faithful(info) if explanation is not None else "rollout"
    columns = st.columns(3)
    rollout_column, occlusion_column = columns[:2] if first == "rollout" else columns[1::-1]
    note = {first: FAITHFUL_NOTE} if explanation is not None else {}
    with rollout_column:
        st.image(
            attention_overlay(pixels, prediction.rollout[0], MAP_SIZE),
            caption=ROLLOUT_CAPTION,
            width=MAP_SIZE,
        )
        st.caption(HOW_TO_READ["rollout"].format(note=note.get("rollout", "")))
    if explanation is not None:
        _occlusion_maps(pixels, explanation, judged, occlusion_column, columns[2], note)
    _head_maps(pixels, prediction)


def _occlusion_maps(
    pixels: np.ndarray,
    explanation: Explanation,
    judged: Verdict,
    occlusion_column,
    contrast_column,
    note: dict[str, str],
) -> None:
    digit, runner_up = judged.digit, judged.runner_up
    with occlusion_column:
        occlusion = explanation.occlusion(digit)
        st.image(
            signed_overlay(pixels, occlusion, MAP_SIZE),
            caption=f"occlusion, p({digit}): largest drop {occlusion.max():.1%}",
            width=MAP_SIZE,
        )
        st.caption(HOW_TO_READ["occlusion"].format(digit=digit, note=note.get("occlusion", "")))
    with contrast_column:
        if judged.contrast_shown:
            contrast = explanation.contrast(digit, runner_up)
            st.image(
                signed_overlay(pixels, contrast, MAP_SIZE),
                caption=f"why {digit} and not {runner_up}",
                width=MAP_SIZE,
            )
            st.caption(HOW_TO_READ["contrast"].format(a=digit, b=runner_up))
        else:
            st.caption(
                f'No "why {digit} and not …" map: the runner-up, {runner_up}, has only '
                f"{explanation.probabilities[runner_up]:.1%}."
            )
    with st.expander("Occlusion for every digit"):
        st.caption(
            "One map per digit: green patches, blanked, lower that digit's probability; "
            "magenta ones raise it. Each map is scaled to its own largest change."
        )
        with st.container(horizontal=True, gap="small"):
            for other in range(len(explanation.probabilities)):
                st.image(
                    signed_overlay(pixels, explanation.occlusion(other), DIGIT_MAP_SIZE),
                    caption=f"p({other}) {explanation.probabilities[other]:.0%}",
                    width=DIGIT_MAP_SIZE,
                )


def _head_maps(pixels: np.ndarray, prediction: Prediction) -> None:
    st.markdown(HOW_TO_READ["heads"])
    for block, attention in enumerate(prediction.cls_attentions):
        with st.container(horizontal=True, gap="small"):
            for head, head_map in enumerate(attention[0]):
                st.image(
                    attention_overlay(pixels, head_map, HEAD_SIZE),
                    caption=f"block {block}, head {head}",
                    width=HEAD_SIZE,
                )


# ---------------------------------------------------------------------- error analysis


def confusion_chart(confusion: np.ndarray) -> alt.Chart:
    """Counts per (true, predicted) cell; the colour scale on the mistakes only."""
    true, predicted = np.meshgrid(range(10), range(10), indexing="ij")
    table = pd.DataFrame(
        {
            "true": true.ravel().astype(str),
            "predicted": predicted.ravel().astype(str),
            "count": confusion.ravel(),
        }
    )
    table["mistakes"] = np.where(table["true"] == table["predicted"], 0, table["count"])
    dark = table["mistakes"] > 0.6 * max(1, table["mistakes"].max())
    table["ink"] = np.where(table["true"] == table["predicted"], "#1a7f37", "#333")
    table["ink"] = np.where(dark, "#fff", table["ink"])
    base = alt.Chart(table, height=340).encode(
        x=alt.X("predicted:N", title="predicted", axis=alt.Axis(labelAngle=0, orient="top")),
        y=alt.Y("true:N", title="true digit"),
    )
    cells = base.mark_rect(stroke="#ddd").encode(
        color=alt.Color("mistakes:Q", scale=alt.Scale(scheme="oranges"), title="mistakes"),
        tooltip=["true", "predicted", "count"],
    )
    counts = base.mark_text(fontSize=11).encode(
        text=alt.Text("count:Q"),
        color=alt.Color("ink:N", scale=None),
    )
    return (cells + counts).resolve_scale(color="independent")


def reliability_chart(rows: list[dict[str, float]]) -> alt.Chart:
    """Accuracy against confidence per bin (bars), and the diagonal a calibrated model follows."""
    table = pd.DataFrame(rows)
    table["digits"] = table["count"].astype(int)
    table["zero"] = 0.0
    bars = (
        alt.Chart(table, height=340)
        .mark_bar(opacity=0.8, color="#3182bd")
        .encode(
            x=alt.X("low:Q", title="confidence (15 bins)", scale=alt.Scale(domain=[0, 1])),
            x2="high:Q",
            y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
            y2="zero:Q",
            tooltip=[
                alt.Tooltip("low:Q", format=".2f"),
                alt.Tooltip("high:Q", format=".2f"),
                "digits",
                alt.Tooltip("confidence:Q", format=".3f"),
                alt.Tooltip("accuracy:Q", format=".3f"),
            ],
        )
    )
    diagonal = (
        alt.Chart(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]}))
        .mark_line(color="#888", strokeDash=[4, 4])
        .encode(x="x:Q", y="y:Q")
    )
    return bars + diagonal


def error_analysis_tab(manifest: Manifest, chosen: str) -> None:
    """Confusion matrix, reliability diagram and mistakes of one shipped model."""
    analyses = {
        name: analysis
        for name, info in manifest.models.items()
        if (analysis := error_analysis_of(info)) is not None
    }
    if not analyses:
        st.info(
            "No error analysis for these models yet. Make it with "
            "`vit-digits-error-analysis --data-dir ../shared/data/mnist`."
        )
        return
    names = list(analyses)
    name = st.selectbox(
        "Model", names, index=names.index(chosen) if chosen in names else 0, key="analysis_model"
    )
    analysis = analyses[name]
    if is_stale(analysis, manifest.models[name]):
        st.warning(
            f"This analysis was made with an earlier version of {name}'s model file; remake it "
            "with `vit-digits-error-analysis --data-dir ../shared/data/mnist`.",
            icon=":material/history:",
        )
    total = int(analysis.confusion.sum())
    wrong = total - int(np.trace(analysis.confusion))
    st.caption(
        f"{name} on the MNIST test set: {total:,} digits, {analysis.accuracy:.2%} right, "
        f"{wrong} wrong. Made when the model shipped (`vit-digits-error-analysis`)."
    )
    confusion_column, reliability_column = st.columns(2, gap="large")
    with confusion_column:
        st.markdown("**Confusion matrix**: rows the true digit, columns the prediction")
        st.altair_chart(confusion_chart(analysis.confusion), width="stretch")
    with reliability_column:
        st.markdown(
            f"**Reliability**: accuracy per confidence bin; a calibrated model's bars reach the "
            f"diagonal. ECE {analysis.ece:.2%}."
        )
        st.altair_chart(reliability_chart(analysis.reliability), width="stretch")
    show_mistakes(analysis)


def show_mistakes(analysis: ErrorAnalysis) -> None:
    st.markdown(
        "**The test digits it gets wrong**, most confident first: true digit → prediction · "
        "confidence, with the occlusion map of the prediction (green: the patches that made it "
        "say so; magenta: those against)."
    )
    labels = ["all", *map(str, range(10))]
    which = st.segmented_control("True digit", labels, default="all", key="analysis_digit")
    keep = np.arange(len(analysis.wrong_index))
    if which not in (None, "all"):
        keep = keep[analysis.wrong_labels == int(which)]
    if not len(keep):
        st.caption("No mistakes for that digit.")
        return
    if len(keep) > GALLERY_SHOWN:
        st.caption(f"The {GALLERY_SHOWN} most confident of {len(keep)}.")
    with st.container(horizontal=True, gap="small"):
        for slot in keep[:GALLERY_SHOWN]:
            st.image(
                signed_overlay(
                    analysis.wrong_images[slot], analysis.wrong_occlusion[slot], GALLERY_SIZE
                ),
                caption=(
                    f"{analysis.wrong_labels[slot]} → {analysis.wrong_predicted[slot]} · "
                    f"{analysis.wrong_confidence[slot]:.0%}"
                ),
                width=GALLERY_SIZE,
            )
