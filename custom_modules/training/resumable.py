"""A run's training state on disk, so that a killed run goes on from its last finished epoch.

The file holds a dict of tensors and plain values (`torch.load(weights_only=True)` reads it back)
whose `setup` names the run: a state saved for another setup is not resumed.
"""

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from custom_modules.atomic_file import replaced_atomically
from custom_modules.messages import one_line

State = TypeVar("State")


def save_state(path: Path, state: dict) -> None:
    """Written atomically: a kill mid-write leaves the previous epoch's state."""
    with replaced_atomically(path) as tmp_path:
        torch.save(state, tmp_path)


def load_state(
    path: Path | None, setup: dict, what: str, make: Callable[[dict], State]
) -> State | None:
    """`make(saved)` for the state saved for this `setup`, or None to start afresh: no file, a
    damaged or outdated one, or one saved for another setup (the last ones said in one line)."""
    if path is None or not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        same_setup = isinstance(saved, dict) and saved.get("setup") == setup
        state = make(saved) if same_setup else None
    except Exception as err:  # damaged, or written by other code: say so, and start afresh
        print(f"{path}: cannot read the saved {what} ({one_line(err, 200)}); starting afresh")
        return None
    if state is None:
        print(f"{path}: {what} saved for another model, recipe or data; starting afresh")
    return state
