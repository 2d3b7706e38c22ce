"""`--select` applies the README's rule to a results table; `--ship` trains and writes models/."""

import csv
import json
import re
import shlex
from dataclasses import asdict
from pathlib import Path

import onnxruntime as ort
import pytest
import torch

import custom_modules.grid.robust
import grid_search_mnist
from custom_modules.grid.grid_file import run_id
from custom_modules.grid.results_table import FIELDS
from custom_modules.grid.shipping import ShippedModel, improved_on_start
from custom_modules.serving.manifest import load_manifest_json, read_manifest
from custom_modules.serving.model import OnnxViT
from custom_modules.training.checkpoints import load_checkpoint
from custom_modules.training.robust import (
    RobustConfig,
    choose_interpolation,
    finetune_robust,
    interpolated,
)
from custom_modules.training.style import StyleAugment
from custom_modules.vision_transformer import VisionTransformer, ViTConfig
from tests.test_pipeline import synthetic_mnist, write_mnist_folder


def write_table(path: Path, runs: list[tuple[dict, float, float]]) -> Path:
    """A results table with one row per (config, val_accuracy, onnx_p50_us)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for config, val_accuracy, latency in runs:
            writer.writerow(
                {
                    "run_id": run_id(config),
                    **config,
                    "params": 1000 * config["emb_dim"],
                    "val_loss": 0.1,
                    "val_accuracy": val_accuracy,
                    "onnx_p50_us": latency,
                }
            )
    return path


FAST = {"emb_dim": 16, "num_heads": 2, "n_layers": 1, "mlp_ratio": 2}
LARGE = {"emb_dim": 24, "num_heads": 2, "n_layers": 2, "mlp_ratio": 2}
SLOW = {"emb_dim": 32, "num_heads": 2, "n_layers": 2, "mlp_ratio": 2}
RUNS = [(LARGE, 0.990, 300.0), (FAST, 0.986, 100.0), (SLOW, 0.987, 400.0)]


def test_select_prints_the_choice_and_trains_nothing(tmp_path, capsys, monkeypatch) -> None:
    table = write_table(tmp_path / "grid_results.csv", RUNS)
    monkeypatch.setattr("custom_modules.grid.commands.load_mnist", pytest.fail)
    assert grid_search_mnist.main(["--select", "--results-table", str(table)]) == 0
    out = capsys.readouterr().out
    assert "Fast: vit-e16-h2-l1-m2" in out and "Large: vit-e24-h2-l2-m2" in out


def test_select_on_a_missing_table_is_a_clear_error(tmp_path, capsys) -> None:
    code = grid_search_mnist.main(["--select", "--results-table", str(tmp_path / "none.csv")])
    assert code == 2 and "empty" in capsys.readouterr().err


@pytest.mark.slow
def test_ship_trains_the_chosen_models_and_writes_a_manifest(tmp_path, monkeypatch) -> None:
    table = write_table(tmp_path / "grid_results.csv", RUNS)
    data_dir = write_mnist_folder(tmp_path / "mnist", synthetic_mnist())
    models_dir = tmp_path / "models"
    argv = [
        "--ship", "--results-table", str(table), "--data-dir", str(data_dir),
        "--output-dir", str(tmp_path / "ship"), "--models-dir", str(models_dir),
        "--epochs", "2", "--batch-size", "32", "--val-size", "40", "--wandb", "disabled",
        "--bench-calls", "20",
    ]  # fmt: skip
    assert grid_search_mnist.main(argv) == 0

    manifest = json.loads((models_dir / "manifest.json").read_text())
    assert {"Fast", "Large"} <= set(manifest["models"])
    assert manifest["models"]["Fast"]["config"] == FAST
    assert manifest["models"]["Large"]["config"] == LARGE
    assert manifest["grid_results"] == "grid_results.csv"
    for name, entry in manifest["models"].items():
        path = models_dir / entry["file"]
        assert path.stat().st_size == entry["size_bytes"]
        assert "--ship" in entry["command"]
        model = OnnxViT(path)
        assert model.n_layers == entry["config"]["n_layers"]
        if "int8_of" not in name and "int8_of" not in entry:
            int8 = entry["int8"]
            assert (f"{name} INT8" in manifest["models"]) == int8["shipped"]
            assert (models_dir / f"vit-{name.lower()}-int8.onnx").exists() == int8["shipped"]
        # timed again at shipping, all models in one sitting; not the grid's figures
        assert 0 < entry["onnx_p50_us"] < 1e5 and 0 < entry["torch_p50_us"] < 1e5
        assert entry["bench_threads"] == 1
        if "int8_of" in entry:
            source = manifest["models"][entry["int8_of"]]
            assert entry["torch_p50_us"] == source["torch_p50_us"]
    served = read_manifest(models_dir)  # the app reads what --ship writes
    assert served.models["Large"].config == LARGE
    outputs = ort.InferenceSession(str(models_dir / "vit-large.onnx")).get_outputs()
    assert [o.name for o in outputs][-1] == "attention_rollout"
    assert not list(models_dir.glob(".*.tmp"))


@pytest.mark.slow
def test_ship_only_large_trains_on_from_the_shipped_checkpoint(tmp_path) -> None:
    table = write_table(tmp_path / "grid_results.csv", RUNS)
    data_dir = write_mnist_folder(tmp_path / "mnist", synthetic_mnist())
    models_dir = tmp_path / "models"
    common = [
        "--results-table", str(table), "--data-dir", str(data_dir), "--models-dir",
        str(models_dir), "--batch-size", "32", "--val-size", "40", "--wandb", "disabled",
        "--bench-calls", "20",
    ]  # fmt: skip
    first = ["--ship", "--output-dir", str(tmp_path / "ship"), "--epochs", "2", *common]
    assert grid_search_mnist.main(first) == 0
    before = json.loads((models_dir / "manifest.json").read_text())["models"]
    fast_files = {f: (models_dir / f).read_bytes() for f in ("vit-fast.onnx", "vit-fast.pt")}
    large_before = torch.load(models_dir / "vit-large.pt", weights_only=True)["state_dict"]

    # a learning rate of ~0 leaves the weights where they start: the shipped ones, not random
    again = ["--ship", "--only", "Large", "--init-from", str(models_dir), "--lr", "1e-12"]
    second = [*again, "--output-dir", str(tmp_path / "ship2"), "--epochs", "1", *common]
    assert grid_search_mnist.main(second) == 0
    after = json.loads((models_dir / "manifest.json").read_text())["models"]
    large_after = torch.load(models_dir / "vit-large.pt", weights_only=True)["state_dict"]
    for key, weights in large_before.items():
        torch.testing.assert_close(large_after[key], weights, atol=1e-6, rtol=0)

    assert {f: (models_dir / f).read_bytes() for f in fast_files} == fast_files
    latency = {"onnx_p50_us", "torch_p50_us"}  # every model is timed again, in one sitting
    for name in ("Fast", "Fast INT8"):
        if name in before:
            assert {k: v for k, v in after[name].items() if k not in latency} == {
                k: v for k, v in before[name].items() if k not in latency
            }
    second_command = "python grid_search_mnist.py " + shlex.join(second)
    assert after["Large"]["command"] == f"{before['Large']['command']} && {second_command}"

    assert grid_search_mnist.main(second) == 0  # a rerun ships again, naming itself once
    rerun = json.loads((models_dir / "manifest.json").read_text())["models"]
    assert rerun["Large"]["command"] == after["Large"]["command"]


def test_only_and_init_from_need_ship(capsys) -> None:
    assert grid_search_mnist.main(["--only", "Large"]) == 2
    assert "go with --ship" in capsys.readouterr().err


def test_robust_options_need_robust(capsys) -> None:
    options = (["--distill"], ["--interpolate"], ["--stop-after", "2"], ["--head-only"])
    options += (["--interpolate-at", "0.5"], ["--from-scratch"], ["--widen-mlp", "4"])
    options += (["--patch-overlap", "2"],)
    shares = (["--continental", "0.5"], ["--plain", "0.5"], ["--thick-pens", "0.2"])
    for option in (*options, *shares):
        assert grid_search_mnist.main(["--ship", *option]) == 2
        assert "go with --robust" in capsys.readouterr().err
    assert grid_search_mnist.main(["--robust", "--distill", "--head-only"]) == 2
    assert "--head-only refits the head alone" in capsys.readouterr().err
    assert grid_search_mnist.main(["--robust", "--teacher-epochs", "8"]) == 2
    assert "--teacher-epochs goes with --distill" in capsys.readouterr().err
    assert grid_search_mnist.main(["--robust", "--distill", "--teacher-epochs", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
    assert grid_search_mnist.main(["--robust", "--continental", "1.5"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    assert grid_search_mnist.main(["--robust", "--plain", "-0.1"]) == 2
    assert "--plain -0.1 is a share" in capsys.readouterr().err
    assert grid_search_mnist.main(["--robust", "--thick-pens", "2"]) == 2
    assert "--thick-pens 2.0 is a share" in capsys.readouterr().err
    assert grid_search_mnist.main(["--robust", "--interpolate-at", "1.5"]) == 2
    assert "--interpolate-at 1.5 is a share" in capsys.readouterr().err
    assert grid_search_mnist.main(["--robust", "--interpolate", "--interpolate-at", "0.5"]) == 2
    assert "gives it: one" in capsys.readouterr().err
    for option in (["--interpolate"], ["--interpolate-at", "1"], ["--head-only"]):
        assert grid_search_mnist.main(["--robust", "--from-scratch", *option]) == 2
        assert "--from-scratch starts from fresh weights" in capsys.readouterr().err
    assert grid_search_mnist.main(["--robust", "--widen-mlp", "4", "--head-only"]) == 2
    assert "--head-only keeps the blocks frozen" in capsys.readouterr().err
    assert grid_search_mnist.main(["--robust", "--widen-mlp", "0"]) == 2
    assert "an MLP ratio, at least 1" in capsys.readouterr().err
    assert grid_search_mnist.main(["--robust", "--patch-overlap", "2", "--head-only"]) == 2
    assert "--head-only keeps them frozen" in capsys.readouterr().err
    assert grid_search_mnist.main(["--robust", "--patch-overlap", "-1"]) == 2
    assert "pixels, 0 or more" in capsys.readouterr().err


def test_a_recipe_without_the_shares_added_since_records_the_setup_its_saved_states_have() -> None:
    continental = RobustConfig(style=StyleAugment(continental_p=0.25)).setup()
    added = ("plain_p", "thick_p")
    assert continental["style"] == {
        k: v for k, v in asdict(StyleAugment(continental_p=0.25)).items() if k not in added
    }  # a state saved before --plain and --thick-pens existed still resumes
    assert RobustConfig(style=StyleAugment(plain_p=0.5)).setup()["style"]["plain_p"] == 0.5
    thick = RobustConfig(style=StyleAugment(thick_p=0.2)).setup()["style"]
    assert thick["thick_p"] == 0.2 and "plain_p" not in thick
    assert "style" not in RobustConfig().setup()
    assert "warmup_epochs" not in RobustConfig().setup()  # nor before the warm-up was a field
    assert RobustConfig(warmup_epochs=2.0).setup()["warmup_epochs"] == 2.0


def test_retime_measures_every_run_again_and_updates_only_latency(
    tmp_path, capsys, tiny_models_dir
) -> None:
    table = write_table(tmp_path / "grid_results.csv", [(FAST, 0.9, 1e6), (LARGE, 0.95, 1e6)])
    before = list(csv.DictReader(table.open()))
    output_dir = tmp_path / "grid"
    (output_dir / "onnx").mkdir(parents=True)
    for row, file in zip(before, ("vit-fast.onnx", "vit-large.onnx"), strict=True):
        (output_dir / "onnx" / f"{row['run_id']}.onnx").write_bytes(
            (tiny_models_dir / file).read_bytes()
        )
        row["onnx_file"] = f"onnx/{row['run_id']}.onnx"
    write_rows(table, before)
    argv = ["--retime", "--results-table", str(table), "--output-dir", str(output_dir)]
    assert grid_search_mnist.main([*argv, "--bench-calls", "50"]) == 0

    after = list(csv.DictReader(table.open()))
    for old, new in zip(before, after, strict=True):
        assert 1 < float(new["onnx_p50_us"]) <= float(new["onnx_p90_us"]) < 1e5
        changed = {k for k in FIELDS if str(old.get(k, "")) != new[k]}
        assert changed <= {"onnx_p50_us", "onnx_p90_us", "bench_threads"}
    assert "in turns" in capsys.readouterr().out

    (output_dir / "onnx" / f"{before[0]['run_id']}.onnx").unlink()
    assert grid_search_mnist.main(argv) == 2
    assert "ONNX files not found" in capsys.readouterr().err
    assert list(csv.DictReader(table.open())) == after  # left as it was


def write_rows(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def test_a_further_cycle_ships_only_when_validation_accuracy_holds(tmp_path, capsys) -> None:
    entry = {"config": LARGE, "checkpoint": "vit-large.pt", "val_accuracy": 0.990, "command": "x"}
    (tmp_path / "manifest.json").write_text(json.dumps({"models": {"Large": entry}}))
    row = {"run_id": run_id(LARGE), **LARGE}
    better, worse = {**row, "val_accuracy": "0.9904"}, {**row, "val_accuracy": "0.9898"}

    assert improved_on_start({"Large": better}, tmp_path) == {"Large": better}
    assert improved_on_start({"Large": worse}, tmp_path) == {}
    assert "below the 0.9900 it started from: not shipped" in capsys.readouterr().out


def test_retime_shipped_rewrites_only_the_latencies_of_the_manifest(tmp_path, capsys) -> None:
    from custom_modules.export.onnx_export import export_onnx
    from custom_modules.training.checkpoints import save_checkpoint
    from custom_modules.vision_transformer import VisionTransformer, ViTConfig

    model = VisionTransformer(ViTConfig(**FAST)).eval()
    export_onnx(model, tmp_path / "vit-fast.onnx")
    save_checkpoint(model, tmp_path / "vit-fast.pt")
    entry = {"file": "vit-fast.onnx", "checkpoint": "vit-fast.pt", "config": FAST, "params": 1}
    entry |= {"onnx_p50_us": 1e6, "torch_p50_us": 1e6, "bench_threads": 4, "command": "x"}
    before = {"models": {"Fast": entry}, "grid_results": "grid_results.csv"}
    (tmp_path / "manifest.json").write_text(json.dumps(before))

    argv = ["--retime-shipped", "--models-dir", str(tmp_path), "--bench-calls", "30"]
    assert grid_search_mnist.main(argv) == 0
    after = json.loads((tmp_path / "manifest.json").read_text())
    timed = after["models"]["Fast"]
    assert 1 < timed["onnx_p50_us"] < 1e5 and 1 < timed["torch_p50_us"] < 1e5
    assert timed["bench_threads"] == 1
    latency = {"onnx_p50_us", "torch_p50_us", "bench_threads"}
    assert {k: v for k, v in timed.items() if k not in latency} == {
        k: v for k, v in entry.items() if k not in latency
    }
    assert after["grid_results"] == "grid_results.csv"
    assert "Fast" in capsys.readouterr().out

    (tmp_path / "vit-fast.pt").unlink()
    assert grid_search_mnist.main(argv) == 2
    assert "vit-fast.pt" in capsys.readouterr().err
    assert json.loads((tmp_path / "manifest.json").read_text()) == after  # left as it was
    assert grid_search_mnist.main(["--retime-shipped", "--models-dir", str(tmp_path / "no")]) == 2
    assert "ship models first" in capsys.readouterr().err


@pytest.mark.slow
def test_reexport_shipped_writes_the_onnx_files_again_from_the_checkpoints(tmp_path) -> None:
    from custom_modules.training.checkpoints import load_checkpoint

    table = write_table(tmp_path / "grid_results.csv", RUNS)
    data_dir = write_mnist_folder(tmp_path / "mnist", synthetic_mnist())
    models_dir = tmp_path / "models"
    common = ["--data-dir", str(data_dir), "--models-dir", str(models_dir), "--val-size", "40"]
    ship = ["--ship", "--results-table", str(table), "--output-dir", str(tmp_path / "ship")]
    more = ["--epochs", "1", "--batch-size", "32", "--wandb", "disabled", "--bench-calls", "20"]
    assert grid_search_mnist.main([*ship, *more, *common]) == 0
    before = json.loads((models_dir / "manifest.json").read_text())
    (models_dir / "vit-fast.onnx").unlink()  # lost, or written by an older export

    assert grid_search_mnist.main(["--reexport-shipped", *common]) == 0
    after = json.loads((models_dir / "manifest.json").read_text())
    assert after["grid_results"] == before["grid_results"]
    kept = ("config", "params", "val_accuracy", "test_accuracy", "test_f1", "command")
    for name in ("Fast", "Large"):
        assert {k: after["models"][name][k] for k in kept} == {
            k: before["models"][name][k] for k in kept
        }
        entry = after["models"][name]
        assert (models_dir / entry["file"]).stat().st_size == entry["size_bytes"]
        images = torch.randn(3, 1, 28, 28)
        expected = load_checkpoint(models_dir / entry["checkpoint"])(images)
        probabilities, _ = OnnxViT(models_dir / entry["file"]).predict(images.numpy())
        torch.testing.assert_close(
            torch.from_numpy(probabilities), expected.softmax(-1), atol=1e-5, rtol=0
        )

    (models_dir / "vit-large.pt").unlink()
    assert grid_search_mnist.main(["--reexport-shipped", *common]) == 2
    assert json.loads((models_dir / "manifest.json").read_text()) == after  # left as it was


def test_robust_fine_tunes_ships_and_calibrates_then_resumes(tmp_path, capsys, monkeypatch) -> None:
    table = write_table(tmp_path / "grid_results.csv", RUNS)
    data_dir = write_mnist_folder(tmp_path / "mnist", synthetic_mnist())
    models_dir = tmp_path / "models"
    common = [
        "--data-dir", str(data_dir), "--models-dir", str(models_dir), "--batch-size", "32",
        "--val-size", "40", "--wandb", "disabled", "--bench-calls", "20",
    ]  # fmt: skip
    ship = ["--ship", "--results-table", str(table), "--output-dir", str(tmp_path / "ship")]
    assert grid_search_mnist.main([*ship, "--epochs", "1", *common]) == 0
    robust = ["--robust", "--output-dir", str(tmp_path / "robust"), "--non-digits", "64"]
    assert grid_search_mnist.main([*robust, "--only", "Fast", "--epochs", "2", *common]) == 0
    models = read_manifest(models_dir).models
    for name in ("Fast", "Large"):  # every shipped model is calibrated, fine-tuned or not
        assert models[name].temperature > 0 and 0 < models[name].decline_below <= 1
        calibration = models[name].extra["calibration"]
        assert calibration["val_nll_after"] <= calibration["val_nll_before"] + 1e-6
    assert [h["epoch"] for h in models["Fast"].extra["history"]] == [1, 2]
    assert "history" not in models["Large"].extra
    assert models["Fast"].command.endswith(
        " --robust " + shlex.join(robust[1:]) + " --only Fast --epochs 2 " + shlex.join(common)
    )
    out = capsys.readouterr().out
    assert "Fast epoch 2" in out and "declines below" in out
    assert re.search(r"Fast epoch 2: .* \(\d+ s of training\)", out)

    # the same command again: the schedule is done, nothing is trained again, named once
    command = models["Fast"].command
    assert grid_search_mnist.main([*robust, "--only", "Fast", "--epochs", "2", *common]) == 0
    assert "resuming after epoch 2" in capsys.readouterr().out
    assert read_manifest(models_dir).models["Fast"].command == command

    # and with --interpolate: a mix of the start and the fine-tuned weights, chosen on validation;
    # the start is the shipped checkpoint as it is, whatever fine-tuning did to its copy
    shipped = load_checkpoint(models_dir / "vit-fast.pt").state_dict()
    starts = []

    def spy(start, tuned, check, given_alpha=None):
        starts.append(start.state_dict())
        return choose_interpolation(start, tuned, check, given_alpha)

    monkeypatch.setattr(custom_modules.grid.robust, "choose_interpolation", spy)
    assert (
        grid_search_mnist.main(
            [*robust, "--interpolate", "--only", "Fast", "--epochs", "2", *common]
        )
        == 0
    )
    interpolation = read_manifest(models_dir).models["Fast"].extra["interpolation"]
    assert len(starts) == 1 and all(torch.equal(starts[0][k], v) for k, v in shipped.items())
    assert interpolation["alpha"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert sorted(map(float, interpolation["mixes"])) == [0.25, 0.5, 0.75, 1.0]
    assert f"shipping the mix at alpha {interpolation['alpha']}" in capsys.readouterr().out
    # --interpolate-at: the finished state mixed at the alpha given, the rule's beside it
    at = [*robust, "--interpolate-at", "0.25", "--only", "Fast", "--epochs", "2", *common]
    assert grid_search_mnist.main(at) == 0
    interpolation = read_manifest(models_dir).models["Fast"].extra["interpolation"]
    assert interpolation["alpha"] == 0.25 and "alpha_by_clean_rule" in interpolation
    out = capsys.readouterr().out
    assert "resuming after epoch 2" in out and "shipping the mix at alpha 0.25" in out

    # --from-scratch: the configuration from fresh weights, a longer warm-up, its own command
    fine_tuned = load_checkpoint(models_dir / "vit-large.pt").state_dict()
    calls = []

    def finetune_spy(model, data, inputs, config, *args):
        calls.append(({k: v.clone() for k, v in model.state_dict().items()}, config))
        return finetune_robust(model, data, inputs, config, *args)

    monkeypatch.setattr(custom_modules.grid.robust, "finetune_robust", finetune_spy)
    scratch = ["--robust", "--from-scratch", "--output-dir", str(tmp_path / "s")]
    scratch += ["--non-digits", "64", "--only", "Large", "--epochs", "1"]
    assert grid_search_mnist.main([*scratch, *common]) == 0
    ((start, config),) = calls
    torch.manual_seed(0)
    fresh = VisionTransformer(ViTConfig(**{**LARGE, "dropout": 0.0})).state_dict()
    assert all(torch.equal(start[k], v) for k, v in fresh.items())
    assert not torch.equal(start["head.weight"], fine_tuned["head.weight"])
    assert config.warmup_epochs == 2.0
    large = read_manifest(models_dir).models["Large"]
    assert large.command == "python grid_search_mnist.py " + shlex.join([*scratch, *common])
    assert [h["epoch"] for h in large.extra["history"]] == [1]

    # --widen-mlp: fine-tuned from the shipped checkpoint with wider MLPs, reading as it did
    shipped_large = load_checkpoint(models_dir / "vit-large.pt")
    wide = ["--robust", "--widen-mlp", "4", "--output-dir", str(tmp_path / "w")]
    wide += ["--non-digits", "64", "--only", "Large", "--epochs", "1"]
    assert grid_search_mnist.main([*wide, *common]) == 0
    start = VisionTransformer(ViTConfig(**{**LARGE, "mlp_ratio": 4})).eval()
    start.load_state_dict(calls[-1][0])
    images = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(start(images), shipped_large(images))
    large = read_manifest(models_dir).models["Large"]
    assert large.config == {**LARGE, "mlp_ratio": 4}
    assert load_checkpoint(models_dir / "vit-large.pt").config.mlp_ratio == 4
    # ... and with --from-scratch: that configuration from fresh weights
    fresh_wide = ["--robust", "--from-scratch", "--widen-mlp", "3", "--output-dir"]
    fresh_wide += [str(tmp_path / "fw"), "--non-digits", "64", "--only", "Large", "--epochs", "1"]
    assert grid_search_mnist.main([*fresh_wide, *common]) == 0
    torch.manual_seed(0)
    fresh = VisionTransformer(ViTConfig(**{**LARGE, "mlp_ratio": 3, "dropout": 0.0}))
    assert all(torch.equal(calls[-1][0][k], v) for k, v in fresh.state_dict().items())
    assert read_manifest(models_dir).models["Large"].config == {**LARGE, "mlp_ratio": 3}
    # --patch-overlap: the shipped checkpoint with larger patch kernels, reading as it did
    shipped_large = load_checkpoint(models_dir / "vit-large.pt")
    overlap = ["--robust", "--patch-overlap", "2", "--output-dir", str(tmp_path / "o")]
    overlap += ["--non-digits", "64", "--only", "Large", "--epochs", "1"]
    assert grid_search_mnist.main([*overlap, *common]) == 0
    start = VisionTransformer(ViTConfig(**{**LARGE, "mlp_ratio": 3, "patch_overlap": 2})).eval()
    start.load_state_dict(calls[-1][0])
    torch.testing.assert_close(start(images), shipped_large(images))
    assert load_checkpoint(models_dir / "vit-large.pt").config.patch_overlap == 2
    assert load_manifest_json(models_dir)["models"]["Large"]["config"]["patch_overlap"] == 2

    head = ["--robust", "--only", "Large", "--head-only", "--output-dir", str(tmp_path / "h")]
    assert grid_search_mnist.main([*head, "--non-digits", "64", *common]) == 0
    assert read_manifest(models_dir).models["Large"].extra["history"][0]["epoch"] == 30

    # --distill: a CNN teacher trained first (its state kept for a rerun), then the student
    distill = ["--robust", "--distill", "--output-dir", str(tmp_path / "d"), "--non-digits", "64"]
    assert grid_search_mnist.main([*distill, "--only", "Fast", "--epochs", "1", *common]) == 0
    teacher = read_manifest(models_dir).models["Fast"].extra["teacher"]
    assert [h["epoch"] for h in teacher["history"]] == [1, 2, 3, 4]
    assert teacher["recipe"]["epochs"] == 4
    assert "teacher epoch 4" in capsys.readouterr().out
    assert grid_search_mnist.main([*distill, "--only", "Fast", "--epochs", "1", *common]) == 0
    assert "teacher trained for 4 epochs" in capsys.readouterr().out
    # --teacher-epochs: a longer teacher, trained on the student's own mix of styles
    longer = ["--robust", "--distill", "--teacher-epochs", "2", "--plain", "0.5"]
    longer += ["--output-dir", str(tmp_path / "d2"), "--non-digits", "64"]
    assert grid_search_mnist.main([*longer, "--only", "Fast", "--epochs", "1", *common]) == 0
    teacher = read_manifest(models_dir).models["Fast"].extra["teacher"]
    assert [h["epoch"] for h in teacher["history"]] == [1, 2]
    assert teacher["recipe"]["epochs"] == 2 and teacher["recipe"]["style"]["plain_p"] == 0.5


class FakeCheck:
    """A validation check whose clean accuracy is read from the head's bias (set by the test)."""

    def evaluate(self, model) -> dict[str, float]:
        return {"val_clean_accuracy": float(model.head.bias[0].detach())}


def test_interpolation_mixes_the_weights_and_keeps_the_clean_accuracy() -> None:
    config = ViTConfig(emb_dim=16, num_heads=2, n_layers=1, mlp_ratio=2)
    start, tuned = VisionTransformer(config), VisionTransformer(config)
    half = interpolated(start, tuned, 0.5).state_dict()
    for key, value in tuned.state_dict().items():
        torch.testing.assert_close(half[key], (start.state_dict()[key] + value) / 2)
    with torch.no_grad():  # clean accuracy falls linearly from 0.99 (start) to 0.90 (tuned)
        start.head.bias[0], tuned.head.bias[0] = 0.99, 0.90
    mixed, record = choose_interpolation(start, tuned, FakeCheck())
    # 0.25 -> 0.9675: more than CLEAN_TOLERANCE below the start, so none is kept: the start
    assert record["alpha"] == 0.0 and float(mixed.head.bias[0].detach()) == pytest.approx(0.99)
    with torch.no_grad():
        tuned.head.bias[0] = 0.9975  # every mix is within the tolerance: the tuned model
    assert choose_interpolation(start, tuned, FakeCheck())[1]["alpha"] == 1.0
    with torch.no_grad():
        tuned.head.bias[0] = 0.9868  # alpha 0.25 -> 0.9892, 0.5 -> 0.9884 (below 0.989)
    assert choose_interpolation(start, tuned, FakeCheck())[1]["alpha"] == 0.25
    # a mix chosen on validation otherwise ships instead; the rule's choice is kept beside it
    mixed, record = choose_interpolation(start, tuned, FakeCheck(), given_alpha=0.75)
    assert (record["alpha"], record["alpha_by_clean_rule"]) == (0.75, 0.25)
    assert float(mixed.head.bias[0].detach()) == pytest.approx(0.25 * 0.99 + 0.75 * 0.9868)


def test_a_manifest_entry_keeps_its_patch_overlap_through_a_reexport(tmp_path) -> None:
    config = {"emb_dim": 16, "num_heads": 2, "n_layers": 1, "mlp_ratio": 2, "patch_overlap": 2}
    numbers = {"params": 1, "val_accuracy": 0.9, "onnx_p50_us": 1.0, "torch_p50_us": 1.0}
    tests = {f"test_{m}": 0.9 for m in ("accuracy", "precision", "recall", "f1")}
    entry = {"file": "a.onnx", "checkpoint": "a.pt", "config": config, "bench_threads": 1}
    entry |= numbers | tests | {"command": "python grid_search_mnist.py --robust"}
    shipped = ShippedModel.from_entry(entry, tmp_path)  # as --reexport-shipped reads it
    assert shipped.manifest_entry("a.onnx", "a.pt", 1)["config"] == config
