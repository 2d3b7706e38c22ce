"""`--backend ray` writes the local backend's table and files; a failed run, on either backend, is
reported with its configuration, does not stop the others, and is retried by a rerun."""

import contextlib
import io
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import onnxruntime as ort
import pytest
import torch

import grid_search_mnist
from custom_modules.grid.grid_file import run_id
from custom_modules.grid.results_table import read_results
from custom_modules.grid.run import run_config
from custom_modules.training.checkpoints import load_checkpoint
from tests.test_pipeline import TINY, synthetic_mnist, write_grid, write_mnist_folder

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# the tiny grid, in ParameterGrid order; on Ray, two runs finish, one raises, one's worker dies
FINISHING = ["vit-e16-h2-l1-m2", "vit-e16-h2-l2-m2"]
RAISING, KILLED = "vit-e16-h2-l1-m4", "vit-e16-h2-l2-m4"
RAISING_REPORT = (
    f"FAILED {RAISING} (emb_dim=16, num_heads=2, n_layers=1, mlp_ratio=4): "
    "RuntimeError: injected failure"
)
KILLED_REPORT = (
    f"FAILED {KILLED} (emb_dim=16, num_heads=2, n_layers=2, mlp_ratio=4): ActorDiedError"
)
# columns that differ between two runs of one configuration: wall times and the W&B run id
TIMINGS = {
    "train_seconds",
    "train_images_per_s",
    "torch_p50_us",
    "torch_p90_us",
    "torch_images_per_s",
    "onnx_p50_us",
    "onnx_p90_us",
    "onnx_images_per_s",
    "wandb_run",
}
TEXT_COLUMNS = {"run_id", "onnx_file", "checkpoint_file"}


def failing_run(config: dict[str, int], args, data, device) -> dict:
    """`run_config`, except that one configuration raises and another kills its Ray worker."""
    name = run_id(config)
    if name == RAISING:
        raise RuntimeError("injected failure")
    if name == KILLED:
        import ray

        assert ray.get_runtime_context().get_actor_id(), "kill a Ray worker, never pytest"
        os.kill(os.getpid(), signal.SIGKILL)
    return run_config(config, args, data, device)


def run_main(argv: list[str], run_one=None) -> tuple[int, str, str]:
    """`grid_search_mnist.main`: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = grid_search_mnist.main(argv, run_one=run_one)
    print(out.getvalue(), err.getvalue())  # shown when a test fails
    return code, out.getvalue(), err.getvalue()


def rows_by_run_id(output_dir: Path) -> dict[str, dict[str, str]]:
    return {row["run_id"]: row for row in read_results(output_dir / "results.csv")}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with tiny generated MNIST and the 4-configuration grid (n_layers x mlp_ratio)."""
    root = tmp_path_factory.mktemp("ray_backend")
    write_mnist_folder(root / "mnist", synthetic_mnist())
    write_grid(root, {**{k: [v] for k, v in TINY.items()}, "n_layers": [1, 2], "mlp_ratio": [2, 4]})
    write_grid(root, {**{k: [v] for k, v in TINY.items()}, "n_layers": [1, 2]}, "grid2.json")
    return root


def tiny_argv(root: Path, output_dir: Path, grid: str = "grid.json", wandb: str = "disabled"):
    return [
        "--data-dir", str(root / "mnist"), "--grid", str(root / grid), "--output-dir",
        str(output_dir), "--epochs", "1", "--batch-size", "32", "--val-size", "40",
        "--wandb", wandb, "--bench-calls", "20",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def quiet_env() -> Iterator[None]:
    """No usage statistics sent, no W&B chatter; Ray's workers inherit this environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        patch.setenv("WANDB_SILENT", "true")
        yield


@pytest.fixture(scope="module")
def ray_run(tiny: Path, quiet_env: None) -> dict:
    """The 4-configuration grid on a local 2-CPU Ray instance, all four trials at once: two runs
    finish, one raises, and one's worker is killed."""
    import ray

    output_dir = tiny / "ray"
    ray_flags = ["--backend", "ray", "--ray-num-cpus", "2", "--cpus-per-trial", "0.5"]
    argv = [*tiny_argv(tiny, output_dir, wandb="offline"), *ray_flags]  # W&B folders come back
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(PROJECT_ROOT)  # Ray's workers import the project from the driver's folder
        code, out, err = run_main(argv, run_one=failing_run)
    assert not ray.is_initialized()  # the backend shut its instance down
    return {"tiny": tiny, "output_dir": output_dir, "code": code, "out": out, "err": err}


@pytest.fixture(scope="module")
def local_run(tiny: Path, quiet_env: None) -> Path:
    """The two configurations that finish on Ray, run by the local backend."""
    output_dir = tiny / "local"
    assert run_main(tiny_argv(tiny, output_dir, "grid2.json"))[0] == 0
    return output_dir


def onnx_signature(path: Path) -> list[tuple[str, list]]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [(x.name, x.shape) for x in [*session.get_inputs(), *session.get_outputs()]]


@pytest.mark.slow
def test_ray_writes_the_local_backends_rows_and_files(ray_run: dict, local_run: Path) -> None:
    ray_dir = ray_run["output_dir"]
    assert "Ray: 1 node(s), 2 CPU(s), 0 GPU(s)" in ray_run["out"]
    ray_rows, local_rows = rows_by_run_id(ray_dir), rows_by_run_id(local_run)
    assert sorted(ray_rows) == sorted(local_rows) == FINISHING
    header = (ray_dir / "results.csv").read_text().splitlines()[0]
    assert header == (local_run / "results.csv").read_text().splitlines()[0]
    for name in FINISHING:
        ray_row, local_row = ray_rows[name], local_rows[name]
        # same seed and data; a trial's PyTorch runs on fewer threads, so sums differ by ~1e-9
        for key in local_row.keys() - TIMINGS - TEXT_COLUMNS:
            assert float(ray_row[key]) == pytest.approx(float(local_row[key]), abs=1e-4), key
        assert all(ray_row[key] == local_row[key] for key in TEXT_COLUMNS)
        assert all(float(ray_row[key]) > 0 for key in TIMINGS - {"wandb_run"})
        assert ray_row["wandb_run"].startswith("vit-digits/")

        onnx_path = ray_dir / ray_row["onnx_file"]
        assert onnx_path.stat().st_size == int(ray_row["onnx_size_bytes"])
        assert onnx_signature(onnx_path) == onnx_signature(local_run / local_row["onnx_file"])
        ray_model = load_checkpoint(ray_dir / ray_row["checkpoint_file"])
        local_model = load_checkpoint(local_run / local_row["checkpoint_file"])
        for (key, ray_weight), local_weight in zip(
            ray_model.state_dict().items(), local_model.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(ray_weight, local_weight, msg=key)

    assert sorted(p.name for p in (ray_dir / "onnx").iterdir()) == [f"{n}.onnx" for n in FINISHING]
    assert sorted(p.name for p in (ray_dir / "history").iterdir()) == [
        f"{n}.json" for n in FINISHING
    ]
    assert len(list((ray_dir / "wandb").glob("offline-run-*/run-*.wandb"))) == 2
    assert not list(ray_dir.rglob("*.tmp"))


@pytest.mark.slow
def test_failed_trials_are_reported_and_do_not_stop_the_others(ray_run: dict) -> None:
    assert ray_run["code"] == 1
    assert RAISING_REPORT in ray_run["err"] and KILLED_REPORT in ray_run["err"]
    summary = next(line for line in ray_run["err"].splitlines() if "run(s) failed" in line)
    assert summary.startswith("2 run(s) failed") and RAISING in summary and KILLED in summary
    assert sorted(rows_by_run_id(ray_run["output_dir"])) == FINISHING


@pytest.mark.slow
def test_a_rerun_runs_only_the_failed_configurations(ray_run: dict, tmp_path: Path) -> None:
    """Here on the local backend: what counts as done is the table, whichever backend wrote it."""
    output_dir = tmp_path / "ray"
    shutil.copytree(ray_run["output_dir"], output_dir)
    calls = []
    code, out, _ = run_main(tiny_argv(ray_run["tiny"], output_dir), run_one=fake_run(calls=calls))
    assert code == 0 and "4 configurations" in out and "2 done, 2 to run" in out
    assert calls == [RAISING, KILLED]
    assert sorted(rows_by_run_id(output_dir)) == sorted([*FINISHING, RAISING, KILLED])


# --- the local backend: the same failure handling, on fake runs (fast) -------------------------


def fake_run(fail: str | None = None, interrupt: str | None = None, calls: list | None = None):
    """A `run_config` stand-in: records its calls, raises for `fail`, Ctrl+C for `interrupt`."""

    def run(config: dict[str, int], args, data, device) -> dict:
        name = run_id(config)
        if calls is not None:
            calls.append(name)
        if name == fail:
            raise RuntimeError("injected failure")
        if name == interrupt:
            raise KeyboardInterrupt
        timings = {"val_accuracy": 0.5, "test_accuracy": 0.5, "onnx_p50_us": 1, "torch_p50_us": 2}
        return {"run_id": name, **config, **timings}

    return run


def test_local_backend_reports_a_failed_run_goes_on_and_retries_it(tiny: Path, tmp_path: Path):
    argv = tiny_argv(tiny, tmp_path)
    code, _, err = run_main(argv, run_one=fake_run(fail=RAISING))
    assert code == 1
    assert RAISING_REPORT in err and "Traceback" in err and f"1 run(s) failed: {RAISING}" in err
    assert list(rows_by_run_id(tmp_path)) == [*FINISHING, KILLED]  # the run after it ran too

    calls = []
    assert run_main(argv, run_one=fake_run(calls=calls))[0] == 0
    assert calls == [RAISING]
    assert len(rows_by_run_id(tmp_path)) == 4


def test_ctrl_c_stops_the_local_grid_at_once(tiny: Path, tmp_path: Path) -> None:
    calls = []
    with pytest.raises(KeyboardInterrupt):
        run_main(tiny_argv(tiny, tmp_path), run_one=fake_run(interrupt=FINISHING[0], calls=calls))
    assert calls == [FINISHING[0]]
    assert not (tmp_path / "results.csv").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ray-address", "10.0.0.1:6379"], "--ray-address: only with --backend ray"),
        (["--gpus-per-trial", "1"], "--gpus-per-trial: only with --backend ray"),
        (["--backend", "ray", "--cpus-per-trial", "0"], "--cpus-per-trial must be more than 0"),
        (["--backend", "ray", "--ray-address", "h:1", "--ray-num-cpus", "2"], "its own"),
        (["--backend", "ray", "--device", "cuda"], "needs --gpus-per-trial > 0"),
    ],
)
def test_bad_backend_flags_stop_before_anything_runs(
    tiny: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    code, _, err = run_main([*tiny_argv(tiny, tmp_path), *flags], run_one=pytest.fail)
    assert code == 2 and message in err


def test_a_trials_files_travel_as_bytes_and_land_under_a_temporary_name(tmp_path: Path) -> None:
    from custom_modules.grid.ray_backend import read_files, write_files

    scratch = tmp_path / "scratch"
    (scratch / "onnx").mkdir(parents=True)
    (scratch / "onnx" / "a.onnx").write_bytes(b"model")
    (scratch / "wandb" / "offline-run-1").mkdir(parents=True)
    (scratch / "wandb" / "offline-run-1" / "run-1.wandb").write_bytes(b"log")
    (scratch / "wandb" / "latest-run").symlink_to(scratch / "wandb" / "offline-run-1")
    files = read_files(scratch)
    assert files == {"onnx/a.onnx": b"model", "wandb/offline-run-1/run-1.wandb": b"log"}

    output_dir = tmp_path / "out"
    (output_dir / "onnx").mkdir(parents=True)
    (output_dir / "onnx" / "a.onnx").write_bytes(b"older model")
    write_files(output_dir, files)
    assert read_files(output_dir) == files
    assert not list(output_dir.rglob("*.tmp"))
