"""Encrypting into the format (docs/FORMAT.md §2-3): plaintext sources, the salt fingerprint, the stream.

Used by the build hook, the CLI and the compiled-model cache; the format itself is in `_spec`.

The writer reads its plaintext twice: once for the salt (§2: the salt derives from a fingerprint of the
whole plaintext) and once to encrypt. The bytes it encrypts are exactly the bytes it fingerprinted:
every segment is read into the writer's own buffer, and the fingerprint is computed again over those
buffers as they are encrypted and compared at the end. A source that changed in between (a file
rewritten in place, even at the same length) is a SourceChangedError, and the caller's atomic writer
removes what was written: otherwise the new bytes would be published under the old bytes' file key
and nonces, which leaks the XOR of the two plaintexts and GCM's authentication key once both are out.
Files are read at offsets (pread where the platform has it, see `direct.read_at`), never memory-mapped,
so a file truncated meanwhile is that same error rather than a SIGBUS.
"""

from __future__ import annotations

import ctypes
import hmac
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from .._errors import IntegrityError, OvcryptError
from .direct import pread_exact
from .spec import (
    _INFO_FINGERPRINT_KEY,
    DEFAULT_SEGMENT_SIZE,
    FINGERPRINT_NONCE,
    SALT_SIZE,
    Header,
    Role,
    SegmentCipher,
    derive_salt,
    forget_keys,
    gcm,
    hkdf,
    key_id,
    validate_name,
    validate_segment_size,
    wipe,
)


class SourceChangedError(OvcryptError):
    """A plaintext source changed while it was being encrypted: nothing of the changed bytes was encrypted."""


class Writable(Protocol):
    """Where encrypted (or decrypted) bytes go: a file, or a wrapper that hashes on the way."""

    def write(self, data: bytes | memoryview, /) -> object: ...


class PlaintextSource(Protocol):
    """Plaintext the writer reads twice: once to derive the salt, once to encrypt."""

    @property
    def length(self) -> int: ...

    def chunks(self, size: int) -> Iterator[memoryview]:
        """Yield the plaintext in pieces of `size` bytes (the last may be shorter). May reuse one buffer."""
        ...


# Copies the plaintext bytes [offset, offset + len(view)) into `view`, or raises SourceChangedError.
ReadAt = Callable[[int, memoryview], None]


class RandomAccessSource(PlaintextSource, Protocol):
    """A source whose pieces can be read in any order, on several threads at once (a file, a buffer)."""

    def reader(self) -> AbstractContextManager[ReadAt]: ...


class FileSource:
    """A plaintext file, read at offsets (`direct.read_at`) into the writer's own buffers.

    Not memory-mapped: a file truncated by another process while it is encrypted would end a mapped
    read with SIGBUS; here it is a SourceChangedError naming the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.length = path.stat().st_size

    @contextmanager
    def reader(self) -> Iterator[ReadAt]:
        with self.path.open("rb", buffering=0) as f:
            fd = f.fileno()
            self._check_size(fd)
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)

            def read_at(offset: int, view: memoryview) -> None:
                try:
                    pread_exact(fd, view, offset, str(self.path))
                except IntegrityError:  # fewer bytes than when the pass began
                    raise SourceChangedError(f"{self.path}: was truncated while it was being encrypted") from None

            yield read_at
            self._check_size(fd)

    def _check_size(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size != self.length:
            raise SourceChangedError(
                f"{self.path}: changed size while it was being encrypted ({self.length} bytes, now {size})"
            )

    def chunks(self, size: int) -> Iterator[memoryview]:
        buf = memoryview(bytearray(min(size, self.length)))
        with self.reader() as read_at:
            for start in range(0, self.length, size):
                view = buf[: min(size, self.length - start)]
                read_at(start, view)
                yield view


class BufferSource:
    """Plaintext already in memory, such as an exported compiled model."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = memoryview(data).cast("B")
        self.length = len(self._view)

    @contextmanager
    def reader(self) -> Iterator[ReadAt]:
        def read_at(offset: int, view: memoryview) -> None:
            view[:] = self._view[offset : offset + len(view)]

        yield read_at

    def chunks(self, size: int) -> Iterator[memoryview]:
        for start in range(0, self.length, size):
            yield self._view[start : start + size]


ProgressCallback = Callable[[int], None]


def default_threads() -> int:
    """Segments are encrypted on one thread per core, up to 4 (AES-GCM and pread release the GIL)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


@forget_keys
def plaintext_fingerprint(key: bytes, source: PlaintextSource, size: int, *, threads: int | None = None) -> bytes:
    """GMAC of the plaintext (AES-256-GCM, nonce 0, the plaintext as associated data) under its own
    derived key: a keyed universal hash at ~20 GB/s, where SHA-256 runs at ~1.7 GB/s here.

    It only feeds derive_salt's HMAC and is never published, so its key stays secret and two different
    plaintexts give the same fingerprint with probability at most about (blocks + 1) / 2^128.
    """
    return _Segments(source, size, threads, "plaintext").fingerprint(_fingerprint_mac(key))


def _fingerprint_mac(key: bytes) -> _Mac:
    return gcm(hkdf(key, None, _INFO_FINGERPRINT_KEY), FINGERPRINT_NONCE).encryptor()


@forget_keys
def encrypt(
    key: bytes,
    source: PlaintextSource,
    dst: Writable,
    *,
    name: str,
    role: Role,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    salt: bytes | None = None,
    progress: ProgressCallback | None = None,
    threads: int | None = None,
) -> Header:
    """Stream `source` into `dst` in this format, segments encrypted on `threads` workers (default_threads).
    Memory is one segment per worker, whatever the size.

    `salt=None` derives it from the plaintext (a first read) so equal inputs give equal bytes; the
    second read must then give the same bytes, or SourceChangedError is raised before the segment tags
    are written (the caller's atomic_writer removes what was written).
    """
    if problem := validate_segment_size(segment_size):
        raise ValueError(f"segment size {problem}")
    if problem := validate_name(name):
        raise ValueError(f"model name {problem}")
    label = str(getattr(source, "path", "")) or f"the plaintext of {name!r} ({role.label})"
    segments = _Segments(source, segment_size, threads, label)
    header = Header(role, name, segment_size, source.length, key_id(key), b"\x00" * SALT_SIZE)
    check: _Mac | None = None
    if salt is None:
        fingerprint = segments.fingerprint(_fingerprint_mac(key))
        salt = derive_salt(key, header.fields(), fingerprint)
        check = _fingerprint_mac(key)  # the same fingerprint again, over the bytes that are encrypted
    header = Header(role, name, segment_size, source.length, header.key_id, salt)
    cipher = SegmentCipher(key, header, name)
    dst.write(header.encode())
    dst.write(cipher.header_tag())
    tags = segments.encrypt(cipher, check, dst, progress)
    if check is not None:
        check.finalize()
        if not hmac.compare_digest(check.tag, fingerprint):
            raise SourceChangedError(
                f"{segments.label}: changed while it was being encrypted (the bytes read to encrypt it differ "
                "from those its salt was derived from); the output is incomplete and must be discarded. "
                "Is another process writing it?"
            )
    dst.write(b"".join(tags))
    return header


class _Mac(Protocol):
    def authenticate_additional_data(self, data: bytes | memoryview, /) -> None: ...
    def finalize(self) -> bytes: ...
    @property
    def tag(self) -> bytes: ...


class _Segments:
    """One source's segments, each read into a worker's own buffer: by offset on several workers when the
    source allows it, else in order from its chunks(). Whatever must run in segment order (the
    fingerprint, the writes) waits for its turn."""

    def __init__(self, source: PlaintextSource, segment_size: int, threads: int | None, label: str) -> None:
        self.source, self.segment_size, self.label = source, segment_size, label
        self.length = source.length
        self.count = max(1, -(-self.length // segment_size))
        self.workers = max(1, min(threads or default_threads(), self.count))

    def _span(self, index: int) -> tuple[int, int]:
        start = index * self.segment_size
        return start, min(start + self.segment_size, self.length)

    @contextmanager
    def _read(self) -> Iterator[tuple[ReadAt, bool]]:
        """(read segment bytes into a view, whether that may run on any worker in any order)."""
        reader = getattr(self.source, "reader", None)
        if reader is not None:
            with reader() as read_at:
                yield read_at, True
            return
        chunks = iter(self.source.chunks(self.segment_size))
        changed = SourceChangedError(f"{self.label}: changed size while it was being encrypted")

        def read_in_order(offset: int, view: memoryview) -> None:
            if not view:
                return
            chunk = next(chunks, None)
            if chunk is None or len(chunk) != len(view):
                raise changed
            view[:] = chunk

        try:
            yield read_in_order, False
            if next(chunks, None) is not None:
                raise changed
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _run(self, step: Callable[[int, memoryview, _Turns], None]) -> None:
        buffers = [_page_aligned(min(self.segment_size, self.length)) for _ in range(self.workers)]
        turns = _Turns(2)
        try:
            turns.run(self.count, self.workers, lambda index: step(index, buffers[index % self.workers], turns))
        finally:
            for buf in buffers:  # plaintext of the last segments, or ciphertext
                wipe(buf)

    def _read_in_turn(
        self, index: int, buf: memoryview, turns: _Turns, read_at: ReadAt, any_order: bool, mac: _Mac | None
    ) -> memoryview:
        """Segment `index` read into `buf` and added to `mac` in segment order (GMAC is sequential); a source
        that can be read in any order is read before the turn, so workers read in parallel."""
        start, end = self._span(index)
        view = buf[: end - start]
        if any_order:
            read_at(start, view)
        with turns.turn(0, index):
            if not any_order:
                read_at(start, view)
            if mac is not None:
                mac.authenticate_additional_data(view)
        return view

    def fingerprint(self, mac: _Mac) -> bytes:
        """The first pass: the plaintext's GMAC under `mac`."""
        with self._read() as (read_at, any_order):

            def step(index: int, buf: memoryview, turns: _Turns) -> None:
                self._read_in_turn(index, buf, turns, read_at, any_order, mac)

            self._run(step)
        mac.finalize()
        return mac.tag

    def encrypt(
        self, cipher: SegmentCipher, check: _Mac | None, dst: Writable, progress: ProgressCallback | None
    ) -> list[bytes]:
        """The second pass: each segment read again into a worker's buffer, added to `check` (in order),
        encrypted in place and written (in order). Returns the segment tags."""
        tags = [b""] * self.count
        done = 0
        with self._read() as (read_at, any_order):

            def step(index: int, buf: memoryview, turns: _Turns) -> None:
                nonlocal done
                # `check` gets the very bytes encrypted below: no one else writes this buffer.
                view = self._read_in_turn(index, buf, turns, read_at, any_order, check)
                tags[index] = cipher.encrypt_segment(index, view, view)
                with turns.turn(1, index):
                    dst.write(view)
                    done += len(view)
                    if progress and view:
                        progress(done)

            self._run(step)
        return tags


_PAGE = 4096


def _page_aligned(size: int) -> memoryview:
    """A zeroed buffer whose first byte starts a page. The kernel copies file data into such a buffer about
    twice as fast as into one 16 bytes off (a bytearray's): 0.06-0.07 against 0.13-0.14 CPU-s/GB here."""
    raw = bytearray(size + _PAGE)
    skew = -ctypes.addressof(ctypes.c_char.from_buffer(raw)) % _PAGE
    return memoryview(raw)[skew : skew + size]


class _Stop(Exception):
    """Another worker failed: this one stops."""


class _Turns:
    """Runs step(index) for every index on several workers (worker w takes w, w + workers, ...); the parts
    of a step inside turn(stage, index) run one at a time, in index order, for each stage."""

    def __init__(self, stages: int) -> None:
        self._cond = threading.Condition()
        self._next = [0] * stages
        self._failed = False

    def _fail(self) -> None:
        with self._cond:
            self._failed = True
            self._cond.notify_all()

    @contextmanager
    def turn(self, stage: int, index: int) -> Iterator[None]:
        with self._cond:
            while not self._failed and self._next[stage] != index:
                self._cond.wait()
            if self._failed:
                raise _Stop
        try:
            yield
        except BaseException:
            self._fail()
            raise
        with self._cond:
            self._next[stage] += 1
            self._cond.notify_all()

    def run(self, count: int, workers: int, step: Callable[[int], None]) -> None:
        if workers == 1:
            for index in range(count):
                step(index)
            return

        def loop(first: int) -> None:
            try:
                for index in range(first, count, workers):
                    step(index)
            except _Stop:
                pass
            except BaseException:
                self._fail()
                raise

        with ThreadPoolExecutor(workers - 1, thread_name_prefix="ovcrypt-encrypt") as pool:
            futures = [pool.submit(loop, w) for w in range(1, workers)]
            try:
                loop(0)
            finally:
                errors = [e for e in (f.exception() for f in futures) if e is not None]
        if errors:
            raise errors[0]
