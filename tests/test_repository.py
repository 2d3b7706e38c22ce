"""The repository keeps its promises: one test command, pinned requirements, torch-free app,
repository maps that match `git ls-files`, and documentation whose links all lead somewhere."""

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FULL_MAP = "docs/repository.md"  # every module and script; README.md has the short map
SELF_EXPLAINING = {"LICENSE", "README.md", ".gitignore", "pyproject.toml"}


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


def map_paths(document: str) -> list[str]:
    """The paths of a repository map's table, first column, in `document` (README.md or
    docs/repository.md); a bare name in a cell lies in the folder of the path before it
    (`custom_modules/local.py`, `ray_backend.py`)."""
    text = (ROOT / document).read_text()
    heading = re.search(r"^#+ (Repository map|Repository at a glance)$", text, re.MULTILINE)
    assert heading, f"{document}: no repository map"
    table = re.search(r"^\| path \|.*?(?=\n\n|\Z)", text[heading.end() :], re.M | re.S)[0]
    paths = []
    for row in table.splitlines()[2:]:
        folder = ""
        for name in re.findall(r"`([^`]+)`", row.split(" | ")[0]):
            path = name if "/" in name.rstrip("/") or not folder else folder + name
            head, slash, _ = path.rpartition("/")
            folder = path if path.endswith("/") else head + slash
            paths.append(path)
    return paths


def assert_paths_exist(paths: list[str], document: str) -> None:
    tracked = tracked_files()
    for path in paths:
        if path.endswith("/"):
            assert any(f.startswith(path) for f in tracked), f"{document}: {path}: nothing tracked"
        else:
            assert path in tracked, f"{path}: in the map of {document}, not in git ls-files"


@pytest.mark.parametrize("document", ["README.md", FULL_MAP])
def test_every_path_of_the_repository_maps_exists(document: str) -> None:
    paths = map_paths(document)
    assert len(paths) > (30 if document == FULL_MAP else 8)
    assert_paths_exist(paths, document)


def test_the_full_map_names_every_module_and_script() -> None:
    named = set(map_paths(FULL_MAP))
    folders = {path for path in named if path.endswith("/")}
    for file in tracked_files():
        top = file.split("/")[0]
        if "/" in file and not top.startswith("."):
            assert f"{top}/" in folders or any(p.startswith(f"{top}/") for p in named), top
        if file.endswith(".py") and file.startswith(("custom_modules/", "benchmarks/")):
            folder = file.rpartition("/")[0] + "/"
            is_package = file.endswith("/__init__.py") and folder in folders
            assert file in named or is_package, f"{file} is not in the map of {FULL_MAP}"
        if file.endswith(".py") and "/" not in file:
            assert file in named, f"{file} is not in the map of {FULL_MAP}"


def test_the_readme_map_names_every_top_level_entry() -> None:
    """README's short map: every top-level file and folder but the license and config files."""
    named = map_paths("README.md")
    tops = {f.split("/")[0] + ("/" if "/" in f else "") for f in tracked_files()}
    for top in sorted(tops - SELF_EXPLAINING):
        assert any(p == top or p.startswith(top) for p in named), f"{top} is not in README's map"


def test_the_documentation_links_resolve_and_every_page_is_linked() -> None:
    """Every relative link of README.md and docs/*.md points at a tracked file (and, with a
    #fragment, at one of its headings); README links every page of docs/."""
    tracked = set(tracked_files())
    pages = [
        "README.md",
        *sorted(f for f in tracked if f.startswith("docs/") and f.endswith(".md")),
    ]
    assert len(pages) > 5
    readme_links = set()
    for page in pages:
        text = (ROOT / page).read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https://...
            file, _, fragment = target.partition("#")
            path = (Path(page).parent / file).as_posix() if file else page
            path = os.path.normpath(path)
            assert path in tracked, f"{page}: link to {target}: {path} is not in git"
            if page == "README.md":
                readme_links.add(path)
            if fragment and path.endswith(".md"):
                anchors = {
                    heading_anchor(h)
                    for h in re.findall(r"^#+ (.+)$", (ROOT / path).read_text(), re.MULTILINE)
                }
                assert fragment in anchors, f"{page}: link to {target}: no such heading"
    assert set(pages[1:]) <= readme_links, set(pages[1:]) - readme_links


def heading_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_docs_grid_names_every_option_of_the_grid_command() -> None:
    import grid_search_mnist

    text = (ROOT / "docs" / "grid.md").read_text()
    for action in grid_search_mnist.build_parser()._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                assert f"`{option}" in text, f"{option} is not described in docs/grid.md"
