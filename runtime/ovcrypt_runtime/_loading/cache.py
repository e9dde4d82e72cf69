"""The encrypted compiled-model cache: warm starts without OpenVINO's plaintext CACHE_DIR.

An entry is `compiled.export_model()` encrypted in this project's format (role COMPILED) under the
package's master key, in `<cache dir>/<hex>.ovc`. The file name is a SHA-256 over everything the
compiled blob depends on (format version, key id, the manifest's digests of the model's encrypted
files, device, sorted config, OpenVINO version, device name), and the same hex is the entry's
name in its authenticated header, so an entry renamed to another key is refused like a corrupt
one. Each entry gets a random salt (so a fresh file key): the blob is not reproducible anyway,
and a (key, nonce) pair can never repeat across entries. Writes go to a temporary file in the
cache folder and are renamed into place, so concurrent processes see a whole entry or none.

A missing, corrupt, truncated, foreign (other key, other entry) or unimportable entry is never
trusted: it is removed and the model compiled again. Plaintext never touches the disk.

Whoever can write to the cache folder can make the next start slower, never wrong, and never stuck:
an entry is opened without following symbolic links and without blocking (a FIFO there returns at
once), and only a regular file owned by this user, no larger than the caller's bound, is read; its
header is authenticated before any memory is sized by it unless that bound is known. A folder that
other users can write to is not used at all (a warning says so). On Windows, where mode bits mean nothing, the
folder must lie inside the user's own profile (%LOCALAPPDATA% or %USERPROFILE%; see `_format.private`).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .._errors import OvcryptError, warn_caller
from .._format.atomic import atomic_writer
from .._format.private import folder_problem as private_folder_problem
from .._format.spec import SALT_SIZE, VERSION, Role, forget_keys
from .._format.writer import BufferSource, encrypt
from .loader import decrypt_file, owning_tensor, pin_weights

if TYPE_CHECKING:
    import numpy as np
    import openvino as ov

SUFFIX = ".ovc"
_DOMAIN = b"hatch-ovcrypt/v1/compiled-cache"


def entry_name(
    key_id: bytes, digests: Sequence[str], device: str, config: Sequence[tuple[str, str]], ov_version: str,
    device_name: str = "",
) -> str:  # fmt: skip
    """Hex SHA-256 naming one cache entry; also the name bound into the entry's header."""
    h = hashlib.sha256(_DOMAIN)
    for part in (str(VERSION), key_id.hex(), *digests, device, repr(tuple(sorted(config))), ov_version, device_name):
        data = part.encode()
        h.update(len(data).to_bytes(8, "big") + data)  # length-prefixed: no two tuples share an encoding
    return h.hexdigest()


def entry_path(cache_dir: Path, name: str) -> Path:
    return cache_dir / f"{name}{SUFFIX}"


@forget_keys
def load(
    path: Path, key: bytes, name: str, core: ov.Core, device: str, config: dict[str, Any], *,
    max_size: int | None = None,
) -> ov.CompiledModel | None:  # fmt: skip
    """Import a cached compiled model, or None (after discarding a bad entry) when there is none to trust.

    `max_size` bounds the entry's size: within it, the entry is read while its header is authenticated;
    without it, the header is authenticated first.
    """
    if not usable_folder(path.parent):
        return None
    f = _open_entry(path, max_size)
    if f is None:
        return None
    with f:
        label = f"compiled-model cache entry {path.name}"
        buf: np.ndarray | None = None
        try:
            buf = decrypt_file(
                f, label, lambda _key_id, _label: key, name=name, role=Role.COMPILED, max_size=max_size
            )
            # The CPU plugin keeps reading from the imported tensor (it shares, not copies), so the
            # decrypted blob is the one copy of the weights and lives exactly as long as the model.
            compiled = core.import_model(owning_tensor(buf), device, config)
        except (OvcryptError, OSError, RuntimeError, ValueError) as exc:
            if buf is not None:
                buf.fill(0)
            _discard(path, f.fileno(), exc)
            return None
    pin_weights(compiled, buf)
    return compiled


def _open_flags() -> int:
    """Read-only, not inherited, and where the platform has them: no symbolic link, no waiting for a writer.
    (Asked at each open: which flags exist is the platform's business, and the tests simulate others.)"""
    flags = os.O_RDONLY
    for name in ("O_CLOEXEC", "O_NOFOLLOW", "O_NONBLOCK", "O_BINARY"):
        flags |= getattr(os, name, 0)
    return flags


def _open_entry(path: Path, max_size: int | None) -> BinaryIO | None:
    """The entry opened for reading, or None (a miss) unless it is a regular file of this user within `max_size`.

    Neither a symbolic link (O_NOFOLLOW) nor a FIFO or device (O_NONBLOCK, then fstat) can make this
    read another file or wait for a writer. Where the platform lacks O_NOFOLLOW or O_NONBLOCK (Windows), the
    entry must be a regular file by lstat before it is opened, and the file opened must be that same file."""
    guarded = hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_NONBLOCK")
    before: os.stat_result | None = None
    try:
        if not guarded:
            before = os.lstat(path)
            if not stat.S_ISREG(before.st_mode):
                what = "it is a symbolic link" if stat.S_ISLNK(before.st_mode) else "it is not a regular file"
                warn_caller(f"ignored compiled-model cache entry {path}: {what}")
                return None
        fd = os.open(path, _open_flags())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # ELOOP: a symbolic link; ENXIO: a socket; EACCES...
        warn_caller(f"ignored compiled-model cache entry {path}: {'it is a symbolic link' if _is_link(path) else exc}")
        return None
    try:
        info = os.fstat(fd)
        problem = None
        if before is not None and not os.path.samestat(before, info):
            problem = "it was replaced while it was opened"
        elif not stat.S_ISREG(info.st_mode):
            problem = "it is not a regular file"
        elif hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            problem = f"it belongs to user id {info.st_uid}, not to this user"
        elif max_size is not None and info.st_size > max_size:
            problem = f"it is {info.st_size} bytes, larger than the {max_size} an entry of this model may be"
        if problem is None:
            return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    warn_caller(f"ignored compiled-model cache entry {path}: {problem}")
    return None


def _is_link(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


_warned_folders: set[str] = set()


def folder_problem(folder: Path) -> str | None:
    """Why `folder` must not hold cache entries (other users can write to it), or None.

    Another user who can write there could not forge an entry (entries are authenticated), but could
    swap entries, fill the disk, or place files that are not entries; so such a folder is not used.
    What private means is the platform's (`_format.private`): on POSIX, this user's folder that group and others
    cannot write to; on Windows, where mode bits mean nothing, a folder inside %LOCALAPPDATA% or %USERPROFILE%."""
    return private_folder_problem(folder)


def usable_folder(folder: Path) -> bool:
    """False (with one warning per folder and process) when the folder must not hold cache entries."""
    problem = folder_problem(folder)
    if problem is None:
        return True
    if str(folder) not in _warned_folders:
        _warned_folders.add(str(folder))
        warn_caller(f"not using the compiled-model cache folder {folder}: {problem}")
    return False


@forget_keys
def store(path: Path, key: bytes, compiled: ov.CompiledModel) -> None:
    """Export, encrypt and atomically write one entry. A failure only costs the next warm start."""
    try:
        # A folder that is unusable (a file, say) was warned about once by load(): checked before mkdir,
        # whose FileExistsError would warn about the same folder a second time.
        if not usable_folder(path.parent):
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not usable_folder(path.parent):
            return
        stream = compiled.export_model()
        blob = stream.getbuffer() if hasattr(stream, "getbuffer") else memoryview(stream)
        try:
            with atomic_writer(path) as out:
                encrypt(key, BufferSource(blob), out, name=path.stem, role=Role.COMPILED, salt=os.urandom(SALT_SIZE))
        finally:
            _wipe_export(stream, blob)
    except (OSError, RuntimeError, ValueError) as exc:
        warn_caller(f"cannot write compiled-model cache entry {path}: {exc}")


def _wipe_export(stream: object, blob: memoryview) -> None:
    """The exported blob holds the weights in plaintext: zero it before it is freed."""
    import numpy as np

    if not blob.readonly:
        np.frombuffer(blob, dtype=np.uint8).fill(0)
    blob.release()
    del stream


def _discard(path: Path, fd: int, exc: BaseException) -> None:
    """Remove a bad entry, unless another process has meanwhile replaced it with a new one."""
    try:
        if os.path.samestat(os.fstat(fd), os.stat(path)):
            path.unlink()
    except OSError:
        pass
    warn_caller(f"discarded compiled-model cache entry {path.name}: {exc}")
