"""Bytes -> a path that lives only in memory: a private folder of links to anonymous memory files.

Three users need plaintext under a path: openvino-genai configs it reads only from disk (VLMPipeline's
`config_dir_path`, image-generation component configs, `Scheduler.from_config`), the build's conversion (whose
`ov.save_model` writes only to a path ending in `.xml`), and whole model folders for path-only loaders. Each file
is an anonymous memory file, and the folder holds only symbolic links to `/proc/self/fd/N` (a link names nothing
secret, and only this process can follow it: `/proc/self` is the reader's own). The folder is mode 0700 and is
removed when the `MemoryFolder` closes.

- **memfd** (Linux): `memfd_create(MFD_ALLOW_SEALING)`, written, then sealed with F_SEAL_WRITE|F_SEAL_GROW|
  F_SEAL_SHRINK|F_SEAL_SEAL before any link points at it, so nobody (another process of the same user through
  `/proc/<pid>/fd/N` included) can change a byte of it once it is readable by path.
- **tmpfs** (Linux without a usable memfd_create: kernels before 3.17, or a seccomp filter that forbids it):
  `O_TMPFILE` files on a tmpfs (/dev/shm), which have no name at all, linked the same way; they are made
  read-only (0400) once written but cannot be sealed. A tmpfs without O_TMPFILE gets a named file that is
  unlinked as soon as it is opened, before a byte is written. Either way no plaintext ever has a name in a file
  system, so a process killed by SIGKILL or SIGTERM leaves no plaintext behind: its memory files go with its
  descriptors. What a killed process can leave is the folder of links, whose targets are gone; the next
  MemoryFolder of the same user removes such folders of dead processes.
- Neither (Windows, macOS, no /proc): UnsupportedModelError naming the platform and the reason. Decrypting
  weights to a disk-backed file is never an option.
- **The opt-in for configs** (`memory_folder` only, never `MemoryFolder`): where neither works, a product or its
  user may allow the runtime to write JSON and text configs, never IRs or weights, to a private folder on disk for
  the time it takes to build the pipeline (`OVCRYPT_ALLOW_CONFIG_FILES=1` or `allow_config_files()`; see
  `ConfigFolder`). openvino-genai reads some configs only from a path, and without it those pipelines are refused.

Like any memory, these pages can be swapped out; an encrypted swap is the system's business. A memory file is
readable through `/proc/<pid>/fd/N` by processes of the same user (sealed or not) unless the process is made
non-dumpable (`harden_process()`).
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Literal

from .._errors import UnsupportedModelError
from .._format.private import modes_mean_something, private_roots
from .._hardening import dont_dump_mapping

Data = bytes | bytearray | memoryview  # a numpy array goes in as memoryview(array) (or array.data)
Backing = Literal["memfd", "tmpfs"]
TMPFS_DIR = Path("/dev/shm")
PROC_FD = Path("/proc/self/fd")  # a link to PROC_FD/N reaches this process's descriptor N
NEVER_ON_DISK = "; hatch-ovcrypt never writes decrypted files to disk"
_TMPFS_TYPES = frozenset({"tmpfs", "ramfs"})
_SEALS = ("F_SEAL_WRITE", "F_SEAL_GROW", "F_SEAL_SHRINK", "F_SEAL_SEAL")
_PREFIX = "ovcrypt-mem-"  # + "<pid namespace>-<pid>-" + random: whose owner can be told dead or alive
# memfd_create failing with these means "not here" (old kernel, seccomp, a sandbox): try tmpfs instead.
_UNAVAILABLE = (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.EACCES, errno.EOPNOTSUPP)
# open(O_TMPFILE) failing with these means the file system does not support it.
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT)


def memory_backed_dir(candidate: Path | None = None) -> Path | None:
    """`candidate` (by default TMPFS_DIR) resolved, if it is a writable folder on tmpfs/ramfs (per
    /proc/self/mounts), else None."""
    candidate = TMPFS_DIR if candidate is None else candidate
    try:
        real = Path(os.path.realpath(candidate))
        if not real.is_dir() or not os.access(real, os.W_OK | os.X_OK):
            return None
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    best, fstype = "", ""
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = str(real) == point or str(real).startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, parts[2]
    return real if fstype in _TMPFS_TYPES else None


def _memfd_usable() -> bool:
    try:
        import fcntl  # POSIX only: Windows has none
    except ImportError:
        return False
    if not (hasattr(os, "memfd_create") and all(hasattr(fcntl, s) for s in ("F_ADD_SEALS", *_SEALS))):
        return False
    try:
        os.close(os.memfd_create("ovcrypt-probe", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING))
    except OSError as exc:
        if exc.errno in _UNAVAILABLE:
            return False
        raise
    return True


def choose_backing(why: str = "") -> tuple[Backing, Path | None]:
    """("memfd", None) or ("tmpfs", the tmpfs folder), or UnsupportedModelError saying why neither works here.

    `why` (e.g. "openvino-genai reads this model's configs only from files") starts the error's message.
    """
    lead = f"{why}, but " if why else ""
    if not PROC_FD.is_dir():
        raise UnsupportedModelError(
            f"{lead}this system ({sys.platform}) has no /proc/self/fd, so no file that lives only in memory can be "
            f"given a path{NEVER_ON_DISK}"
        )
    if _memfd_usable():
        return "memfd", None
    tmpfs = memory_backed_dir()
    if tmpfs is None or not hasattr(os, "O_TMPFILE"):
        raise UnsupportedModelError(
            f"{lead}this system ({sys.platform}) has neither a usable memfd_create nor a writable tmpfs at "
            f"{TMPFS_DIR}, so no file that lives only in memory can be given a path{NEVER_ON_DISK}"
        )
    return "tmpfs", tmpfs


class MemoryFolder:
    """A private folder (`path`, mode 0700) whose files are anonymous memory files, reached through links.

    Use it as a context manager; everything it made is gone when it closes: the links, the folder, and the
    memory files (their pages stay only as long as someone else, OpenVINO say, keeps them mapped or open).

        with MemoryFolder() as folder:
            folder.add("config.json", data)          # copied into a sealed memory file
            with folder.fill("model.bin", n) as buf: # or written in place: one copy of big weights
                decrypt_into(buf)
            with folder.written("b.bin", n) as fd:   # or through its descriptor (os.pwrite)
                decrypt_into_file(..., fd)
            loader(str(folder.path))

    A file someone else writes through its path (ov.save_model) is made with `writable()` and sealed with
    `seal()` before it is read. Relative paths are POSIX, may have folders, and must stay inside the folder.
    Raises UnsupportedModelError on a platform without memory files (see the module's docstring); `why` says
    what needed the files, and starts its message.
    """

    def __init__(self, why: str = "") -> None:
        self.backing, self._tmpfs = choose_backing(why)
        _remove_stale_folders()
        # 0700, ours alone, links only; named so that a later process can tell whether we are still alive
        self.path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{_pid_namespace()}-{os.getpid()}-"))
        self._fds: dict[str, int] = {}

    def __enter__(self) -> MemoryFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MemoryFolder {self.path} ({self.backing}, {len(self._fds)} files)>"

    def add(self, relpath: str, data: Data) -> Path:
        """Copy `data` into a new memory file, seal it, and link it as `relpath`; returns the link's path."""
        view = memoryview(data).cast("B")
        fd = self._new_file(relpath)
        while view:
            view = view[os.write(fd, view) :]
        self._freeze(fd)
        return self._link(relpath, fd)

    @contextlib.contextmanager
    def fill(self, relpath: str, size: int) -> Iterator[memoryview]:
        """A writable view of a new `size`-byte memory file, for writing in place (no second copy of big data);
        on leaving the block the file is sealed and linked as `relpath`. Views taken from it must be released
        by then (BufferError otherwise)."""
        fd = self._new_file(relpath)
        os.ftruncate(fd, size)
        if size:
            writable = mmap.PROT_READ | mmap.PROT_WRITE
            mapped = dont_dump_mapping(mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=writable))
            try:
                with memoryview(mapped) as view:
                    yield view
            finally:
                mapped.close()  # sealing against writes needs no writable mapping left
        else:
            yield memoryview(bytearray())
        self._freeze(fd)
        self._link(relpath, fd)

    @contextlib.contextmanager
    def written(self, relpath: str, size: int) -> Iterator[int]:
        """The descriptor of a new `size`-byte memory file, for a writer that writes it at offsets (os.pwrite:
        the kernel fills fresh pages without the write fault per page that a mapping takes; see
        _format/into_file.py); on leaving the block the file is sealed and linked as `relpath`."""
        fd = self._new_file(relpath)
        os.ftruncate(fd, size)
        yield fd
        self._freeze(fd)
        self._link(relpath, fd)

    def writable(self, relpath: str) -> Path:
        """An empty memory file linked as `relpath`, for a writer that only takes a path. Call seal() before
        reading it or handing it on: until then it can be rewritten."""
        return self._link(relpath, self._new_file(relpath))

    def seal(self, relpath: str) -> None:
        """Freeze a writable() file: sealed (memfd) or made read-only (tmpfs)."""
        self._freeze(self._fds[relpath])

    def size(self, relpath: str) -> int:
        return os.fstat(self._fds[relpath]).st_size

    def read_bytes(self, relpath: str) -> bytes:
        """A file's content, read through its descriptor (not its link)."""
        size = self.size(relpath)
        return os.pread(self._fds[relpath], size, 0) if size else b""

    def map(self, relpath: str) -> mmap.mmap | None:
        """A read-only shared mapping of a whole file (None if empty), left out of core dumps; it outlives the
        folder and is the file's one copy. Seal the file first."""
        size = self.size(relpath)
        if not size:
            return None
        return dont_dump_mapping(mmap.mmap(self._fds[relpath], size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ))

    def close(self) -> None:
        """Remove the links and the folder and close the memory files. Idempotent."""
        shutil.rmtree(self.path, ignore_errors=True)
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def _new_file(self, relpath: str) -> int:
        _check_relpath(relpath)
        if relpath in self._fds:
            raise ValueError(f"{relpath!r} is in this memory folder already")
        if self.backing == "memfd":
            fd = os.memfd_create(PurePosixPath(relpath).name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        else:
            assert self._tmpfs is not None
            fd = _unnamed_tmpfs_file(self._tmpfs)
        self._fds[relpath] = fd
        return fd

    def _freeze(self, fd: int) -> None:
        if self.backing == "memfd":
            import fcntl  # there is one where there is a memfd

            seals = 0
            for name in _SEALS:
                seals |= getattr(fcntl, name)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        else:
            os.fchmod(fd, 0o400)  # tmpfs files cannot be sealed; the owner could still chmod it back

    def _link(self, relpath: str, fd: int) -> Path:
        link = self.path / relpath
        link.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.symlink(f"{PROC_FD}/{fd}", link)
        return link


def _unnamed_tmpfs_file(tmpfs: Path) -> int:
    """A file on the tmpfs that never has a name holding plaintext: O_TMPFILE, or else a name unlinked at once."""
    try:
        return os.open(tmpfs, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno not in _NO_TMPFILE:
            raise
    fd, name = tempfile.mkstemp(prefix="ovcrypt-", dir=tmpfs)  # 0600, O_EXCL
    os.unlink(name)  # before a byte is written
    os.set_inheritable(fd, False)
    return fd


def _check_relpath(relpath: str) -> None:
    parts = PurePosixPath(relpath).parts
    if not parts or relpath.startswith("/") or any(p in ("..", ".") for p in parts) or "\\" in relpath:
        raise ValueError(f"{relpath!r} is not a relative path inside a memory folder")


_STALE = re.compile(re.escape(_PREFIX) + r"(\d+)-(\d+)-")


def _pid_namespace() -> int:
    """The inode of this process's pid namespace: a pid means something only within its namespace (a container
    sharing the temp folder has its own)."""
    return os.stat("/proc/self/ns/pid").st_ino


def _remove_stale_folders() -> None:
    """Remove link folders left by this user's processes that died without closing them (SIGKILL): they
    hold only links to memory files that went with their process."""
    root = Path(tempfile.gettempdir())
    try:
        namespace = _pid_namespace()
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        match = _STALE.match(entry.name)
        if not match or not entry.is_dir(follow_symlinks=False):
            continue
        with contextlib.suppress(OSError):
            mine = entry.stat(follow_symlinks=False).st_uid == os.getuid() and int(match.group(1)) == namespace
            if not mine or _alive(int(match.group(2))):
                continue
            if all(p.is_symlink() or p.is_dir() for p in Path(entry.path).rglob("*")):
                shutil.rmtree(entry.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


GENAI_CONFIGS = "openvino-genai reads this model's configs only from files"

# --- the opt-in: configs (never weights) in a private folder on disk, where memory files do not exist --------

CONFIG_FILES_ENV = "OVCRYPT_ALLOW_CONFIG_FILES"
CONFIG_SUFFIXES = (".json", ".txt", ".jinja")  # what the opt-in writes: configs and templates, never weights
_CONFIG_PREFIX = "ovcrypt-configs-"  # + "<pid>-" + random
_allowed = False
OPT_IN = (
    f"set {CONFIG_FILES_ENV}=1 (or call allow_config_files()) to let the runtime write this model's JSON and text "
    "configs, never its weights, to a private folder while the pipeline is built"
)


def allow_config_files(allow: bool = True) -> None:
    """Opt in (or back out): where the platform has no memory files (Windows, macOS), let openvino-genai's
    config-only paths get a private folder on disk holding the model's decrypted configs (CONFIG_SUFFIXES files:
    JSON and text, never an IR or weights) for the time it takes to build the pipeline; deleted right after.
    The same as setting OVCRYPT_ALLOW_CONFIG_FILES=1 in the environment. Where memory files exist, nothing changes."""
    global _allowed
    _allowed = allow


def config_files_allowed() -> bool:
    """Whether the opt-in is on: allow_config_files() was called, or $OVCRYPT_ALLOW_CONFIG_FILES is 1."""
    return _allowed or os.environ.get(CONFIG_FILES_ENV, "").strip() == "1"


def check_config_name(relpath: str) -> None:
    """UnsupportedModelError unless `relpath` names a config the opt-in may write (CONFIG_SUFFIXES): never an IR
    (.xml, .bin) nor any weights."""
    _check_relpath(relpath)
    if not relpath.lower().endswith(CONFIG_SUFFIXES):
        raise UnsupportedModelError(
            f"{relpath!r} is not a config ({', '.join(CONFIG_SUFFIXES)}): with {CONFIG_FILES_ENV} only configs are "
            "written to disk, never an IR or weights"
        )


def config_files_root() -> Path:
    """Where the opt-in's folders go: the system's per-user temporary folder on POSIX (each folder mode 0700),
    %LOCALAPPDATA%\\hatch-ovcrypt where mode bits mean nothing (Windows: the user's own profile is private)."""
    if modes_mean_something():
        return Path(tempfile.gettempdir())
    roots = [r for r in private_roots() if r.is_dir()]
    if not roots:
        raise UnsupportedModelError(
            f"{CONFIG_FILES_ENV} needs a private folder, and neither %LOCALAPPDATA% nor %USERPROFILE% names one here"
        )
    root = roots[0] / "hatch-ovcrypt"
    root.mkdir(exist_ok=True)
    return root


class ConfigFolder:
    """The opt-in's folder: a private folder on disk (mkdtemp: mode 0700 on POSIX; under %LOCALAPPDATA% on
    Windows) holding decrypted configs, each written once (mode 0600, never over an existing file) by `add`.
    Removed, with its files, when it closes; a folder left by a process that died before (SIGKILL) is removed
    by the next ConfigFolder of the same user. Only CONFIG_SUFFIXES files are accepted (check_config_name)."""

    def __init__(self) -> None:
        root = config_files_root()
        _remove_stale_config_folders(root)
        self.path = Path(tempfile.mkdtemp(prefix=f"{_CONFIG_PREFIX}{os.getpid()}-", dir=root))
        # Held open while the folder lives: on Windows an open file cannot be deleted, which tells a later
        # process that this one is alive (os.kill(pid, 0) would terminate it there).
        self._alive = open(self.path / ".alive", "wb")  # noqa: SIM115 - closed in close()

    def __enter__(self) -> ConfigFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, relpath: str, data: Data) -> Path:
        """Write `data` as the config `relpath` (refused unless it is one: check_config_name); returns its path."""
        check_config_name(relpath)
        path = self.path / relpath
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags, 0o600)
        with open(fd, "wb") as f:
            f.write(memoryview(data).cast("B"))
        return path

    def close(self) -> None:
        """Delete the files and the folder. Idempotent."""
        if not self._alive.closed:
            self._alive.close()
        shutil.rmtree(self.path, ignore_errors=True)


_STALE_CONFIGS = re.compile(re.escape(_CONFIG_PREFIX) + r"(\d+)-")


def _remove_stale_config_folders(root: Path) -> None:
    """Remove the opt-in's folders whose process died without closing them (their configs included)."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        match = _STALE_CONFIGS.match(entry.name)
        if not match or not entry.is_dir(follow_symlinks=False) or int(match.group(1)) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if modes_mean_something():
                if entry.stat(follow_symlinks=False).st_uid != os.getuid() or _alive(int(match.group(1))):
                    continue
            else:
                os.unlink(os.path.join(entry.path, ".alive"))  # fails while its process holds it open
            shutil.rmtree(entry.path, ignore_errors=True)


@contextlib.contextmanager
def memory_folder(files: Mapping[str, Data], why: str = GENAI_CONFIGS) -> Iterator[Path]:
    """Yield a folder holding `files` (relative POSIX path -> content, copied) in sealed memory files; removed
    on exit. Where the platform has no memory files (see MemoryFolder): with the opt-in (config_files_allowed),
    a ConfigFolder on disk instead, which takes configs only; without it, UnsupportedModelError naming the
    platform, the reason and the opt-in."""
    folder: MemoryFolder | None = None
    try:
        folder = MemoryFolder(why)
    except UnsupportedModelError as exc:
        if not config_files_allowed():
            reason = f"{str(exc).removesuffix(NEVER_ON_DISK)}; by default nothing decrypted is written to disk"
            raise UnsupportedModelError(f"{reason}: {OPT_IN}") from None
    if folder is None:
        for relpath in files:  # every name checked before anything is written
            check_config_name(relpath)
        with ConfigFolder() as configs:
            for relpath, data in files.items():
                configs.add(relpath, data)
            yield configs.path
        return
    with folder:
        for relpath, data in files.items():
            folder.add(relpath, data)
        yield folder.path
