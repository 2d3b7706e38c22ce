"""The grid refuses what it cannot do before training, and a full disk loses no finished row."""

import subprocess
import sys
from pathlib import Path

import pytest

import grid_search_mnist
from custom_modules.grid.grid_file import run_id
from custom_modules.grid.results_table import read_results
from custom_modules.grid.settings import GridSettings
from tests.test_pipeline import synthetic_mnist, write_grid, write_mnist_folder

ROOT = Path(__file__).resolve().parents[1]

GRID = {"emb_dim": [16], "num_heads": [2], "n_layers": [1, 2, 3], "mlp_ratio": [2]}


def fake_run(config, args, data, device) -> dict:
    """Stands in for training: a row with the fields the progress report prints."""
    return {
        "run_id": run_id(config),
        **config,
        "val_accuracy": 0.5,
        "test_accuracy": 0.5,
        "onnx_p50_us": 1.0,
        "torch_p50_us": 2.0,
    }


@pytest.fixture
def argv(tmp_path: Path) -> list[str]:
    data_dir = write_mnist_folder(tmp_path / "mnist", synthetic_mnist(n_train=60, n_test=10))
    grid = write_grid(tmp_path, GRID)
    return ["--data-dir", str(data_dir), "--grid", str(grid), "--val-size", "10",
            "--output-dir", str(tmp_path / "out"), "--wandb", "disabled"]  # fmt: skip


def test_a_large_grid_asks_for_yes(argv, tmp_path, capsys) -> None:
    assert grid_search_mnist.main([*argv, "--max-runs", "2"], run_one=pytest.fail) == 2
    assert "3 runs, more than --max-runs 2; add --yes" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert grid_search_mnist.main([*argv, "--max-runs", "2", "--yes"], run_one=fake_run) == 0
    assert len(read_results(tmp_path / "out" / "results.csv")) == 3


def test_an_unwritable_output_folder_stops_before_training(argv, tmp_path, capsys) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    code = grid_search_mnist.main(
        [*argv, "--output-dir", str(blocker / "out")], run_one=pytest.fail
    )
    assert code == 2
    assert "cannot write the output folder" in capsys.readouterr().err


def test_a_full_disk_keeps_the_rows_already_written(argv, tmp_path, capsys, monkeypatch) -> None:
    writes = []

    def fsync_until_full(fd: int) -> None:
        writes.append(fd)
        if len(writes) > 1:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr("custom_modules.grid.results_table.os.fsync", fsync_until_full)
    assert grid_search_mnist.main(argv, run_one=fake_run) == 1
    assert "No space left on device" in capsys.readouterr().err
    table = tmp_path / "out" / "results.csv"
    assert [row["run_id"] for row in read_results(table)] == ["vit-e16-h2-l1-m2"]
    assert not list(table.parent.glob(".*.tmp"))

    monkeypatch.undo()  # space again: the rerun adds only what is missing
    assert grid_search_mnist.main(argv, run_one=fake_run) == 0
    assert len(read_results(table)) == 3


def test_a_corrupt_results_table_is_reported_and_left_alone(argv, tmp_path, capsys) -> None:
    table = tmp_path / "out" / "results.csv"
    table.parent.mkdir()
    table.write_text("run_id,emb_dim\nvit-a,16,unexpected\n")
    assert grid_search_mnist.main(argv, run_one=pytest.fail) == 2
    assert "corrupt" in capsys.readouterr().err
    assert table.read_text() == "run_id,emb_dim\nvit-a,16,unexpected\n"


def test_augmentation_flags_reach_the_training_config(argv, monkeypatch) -> None:
    seen = []

    def capture(model, data, config, *rest):
        seen.append(config)
        # stop here: the grid records an Exception per run and goes on, but not Ctrl+C
        raise KeyboardInterrupt

    monkeypatch.setattr("custom_modules.grid.run.train_model", capture)
    for flags, augment, alpha in [([], True, 0.0), (["--elastic-alpha", "34"], True, 34.0),
                                  (["--no-augment"], False, 0.0)]:  # fmt: skip
        with pytest.raises(KeyboardInterrupt):
            grid_search_mnist.main([*argv, *flags, "--max-runs", "1", "--yes"])
        assert (seen[-1].augment, seen[-1].elastic_alpha) == (augment, alpha)


def test_elastic_distortion_without_augmentation_is_refused(argv, capsys) -> None:
    code = grid_search_mnist.main(
        [*argv, "--no-augment", "--elastic-alpha", "34"], run_one=pytest.fail
    )
    assert code == 2
    assert "--elastic-alpha needs the augmentation" in capsys.readouterr().err


@pytest.mark.parametrize(
    "modes",
    [["--retime", "--ship"], ["--ship", "--select"], ["--retime-shipped", "--reexport-shipped"]],
)
def test_contradictory_modes_are_refused_in_one_line(modes, capsys) -> None:
    assert grid_search_mnist.main(modes) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not allowed with argument" in err


def test_contradictory_modes_exit_non_zero_from_the_shell() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "grid_search_mnist.py", "--retime", "--ship"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: ")


def test_every_option_has_help_and_one_default() -> None:
    parser = grid_search_mnist.build_parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        assert action.help, action.option_strings
        text = formatter._expand_help(action)
        assert text.count("default") <= 1 and "default: None" not in text, text


def test_keep_latencies_goes_with_reexport_shipped(capsys) -> None:
    assert grid_search_mnist.main(["--keep-latencies"]) == 2
    assert "--keep-latencies goes with --reexport-shipped" in capsys.readouterr().err


def test_the_default_data_folder_is_the_loaders() -> None:
    from custom_modules.grid.settings import DEFAULT_DATA_DIR
    from custom_modules.training import mnist_data

    assert DEFAULT_DATA_DIR == mnist_data.DEFAULT_DATA_DIR == GridSettings().data_dir


def test_help_imports_neither_torch_nor_numpy() -> None:
    """`--help` answers at once: nothing heavy is imported before the arguments are parsed."""
    code = (
        "import runpy, sys; sys.argv = ['grid_search_mnist.py', '--help']\n"
        "try:\n    runpy.run_path('grid_search_mnist.py', run_name='__main__')\n"
        "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
        "heavy = sorted({'torch', 'numpy', 'onnxruntime'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60, capture_output=True
    )


def test_without_torch_the_grid_says_what_to_install() -> None:
    """In the app's environment (no PyTorch) a run is refused in one line, not a traceback."""
    code = (
        "import sys; sys.modules['torch'] = None  # as if not installed\n"
        "import grid_search_mnist\n"
        "sys.exit(grid_search_mnist.main(['--select']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, timeout=60, capture_output=True, text=True
    )
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: torch is not installed: training needs the full install")
