"""Files written whole or not at all: written under a temporary name beside them, then renamed."""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path beside `path`; when the block ends, it replaces `path`.

    Readers see the old file or the new one, never half of one. If the block raises (or the
    process is killed) the target is untouched and the temporary file is removed (or left as
    a hidden `.name.*.tmp`). Each call gets its own temporary name, so concurrent writers
    cannot mix their bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(name)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
