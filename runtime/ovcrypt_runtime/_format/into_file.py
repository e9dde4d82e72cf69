"""Decrypting a file into another file, for memory files (the memory folder's route, _pipelines/memfiles.py).

A new memory file filled through a shared mapping takes a write fault for every 4 KiB page it gets (shared
memory gets no huge pages where the system turns them off, as on these machines). Written with pwrite, the
kernel allocates and fills its pages with no fault at all. Decrypting bench_memfolder's 274 MiB weights
into a new memfd (benchmarks/probe_into_file.py, 7 alternating rounds, warm page cache, 2 cores, medians):
through a mapping (read_and_decrypt) 0.139 s with the default 4 workers and 0.257 s with one; here 0.105 s
and 0.149 s. So each worker decrypts its segments in a buffer of one segment and writes each one once it
authenticated: the memory file never holds a byte that did not, and the buffers are wiped.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .._hardening import dont_dump_mapping
from .direct import pread_exact
from .reader import read_tags, segment_runs
from .spec import TAG_SIZE, Header, SegmentCipher, check_file_size, wipe


def decrypt_into_file(
    fd: int, header: Header, label: str, unlock: Callable[[], SegmentCipher], out: int, *, threads: int | None = None
) -> SegmentCipher:
    """Decrypt the encrypted file open as `fd` (read at offsets: pread) into the file `out` at the same offsets
    of its plaintext, which must be header.plaintext_length bytes long; return the cipher.

    `unlock()` finds the key and authenticates the header; the file is read ahead (posix_fadvise) meanwhile.
    Workers each decrypt a run of segments in a buffer of one segment (an anonymous mapping left out of core
    dumps) and write each segment to `out` only once it authenticated. Raises IntegrityError for a truncated,
    oversized or modified file, OSError from reading or writing; on any failure every segment written to `out`
    is overwritten with zeros before the error is raised. The buffers are wiped whatever happens.
    """
    check_file_size(header, os.fstat(fd).st_size, label)
    if os.fstat(out).st_size != header.plaintext_length:
        raise ValueError("output file has the wrong size")
    if hasattr(os, "posix_fadvise"):  # the reads start while the key is being found
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    tags = read_tags(fd, header, label)
    cipher = unlock()
    runs = segment_runs(header.segment_count, threads)
    written: dict[int, int] = {}  # first segment of a run -> end of the run's written segments
    failed = threading.Event()

    def run(first: int, stop: int) -> None:
        scratch = dont_dump_mapping(mmap.mmap(-1, header.segment_size))
        view = memoryview(scratch)
        try:
            for index in range(first, stop):
                if failed.is_set():
                    return
                start, end = header.segment_span(index)
                with view[: end - start] as segment:  # released before the buffer is closed
                    pread_exact(fd, segment, header.header_size + start, label)
                    cipher.decrypt_segment(index, segment, tags[index * TAG_SIZE : (index + 1) * TAG_SIZE])
                    _write_exact(out, segment, start)
                written[first] = index + 1
        except BaseException:
            failed.set()
            raise
        finally:
            wipe(view)
            view.release()
            scratch.close()

    with ThreadPoolExecutor(len(runs), thread_name_prefix="ovcrypt") as pool:
        futures = [pool.submit(run, first, stop) for first, stop in runs]
    errors = [e for e in (future.exception() for future in futures) if e is not None]
    if errors:
        for first, stop in written.items():
            _zero(out, header.segment_span(first)[0], header.segment_span(stop - 1)[1])
        raise errors[0]
    return cipher


def _write_exact(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


_ZEROS = memoryview(bytes(1 << 20))


def _zero(fd: int, start: int, stop: int) -> None:
    """Overwrite [start, stop) of `fd` with zeros."""
    for offset in range(start, stop, len(_ZEROS)):
        _write_exact(fd, _ZEROS[: min(len(_ZEROS), stop - offset)], offset)
