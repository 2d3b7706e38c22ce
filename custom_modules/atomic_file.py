"""Files written whole or not at all: written under a temporary name beside them, then renamed."""

import os
import uuid
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
    # a unique name, not created here, so the writer makes the file with the usual permissions
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
