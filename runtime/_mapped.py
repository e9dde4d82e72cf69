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

The workers wait for the key and then fault the buffer in as they write it. Faulting it in ahead
(MADV_POPULATE_WRITE) while the key was found made warm 512 MiB loads slower, not faster: 9 alternating
runs each, median 1.40 s against 1.05 s, and 1.59 s against 1.17 s when only each next segment was
faulted ahead (on a loaded machine; benchmarks/RESULTS.md). Probably because populating holds the
process's memory-map lock, which importing cryptography and loading the device plugin meanwhile need.
"""

from __future__ import annotations

import contextlib
import mmap

MIN_BYTES = 16 << 20  # below this a mapping saves too little to matter; small files are read with pread
_PAGE = mmap.PAGESIZE


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
