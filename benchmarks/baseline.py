"""The commit the issues measure "today" against, checked out beside this tree for a benchmark.

with baseline_worktree() as tree:   # a temporary `git worktree` of BASELINE, removed after
    ...
"""

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

BASELINE = "3cfcb59"  # the app and models as they were when the latency issues were filed
ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def baseline_worktree() -> Iterator[Path]:
    """BASELINE's files in a temporary folder; the worktree is removed however the block ends."""
    with tempfile.TemporaryDirectory(prefix="baseline-") as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), BASELINE],
            check=True,
            capture_output=True,
        )
        try:
            yield tree
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )
            subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)
