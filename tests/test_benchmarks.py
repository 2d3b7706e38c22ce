"""The benchmark scripts run end to end and print their tables (few calls: no figure is checked)."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from custom_modules.serving.manifest import read_manifest
from tests.test_pipeline import synthetic_mnist, write_mnist_folder

ROOT = Path(__file__).resolve().parents[1]


def benchmark(name: str):
    """benchmarks/<name>.py as a module (benchmarks/ is a folder of scripts)."""
    path = ROOT / "benchmarks" / f"{name}.py"
    if str(path.parent) not in sys.path:  # its sibling modules, as when it runs as a script
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


most_faithful = benchmark("faithfulness").most_faithful


def run_script(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "models" / "manifest.json").exists(), reason="no shipped models")
def test_the_inference_benchmark_prints_a_table_per_shipped_model() -> None:
    quick = ["--calls", "20", "--warmup", "2", "--rounds", "2", "--throughput-batch", "4"]
    out = run_script("benchmarks/inference.py", *quick)
    for name in ("Fast", "Large"):
        assert f"\n{name}: " in out and f"{name}: app path" in out
    assert out.count("ONNX Runtime INT8 (dynamic quantisation)") == 4  # 2 models x 2 thread counts
    assert "Fast INT8:" not in out  # a variant is a row of its model's table, not a model


@pytest.mark.slow
def test_the_training_benchmark_prints_the_ratio_for_both_configurations(tmp_path) -> None:
    data_dir = write_mnist_folder(tmp_path / "mnist", synthetic_mnist(n_train=1500))
    quick = ["--steps-scale", "0.02", "--held-out", "100", "--batch-size", "16"]
    out = run_script("benchmarks/training.py", "--data-dir", str(data_dir), *quick)
    assert "baseline: fp32, written-out attention" in out
    for config in ("smallest", "largest"):
        assert f"{config}: fast path" in out and "the baseline's images/s" in out


@pytest.mark.slow
def test_the_faithfulness_benchmark_records_the_map_to_show_first(tmp_path, tiny_models_dir):
    """Its table for every fp32 model; --write-manifest gives each entry (its INT8 variant too)
    the scores and a most faithful map, which the app reads."""
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    manifest = json.loads((models / "manifest.json").read_text())
    manifest["models"]["Fast INT8"] = {**manifest["models"]["Fast"], "int8_of": "Fast"}
    (models / "manifest.json").write_text(json.dumps(manifest))
    data_dir = write_mnist_folder(tmp_path / "mnist", synthetic_mnist(n_train=100))
    args = ["--data-dir", str(data_dir), "--models-dir", str(models), "--n", "4"]
    out = run_script("benchmarks/faithfulness.py", *args, "--write-manifest")
    assert out.count("| occlusion ") == 4  # 2 models x 2 sets
    infos = read_manifest(models).models
    for name in ("Fast", "Large"):
        record = infos[name].extra["faithfulness"]
        assert record["most_faithful"] == most_faithful(
            {
                s: {m: tuple(v) for m, v in rows.items()}
                for s, rows in record["deletion_insertion"].items()
            }
        )
    assert (
        infos["Fast INT8"].extra["faithfulness"]["most_faithful"]
        == (infos["Fast"].extra["faithfulness"]["most_faithful"])
    )


def test_the_most_faithful_map_has_the_largest_insertion_minus_deletion():
    table = {
        "MNIST test": {"rollout": (0.3, 0.8), "occlusion": (0.2, 0.85)},  # occlusion +0.15
        "drawn on canvas": {"rollout": (0.1, 0.9), "occlusion": (0.4, 0.8)},  # rollout +0.4
    }
    assert most_faithful(table) == "rollout"
    table["drawn on canvas"]["occlusion"] = (0.1, 0.95)
    assert most_faithful(table) == "occlusion"


def test_each_lever_variant_turns_off_one_lever_and_saves_its_own_state() -> None:
    levers = benchmark("robust_levers").LEVERS
    base = levers["all levers"]
    setups = [repr(config.setup()) for config in levers.values()]
    assert len(set(setups)) == len(levers)  # no two variants resume each other's state
    for name, config in levers.items():
        changed = [f for f in vars(base) if getattr(config, f) != getattr(base, f)]
        if name == "all levers":
            assert changed == []
        elif changed == ["style"]:
            style_changed = [
                f for f in vars(base.style) if getattr(config.style, f) != getattr(base.style, f)
            ]
            assert 1 <= len(style_changed) <= 3, name  # geometry is three fields
        else:
            assert len(changed) == 1, name


@pytest.mark.slow
@pytest.mark.parametrize("split", ["test", "validation"])
def test_the_photo_conditions_benchmark_prints_a_row_per_condition(
    tmp_path, tiny_models_dir, split
):
    data_dir = write_mnist_folder(tmp_path / "mnist", synthetic_mnist(n_train=5010))
    out = run_script(
        "benchmarks/photo_conditions.py", "--data-dir", str(data_dir), "--split", split,
        "--models-dir", str(tiny_models_dir), "--n", "4",
    )  # fmt: skip
    assert f"4 photos of {split} digits per condition" in out
    for condition in benchmark("photo_conditions").CONDITIONS:
        assert f"| {condition} |" in out
    assert "| condition | Fast | Large | blank |" in out


def test_each_photo_condition_changes_the_photo_and_keeps_it_an_upload() -> None:
    import numpy as np

    from custom_modules.serving.upload import read_upload
    from custom_modules.synthetic.handwriting import photo_of_paper

    photo_conditions = benchmark("photo_conditions")
    canvas = np.zeros((280, 280, 4), np.uint8)
    canvas[60:220, 130:150, 3] = 255  # a 1
    plain = photo_of_paper(canvas, np.random.default_rng(0))
    plain_pixels = read_upload(plain).pixels
    for name, condition in photo_conditions.CONDITIONS.items():
        if condition is None:
            continue
        pixels = read_upload(
            photo_conditions.with_condition(plain, condition, np.random.default_rng(1))
        ).pixels
        if name == "small in a big photo":  # read_upload shrinks it to about a megapixel
            assert pixels.shape[0] > 2 * plain_pixels.shape[0]
        else:
            assert pixels.shape == plain_pixels.shape, name
            assert np.abs(pixels.astype(int) - plain_pixels.astype(int)).mean() > 1, name


@pytest.mark.slow
def test_the_weight_mix_benchmark_reads_a_model_mixed_with_itself_as_the_model(tmp_path) -> None:
    import torch

    from custom_modules.training.checkpoints import save_checkpoint
    from custom_modules.training.widen import overlapped_patches, widened_mlp
    from custom_modules.vision_transformer import VisionTransformer, ViTConfig

    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(emb_dim=16, num_heads=2, n_layers=1, mlp_ratio=2))
    checkpoint = save_checkpoint(model, tmp_path / "vit.pt")
    # tuned with --widen-mlp and --patch-overlap: the start is grown to mix with it, reading as
    # before
    grown = overlapped_patches(widened_mlp(model, 4), 2)
    wide = save_checkpoint(grown, tmp_path / "wide.pt")
    data_dir = write_mnist_folder(tmp_path / "mnist", synthetic_mnist(n_train=5010))
    out = run_script(
        "benchmarks/weight_mix.py", "--start", str(checkpoint), "--tuned", str(wide),
        "--alphas", "0", "0.5", "1", "--data-dir", str(data_dir), "--made-from", "4",
    )  # fmt: skip
    rows = [
        line.split(" | ", 1)
        for line in out.splitlines()
        if line.startswith("| 0") or line.startswith("| 1")
    ]
    assert [alpha for alpha, _ in rows] == ["| 0", "| 0.5", "| 1"]
    assert len({figures for _, figures in rows}) == 1  # every mix of a model with itself is it


def test_the_config_latency_benchmark_times_each_variant_beside_the_shipped_model(
    tiny_models_dir,
) -> None:
    out = run_script(
        "benchmarks/config_latency.py", "--models-dir", str(tiny_models_dir), "--model", "Fast",
        "--variant", "mlp_ratio=4", "--variant", "n_layers=3,emb_dim=32",
        "--variant", "patch_overlap=2", "--calls", "20", "--rounds", "2",
    )  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith("| ") and "µs" in line]
    labels = [row.split(" | ")[0] for row in rows]
    assert labels == [
        "| Fast as shipped",
        "| as shipped, exported again",
        "| mlp_ratio 4",
        "| n_layers 3, emb_dim 32",
        "| patch_overlap 2",
    ]
    params = [int(row.split(" | ")[1].replace(",", "")) for row in rows]
    assert params[0] == params[1] < params[2] < params[3]
    assert params[4] - params[0] == 16 * (8 * 8 - 4 * 4)  # the tiny Fast's 16 kernels, grown
    assert rows[0].endswith("| 1.00x |")


def test_the_config_latency_benchmark_refuses_an_unknown_field_or_model(tiny_models_dir) -> None:
    for args in (["--variant", "depth=3"], ["--model", "Huge", "--variant", "mlp_ratio=4"]):
        result = subprocess.run(
            [sys.executable, "benchmarks/config_latency.py", "--models-dir", str(tiny_models_dir),
             *args],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 2
        assert "FIELD=N" in result.stderr or "no model 'Huge'" in result.stderr
