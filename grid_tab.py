"""The app's Grid search tab: the grid's runs, the shipped models apart from them, learning curves.

The grid ranks architectures on a short budget; the shipped models are two of its
configurations trained again for far longer. Both appear, each with its own figures: the
shipped ones from `models/manifest.json`, the grid's from its results table. Per-epoch curves
come from `history/<run_id>.json` beside that table (written by every grid run from now on)
and, for a shipped model, from the file its manifest entry names under `"history"`.
"""

import re
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from custom_modules.contract import CONFIG_KEYS, PATCH_OVERLAP_KEY, patch_kernel_size
from custom_modules.grid.history import HistoryError, history_dir, read_histories, read_history
from custom_modules.grid.results_table import FIELDS
from custom_modules.serving.errors import ModelFileError
from custom_modules.serving.manifest import Manifest, load_manifest_json

OTHER = ""  # the "shipped as" cell of a grid run whose configuration was not shipped
GRID_RUN, SHIPPED_CONFIG, SHIPPED = "grid run", "grid run of a shipped model", "shipped model"
FAMILY_COLOURS = ["#e6550d", "#3182bd", "#31a354", "#756bb1"]
OTHER_COLOUR = "#b0b7bf"
GRID_COLUMNS = [
    "run_id",
    "served",
    "params",
    "epochs_run",
    "best_epoch",
    "val_loss",
    "val_accuracy",
    "test_accuracy",
    "test_f1",
    "onnx_p50_us",
    "torch_p50_us",
    "train_seconds",
    "onnx_size_bytes",
]
PERCENT = "%.2f%%"  # of the columns in PERCENT_COLUMNS, kept in percent (0.9936 -> 99.36)
PERCENT_COLUMNS = ("val_accuracy", "test_accuracy")
MICROSECONDS = "%,.0f µs"
THOUSANDS = "%,d"


@st.cache_data(max_entries=4, show_spinner=False)
def _read_grid_results(path: str, mtime_ns: int) -> pd.DataFrame:
    return pd.read_csv(path)


@st.cache_data(max_entries=4, show_spinner=False)
def _read_grid_curves(
    folder: str, run_ids: tuple[str, ...], stamp: tuple
) -> tuple[dict[str, list[dict]], list[str]]:
    return read_histories(Path(folder), list(run_ids))


def _folder_stamp(folder: Path) -> tuple:
    """What changes when a history file is added or rewritten (the cache's key)."""
    if not folder.is_dir():
        return ()
    return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.glob("*.json")))


def family(name: str, int8_of: str | None) -> str:
    """The fp32 model an entry belongs with: "Fast" for "Fast" and "Fast INT8"."""
    return int8_of or name


def shipped_config_rows(results: pd.DataFrame, manifest: Manifest) -> pd.Series:
    """The shipped model's name for each grid run of its configuration, else OTHER.

    The first model listed wins, so "Fast" keeps its row when a "Fast INT8" shares its config.
    """
    served = pd.Series(OTHER, index=results.index, dtype=object)
    keys = list(CONFIG_KEYS)
    if not set(keys) <= set(results.columns):
        return served
    for info in manifest.models.values():
        if info.config.get(PATCH_OVERLAP_KEY):
            continue  # no grid run had overlapping patches
        same = (results[keys] == pd.Series(info.config)[keys]).all(axis=1)
        served[same & (served == OTHER)] = info.name
    return served


def architecture(config: dict[str, int]) -> str:
    overlap = config.get(PATCH_OVERLAP_KEY, 0)
    kernel = patch_kernel_size(overlap)
    kernels = f", {kernel}×{kernel} patch kernels" if overlap else ""
    return (
        f"{config['n_layers']} blocks × {config['num_heads']} heads, "
        f"embedding {config['emb_dim']}, MLP ×{config['mlp_ratio']}{kernels}"
    )


def shipped_table(manifest: Manifest, raw: dict) -> pd.DataFrame:
    """One row per shipped model, with the figures it shipped with."""
    rows = []
    for name, info in manifest.models.items():
        entry = raw.get("models", {}).get(name, {})
        rows.append(
            {
                "model": name,
                "architecture": architecture(info.config),
                "params": info.params,
                "val_accuracy": entry.get("val_accuracy"),
                "test_accuracy": info.test_accuracy,
                "test_f1": info.test_f1,
                "onnx_p50_us": info.onnx_p50_us,
                "torch_p50_us": info.torch_p50_us,
                "size_bytes": info.size_bytes,
            }
        )
    return in_percent(pd.DataFrame(rows))


def in_percent(table: pd.DataFrame) -> pd.DataFrame:
    """The accuracy columns as percentages, for the tables (fractions stay in the chart)."""
    return table.assign(**{c: table[c] * 100 for c in PERCENT_COLUMNS if c in table.columns})


def chart_points(results: pd.DataFrame, manifest: Manifest) -> pd.DataFrame:
    """Every grid run and every shipped model as one point: accuracy against latency."""
    grid = pd.DataFrame(
        {
            "label": results["run_id"],
            "kind": [GRID_RUN if s == OTHER else SHIPPED_CONFIG for s in results["served"]],
            "family": [s or "other" for s in results["served"]],
            "params": results["params"],
            "test_accuracy": results["test_accuracy"],
            "onnx_p50_us": results["onnx_p50_us"],
        }
    )
    shipped = pd.DataFrame(
        [
            {
                "label": name,
                "kind": SHIPPED,
                "family": family(name, info.int8_of),
                "params": info.params,
                "test_accuracy": info.test_accuracy,
                "onnx_p50_us": info.onnx_p50_us,
            }
            for name, info in manifest.models.items()
        ]
    )
    return pd.concat([grid, shipped], ignore_index=True)


def accuracy_latency_chart(points: pd.DataFrame) -> alt.LayerChart:
    families = [f for f in dict.fromkeys(points["family"]) if f != "other"]
    colours = alt.Scale(
        domain=[*families, "other"],
        range=[*FAMILY_COLOURS[: len(families)], OTHER_COLOUR][: len(families) + 1],
    )
    base = alt.Chart(points).encode(
        x=alt.X(
            "onnx_p50_us:Q",
            title="ONNX Runtime latency, p50 (µs, batch 1, log scale)",
            scale=alt.Scale(type="log", nice=False, padding=20),
        ),
        y=alt.Y("test_accuracy:Q", title="test accuracy", scale=alt.Scale(zero=False, padding=12)),
        color=alt.Color("family:N", title="model", scale=colours),
        tooltip=[
            alt.Tooltip("label:N", title="run or model"),
            alt.Tooltip("kind:N", title="what"),
            alt.Tooltip("params:Q", title="parameters", format=","),
            alt.Tooltip("test_accuracy:Q", title="test accuracy", format=".2%"),
            alt.Tooltip("onnx_p50_us:Q", title="ONNX p50 (µs)", format=".0f"),
        ],
    )
    shapes = alt.Scale(
        domain=[GRID_RUN, SHIPPED_CONFIG, SHIPPED], range=["circle", "circle", "diamond"]
    )
    sizes = alt.Scale(domain=[GRID_RUN, SHIPPED_CONFIG, SHIPPED], range=[70, 150, 320])
    points_layer = base.mark_point(filled=True, opacity=0.9, stroke="#222", strokeWidth=0.6).encode(
        shape=alt.Shape("kind:N", title="point", scale=shapes, legend=alt.Legend(labelLimit=240)),
        size=alt.Size("kind:N", title="point", scale=sizes),
    )
    shipped = base.transform_filter(alt.datum.kind == SHIPPED)
    fp32_labels = shipped.transform_filter(alt.datum.label == alt.datum.family).mark_text(
        align="left", dx=9, dy=-9, fontWeight="bold"
    )
    variant_labels = shipped.transform_filter(alt.datum.label != alt.datum.family).mark_text(
        align="left", dx=9, dy=10
    )
    labels = [layer.encode(text="label:N") for layer in (fp32_labels, variant_labels)]
    return alt.layer(points_layer, *labels).properties(height=400)


def grid_column_config(max_epochs: int) -> dict:
    cc = st.column_config
    return {
        "run_id": cc.TextColumn("run", help="vit-e<embedding>-h<heads>-l<blocks>-m<MLP ratio>"),
        "served": cc.TextColumn("shipped as", help="the shipped model of this configuration"),
        "params": cc.NumberColumn("parameters", format=THOUSANDS),
        "epochs_run": cc.NumberColumn("epochs", help=f"at most {max_epochs} in this grid"),
        "best_epoch": cc.NumberColumn("best epoch", help="lowest validation loss"),
        "val_loss": cc.NumberColumn("val loss", format="%.3f"),
        "val_accuracy": cc.NumberColumn("val accuracy", format=PERCENT),
        "test_accuracy": cc.NumberColumn("test accuracy", format=PERCENT),
        "test_f1": cc.NumberColumn("test F1", format="%.4f", help="macro F1 on the test set"),
        "onnx_p50_us": cc.NumberColumn("ONNX p50", format=MICROSECONDS),
        "torch_p50_us": cc.NumberColumn("PyTorch p50", format=MICROSECONDS),
        "train_seconds": cc.NumberColumn("training", format="duration"),
        "onnx_size_bytes": cc.NumberColumn("ONNX size", format="bytes"),
    }


def shipped_column_config() -> dict:
    cc = st.column_config
    return {
        "model": cc.TextColumn("model"),
        "architecture": cc.TextColumn("architecture"),
        "params": cc.NumberColumn("parameters", format=THOUSANDS),
        "val_accuracy": cc.NumberColumn("val accuracy", format=PERCENT),
        "test_accuracy": cc.NumberColumn("test accuracy", format=PERCENT),
        "test_f1": cc.NumberColumn("test F1", format="%.4f"),
        "onnx_p50_us": cc.NumberColumn("ONNX p50", format=MICROSECONDS),
        "torch_p50_us": cc.NumberColumn("PyTorch p50", format=MICROSECONDS),
        "size_bytes": cc.NumberColumn("ONNX size", format="bytes"),
    }


CURVE_KEY = re.compile(r"val_(?:(?P<part>\w+?)_)?(?P<metric>loss|accuracy)")
METRIC_TITLES = {"loss": "validation loss", "accuracy": "validation accuracy"}


def curves_frame(curves: dict[str, list[dict]]) -> pd.DataFrame:
    """Long form for Altair: one row per run, epoch and metric (validation loss, accuracy).

    A record may hold several validation sets (`val_clean_loss`, `val_styled_loss`, ...): each
    is a line of its own, "run (clean)".
    """
    rows = []
    for run, records in curves.items():
        for record in records:
            for key, value in record.items():
                match = CURVE_KEY.fullmatch(key)
                if match is None or isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                part = match["part"]
                rows.append(
                    {
                        "run": f"{run} ({part})" if part else run,
                        "epoch": record.get("epoch"),
                        "metric": METRIC_TITLES[match["metric"]],
                        "value": value,
                    }
                )
    return pd.DataFrame(rows, columns=["run", "epoch", "metric", "value"])


def curves_chart(frame: pd.DataFrame) -> alt.HConcatChart:
    """Validation loss and accuracy per epoch, one line per run, side by side."""

    def panel(metric: str, axis_format: str) -> alt.Chart:
        return (
            alt.Chart(frame[frame["metric"] == metric], height=260, title=metric)
            .mark_line(point=True)
            .encode(
                x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)),
                y=alt.Y(
                    "value:Q",
                    title=None,
                    scale=alt.Scale(zero=False),
                    axis=alt.Axis(format=axis_format),
                ),
                color=alt.Color("run:N", title="run"),
                tooltip=["run", "epoch", alt.Tooltip("value:Q", format=".4f")],
            )
        )

    return alt.hconcat(panel("validation loss", ".2f"), panel("validation accuracy", ".1%"))


def shipped_curves(manifest: Manifest, raw: dict) -> tuple[dict[str, list[dict]], list[str]]:
    """The shipped models' own training curves: each entry's `"history"`, the per-epoch records
    of the training step that made it (inline, or the name of a history file beside it)."""
    curves, problems = {}, []
    for name in manifest.models:
        history = raw.get("models", {}).get(name, {}).get("history")
        if isinstance(history, str):
            try:
                history = read_history(manifest.path.parent / history)["epochs"]
            except HistoryError as err:
                problems.append(str(err))
                continue
        if isinstance(history, list) and all(isinstance(r, dict) for r in history) and history:
            curves[name] = history
        elif history is not None:
            problems.append(f"{manifest.path}: model '{name}': 'history' is not a list of epochs")
    return curves, problems


def show_curves(results: pd.DataFrame, manifest: Manifest, raw: dict, table: Path) -> None:
    st.subheader("Learning curves")
    folder = history_dir(table)
    run_ids = tuple(results["run_id"])
    grid_curves, problems = _read_grid_curves(str(folder), run_ids, _folder_stamp(folder))
    own_curves, own_problems = shipped_curves(manifest, raw)
    for problem in problems + own_problems:
        st.warning(problem)
    if grid_curves:
        shipped_rows = list(results.loc[results["served"] != OTHER, "run_id"])
        default = [r for r in [*shipped_rows, *run_ids[:1]] if r in grid_curves][:4]
        chosen = st.multiselect(
            "Grid runs",
            list(grid_curves),
            default=list(dict.fromkeys(default)),
            key="grid_curves",
            help="validation loss and accuracy after every epoch of each run",
        )
        if chosen:
            st.altair_chart(curves_chart(curves_frame({r: grid_curves[r] for r in chosen})))
    else:
        st.info(
            f"No learning curves for these grid runs: `{table.name}` was made before the grid "
            "recorded them. Every grid run now writes `history/<run_id>.json` beside its "
            f"`results.csv`; put that `history/` folder beside `{table.name}` to see them here."
        )
    if own_curves:
        st.caption(
            "The shipped models' own training, epoch by epoch: the last training step that made "
            "each (its `command` in the manifest)."
        )
        st.altair_chart(curves_chart(curves_frame(own_curves)))
    else:
        st.info(
            "The shipped models' own training curves are not available: they were trained "
            "before the curves were kept (a manifest entry's `history` holds them)."
        )


def grid_search_tab(manifest: Manifest) -> None:
    path = manifest.grid_results
    if path is None or not path.is_file():
        st.info(f"No grid results yet: {path or 'the manifest names no grid_results file'}.")
        return
    try:
        results = _read_grid_results(str(path), path.stat().st_mtime_ns)
        raw = load_manifest_json(manifest.path.parent)
    except (OSError, ValueError, pd.errors.ParserError, ModelFileError) as err:
        st.error(f"Cannot read {path}: {' '.join(str(err).split())}")
        return
    results = results[[field for field in FIELDS if field in results.columns]].copy()
    results["served"] = shipped_config_rows(results, manifest)
    if "val_accuracy" in results.columns:
        results = results.sort_values("val_accuracy", ascending=False, kind="stable")
    max_epochs = int(results["epochs_run"].max()) if "epochs_run" in results.columns else 0
    budget = f"for at most {max_epochs} epochs " if max_epochs > 0 else ""
    st.caption(
        f"{len(results)} configurations from {path.name}, each trained {budget}only to rank "
        "them. The shipped models (◆) are two of these "
        "configurations trained again for far longer, so their figures are higher than their "
        "own grid runs (●, coloured)."
    )
    if {"onnx_p50_us", "test_accuracy", "params", "run_id"} <= set(results.columns):
        st.altair_chart(accuracy_latency_chart(chart_points(results, manifest)), width="stretch")
    st.subheader("Shipped models")
    st.dataframe(
        shipped_table(manifest, raw),
        hide_index=True,
        width="stretch",
        column_config=shipped_column_config(),
    )
    st.subheader("Grid runs")
    columns = [c for c in GRID_COLUMNS if c in results.columns]
    st.dataframe(
        in_percent(results[columns]),
        hide_index=True,
        width="stretch",
        column_config=grid_column_config(max_epochs),
    )
    if "run_id" in results.columns:
        show_curves(results, manifest, raw, path)
