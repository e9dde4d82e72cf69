"""A private folder whose files live in memory only, for OpenVINO GenAI calls that insist on a config path.

openvino-genai reads some configs only from disk even when its models come from memory (VLMPipeline's
`config_dir_path`, image-generation component configs, the scheduler config, `GenerationConfig(path)`).
The decrypted JSON must not touch a disk, so each file is an anonymous memory file (`memfd_create`) and
the folder holds only symbolic links to `/proc/self/fd/N`: the plaintext stays in memory, the links
name nothing secret, the folder is mode 0700, and it is removed as soon as the caller is done.

Where memfd is not available, a private 0700 folder on a memory file system (/dev/shm) is used instead.
With neither, the caller gets UnsupportedModelError: decrypting to a disk-backed folder is never an option.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from ._errors import UnsupportedModelError

_SHM = Path("/dev/shm")


@contextlib.contextmanager
def memory_folder(files: Mapping[str, bytes]) -> Iterator[Path]:
    """Yield a folder holding `files` (relative POSIX path -> content) in memory only; remove it on exit."""
    if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
        with _memfd_folder(files) as folder:
            yield folder
    elif _SHM.is_dir() and os.access(_SHM, os.W_OK):
        with _shm_folder(files) as folder:
            yield folder
    else:
        raise UnsupportedModelError(
            "openvino-genai needs this model's configs as files, and this system has neither memfd_create nor "
            "/dev/shm to hold them in memory; hatch-ovcrypt never writes decrypted files to disk"
        )


@contextlib.contextmanager
def _memfd_folder(files: Mapping[str, bytes]) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="ovcrypt-configs-"))  # mode 0700; holds links only
    fds: list[int] = []
    try:
        for relpath, data in files.items():
            fd = os.memfd_create(relpath.replace("/", "_"), os.MFD_CLOEXEC)
            fds.append(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            link = folder / relpath
            link.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            link.symlink_to(f"/proc/{os.getpid()}/fd/{fd}")
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        for fd in fds:
            os.close(fd)


@contextlib.contextmanager
def _shm_folder(files: Mapping[str, bytes]) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="ovcrypt-configs-", dir=_SHM))  # tmpfs, mode 0700
    try:
        for relpath, data in files.items():
            path = folder / relpath
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
