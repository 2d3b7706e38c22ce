"""How faithful is each map: deletion and insertion curves (Petsiuk et al., 2018) on 7x7 patches.

For each digit and each map, the 49 patches are ranked by the map (most salient first), then
- deletion: blanked (set to 0, the background) one after the other, k = 0..49;
- insertion: revealed one after the other on a blank input, k = 0..49;
and the probability of the digit the model predicts for the whole input is read at every step.
The area under that curve (x scaled to [0, 1]) is the score: a faithful map puts the patches
that matter first, so its deletion area is LOW and its insertion area HIGH.

Maps: the CLS token's raw attention (mean over heads, last block), attention rollout, occlusion
(the drop in the predicted digit's probability when a patch is blanked, as the app shows it),
and a random order as the floor (ties in every map are broken at random too). Digits: MNIST test
digits as they are, and the same kind of digits redrawn on the app's 280x280 canvas at any size
and place (benchmarks/canvas_digits.py) and preprocessed as the app does.

    python benchmarks/faithfulness.py --data-dir ../shared/data/mnist
    python benchmarks/faithfulness.py --data-dir ../shared/data/mnist --models Fast --n 100
    python benchmarks/faithfulness.py --data-dir ../shared/data/mnist --write-manifest

With --write-manifest each measured model's manifest entry (and its INT8 variant's) gets the
scores and `most_faithful`: the map, of rollout and occlusion, with the larger insertion area
minus deletion area summed over both sets. The app shows that map first.

Note: occlusion is scored with the same operation (blanking) that deletion uses, which favours
it on deletion; insertion starts from the other end (a blank input) and is the fairer test.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from custom_modules.contract import PIXEL_MAX
from custom_modules.serving.explain import (
    curve_area,
    deletion_inputs,
    explain,
    insertion_inputs,
    patch_ranking,
)
from custom_modules.serving.manifest import load_manifest_json, read_manifest, write_manifest
from custom_modules.serving.model import OnnxViT
from custom_modules.serving.preprocess import preprocess_image
from custom_modules.training.mnist_data import DEFAULT_DATA_DIR, load_mnist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from canvas_digits import redraw_on_canvas  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
MAPS = ("raw CLS attention", "rollout", "occlusion", "random")
SHOWN_FIRST = ("rollout", "occlusion")  # the maps the app can put first


def most_faithful(table: dict[str, dict[str, tuple[float, float]]]) -> str:
    """Of SHOWN_FIRST, the map with the largest insertion - deletion area over every set."""
    return max(
        SHOWN_FIRST,
        key=lambda name: sum(ins - dele for dele, ins in (t[name] for t in table.values())),
    )


def saliency_maps(model: OnnxViT, x: np.ndarray) -> tuple[int, dict[str, np.ndarray | None]]:
    """The predicted digit and each map of MAPS (None for random) for one input."""
    explanation = explain(model, x)
    prediction = explanation.prediction
    maps = {
        "raw CLS attention": prediction.cls_attentions[-1][0].mean(axis=0),
        "rollout": prediction.rollout[0],
        "occlusion": explanation.occlusion(),
        "random": None,
    }
    return int(explanation.ranked[0]), maps


def curves(
    model: OnnxViT, x: np.ndarray, rng: np.random.Generator
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per map: the deletion and the insertion curve (50 probabilities each) of one input."""
    digit, maps = saliency_maps(model, x)
    orders = {
        name: patch_ranking(np.zeros(49) if saliency is None else saliency, rng)
        for name, saliency in maps.items()
    }
    batch = np.concatenate(
        [f(x, order) for order in orders.values() for f in (deletion_inputs, insertion_inputs)]
    )
    probabilities = model.predict(batch)[0][:, digit].reshape(len(orders), 2, -1)
    return {name: (p[0], p[1]) for name, p in zip(orders, probabilities, strict=True)}


def scores(model: OnnxViT, inputs: list[np.ndarray], seed: int) -> dict[str, tuple[float, float]]:
    """Per map: mean deletion area and mean insertion area over `inputs`."""
    rng = np.random.default_rng(seed)
    areas = {name: ([], []) for name in MAPS}
    for x in inputs:
        for name, (deletion, insertion) in curves(model, x, rng).items():
            areas[name][0].append(curve_area(deletion))
            areas[name][1].append(curve_area(insertion))
    return {name: (float(np.mean(d)), float(np.mean(i))) for name, (d, i) in areas.items()}


def digit_sets(data_dir: Path, n: int, seed: int) -> dict[str, list[np.ndarray]]:
    """`n` MNIST test digits as they are, and `n` others redrawn on the canvas, as model inputs."""
    mnist = load_mnist(data_dir)
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(mnist.test_labels), 2 * n, replace=False)
    as_is = [(d.astype(np.float32) / PIXEL_MAX)[None, None] for d in mnist.test_images[picked[:n]]]
    drawn = [preprocess_image(redraw_on_canvas(d, rng)) for d in mnist.test_images[picked[n:]]]
    return {"MNIST test": as_is, "drawn on canvas": [x for x in drawn if x is not None]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--models", nargs="*", help="model names (default: every fp32 model)")
    parser.add_argument("--n", type=int, default=300, help="digits per set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--write-manifest",
        action="store_true",
        help="record the scores and the most faithful map in the models' manifest entries",
    )
    args = parser.parse_args()

    sets = digit_sets(args.data_dir, args.n, args.seed)
    infos = read_manifest(args.models_dir).models
    names = args.models or [name for name, info in infos.items() if info.int8_of is None]
    print(
        f"deletion / insertion area under the predicted digit's probability curve, 49 patches; "
        f"{args.n} digits per set (seed {args.seed}); deletion: lower is more faithful, "
        f"insertion: higher"
    )
    header = f"| {'model':<6} | {'digits':<16} | {'map':<17} | deletion ↓ | insertion ↑ |"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    measured = {}
    for name in names:
        model = OnnxViT.from_info(infos[name])  # calibrated, as the app serves it
        for set_name, inputs in sets.items():
            started = time.perf_counter()
            table = measured.setdefault(name, {})[set_name] = scores(model, inputs, args.seed)
            for map_name, (deletion, insertion) in table.items():
                print(
                    f"| {name:<6} | {set_name:<16} | {map_name:<17} | {deletion:>10.3f} | "
                    f"{insertion:>11.3f} |"
                )
            seconds = time.perf_counter() - started
            print(f"({name}, {set_name}: {len(inputs)} digits, {seconds:.0f} s)", file=sys.stderr)
        print(
            f"{name}: most faithful of {' and '.join(SHOWN_FIRST)}: {most_faithful(measured[name])}"
        )
    if args.write_manifest:
        write_faithfulness(args, measured)
    return 0


def write_faithfulness(args: argparse.Namespace, measured: dict[str, dict]) -> None:
    """Each measured model's scores and most faithful map into its manifest entry; an INT8
    variant gets its model's (it was not measured)."""
    manifest = load_manifest_json(args.models_dir)
    for name, table in measured.items():
        record = {
            "n": args.n,
            "seed": args.seed,
            "deletion_insertion": {
                set_name: {m: [round(d, 4), round(i, 4)] for m, (d, i) in rows.items()}
                for set_name, rows in table.items()
            },
            "most_faithful": most_faithful(table),
        }
        for entry_name, entry in manifest["models"].items():
            if entry_name == name:
                entry["faithfulness"] = record
            elif entry.get("int8_of") == name:
                entry["faithfulness"] = {"most_faithful": record["most_faithful"], "of": name}
    write_manifest(args.models_dir, manifest)
    print(f"recorded in {args.models_dir / 'manifest.json'}")


if __name__ == "__main__":
    sys.exit(main())
