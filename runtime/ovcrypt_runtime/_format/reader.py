"""Reading the format (docs/FORMAT.md §4): ciphertext read straight into its final buffer and decrypted
there, segment by segment, on several threads; and a streaming reader for tools.

The format itself (header, key derivations, segment AEAD) is in `_spec`; this module is the I/O.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from .._errors import IntegrityError
from .direct import RangeReader, open_direct, positional_reads, pread_exact
from .spec import FIXED_HEADER_SIZE, MAGIC, TAG_SIZE, Header, SegmentCipher, check_file_size, parse_header, wipe


def read_header(f: IO[bytes], label: str) -> tuple[Header, bytes, bytes]:
    """Read and parse the header from the current position; leaves f at the first ciphertext byte."""
    head = _read_up_to(f, FIXED_HEADER_SIZE)
    if len(head) == FIXED_HEADER_SIZE and head[:8] == MAGIC:
        head += _read_up_to(f, head[11] + TAG_SIZE)
    return parse_header(head, label)


def matches_file_size(f: IO[bytes], header: Header, label: str) -> bool:
    """True for a real file whose size is the one its header implies (IntegrityError if it is not);
    False for a stream such as a file inside a zip, whose size cannot be checked up front."""
    fd = _descriptor(f)
    if fd is None:
        return False
    check_file_size(header, os.fstat(fd).st_size, label)
    return True


def decrypt_into(f: IO[bytes], cipher: SegmentCipher, out: memoryview, *, threads: int | None = None) -> None:
    """Read the ciphertext of an opened file straight into `out` and decrypt it there (see read_and_decrypt)."""
    read_and_decrypt(f, cipher.header, cipher.label, lambda: cipher, out, threads=threads)


def read_and_decrypt(
    f: IO[bytes],
    header: Header,
    label: str,
    unlock: Callable[[], SegmentCipher],
    out: memoryview,
    *,
    threads: int | None = None,
    read_ahead: bool | None = None,
) -> SegmentCipher:
    """Read the ciphertext of an opened file straight into `out` and decrypt it there; return the cipher.

    `f` is positioned at the first ciphertext byte, and `unlock()` finds the key and authenticates the
    header (on a process's first load that is also where cryptography gets imported). With a real
    file, worker threads read their runs of segments with pread and decrypt each segment while it is
    still in cache. With `read_ahead` they start reading while `unlock` runs in the calling thread and
    decrypt what they read ahead once it returns; by default they do so when the file comes from the
    disk (read around the page cache), where that hides the wait, and not from memory, where their
    quick returns for the GIL would only slow `unlock` down. Nothing is decrypted before `unlock`
    succeeds. Other streams (a wheel opened as a zip), and every file where the platform has no pread
    (Windows), are read sequentially first. On any failure every segment of `out` that held plaintext is
    wiped; the rest holds ciphertext or was never touched (wiping it would only fault in memory that a
    forged length asked for).
    """
    if len(out) != header.plaintext_length:
        raise ValueError("output buffer has the wrong size")
    fd = positional_fileno(f)
    if fd is None:
        if (real := _descriptor(f)) is not None:  # a real file read in order (no pread): its size is known
            check_file_size(header, os.fstat(real).st_size, label)
        _readinto_exact(f, out, label)
        tags = _read_exact(f, TAG_SIZE * header.segment_count, label)
        if f.read(1):
            raise IntegrityError(f"{label}: unexpected bytes after the end of the file")
        cipher = unlock()
        decrypt_in_place(cipher, out, tags, threads=threads)
        return cipher
    check_file_size(header, os.fstat(fd).st_size, label)
    probes = (header.header_size, header.header_size + header.plaintext_length // 2, header.tags_offset - 1)
    direct = open_direct(fd, out, header.header_size, probes)
    try:
        if direct is None and hasattr(os, "posix_fadvise"):  # start reading it all now, overlapping decryption
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        tags = read_tags(fd, header, label)
        runs = _SegmentRuns(header, out, tags, (fd, direct), header.header_size, label)
        ahead = direct is not None if read_ahead is None else read_ahead  # by default: from the disk
        cipher = runs.unlock_while_reading(unlock, threads, read_ahead=ahead)
    finally:
        if direct is not None:
            os.close(direct)
    if direct is not None and hasattr(os, "posix_fadvise"):
        # Reading around the page cache left the file uncached: let the kernel cache it in the
        # background, so that the next start reads memory, as it would after a buffered read.
        with contextlib.suppress(OSError):  # advice only
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    return cipher


def decrypt_in_place(cipher: SegmentCipher, out: memoryview, tags: bytes, *, threads: int | None = None) -> None:
    """Decrypt a whole ciphertext that is already in `out`, given the file's block of tags, on worker threads."""
    runs = _SegmentRuns(cipher.header, out, tags, None, -1, cipher.label)
    runs.unlock_while_reading(lambda: cipher, threads, read_ahead=False)


# Until the cipher is unlocked, workers read this many segments per pread: the thread that unlocks
# (importing cryptography, the first time) holds the GIL most of the time, and every return from a
# read waits for it, so fewer, longer reads keep more of the file moving meanwhile.
_READ_AHEAD_SEGMENTS = 8


class _SegmentRuns:
    """One file's segments, split into one contiguous run per worker: read into place, decrypt in place."""

    def __init__(
        self, header: Header, out: memoryview, tags: bytes, fds: tuple[int, int | None] | None, base: int, label: str
    ) -> None:
        """`fds`: the file, and an O_DIRECT descriptor of it or None; None when `out` already holds the ciphertext."""
        self.header, self.out, self.tags, self.fds, self.base, self.label = header, out, tags, fds, base, label
        self._unlocked = threading.Event()
        self._cipher: SegmentCipher | None = None  # None once _unlocked is set: unlocking failed, stop
        self._decrypted: dict[int, int] = {}  # first segment of a run -> end of the run's decrypted segments
        self._failed = False  # a worker failed: the others stop before their next segment

    def _reader(self, first: int, stop: int) -> RangeReader | None:
        """What reads the segments [first, stop) into place, or None when they are in place already."""
        if self.fds is None:
            return None
        lo, hi = self.header.segment_span(first)[0], self.header.segment_span(stop - 1)[1]
        return RangeReader(*self.fds, self.out, self.base, self.base + lo, self.base + hi, self.label)

    def _decrypt(self, cipher: SegmentCipher, first: int, index: int) -> None:
        """Decrypt one segment of the run starting at `first` (in order); a failed one wipes itself."""
        start, end = self.header.segment_span(index)
        cipher.decrypt_segment(index, self.out[start:end], self.tags[index * TAG_SIZE : (index + 1) * TAG_SIZE])
        self._decrypted[first] = index + 1

    def _wipe_decrypted(self) -> None:
        """Zero every segment that holds plaintext, and nothing else; the workers have stopped."""
        for first, stop in self._decrypted.items():
            wipe(self.out[self.header.segment_span(first)[0] : self.header.segment_span(stop - 1)[1]])

    def _run(self, first: int, stop: int, read_ahead: bool) -> None:
        try:
            self._run_segments(first, stop, read_ahead)
        except BaseException:
            self._failed = True
            raise

    def _run_segments(self, first: int, stop: int, read_ahead: bool) -> None:
        if not read_ahead:
            self._unlocked.wait()
        reader = self._reader(first, stop)

        def read_through(index: int) -> None:  # segments [first, index] in place
            if reader is not None:
                reader.read_to(self.base + self.header.segment_span(index)[1])

        read = decrypted = first  # segments [first, read) are in place, [first, decrypted) decrypted
        while read < stop:
            if self._failed:
                return
            if not self._unlocked.is_set():
                read = min(read + _READ_AHEAD_SEGMENTS, stop)
                read_through(read - 1)
                continue
            cipher = self._cipher  # read only once _unlocked is set: it is final then
            if cipher is None:
                return
            for index in range(decrypted, read):  # what was read ahead while the key was being found
                self._decrypt(cipher, first, index)
            read_through(read)
            self._decrypt(cipher, first, read)
            read = decrypted = read + 1
        self._unlocked.wait()
        if (cipher := self._cipher) is not None:
            for index in range(decrypted, stop):
                if self._failed:
                    return
                self._decrypt(cipher, first, index)

    def unlock_while_reading(
        self, unlock: Callable[[], SegmentCipher], threads: int | None, *, read_ahead: bool
    ) -> SegmentCipher:
        runs = segment_runs(self.header.segment_count, threads)
        try:
            if len(runs) == 1:
                self._cipher = unlock()
                self._unlocked.set()
                self._run(*runs[0], False)
                return self._cipher
            with ThreadPoolExecutor(len(runs), thread_name_prefix="ovcrypt") as pool:
                futures = [pool.submit(self._run, first, stop, read_ahead) for first, stop in runs]
                try:
                    self._cipher = unlock()
                finally:
                    self._unlocked.set()  # with no cipher the workers stop after their current read
                errors = [e for e in (fut.exception() for fut in futures) if e is not None]
            if errors:
                raise errors[0]
            return self._cipher
        except BaseException:
            self._unlocked.set()
            self._cipher = None
            self._wipe_decrypted()
            raise


def default_threads() -> int:
    """Two workers per core, up to 8: from a cold page cache each worker waits on its reads, and more
    reads in flight load faster (512 MiB, 2 cores, 7 cold runs each: median 0.89 s with 2 workers, 0.72 s
    with 4); from a warm cache the extra workers cost little."""
    return max(2, min(2 * (os.cpu_count() or 1), 8))


def segment_runs(count: int, threads: int | None) -> list[tuple[int, int]]:
    """[first, stop) of each worker's contiguous run of `count` segments, for min(threads or default_threads(),
    count) workers, at least one: no run is empty."""
    workers = max(1, min(threads or default_threads(), count))
    return [(count * w // workers, count * (w + 1) // workers) for w in range(workers)]


def read_tags(fd: int, header: Header, label: str) -> bytes:
    """The file's block of tags (TAG_SIZE bytes per segment, after the ciphertext), read at its offset;
    IntegrityError naming `label` if the file ends first."""
    return bytes(pread_exact(fd, memoryview(bytearray(TAG_SIZE * header.segment_count)), header.tags_offset, label))


def iter_plaintext(f: IO[bytes], cipher: SegmentCipher, size: int) -> Iterator[memoryview]:
    """Decrypt a seekable, opened file segment by segment: memory is one segment, whatever the size.

    The caller gets each segment only after it authenticated, and `size` of the file must match.
    """
    header = cipher.header
    check_file_size(header, size, cipher.label)
    f.seek(header.tags_offset)
    tags = _read_exact(f, TAG_SIZE * header.segment_count, cipher.label)
    f.seek(header.header_size)
    buf = memoryview(bytearray(header.segment_size))
    for index in range(header.segment_count):
        start, end = header.segment_span(index)
        view = buf[: end - start]
        _readinto_exact(f, view, cipher.label)
        cipher.decrypt_segment(index, view, tags[index * TAG_SIZE : (index + 1) * TAG_SIZE])
        yield view


class DecryptingSource:
    """An encrypted file as a PlaintextSource, for re-encryption under a new key (rekey)."""

    def __init__(self, path: Path, cipher: SegmentCipher) -> None:
        self.path = path
        self.cipher = cipher
        self.length = cipher.header.plaintext_length

    def chunks(self, size: int) -> Iterator[memoryview]:
        if size != self.cipher.header.segment_size:
            raise ValueError("re-encryption keeps the segment size")
        with self.path.open("rb") as f:
            yield from iter_plaintext(f, self.cipher, os.fstat(f.fileno()).st_size)


# --- low-level I/O ----------------------------------------------------------------------------

def _descriptor(f: IO[bytes]) -> int | None:
    """The descriptor of a real file, None for a stream (a file inside a zip)."""
    try:
        return f.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


def positional_fileno(f: IO[bytes]) -> int | None:
    """The descriptor to read at offsets from, on worker threads; None where the file is read in order (a stream,
    or any file on a platform without pread: Windows)."""
    return _descriptor(f) if positional_reads() else None


def _read_up_to(f: IO[bytes], n: int) -> bytes:
    parts = []
    while n > 0:
        chunk = f.read(n)
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _read_exact(f: IO[bytes], n: int, label: str) -> bytes:
    data = _read_up_to(f, n)
    if len(data) != n:
        raise IntegrityError(f"{label}: file is truncated")
    return data


def _readinto_exact(f: IO[bytes], view: memoryview, label: str) -> int:
    done = 0
    while done < len(view):
        n = f.readinto(view[done:])  # type: ignore[attr-defined]
        if not n:
            raise IntegrityError(f"{label}: file is truncated")
        done += n
    return done
