"""`vit-digits-predict` (custom_modules/serving/cli.py): image files in, digits out, no torch."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from custom_modules.serving import cli
from tests.conftest import encode, seven

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "vit-digits-predict"  # made by `pip install -e .`


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    """A readable PNG, JPEG and GIF of a 7, and files that cannot give a digit."""
    files = {
        "seven.png": encode(seven(), "PNG"),
        "seven.jpg": encode(seven().convert("RGB"), "JPEG"),
        "seven.gif": encode(seven(), "GIF"),
        "not-an-image.png": b"this is text",
        "truncated.png": encode(seven(), "PNG")[:200],
        "blank.png": encode(seven().point(lambda _: 0), "PNG"),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(data)
    return paths


def run_cli(args: list, models_dir: Path, env: dict | None = None, script: bool = False):
    command = [str(SCRIPT)] if script else [sys.executable, "-m", "custom_modules.serving.cli"]
    env = {**os.environ, "VIT_DIGITS_MODELS_DIR": str(models_dir), **(env or {})}
    return subprocess.run(
        [*command, *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_console_script_is_declared() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["vit-digits-predict"] == "custom_modules.serving.cli:main"


def test_the_console_script_reads_files_without_importing_torch(tiny_models_dir, images):
    """Run as installed; Python's own import log shows every module it loaded."""
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} not installed: run `pip install -e .`")
    done = run_cli(
        ["--json", images["seven.png"], images["seven.jpg"], images["seven.gif"]],
        tiny_models_dir,
        env={"PYTHONPROFILEIMPORTTIME": "1"},
        script=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = [line.split("|")[-1].strip() for line in done.stderr.splitlines()]
    assert "onnxruntime" in imported  # the log is there
    assert not [name for name in imported if name.split(".")[0] == "torch"]
    answers = json.loads(done.stdout)
    assert [Path(a["file"]).name for a in answers] == ["seven.png", "seven.jpg", "seven.gif"]
    for answer in answers:
        assert answer["digit"] in range(10) and 0.1 <= answer["probability"] <= 1
        assert answer["declined"] is False  # the tiny models' manifest has no decline rule


def test_text_output_one_line_per_file(tiny_models_dir, images) -> None:
    done = run_cli([images["seven.png"], "--model", "Large"], tiny_models_dir)
    assert done.returncode == 0 and done.stderr == ""
    (line,) = done.stdout.splitlines()
    assert line.startswith(f"{images['seven.png']}: ")
    assert "%" in line


def test_unreadable_files_get_one_line_each_and_the_others_are_still_read(
    tiny_models_dir, images, tmp_path
) -> None:
    missing = tmp_path / "missing.png"
    order = ["not-an-image.png", "seven.png", "truncated.png", "blank.png"]
    done = run_cli([*(images[name] for name in order), missing, tmp_path], tiny_models_dir)
    assert done.returncode == 1
    assert len(done.stdout.splitlines()) == 1 and "seven.png: " in done.stdout
    errors = done.stderr.splitlines()
    assert errors == [
        f"vit-digits-predict: error: {images['not-an-image.png']}: cannot read: "
        "not a PNG, JPEG or GIF image.",
        f"vit-digits-predict: error: {images['truncated.png']}: cannot read: "
        + errors[1].split(": cannot read: ", 1)[1],
        f"vit-digits-predict: error: {images['blank.png']}: no digit found: the image is blank, "
        "too faint or too small",
        f"vit-digits-predict: error: {missing}: cannot read: No such file or directory",
        f"vit-digits-predict: error: {tmp_path}: cannot read: Is a directory",
    ]
    assert "damaged or truncated" in errors[1]


def test_json_lists_errors_in_order(tiny_models_dir, images) -> None:
    done = run_cli(["--json", images["seven.png"], images["blank.png"]], tiny_models_dir)
    assert done.returncode == 1
    first, second = json.loads(done.stdout)
    assert set(first) == {"file", "digit", "probability", "declined", "notes"}
    assert second == {"file": str(images["blank.png"]), "error": second["error"]}
    assert second["error"].startswith("no digit found")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "Huge"], "no model 'Huge' in"),
        (["--models-dir", "/nonexistent"], "/nonexistent/manifest.json: not found"),
    ],
)
def test_a_model_that_cannot_be_opened_is_one_line_and_exit_1(
    tiny_models_dir, images, args, message
) -> None:
    done = run_cli([*args, images["seven.png"]], tiny_models_dir)
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("vit-digits-predict: error: ") and message in line


def test_no_files_is_a_usage_error(tiny_models_dir) -> None:
    done = run_cli([], tiny_models_dir)
    assert done.returncode == 2 and "IMAGE" in done.stderr


def test_declined_and_calibrated_as_the_manifest_says(tiny_models_dir, images, tmp_path) -> None:
    """The model's `temperature` and `decline_below` from its manifest entry are applied."""
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "vit-fast.onnx").write_bytes((tiny_models_dir / "vit-fast.onnx").read_bytes())
    manifest = json.loads((tiny_models_dir / "manifest.json").read_text())
    manifest["models"]["Fast"] |= {"temperature": 100.0, "decline_below": 0.5}
    manifest["models"] = {"Fast": manifest["models"]["Fast"]}
    (models_dir / "manifest.json").write_text(json.dumps(manifest))
    reader = cli.open_model(models_dir, "Fast")
    assert (reader.model.temperature, reader.model.decline_below) == (100.0, 0.5)
    answer = cli.read_digit(images["seven.png"], reader)
    assert answer.probability < 0.2 and answer.declined  # so flat that no digit is sure enough
    assert answer.as_text() == (
        f"{images['seven.png']}: declined (best guess {answer.digit} at "
        f"{answer.probability:.1%}, below the model's 50%)"
    )
    done = run_cli(["--json", images["seven.png"]], models_dir)
    assert done.returncode == 0 and json.loads(done.stdout)[0]["declined"] is True


def test_every_option_has_help_and_a_default_stated() -> None:
    parser = cli.build_parser()
    for action in parser._actions:
        assert action.help, action.option_strings
        if action.option_strings and action.nargs != 0 and "--help" not in action.option_strings:
            assert "default" in action.help, action.option_strings


def test_until_the_manifest_has_a_rule_the_apps_provisional_threshold_declines(
    tiny_model_path, images
) -> None:
    """Like the app (serving/explain.py's is_declined): no `decline_below` in the manifest, so
    the threshold of the model's error-analysis file decides; NaN (no file) declines nothing."""
    from custom_modules.serving.model import OnnxViT

    model = OnnxViT(tiny_model_path)
    assert not cli.read_digit(images["seven.png"], cli.Reader(model)).declined
    strict = cli.read_digit(images["seven.png"], cli.Reader(model, provisional_threshold=1.0))
    assert strict.declined and strict.decline_below == 1.0
    assert strict.as_text().endswith("below the model's 100%)")
