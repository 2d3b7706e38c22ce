"""Successive halving over the grid: its rungs, who goes on, resuming, one schedule throughout."""

import csv
from pathlib import Path

import pytest

import grid_search_mnist
from custom_modules.grid import commands
from custom_modules.grid.grid_file import run_id
from custom_modules.grid.halving import promoted, rung_dir, rung_epochs, survivors_after
from custom_modules.grid.results_table import read_results
from tests.test_pipeline import synthetic_mnist, write_grid, write_mnist_folder

# nine configurations: the deeper, the more accurate and the slower (see `scored_run`)
GRID = {"emb_dim": [16], "num_heads": [2], "n_layers": [1, 2, 3], "mlp_ratio": [2, 3, 4]}


@pytest.mark.parametrize(
    ("min_epochs", "factor", "epochs", "stops"),
    [(1, 3, 9, [1, 3, 9]), (1, 3, 15, [1, 3, 9, 15]), (2, 2, 8, [2, 4, 8]), (5, 3, 5, [5])],
)
def test_rungs_stop_factor_times_later_and_the_last_runs_the_whole_schedule(
    min_epochs, factor, epochs, stops
) -> None:
    assert rung_epochs(min_epochs, factor, epochs) == stops


@pytest.mark.parametrize(("min_epochs", "factor", "epochs"), [(0, 3, 9), (10, 3, 9), (1, 1, 9)])
def test_impossible_rungs_are_refused(min_epochs, factor, epochs) -> None:
    with pytest.raises(ValueError, match="no rungs"):
        rung_epochs(min_epochs, factor, epochs)


def test_each_rung_keeps_a_factor_fewer_of_the_original_count() -> None:
    assert [survivors_after(rung, 36, 3) for rung in range(3)] == [12, 4, 2]
    assert [survivors_after(rung, 9, 2) for rung in range(3)] == [5, 3, 2]


def row(name: str, accuracy: float, latency: float, loss: float = 0.1) -> dict:
    return {"run_id": name, "val_accuracy": accuracy, "val_loss": loss, "params": 1,
            "onnx_p50_us": latency}  # fmt: skip


def test_the_best_go_on_and_so_does_the_fast_pick() -> None:
    rows = [row("slow-best", 0.99, 900), row("slow-second", 0.98, 800), row("mid", 0.97, 500),
            row("fast", 0.96, 100), row("fast-but-poor", 0.50, 50)]  # fmt: skip
    assert [r["run_id"] for r in promoted(rows, 2)] == ["slow-best", "slow-second", "fast"]
    # the fast pick already among the best: nobody else is added
    assert [r["run_id"] for r in promoted(rows, 4)] == ["slow-best", "slow-second", "mid", "fast"]
    # ties in accuracy: lower validation loss first
    tied = [row("a", 0.9, 10, loss=0.3), row("b", 0.9, 20, loss=0.2)]
    assert [r["run_id"] for r in promoted(tied, 1)] == ["b", "a"]


def scored_run(calls: list[tuple[str, int]], fail_once: set[str] | None = None):
    """Stands in for training: deeper and wider-MLP runs are a little more accurate (all within
    the Fast margin) and slower; each call
    is recorded as (run_id, epoch stopped after); a run named in `fail_once` fails the first time.
    """

    def run(config, settings, data, device) -> dict:
        name = run_id(config)
        if fail_once and name in fail_once:
            fail_once.discard(name)
            raise RuntimeError("out of memory")
        calls.append((name, settings.stop_after))
        skill = config["n_layers"] + config["mlp_ratio"] / 10
        onnx_file = settings.output_dir / "onnx" / f"{name}.onnx"  # only its existence matters
        onnx_file.parent.mkdir(parents=True, exist_ok=True)
        onnx_file.touch()
        return {
            "run_id": name,
            **config,
            "params": 100 * config["n_layers"],
            "epochs_run": settings.stop_after,
            "val_accuracy": round(0.9 + skill / 100 + settings.stop_after / 1000, 4),
            "val_loss": 1.0 / skill,
            "test_accuracy": 0.5,
            "onnx_p50_us": 10.0 * skill,
            "torch_p50_us": 20.0 * skill,
            "onnx_file": f"onnx/{name}.onnx",
        }

    return run


# timed again in one sitting, the middle-sized l2-m2 is the fastest (its own benchmark said l1-m2)
RETIMED_P50 = {"vit-e16-h2-l2-m2": 5.0}


@pytest.fixture(autouse=True)
def retimed_latencies(monkeypatch):
    """Stands in for timing the ONNX files in turns: 5 µs for the runs in RETIMED_P50, else 50."""

    def latencies(paths, threads, calls) -> list[dict]:
        p50s = [RETIMED_P50.get(Path(path).stem, 50.0) for path in paths]
        return [{"onnx_p50_us": p50, "onnx_p90_us": p50, "onnx_images_per_s": 1e6 / p50}
                for p50 in p50s]  # fmt: skip

    monkeypatch.setattr(commands, "onnx_latencies_interleaved", latencies)


@pytest.fixture
def argv(tmp_path: Path) -> list[str]:
    data_dir = write_mnist_folder(tmp_path / "mnist", synthetic_mnist(n_train=60, n_test=10))
    return ["--halving", "--data-dir", str(data_dir), "--grid", str(write_grid(tmp_path, GRID)),
            "--val-size", "10", "--output-dir", str(tmp_path / "out"), "--wandb", "disabled",
            "--epochs", "9"]  # fmt: skip


def test_the_rungs_train_fewer_runs_for_longer_and_the_last_chooses(argv, tmp_path, capsys):
    calls: list[tuple[str, int]] = []
    assert grid_search_mnist.main(argv, run_one=scored_run(calls)) == 0

    by_rung = {stop: [name for name, s in calls if s == stop] for stop in (1, 3, 9)}
    assert len(by_rung[1]) == 9 and len(calls) == 9 + 4 + 2
    # after the first rung: the 3 best (3 layers) and the Fast pick by the latencies timed again
    assert set(by_rung[3]) == {"vit-e16-h2-l3-m4", "vit-e16-h2-l3-m3", "vit-e16-h2-l3-m2",
                               "vit-e16-h2-l2-m2"}  # fmt: skip
    assert set(by_rung[9]) == {"vit-e16-h2-l3-m4", "vit-e16-h2-l2-m2"}
    for stop, names in by_rung.items():
        table = read_results(rung_dir(tmp_path / "out", stop, 9) / "results.csv")
        assert sorted(r["run_id"] for r in table) == sorted(names)
    out = capsys.readouterr().out
    assert "Fast: vit-e16-h2-l2-m2" in out and "Large: vit-e16-h2-l3-m4" in out
    last = read_results(rung_dir(tmp_path / "out", 9, 9) / "results.csv")
    latencies = {r["run_id"]: r["onnx_p50_us"] for r in last}
    assert latencies == {"vit-e16-h2-l3-m4": "50.0", "vit-e16-h2-l2-m2": "5.0"}


def test_a_failed_run_stops_the_rungs_and_a_rerun_trains_only_what_is_missing(argv, capsys):
    calls: list[tuple[str, int]] = []
    assert grid_search_mnist.main(argv, run_one=scored_run(calls, {"vit-e16-h2-l3-m3"})) == 1
    assert all(stop == 1 for _, stop in calls) and len(calls) == 8
    assert "rerun the same command" in capsys.readouterr().err

    calls.clear()
    assert grid_search_mnist.main(argv, run_one=scored_run(calls)) == 0
    assert calls[0] == ("vit-e16-h2-l3-m3", 1) and len(calls) == 1 + 4 + 2

    calls.clear()  # everything done: nothing trains again, each rung's best and the choice shown
    assert grid_search_mnist.main(argv, run_one=scored_run(calls)) == 0
    out = capsys.readouterr().out
    assert calls == [] and "Large: vit-e16-h2-l3-m4" in out
    assert "best at epoch 1: vit-e16-h2-l3-m4 0.9350, vit-e16-h2-l3-m3 0.9340" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--halving-factor", "1"], "--halving-factor 1"),
        (["--min-epochs", "0"], "--min-epochs 0"),
        (["--min-epochs", "10"], "between 1 and --epochs (9)"),
    ],
)
def test_impossible_halving_flags_are_refused_before_work(argv, extra, message, capsys) -> None:
    assert grid_search_mnist.main([*argv, *extra], run_one=pytest.fail) == 2
    assert message in capsys.readouterr().err


def test_halving_flags_without_halving_are_refused(argv, capsys) -> None:
    plain = [arg for arg in argv if arg != "--halving"]
    assert grid_search_mnist.main([*plain, "--min-epochs", "2"], run_one=pytest.fail) == 2
    assert "go with --halving" in capsys.readouterr().err


DETERMINISTIC = ["epochs_run", "best_epoch", "val_loss", "val_accuracy", "test_loss",
                 "test_accuracy"]  # fmt: skip


@pytest.mark.slow
def test_a_run_through_the_rungs_is_the_same_run_as_one_without_them(tmp_path: Path) -> None:
    """Stopping after epoch 1 and going on from its saved state must not change the schedule."""
    data_dir = write_mnist_folder(tmp_path / "mnist", synthetic_mnist(n_train=400, n_test=50))
    grid = write_grid(tmp_path, {"emb_dim": [16], "num_heads": [2], "n_layers": [1],
                                 "mlp_ratio": [2]})  # fmt: skip
    common = ["--data-dir", str(data_dir), "--grid", str(grid), "--epochs", "3",
              "--batch-size", "32", "--val-size", "50", "--wandb", "disabled",
              "--bench-calls", "10"]  # fmt: skip
    halved, plain = tmp_path / "halved", tmp_path / "plain"
    assert grid_search_mnist.main([*common, "--halving", "--output-dir", str(halved)]) == 0
    assert grid_search_mnist.main([*common, "--output-dir", str(plain)]) == 0

    with (rung_dir(halved, 3, 3) / "results.csv").open() as f:
        last_rung = next(csv.DictReader(f))
    with (plain / "results.csv").open() as f:
        whole = next(csv.DictReader(f))
    assert {k: last_rung[k] for k in DETERMINISTIC} == {k: whole[k] for k in DETERMINISTIC}
    with (rung_dir(halved, 1, 3) / "results.csv").open() as f:
        assert next(csv.DictReader(f))["epochs_run"] == "1"
    assert not (halved / "train_state").exists()  # every state was used up
    history = (rung_dir(halved, 3, 3) / "history" / "vit-e16-h2-l1-m2.json").read_text()
    assert '"epoch": 3' in history and '"epoch": 1' in history
