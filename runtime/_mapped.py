"""Decrypting a cached file straight from the page cache (a read-only mapping) into its final buffer.

When the file is in the page cache (a warm start: the common case when a service restarts), reading
it with pread copies all of it into the buffer and the decryption then passes over it again in place.
Decrypting from a mapping of the file into the buffer reads the cached pages where they are and writes
the buffer once: one memory pass less. Plain OpenVINO maps the same pages for its own weights.

Nothing is decrypted before the header authenticates, and plaintext is released only once every
segment has (as with pread). A mapping ends in SIGBUS if another process truncates the file while it is
decrypted, as OpenVINO's own mapping of a plain .bin would; and a process that writes the file meanwhile
could make a segment decrypt other bytes than the ones authenticated, so the reader refuses a file whose
modification or change time moved during the decryption (and wipes the buffer). Both need write access
to the installed package, where the runtime's own code lives, so they give such a process nothing it lacks.

While the key is found and the header authenticated, the workers fault in their part of the buffer
(MADV_POPULATE_WRITE): the kernel zeroes fresh memory before anyone can write it, and that no longer
waits for the key (see RESULTS.md for the measurements).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import sys
from collections.abc import Callable

MIN_BYTES = 16 << 20  # below this a mapping saves too little to matter; small files are read with pread
_PAGE = mmap.PAGESIZE
_MADV_POPULATE_WRITE = 23  # Linux 5.14+; EINVAL before that, and then the buffer is faulted in as it is written


def map_file(fd: int, size: int) -> mmap.mmap | None:
    """A read-only shared mapping of the first `size` bytes of the file open as `fd`, or None where
    mapping is not possible (then the caller reads it with pread)."""
    if size < MIN_BYTES or not hasattr(mmap, "MAP_SHARED"):
        return None
    try:
        return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    except (OSError, ValueError):  # a file system or special file that cannot be mapped
        return None


def release(mapping: mmap.mmap, lo: int, hi: int) -> None:
    """Unmap the whole pages of the file bytes [lo, hi) from this process; they stay in the page cache.

    Mapped pages count in the process's RSS: decrypting 512 MiB with the whole file mapped took the
    peak RSS from 873 to 1101 MiB (plain OpenVINO: 858), so each worker drops what it has decrypted.
    """
    start, stop = -(-lo // _PAGE) * _PAGE, hi // _PAGE * _PAGE
    if stop > start:
        with contextlib.suppress(OSError):  # advice only
            mapping.madvise(mmap.MADV_DONTNEED, start, stop - start)


def close_mapping(mapping: mmap.mmap) -> None:
    """Unmap; if a view of it still lives (a traceback holding a worker's frame), the collector unmaps it."""
    with contextlib.suppress(BufferError):
        mapping.close()


class Prefaulter:
    """Faults in the part of `out` that will hold the file bytes [lo, hi) (`out[0]` holds byte `base`),
    ahead of the decryption, as a RangeReader would read them (the same interface)."""

    def __init__(self, out: memoryview, base: int, lo: int, hi: int) -> None:
        self.out, self.lo, self.hi = out, lo - base, hi - base
        self.base = base
        self.done = self.lo  # out[lo - base : done] is faulted in (or prefaulting gave up)
        self._madvise = _libc_madvise()

    def read_to(self, end: int) -> None:
        """Fault in the buffer for the file bytes [lo, end); advice only, so a kernel that refuses ends it."""
        end = min(end - self.base, self.hi)
        if self.done >= end:
            return
        if self._madvise is not None:
            base = ctypes.addressof(ctypes.c_char.from_buffer(self.out))
            # Whole pages inside the range only: the partial ones are faulted in by the decryption itself.
            start, stop = -(-(base + self.done) // _PAGE) * _PAGE, (base + end) // _PAGE * _PAGE
            size = ctypes.c_size_t(stop - start)
            if stop > start and self._madvise(ctypes.c_void_p(start), size, _MADV_POPULATE_WRITE):
                self._madvise = None  # an older kernel (EINVAL): the decryption faults the pages in itself
        self.done = end


def _libc_madvise() -> Callable[..., int] | None:
    if sys.platform != "linux":
        return None
    madvise: Callable[..., int] = ctypes.CDLL(None, use_errno=True).madvise  # ctypes releases the GIL meanwhile
    return madvise
