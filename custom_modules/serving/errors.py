"""The one error for an unusable model file or manifest, with how to make a good one."""

from pathlib import Path

PRODUCE_MODELS = (
    "restore it from git, or make the models with `python grid_search_mnist.py --ship` "
    "(see models/README.md)"
)


class ModelFileError(RuntimeError):
    """A model file or manifest that is missing, corrupt, or not one written by the export."""


def model_file_error(path: Path, problem: str) -> ModelFileError:
    """The one-line error for an unusable file: which file, what is wrong, how to remake it."""
    return ModelFileError(f"{path}: {problem}; {PRODUCE_MODELS}")
