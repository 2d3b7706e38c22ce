"""The grid file (`param_grid.json`): read, checked, expanded; and the name of a configuration."""

import json
from pathlib import Path

from sklearn.model_selection import ParameterGrid

from custom_modules.contract import CONFIG_KEYS


class GridError(ValueError):
    """The grid file is missing, not JSON, or describes an impossible model."""


def load_grid(path: str | Path) -> list[dict[str, int]]:
    """Read and validate a grid file; return every configuration, in `ParameterGrid` order."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise GridError(f"{path}: grid file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise GridError(f"{path}: cannot read the grid file ({err})") from None
    except json.JSONDecodeError as err:
        raise GridError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(spec, dict) or not spec:
        raise GridError(f"{path}: expected a JSON object mapping parameter names to lists")
    unknown = sorted(set(spec) - set(CONFIG_KEYS))
    if unknown:
        raise GridError(f"{path}: unknown key(s) {unknown}; allowed: {list(CONFIG_KEYS)}")
    missing = [key for key in CONFIG_KEYS if key not in spec]
    if missing:
        raise GridError(f"{path}: missing key(s) {missing}")
    for key, values in spec.items():
        if not isinstance(values, list) or not values:
            raise GridError(f"{path}: '{key}' must be a non-empty list of positive integers")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GridError(f"{path}: '{key}' has {value!r}; expected positive integers")
    configs = list(ParameterGrid(spec))
    for config in configs:
        if config["emb_dim"] % config["num_heads"] != 0:
            raise GridError(
                f"{path}: emb_dim {config['emb_dim']} is not divisible by "
                f"num_heads {config['num_heads']}"
            )
    return configs


def run_id(config: dict[str, int]) -> str:
    """A stable name for a configuration, e.g. `vit-e64-h4-l2-m2`."""
    return "vit-e{emb_dim}-h{num_heads}-l{n_layers}-m{mlp_ratio}".format(**config)


def describe(config: dict[str, int]) -> str:
    """A configuration for messages: `vit-e64-h4-l2-m2 (emb_dim=64, num_heads=4, ...)`."""
    params = ", ".join(f"{key}={config[key]}" for key in CONFIG_KEYS)
    return f"{run_id(config)} ({params})"
