"""Whole files or none: every file this project writes (build output, CLI output, cache entries) goes
through here, so a crash, a full disk or a concurrent writer never leaves a half-written file under its
final name."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

# atomic_writer's temporary files are `.<name>.<random>.tmp` (tempfile.mkstemp's 8 random characters).
_SUFFIX = ".tmp"
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}" + re.escape(_SUFFIX) + r"\Z")


def temporary_target(filename: str) -> str | None:
    """The name of the file that `filename` was the temporary file of (atomic_writer's naming), or None.

    Such a file outlives its writer only when the process was killed (SIGKILL runs no cleanup)."""
    match = _TEMPORARY.match(filename)
    return match["name"] if match else None


@contextmanager
def atomic_writer(dest: Path) -> Iterator[BinaryIO]:
    """Write to a temporary file beside `dest`, fsync, then rename it over `dest`; on error, remove it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=_SUFFIX, dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # a failed write names no file by itself (disk full, file too large)
            raise OSError(exc.errno, exc.strerror or str(exc), str(dest)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
