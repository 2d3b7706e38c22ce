"""The package's layers: imports point only downward, with no cycle, and serving stays torch-free.

Read from the source with `ast` (nothing is imported): every `import` and `from ... import` of
every module of custom_modules/ that git tracks (what a clean clone has), at any depth (lazy
imports in functions count too).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "custom_modules"
# what serving and the contract may not import: the layers above them, and torch
FORBIDDEN_BELOW_TRAINING = (
    "custom_modules.training",
    "custom_modules.export",
    "custom_modules.grid",
    "torch",
)
TORCH_FREE = ("custom_modules.contract", "custom_modules.messages", "custom_modules.serving")


def package_files() -> list[Path]:
    """The package's .py files in git (all of them on disk when this is not a git checkout)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "custom_modules"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return sorted(PACKAGE.rglob("*.py"))
    return [ROOT / name for name in listed if name.endswith(".py")]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module `path` imports, as dotted names (`from a import b` gives `a` and `a.b`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; the package uses absolute ones"
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def import_graph() -> dict[str, set[str]]:
    """custom_modules' modules -> the custom_modules modules each imports."""
    paths = {module_name(path): path for path in package_files()}
    return {
        name: {other for other in imported_names(path) if other in paths and other != name}
        for name, path in paths.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the stack, "done" after

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = "open"
        for other in sorted(graph[node]):
            if state.get(other) == "open":
                return [*stack[stack.index(other) :], other]
            if other not in state and (cycle := visit(other, [*stack, other])):
                return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 20  # the walk found the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    "path",
    [path for path in package_files() if module_name(path).startswith(TORCH_FREE)],
    ids=module_name,
)
def test_serving_and_the_contract_import_nothing_above_them(path: Path) -> None:
    bad = {
        name
        for name in imported_names(path)
        for forbidden in FORBIDDEN_BELOW_TRAINING
        if name == forbidden or name.startswith(f"{forbidden}.")
    }
    assert not bad, f"{module_name(path)} imports {sorted(bad)}"


LAYERS = {  # each layer may import only from layers listed before it (and itself)
    "base": ("custom_modules.contract", "custom_modules.messages", "custom_modules.atomic_file"),
    "model": (
        "custom_modules.image_encoder",
        "custom_modules.attention_module",
        "custom_modules.transformer_block",
        "custom_modules.vision_transformer",
    ),
    "serving": ("custom_modules.serving",),
    "synthetic": ("custom_modules.synthetic",),  # torch-free inputs made here, over serving
    "training": ("custom_modules.training",),
    "export": ("custom_modules.export",),
    "grid": ("custom_modules.grid",),
}


def layer_of(module: str) -> int:
    for index, prefixes in enumerate(LAYERS.values()):
        if any(module == p or module.startswith(f"{p}.") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def test_imports_point_only_downward() -> None:
    upward = [
        f"{module} -> {other}"
        for module, others in import_graph().items()
        if module != "custom_modules"
        for other in others
        if layer_of(other) > layer_of(module)
    ]
    assert not upward, upward


def test_the_grid_command_line_needs_no_torch_to_show_its_help() -> None:
    code = (
        "import runpy, sys; sys.argv = ['grid_search_mnist.py', '--help']\n"
        "try:\n    runpy.run_path('grid_search_mnist.py', run_name='__main__')\n"
        "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
        "assert 'torch' not in sys.modules, 'torch imported for --help'\n"
    )
    subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60, capture_output=True
    )
