"""The local backend: the grid's runs one after the other in this process."""

import time
import traceback

from custom_modules.grid.progress import GridProgress
from custom_modules.grid.run import RunFn
from custom_modules.grid.settings import GridSettings
from custom_modules.training.data import DataSplits
from custom_modules.training.loop import select_device


def run_locally(
    todo: list[dict[str, int]],
    settings: GridSettings,
    data: DataSplits,
    run_one: RunFn,
    progress: GridProgress,
) -> None:
    """One run after the other in this process; a run that raises is reported and skipped."""
    device = select_device(settings.device)
    data = data.to(device)
    print(f"device {device}")
    for config in todo:
        started = time.perf_counter()
        try:
            row = run_one(config, settings, data, device)
        except Exception as err:  # not KeyboardInterrupt: Ctrl+C stops the whole grid
            traceback.print_exc()
            progress.record_failure(config, err)
            continue
        progress.record(row, time.perf_counter() - started)
