"""Whether a folder can be made here, tested without making it (`unlearning --check` creates nothing)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def unwritable(path: str | Path) -> str | None:
    """Why `path` could not be created and written, or None: tried on its nearest existing folder with a
    folder made and removed again (access() says yes to root even where mkdir fails, as under /proc)."""
    where = Path(path).expanduser().absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        return f"{where} is not a folder"
    try:
        os.rmdir(tempfile.mkdtemp(dir=where))
    except OSError as e:
        return f"{e.strerror or e} at {where}"
    return None
