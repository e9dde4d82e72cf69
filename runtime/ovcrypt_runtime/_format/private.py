"""Folders only this user can reach, told by what the platform offers.

- **POSIX** (Linux, macOS): owners and mode bits. A folder is private when it belongs to this user (or root) and
  neither its group nor others may write to it; a new one is made with mode 0700.
- **Without user ids** (Windows: Python has no `os.geteuid` there, and reports every folder as mode 0o777 and
  owner 0, so mode bits say nothing and chmod cannot change that). Access is governed by ACLs instead, and a
  user's profile folder (`%USERPROFILE%`, which holds `%LOCALAPPDATA%`) grants access only to that user, SYSTEM and
  the Administrators by default. So a folder is private when it lies inside `%LOCALAPPDATA%` or `%USERPROFILE%`,
  and not trusted elsewhere (`C:\\ProgramData`, `C:\\Temp`, a share). A user who loosens the ACLs of their own
  profile defeats this, as `chmod 777` of a home folder does on POSIX.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_ROOTS = ("LOCALAPPDATA", "USERPROFILE")  # environment variables naming the user's own folders (Windows)


def modes_mean_something() -> bool:
    """Whether owners and mode bits tell who may write to a folder here (POSIX), rather than ACLs (Windows)."""
    return hasattr(os, "geteuid")


def private_roots() -> list[Path]:
    """The user's own folders on a platform without user ids: %LOCALAPPDATA% and %USERPROFILE%, where set."""
    return [Path(os.environ[name]) for name in PRIVATE_ROOTS if os.environ.get(name)]


def _inside(path: Path, root: Path) -> bool:
    real, base = os.path.normcase(os.path.realpath(path)), os.path.normcase(os.path.realpath(root))
    try:
        return os.path.commonpath([real, base]) == base
    except ValueError:  # another drive
        return False


def location_problem(folder: Path) -> str | None:
    """On a platform without user ids: why `folder` is not private (it is outside the user's profile), or None."""
    roots = private_roots()
    if any(_inside(folder, root) for root in roots):
        return None
    if not roots:
        return "neither %LOCALAPPDATA% nor %USERPROFILE% is set, so no folder is known to be private to this user"
    return (
        "on this system only a folder inside your own profile is private (mode bits mean nothing here), and it is "
        f"outside {' and '.join(str(r) for r in roots)}; use a folder under %LOCALAPPDATA%"
    )


def folder_problem(folder: Path, what: str = "it") -> str | None:
    """Why an existing `folder` is not private to this user, or None (also None when it does not exist).

    POSIX: it must be a folder of this user or root that neither group nor others may write to. Without user ids
    (Windows): it must lie inside %LOCALAPPDATA% or %USERPROFILE% (see the module's docstring)."""
    if not modes_mean_something() and (problem := location_problem(folder)) is not None:
        return problem
    try:
        info = os.stat(folder)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return str(exc)
    if not stat.S_ISDIR(info.st_mode):
        return f"{what} is not a folder"
    if not modes_mean_something():
        return None
    if info.st_uid not in (os.geteuid(), 0):
        return f"{what} belongs to user id {info.st_uid}"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"other users can write to {what} (mode {stat.S_IMODE(info.st_mode):o}); make it private with chmod 700"
    return None
