"""The repository keeps its promises: one test command, pinned requirements, torch-free app."""

import re
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
