"""Linux, macOS and Windows simulated on this Linux machine, for the runtime's and the writer's tests (issue 21).

A test that uses the `simulated_platform` fixture (conftest.py; usually through
`pytestmark = pytest.mark.usefixtures("simulated_platform")`) runs once per platform in PLATFORMS. Each
simulation hides what that platform lacks, as Python there lacks it:
- the functions and flags of `os` that its Python does not have (HIDDEN);
- Linux's memory files: `memfd_create`, and /dev/shm and /proc/self/fd through `_memfiles`'s own path constants;
- on Windows, folder modes: `os.stat`/`os.lstat`/`os.fstat` report every folder as mode 0o777, as Python does
  there (it knows no POSIX modes), and %LOCALAPPDATA% and %USERPROFILE% name pytest's base temporary folder (on
  Windows pytest's temporary folders lie inside %LOCALAPPDATA%\\Temp);
- `sys.platform` is the platform's value, set after the native extensions (openvino, openvino_genai,
  cryptography, numpy) are loaded, so they load as the Linux builds they are.
"Linux" is this machine unchanged. What cannot be simulated (a real Windows file system, ACLs, the C runtime's
file sharing) is what .github/workflows/platforms.yml runs on real Windows and macOS runners.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import signal
import stat
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest

PLATFORMS = ("linux", "darwin", "win32")

# What Python lacks on each platform, among the names the project uses. macOS has pread; its preadv comes with
# macOS 11 and a Python built for it, so the simulation takes the older case and reads with pread.
_NO_LINUX_ONLY = ("memfd_create", "O_DIRECT", "O_TMPFILE", "posix_fadvise", "RWF_NOWAIT", "sched_getaffinity")
HIDDEN: dict[str, tuple[str, ...]] = {
    "linux": (),
    "darwin": (*_NO_LINUX_ONLY, "preadv"),
    "win32": (*_NO_LINUX_ONLY, "preadv", "pread", "geteuid", "O_NOFOLLOW", "O_NONBLOCK"),
}
# Loaded before sys.platform changes (numpy.testing reads sysconfig, whose data module is named by the platform).
NATIVE_MODULES = (
    "numpy", "numpy.testing", "cryptography.hazmat.bindings._rust", "cryptography.hazmat.primitives.ciphers.aead",
    "openvino", "openvino_genai", "openvino_tokenizers",
)  # fmt: skip


def _windows_stat(real: Callable[..., os.stat_result]) -> Callable[..., os.stat_result]:
    """`real` (os.stat, os.lstat or os.fstat), with every folder's mode reported as Windows' Python does: 0o777."""

    def windows(*args: object, **kwargs: object) -> os.stat_result:
        info = real(*args, **kwargs)
        if not stat.S_ISDIR(info.st_mode):
            return info
        fields = list(info)
        fields[stat.ST_MODE] = stat.S_IFDIR | 0o777
        extra = {name: getattr(info, name) for name in dir(info) if name.startswith("st_") and name not in _SEQUENCE}
        return os.stat_result(fields, extra)

    return windows


_SEQUENCE = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size")


def simulate(platform: str, monkeypatch: pytest.MonkeyPatch, private_root: Path) -> None:
    """Make this process look like `platform` (one of PLATFORMS) until `monkeypatch` is undone."""
    if platform == "linux":
        return
    for module in NATIVE_MODULES:  # loaded as what they are, before sys.platform says otherwise
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    sysconfig.get_config_vars()  # cached as this platform's
    from ovcrypt_runtime._pipelines import memfiles as _memfiles

    for name in HIDDEN[platform]:
        monkeypatch.delattr(os, name, raising=False)
    missing = private_root / "simulated-missing"
    monkeypatch.setattr(_memfiles, "TMPFS_DIR", missing / "dev" / "shm")
    monkeypatch.setattr(_memfiles, "PROC_FD", missing / "proc" / "self" / "fd")
    if platform == "win32":
        for name in ("stat", "lstat", "fstat"):
            monkeypatch.setattr(os, name, _windows_stat(getattr(os, name)))
        monkeypatch.setenv("LOCALAPPDATA", str(private_root))
        monkeypatch.setenv("USERPROFILE", str(private_root))
    monkeypatch.setattr(sys, "platform", platform)


# --- what a real platform cannot do, by feature (for the suite on real Windows and macOS runners) -------------

NEEDS_FIFO = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (os.mkfifo)")
NEEDS_PROCESS_GROUPS = pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs process groups (os.killpg)")
NEEDS_SIGKILL = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
NEEDS_RUSAGE = pytest.mark.skipif(importlib.util.find_spec("resource") is None, reason="needs resource.getrusage")
NEEDS_PROC = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps")


def venv_python(root: Path) -> Path:
    """The interpreter of the virtual environment at `root`: Scripts\\python.exe on Windows, bin/python elsewhere."""
    return root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
