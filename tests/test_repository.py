"""The repository keeps its promises: one test command, pinned requirements, torch-free app."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(python3 -m venv .*?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_exactly_the_readme_test_command() -> None:
    app_command, test_command = readme_commands()
    assert app_command.endswith("streamlit run app.py")
    assert "pip install -r requirements.txt" in app_command and "torch" not in app_command
    assert test_command.endswith("pytest")
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_requirements_are_pinned() -> None:
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-r "):
                assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][\w.+]*", line), (name, line)


def test_app_requirements_have_no_torch() -> None:
    assert "torch" not in (ROOT / "requirements.txt").read_text()


def test_package_init_imports_nothing() -> None:
    source = (ROOT / "custom_modules" / "__init__.py").read_text()
    assert "import" not in source


def tracked_files() -> list[str]:
    done = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.splitlines()


def map_paths() -> list[str]:
    """The paths of the README's repository map, first column; a bare name in a cell lies in the
    folder of the path before it (`custom_modules/local.py`, `ray_backend.py`)."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Repository map", 1)[1].split("\n\n", 2)[1]
    paths = []
    for row in table.splitlines()[2:]:
        folder = ""
        for name in re.findall(r"`([^`]+)`", row.split(" | ")[0]):
            path = name if "/" in name.rstrip("/") or not folder else folder + name
            head, slash, _ = path.rpartition("/")
            folder = path if path.endswith("/") else head + slash
            paths.append(path)
    return paths


def test_every_path_of_the_repository_map_exists() -> None:
    paths = map_paths()
    assert len(paths) > 30
    tracked = tracked_files()
    for path in paths:
        if path.endswith("/"):
            assert any(f.startswith(path) for f in tracked), f"{path}: no tracked file under it"
        else:
            assert path in tracked, f"{path}: in the README's map, not in git ls-files"


def test_the_repository_map_names_every_module_and_script() -> None:
    named = set(map_paths())
    folders = {path for path in named if path.endswith("/")}
    for file in tracked_files():
        top = file.split("/")[0]
        if "/" in file and not top.startswith("."):
            assert f"{top}/" in folders or any(p.startswith(f"{top}/") for p in named), top
        if file.endswith(".py") and file.startswith(("custom_modules/", "benchmarks/")):
            folder = file.rpartition("/")[0] + "/"
            is_package = file.endswith("/__init__.py") and folder in folders
            assert file in named or is_package, f"{file} is not in the README's repository map"
