"""Encrypting into the format (docs/FORMAT.md §2-3): plaintext sources, the salt fingerprint, the stream.

Used by the build hook, the CLI and the compiled-model cache; the format itself is in `_spec`.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from ._spec import (
    _INFO_FINGERPRINT_KEY,
    DEFAULT_SEGMENT_SIZE,
    FINGERPRINT_NONCE,
    SALT_SIZE,
    Header,
    Role,
    SegmentCipher,
    derive_salt,
    gcm,
    hkdf,
    key_id,
    validate_name,
    validate_segment_size,
)


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


class FileSource:
    """A plaintext file, memory-mapped read-only: the passes read the page cache in place, with no copy.

    Memory stays bounded: each piece is unmapped again (MADV_DONTNEED) once the caller asks for the
    next, so the process never holds more than a piece of the file. (A file truncated by another
    process while it is being encrypted would end the build with SIGBUS.)
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.length = path.stat().st_size

    def chunks(self, size: int) -> Iterator[memoryview]:
        if not self.length:
            return
        with self.path.open("rb") as f:
            # Not closed explicitly: the caller may still hold the last view; the map goes with the last one.
            mapped = mmap.mmap(f.fileno(), self.length, access=mmap.ACCESS_READ)
        advise = getattr(mapped, "madvise", None)
        if advise:
            advise(mmap.MADV_SEQUENTIAL)
        view = memoryview(mapped)
        for start in range(0, self.length, size):
            yield view[start : start + size]
            if advise:  # the caller is done with that piece: drop it from our mapping (not from the page cache)
                advise(mmap.MADV_DONTNEED, start, min(size, self.length - start))


class BufferSource:
    """Plaintext already in memory, such as an OpenSSL-recipe file decrypted at build time."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = memoryview(data).cast("B")
        self.length = len(self._view)

    def chunks(self, size: int) -> Iterator[memoryview]:
        for start in range(0, self.length, size):
            yield self._view[start : start + size]


def plaintext_fingerprint(key: bytes, source: PlaintextSource, size: int) -> bytes:
    """GMAC of the plaintext (AES-256-GCM, nonce 0, the plaintext as associated data) under its own
    derived key: a keyed universal hash at ~20 GB/s, where SHA-256 runs at ~1.7 GB/s here.

    It only feeds derive_salt's HMAC and is never published, so its key stays secret and two different
    plaintexts give the same fingerprint with probability at most about (blocks + 1) / 2^128.
    """
    mac = gcm(hkdf(key, None, _INFO_FINGERPRINT_KEY), FINGERPRINT_NONCE).encryptor()
    for chunk in source.chunks(size):
        mac.authenticate_additional_data(chunk)
    mac.finalize()
    return mac.tag


ProgressCallback = Callable[[int], None]


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
) -> Header:
    """Stream `source` into `dst` in this format. Memory is one segment, whatever the size.

    `salt=None` derives it from the plaintext (a second read) so equal inputs give equal bytes.
    """
    if problem := validate_segment_size(segment_size):
        raise ValueError(f"segment size {problem}")
    if problem := validate_name(name):
        raise ValueError(f"model name {problem}")
    header = Header(role, name, segment_size, source.length, key_id(key), b"\x00" * SALT_SIZE)
    if salt is None:
        salt = derive_salt(key, header.fields(), plaintext_fingerprint(key, source, segment_size))
    header = Header(role, name, segment_size, source.length, header.key_id, salt)
    cipher = SegmentCipher(key, header, name)
    dst.write(header.encode())
    dst.write(cipher.header_tag())
    out = memoryview(bytearray(segment_size))
    tags = []
    done = 0
    for index, chunk in enumerate(source.chunks(segment_size)):
        n = len(chunk)
        tags.append(cipher.encrypt_segment(index, chunk, out[:n]))
        dst.write(out[:n])
        done += n
        if progress:
            progress(done)
    if done != source.length:
        raise OSError(f"{name}: source changed size while it was being encrypted")
    if not tags:  # the empty plaintext still gets its one authenticated, empty, last segment
        tags.append(cipher.encrypt_segment(0, out[:0], out[:0]))
    dst.write(b"".join(tags))
    return header


