"""Keeping decrypted weights and keys out of core dumps and away from other processes of the same user (Linux).

- `dont_dump(address, size)`: madvise(MADV_DONTDUMP) on the pages that hold a buffer, so a core dump (the kernel's,
  or `gcore`'s, which honours it too) leaves them out. The runtime calls it on every buffer it decrypts into and on
  the keys it keeps. MADV_DONTFORK is never used: a pre-forking server's children need the buffers.
- `harden_process()`: prctl(PR_SET_DUMPABLE, 0), the product's opt-in. It also stops other processes of the same
  user from opening `/proc/<pid>/fd/N` (the memory files of `_memfiles`), `/proc/<pid>/mem` and from ptrace.

Both are advice to the kernel of Linux; elsewhere they do nothing and say so in their return value.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import sys

_MADV_DONTDUMP = 16  # linux/mman.h; Python's mmap module names it only where the platform has it
_PR_SET_DUMPABLE, _PR_GET_DUMPABLE = 4, 3  # linux/prctl.h
_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL | None:
    global _libc
    if sys.platform != "linux":
        return None
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def dont_dump(address: int, size: int) -> bool:
    """Leave the pages of [address, address + size) out of core dumps (MADV_DONTDUMP); the range is rounded
    out to whole pages, so the bytes that share its first and last pages are left out too. The memory stays
    readable, also in forked children. Returns False where the kernel refused or the platform has no such advice.
    """
    libc = _c()
    if libc is None or size <= 0:
        return False
    page = mmap.PAGESIZE
    start = address // page * page
    end = -(-(address + size) // page) * page
    return int(libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTDUMP)) == 0


def dont_dump_mapping(mapped: mmap.mmap) -> mmap.mmap:
    """dont_dump() for a whole mapping (a memory file's, a scratch buffer's), through mmap.madvise where Python
    names the advice; the mapping is returned, whether or not the kernel took the advice."""
    advice = getattr(mmap, "MADV_DONTDUMP", None)
    if advice is not None:
        with contextlib.suppress(OSError):
            mapped.madvise(advice)
    return mapped


def dont_dump_bytes(data: bytes) -> bool:
    """dont_dump() for the memory of a bytes object (a key): in CPython its bytes lie inside the object."""
    return dont_dump(id(data), sys.getsizeof(data)) if sys.implementation.name == "cpython" else False


def harden_process() -> bool:
    """Make this process non-dumpable: prctl(PR_SET_DUMPABLE, 0), Linux only. Opt-in; call it early, before
    the first model is loaded.

    What it gives: no core dump at all (of any memory, not only the buffers the runtime already leaves out), and
    other processes of the same user can no longer open `/proc/<pid>/fd/N` (the memory files holding decrypted
    configs while a pipeline is built), read `/proc/<pid>/mem`, or attach with ptrace (gdb, gcore, py-spy).
    What it costs: exactly that, for debugging as well: no core dumps to post-mortem a crash, no debugger or
    profiler attaching to the running process, and same-user tools cannot read most of /proc/<pid> (environ,
    maps, smaps, fd, mem; they become root's). root (CAP_SYS_PTRACE) still can.
    The setting is inherited by forked children and reset by execve() of a program that is not set-id.
    Returns True when the process is non-dumpable now, False on a platform without prctl (nothing changed).
    Raises OSError if the kernel refuses.
    """
    libc = _c()
    if libc is None:
        return False
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(err)}")
    return int(libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0)) == 0
