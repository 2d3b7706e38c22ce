"""Training pieces, grid-file validation, the results table, ONNX export and a tiny grid run."""

import csv
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import grid_search_mnist
from custom_modules.contract import output_names
from custom_modules.export import onnx_export
from custom_modules.export.onnx_export import ExportError, export_onnx
from custom_modules.grid import grid_file
from custom_modules.grid.history import history_path, read_history
from custom_modules.grid.results_table import (
    ResultsTableError,
    append_result,
    read_results,
    update_results,
)
from custom_modules.training.augment import elastic_field, random_affine
from custom_modules.training.checkpoints import load_checkpoint
from custom_modules.training.data import split_mnist
from custom_modules.training.loop import TrainConfig, select_device, train_model, warmup_cosine
from custom_modules.training.metrics import evaluate
from custom_modules.training.mnist_data import Mnist, write_idx
from custom_modules.vision_transformer import VisionTransformer, ViTConfig

TINY = {"emb_dim": 16, "num_heads": 2, "n_layers": 1, "mlp_ratio": 2}


def synthetic_mnist(n_train: int = 240, n_test: int = 60, seed: int = 0) -> Mnist:
    """Learnable stand-in for MNIST: digit k is a bright 8x8 square in one of 10 places."""
    rng = np.random.default_rng(seed)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for image, label in zip(images, labels, strict=True):
            row, col = 4 + 12 * (label // 5), 4 * (label % 5)
            image[row : row + 8, col : col + 8] = 255
        return images, labels

    train_images, train_labels = make(n_train)
    test_images, test_labels = make(n_test)
    return Mnist(train_images, train_labels, test_images, test_labels)


def write_mnist_folder(folder: Path, mnist: Mnist) -> Path:
    write_idx(folder / "train-images-idx3-ubyte.gz", mnist.train_images)
    write_idx(folder / "train-labels-idx1-ubyte.gz", mnist.train_labels)
    write_idx(folder / "t10k-images-idx3-ubyte", mnist.test_images)
    write_idx(folder / "t10k-labels-idx1-ubyte", mnist.test_labels)
    return folder


# --- training pieces -------------------------------------------------------------------------


def test_split_is_seeded_disjoint_and_subsampled() -> None:
    mnist = synthetic_mnist(n_train=100)
    mnist.train_images[:, 0, 0] = np.arange(100)  # tag each image with its index
    a = split_mnist(mnist, val_size=20, seed=1, train_subset=50)
    b = split_mnist(mnist, val_size=20, seed=1, train_subset=50)
    c = split_mnist(mnist, val_size=20, seed=2)
    assert a.train_images.shape == (50, 1, 28, 28) and len(a.val_labels) == 20
    assert a.train_images.dtype == torch.float32 and a.train_images.max() <= 1.0
    torch.testing.assert_close(a.val_images, b.val_images)
    ids = lambda images: set((images[:, 0, 0, 0] * 255).round().int().tolist())  # noqa: E731
    assert not ids(a.train_images) & ids(a.val_images)
    assert ids(a.val_images) != ids(c.val_images)
    assert len(ids(c.train_images) | ids(c.val_images)) == 100


def test_split_rejects_impossible_val_size() -> None:
    with pytest.raises(ValueError, match="val_size"):
        split_mnist(synthetic_mnist(n_train=10), val_size=10)


def test_random_affine_moves_ink_but_keeps_black_background() -> None:
    images = torch.zeros(64, 1, 28, 28)
    images[:, :, 10:18, 12:16] = 1.0
    out = random_affine(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    assert out[:, :, :2].abs().max() == 0  # background stays background
    assert not torch.allclose(out, images)
    ink = out.sum(dim=(1, 2, 3))
    assert torch.all(ink > 0.5 * images[0].sum())  # the digit is not lost
    again = random_affine(images, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, again)  # seeded


def test_elastic_field_is_smooth_seeded_and_in_pixels() -> None:
    def field(alpha: float, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return elastic_field((16, 28, 28), generator, alpha, 4.0, torch.device("cpu"))

    displacement = field(34.0)
    assert displacement.shape == (16, 28, 28, 2)
    torch.testing.assert_close(displacement, field(34.0))  # seeded
    torch.testing.assert_close(field(68.0), 2 * displacement)  # linear in alpha
    pixels = displacement * 14  # a pixel is 2/28 grid units
    assert 0.5 < pixels.std() < 3  # a pixel or two, as in Simard et al.
    # smooth: neighbours move together (blur-free noise differs by more than its own size)
    step = (pixels[:, :, 1:] - pixels[:, :, :-1]).abs().mean()
    assert step < 0.3 * pixels.abs().mean()


def test_elastic_augmentation_warps_the_digit_without_losing_it() -> None:
    images = torch.zeros(32, 1, 28, 28)
    images[:, :, 8:20, 12:16] = 1.0
    affine = random_affine(images, torch.Generator().manual_seed(0))
    warped = random_affine(images, torch.Generator().manual_seed(0), elastic_alpha=34.0)
    assert not torch.allclose(affine, warped)
    assert torch.all(warped.sum(dim=(1, 2, 3)) > 0.5 * images[0].sum())


def test_warmup_then_cosine_to_zero() -> None:
    factor = warmup_cosine(warmup_steps=10, total_steps=110)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.5) and factor(110) == pytest.approx(0.0)


def test_select_device() -> None:
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            select_device("cuda")


def test_training_learns_and_is_reproducible() -> None:
    data = split_mnist(synthetic_mnist(n_train=400), val_size=100, seed=0)
    config = TrainConfig(epochs=12, batch_size=16, lr=3e-3, augment=False, patience=20, seed=3)
    weights, results = [], []
    for _ in range(2):
        torch.manual_seed(0)
        model = VisionTransformer(ViTConfig(**TINY, dropout=0.0))
        results.append(train_model(model, data, config))
        weights.append(model.state_dict())
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name])
    assert results[0].history == results[1].history
    val_losses = [record["val_loss"] for record in results[0].history]
    assert val_losses[-1] < 0.8 * val_losses[0]  # from ln(10) = 2.30 down
    test = evaluate(model, data.test_images, data.test_labels)
    assert test["accuracy"] > 0.25  # chance is 0.1
    assert set(test) == {"loss", "accuracy", "precision", "recall", "f1"}


def test_early_stopping_restores_the_best_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    data = split_mnist(synthetic_mnist(n_train=100), val_size=20, seed=0)
    val_losses = iter([1.0, 0.5, 0.7, 0.9, 0.2])
    snapshots = []

    def fake_evaluate(model, images, labels):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"loss": next(val_losses), "accuracy": 0, "precision": 0, "recall": 0, "f1": 0}

    monkeypatch.setattr("custom_modules.training.loop.evaluate", fake_evaluate)
    model = VisionTransformer(ViTConfig(**TINY))
    result = train_model(model, data, TrainConfig(epochs=5, batch_size=50, patience=2))
    assert result.epochs_run == 4 and result.best_epoch == 2  # epochs 3 and 4 were worse
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][name])


# --- grid file ---------------------------------------------------------------------------------


def write_grid(tmp_path: Path, grid: object, name: str = "grid.json") -> Path:
    path = tmp_path / name
    path.write_text(grid if isinstance(grid, str) else json.dumps(grid))
    return path


def test_shipped_grid_has_36_valid_configurations() -> None:
    configs = grid_file.load_grid(Path(__file__).parents[1] / "param_grid.json")
    assert len(configs) == 36
    assert {c["emb_dim"] for c in configs} == {64, 128, 256}
    assert len({grid_file.run_id(c) for c in configs}) == 36


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ('{"emb_dim": [64], ', "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ({**{k: [v] for k, v in TINY.items()}, "dropout": [0.1]}, "unknown key"),
        ({"emb_dim": [64], "num_heads": [4], "n_layers": [1]}, "missing key"),
        ({**{k: [v] for k, v in TINY.items()}, "n_layers": []}, "non-empty list"),
        ({**{k: [v] for k, v in TINY.items()}, "n_layers": 2}, "non-empty list"),
        ({**{k: [v] for k, v in TINY.items()}, "mlp_ratio": [2.5]}, "positive integers"),
        ({**{k: [v] for k, v in TINY.items()}, "n_layers": [0]}, "positive integers"),
        (
            {**{k: [v] for k, v in TINY.items()}, "emb_dim": [64, 30], "num_heads": [4]},
            "not divisible",
        ),
    ],
)
def test_bad_grid_files_are_rejected(tmp_path: Path, grid: object, message: str) -> None:
    path = write_grid(tmp_path, grid)
    with pytest.raises(grid_file.GridError, match=message) as err:
        grid_file.load_grid(path)
    assert str(path) in str(err.value)


def test_missing_grid_file(tmp_path: Path) -> None:
    with pytest.raises(grid_file.GridError, match="not found"):
        grid_file.load_grid(tmp_path / "nope.json")


def test_bad_grid_stops_before_any_training(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("custom_modules.grid.commands.load_mnist", pytest.fail)
    path = write_grid(
        tmp_path, {**{k: [v] for k, v in TINY.items()}, "emb_dim": [30], "num_heads": [4]}
    )
    assert grid_search_mnist.main(["--grid", str(path), "--output-dir", str(tmp_path)]) == 2
    assert "not divisible" in capsys.readouterr().err


# --- results table -----------------------------------------------------------------------------


def test_results_table_appends_rows(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    assert read_results(path) == []
    append_result(path, {"run_id": "a", "emb_dim": 16, "test_accuracy": 0.5})
    append_result(path, {"run_id": "b", "emb_dim": 32})
    rows = read_results(path)
    assert [r["run_id"] for r in rows] == ["a", "b"] and rows[0]["test_accuracy"] == "0.5"
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left


def test_results_table_updates_columns_of_existing_rows(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    append_result(path, {"run_id": "a", "onnx_p50_us": 100.0, "test_accuracy": 0.5})
    append_result(path, {"run_id": "b", "onnx_p50_us": 200.0})
    update_results(path, {"b": {"onnx_p50_us": 150.0}})
    rows = read_results(path)
    assert [(r["run_id"], r["onnx_p50_us"]) for r in rows] == [("a", "100.0"), ("b", "150.0")]
    assert rows[0]["test_accuracy"] == "0.5"
    with pytest.raises(ResultsTableError, match="no row for c"):
        update_results(path, {"c": {"onnx_p50_us": 1.0}})
    assert read_results(path) == rows


def test_concurrent_writers_lose_no_row(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: append_result(path, {"run_id": f"run{i}"}), range(40)))
    assert sorted(r["run_id"] for r in read_results(path)) == sorted(f"run{i}" for i in range(40))


def test_corrupt_results_table_is_reported_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text("run_id,emb_dim\na,16\nb,32,extra,cells\n")
    with pytest.raises(ResultsTableError, match="corrupt"):
        read_results(path)
    with pytest.raises(ResultsTableError):
        append_result(path, {"run_id": "c"})
    assert path.read_text().startswith("run_id,emb_dim\na,16")


def test_failed_write_keeps_earlier_rows(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "results.csv"
    append_result(path, {"run_id": "a"})
    before = path.read_text()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("custom_modules.grid.results_table.os.fsync", disk_full)
    with pytest.raises(ResultsTableError, match="No space left"):
        append_result(path, {"run_id": "b"})
    assert path.read_text() == before
    assert not list(tmp_path.glob("*.tmp"))


# --- ONNX export -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(ViTConfig(emb_dim=16, num_heads=2, n_layers=2)).eval()


def test_onnx_export_matches_pytorch(tiny_model: VisionTransformer, tmp_path: Path) -> None:
    path = export_onnx(tiny_model, tmp_path / "tiny.onnx")
    graph = onnx.load(path)
    onnx.checker.check_model(graph)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    assert model_input.name == "input" and model_input.shape[1:] == [1, 28, 28]
    assert isinstance(model_input.shape[0], str)  # dynamic batch
    names = [o.name for o in session.get_outputs()]
    assert (
        names
        == output_names(2)
        == [
            "logits",
            "cls_attention_0",
            "cls_attention_1",
            "attention_rollout",
        ]
    )
    images = np.random.default_rng(1).standard_normal((5, 1, 28, 28), dtype=np.float32)
    outputs = session.run(None, {"input": images})
    with torch.no_grad():
        logits, cls_attentions, rollout = tiny_model.forward_with_attention(
            torch.from_numpy(images)
        )
    expected = [logits, *cls_attentions, rollout]
    assert [o.shape for o in outputs] == [(5, 10), (5, 2, 7, 7), (5, 2, 7, 7), (5, 7, 7)]
    for got, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
    assert list(tmp_path.iterdir()) == [path]


def test_export_that_disagrees_is_not_kept(tiny_model, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(onnx_export, "max_output_difference", lambda *args: 0.5)
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(tiny_model, tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


# --- the whole grid, tiny ----------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_grid_runs_end_to_end_then_resumes(tmp_path: Path, monkeypatch, capsys) -> None:
    data_dir = write_mnist_folder(tmp_path / "mnist", synthetic_mnist())
    grid = write_grid(tmp_path, {**{k: [v] for k, v in TINY.items()}, "n_layers": [1, 2]})
    output_dir = tmp_path / "out"
    monkeypatch.setenv("WANDB_SILENT", "true")
    argv = [
        "--data-dir", str(data_dir), "--output-dir", str(output_dir), "--grid", str(grid),
        "--epochs", "2", "--batch-size", "32", "--val-size", "40", "--wandb", "offline",
        "--bench-calls", "20",
    ]  # fmt: skip
    assert grid_search_mnist.main(argv) == 0
    out = capsys.readouterr().out
    assert "vit-e16-h2-l2-m2 epoch 2/2: train loss" in out  # progress, epoch by epoch

    with (output_dir / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["run_id"] for r in rows] == ["vit-e16-h2-l1-m2", "vit-e16-h2-l2-m2"]
    for row in rows:
        onnx_path = output_dir / row["onnx_file"]
        assert onnx_path.stat().st_size == int(row["onnx_size_bytes"])
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        assert len(session.get_outputs()) == int(row["n_layers"]) + 2
        assert 0 <= float(row["test_accuracy"]) <= 1 and int(row["params"]) > 0
        assert float(row["onnx_p50_us"]) > 0 and float(row["torch_p50_us"]) > 0
        assert row["wandb_run"].startswith("vit-digits/")
        model = load_checkpoint(output_dir / row["checkpoint_file"])  # the weights exported
        assert model.num_parameters() == int(row["params"])
        images = np.random.default_rng(0).standard_normal((2, 1, 28, 28), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(images)).numpy()
        np.testing.assert_allclose(
            session.run(["logits"], {"input": images})[0], expected, atol=1e-4
        )
        curves = read_history(history_path(output_dir, row["run_id"]))  # the learning curves
        assert [e["epoch"] for e in curves["epochs"]] == [1, 2]
        assert curves["best_epoch"] == int(row["best_epoch"])
        assert {"train_loss", "lr", "val_loss", "val_accuracy", "val_f1"} <= set(
            curves["epochs"][0]
        )
        best = curves["epochs"][curves["best_epoch"] - 1]
        assert best["val_accuracy"] == pytest.approx(float(row["val_accuracy"]), abs=1e-4)
    assert sorted(p.name for p in (output_dir / "onnx").iterdir()) == [
        "vit-e16-h2-l1-m2.onnx",
        "vit-e16-h2-l2-m2.onnx",
    ]
    offline_runs = list((output_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2

    # a rerun of the same command trains nothing
    monkeypatch.setattr("custom_modules.grid.commands.run_config", pytest.fail)
    capsys.readouterr()
    assert grid_search_mnist.main(argv) == 0
    assert "2 done, 0 to run" in capsys.readouterr().out


class Interrupted(Exception):
    """Stands for a kill between two epochs."""


def test_interrupted_training_resumes_where_it_stopped(tmp_path: Path) -> None:
    data = split_mnist(synthetic_mnist(n_train=200), val_size=50, seed=0)
    config = TrainConfig(epochs=4, batch_size=32, patience=10, seed=1)  # augment and dropout on
    state_path = tmp_path / "state" / "run.pt"

    torch.manual_seed(0)
    uninterrupted = VisionTransformer(ViTConfig(**TINY))
    expected = train_model(uninterrupted, data, config)

    def stop_after_epoch_2(record: dict) -> None:
        if record["epoch"] == 2:
            raise Interrupted

    torch.manual_seed(0)
    with pytest.raises(Interrupted):
        train_model(
            VisionTransformer(ViTConfig(**TINY)), data, config, stop_after_epoch_2, state_path
        )
    assert state_path.exists() and not list(state_path.parent.glob(".*.tmp"))

    torch.manual_seed(123)  # another start: everything must come from the saved state
    resumed = VisionTransformer(ViTConfig(**TINY))
    epochs_seen = []
    result = train_model(
        resumed, data, config, lambda r: epochs_seen.append(r["epoch"]), state_path
    )
    assert epochs_seen == [3, 4]
    assert result.history == expected.history and result.best_epoch == expected.best_epoch
    for name, value in uninterrupted.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)


@pytest.mark.parametrize("damage", ["other schedule", "corrupt file"])
def test_unusable_training_state_starts_afresh(tmp_path: Path, damage: str, capsys) -> None:
    data = split_mnist(synthetic_mnist(n_train=100), val_size=20, seed=0)
    config = TrainConfig(epochs=2, batch_size=50, augment=False)
    state_path = tmp_path / "run.pt"
    train_model(VisionTransformer(ViTConfig(**TINY)), data, config, state_path=state_path)
    if damage == "corrupt file":
        state_path.write_bytes(state_path.read_bytes()[:100])
    else:
        config = TrainConfig(epochs=3, batch_size=50, augment=False)
    epochs_seen = []
    model = VisionTransformer(ViTConfig(**TINY))
    train_model(model, data, config, lambda r: epochs_seen.append(r["epoch"]), state_path)
    assert epochs_seen == list(range(1, config.epochs + 1))
    assert "starting afresh" in capsys.readouterr().out
