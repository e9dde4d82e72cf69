"""The hatch-ovcrypt file format, version 1: the one definition used by the writer and the reader.

docs/FORMAT.md specifies it byte by byte. In short::

    header      fixed 72 bytes + model name (authenticated by the header tag)
    header_tag  16 bytes: AES-256-GCM tag over the empty string, header as associated data
    ciphertext  exactly plaintext_length bytes, segment after segment
    tags        16 bytes per segment

Ciphertext sits exactly where the plaintext will land and the tags are kept apart, so a reader
can read the whole ciphertext into its final buffer and decrypt every segment in place, on
several threads at once. Each segment's nonce binds its index and a last-segment flag (as in
Tink's streaming AEAD and age's STREAM) and its associated data is the whole header (model name,
role, sizes, key id), so reordering, dropping, truncating, appending or moving a file to another
model or role all fail authentication.

Every file is encrypted under its own key, HKDF(master key, salt). The salt is an HMAC, under the
master key, of a keyed fingerprint (GMAC) of the plaintext and the header fields: the same input gives the same bytes
(reproducible wheels), a different input gives a different file key, so a (key, nonce) pair never
protects two different plaintexts.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import io
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from ._direct import RangeReader, open_direct, pread_exact
from ._errors import FormatError, IntegrityError, WrongKeyError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

MAGIC = b"OVCRYPT\x00"
VERSION = 1
KEY_SIZE = 32
KEY_ID_SIZE = 16
SALT_SIZE = 32
TAG_SIZE = 16
MIN_SEGMENT_SIZE = 1 << 20
MAX_SEGMENT_SIZE = 4 << 20
DEFAULT_SEGMENT_SIZE = 1 << 20
MAX_NAME_BYTES = 255
_SHA256_SIZE = 32

# magic, version, role, flags, name length, segment size, plaintext length, key id, salt
_FIXED = struct.Struct(">8sBBBBIQ16s32s")
FIXED_HEADER_SIZE = _FIXED.size  # 72

_INFO_KEY_ID = b"hatch-ovcrypt/v1/key-id"
_INFO_SALT_KEY = b"hatch-ovcrypt/v1/salt-key"
_INFO_FILE_KEY = b"hatch-ovcrypt/v1/file-key"
_INFO_FINGERPRINT_KEY = b"hatch-ovcrypt/v1/fingerprint-key"
FINGERPRINT_NONCE = bytes(12)
_FLAG_MIDDLE, _FLAG_LAST, _FLAG_HEADER = 0x00, 0x01, 0x02
# The header tag's nonce can never equal a segment nonce: segment flags are 0 or 1 only.
HEADER_NONCE = b"\xff" * 11 + bytes([_FLAG_HEADER])


class Role(enum.IntEnum):
    """What an encrypted file holds; bound into every segment's associated data."""

    XML = 1
    BIN = 2
    COMPILED = 3  # an exported compiled model in the warm-start cache

    @property
    def label(self) -> str:
        return self.name.lower()


def hkdf(key: bytes, salt: bytes | None, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869); every key this format uses is derived from the master key through it.

    Written on the standard library's HMAC (OpenSSL's, already loaded by hashlib) rather than taken from
    cryptography: finding keys, checking the manifest and reading a header then need no cryptography at
    all, so a first load imports it while the ciphertext is already being read (`decrypt_file`), and
    its own HKDF would cost another 0.8 MiB of OpenSSL state per process. Tests check the RFC 5869
    vectors and agreement with cryptography's HKDF.
    """
    if not 0 < length <= 255 * _SHA256_SIZE:
        raise ValueError("HKDF-SHA256 output length must be between 1 and 8160 bytes")
    prk = hmac.digest(salt or bytes(_SHA256_SIZE), key, "sha256")
    okm, block = b"", b""
    for counter in range(1, -(-length // _SHA256_SIZE) + 1):
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        okm += block
    return okm[:length]


def gcm(key: bytes, nonce: bytes, tag: bytes | None = None) -> Cipher[modes.GCM]:
    """AES-256-GCM through cryptography's streaming API, the one AES entry point of this format.

    cryptography is imported here, on first use, not with the module (see `hkdf`).
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    return Cipher(algorithms.AES(key), modes.GCM(nonce, tag))


def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


def key_id(key: bytes) -> bytes:
    """The public fingerprint of a master key: HKDF-SHA256(key, info="hatch-ovcrypt/v1/key-id")[:16].

    It commits the file to the key (GCM alone does not) and reveals nothing useful about it.
    """
    return hkdf(key, None, _INFO_KEY_ID, KEY_ID_SIZE)


def derive_salt(key: bytes, fields: bytes, fingerprint: bytes) -> bytes:
    """Deterministic per-file salt: HMAC-SHA256(HKDF(key, "salt-key"), header fields ‖ fingerprint(plaintext))."""
    salt_key = hkdf(key, None, _INFO_SALT_KEY)
    return hmac.new(salt_key, fields + fingerprint, hashlib.sha256).digest()


def segment_nonce(index: int, last: bool) -> bytes:
    """11-byte big-endian segment index ‖ 1 byte last-segment flag (age's STREAM layout)."""
    return index.to_bytes(11, "big") + bytes([_FLAG_LAST if last else _FLAG_MIDDLE])


@dataclass(frozen=True)
class Header:
    role: Role
    name: str
    segment_size: int
    plaintext_length: int
    key_id: bytes
    salt: bytes

    def fields(self) -> bytes:
        """The header bytes with a zero salt: what the deterministic salt is derived from."""
        return self._pack(b"\x00" * SALT_SIZE)

    def encode(self) -> bytes:
        return self._pack(self.salt)

    def _pack(self, salt: bytes) -> bytes:
        name = self.name.encode()
        fixed = _FIXED.pack(
            MAGIC, VERSION, int(self.role), 0, len(name),
            self.segment_size, self.plaintext_length, self.key_id, salt,
        )  # fmt: skip
        return fixed + name

    @property
    def header_size(self) -> int:
        """Bytes before the ciphertext: the header and its tag."""
        return FIXED_HEADER_SIZE + len(self.name.encode()) + TAG_SIZE

    @property
    def segment_count(self) -> int:
        """Always at least one: an empty plaintext still has a (last, empty) authenticated segment."""
        return max(1, -(-self.plaintext_length // self.segment_size))

    @property
    def file_size(self) -> int:
        return self.header_size + self.plaintext_length + TAG_SIZE * self.segment_count

    @property
    def tags_offset(self) -> int:
        return self.header_size + self.plaintext_length

    def segment_span(self, index: int) -> tuple[int, int]:
        start = index * self.segment_size
        return start, min(start + self.segment_size, self.plaintext_length)

    @property
    def key_id_hex(self) -> str:
        return self.key_id.hex()


def validate_segment_size(size: int) -> str | None:
    """The problem with a segment size, or None when it is allowed."""
    if not MIN_SEGMENT_SIZE <= size <= MAX_SEGMENT_SIZE or size % 4096:
        return f"must be a multiple of 4096 between {MIN_SEGMENT_SIZE} (1 MiB) and {MAX_SEGMENT_SIZE} (4 MiB)"
    return None


def validate_name(name: str) -> str | None:
    if not name or len(name.encode()) > MAX_NAME_BYTES:
        return f"must be 1 to {MAX_NAME_BYTES} bytes of UTF-8"
    return None


def parse_header(data: bytes, label: str) -> tuple[Header, bytes, bytes]:
    """Parse (header, raw header bytes, header tag) from the start of a file. Needs no key."""
    if len(data) < FIXED_HEADER_SIZE:
        raise FormatError(f"{label}: file is truncated ({len(data)} bytes), not a hatch-ovcrypt file")
    magic, version, role, flags, name_len, seg, length, kid, salt = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise FormatError(f"{label}: not a hatch-ovcrypt file (bad magic)")
    if version != VERSION:
        raise FormatError(f"{label}: format version {version} is not supported (this runtime reads version {VERSION})")
    if role not in Role.__members__.values() or flags != 0 or name_len == 0:
        raise FormatError(f"{label}: corrupt header (role, flags or name length)")
    if validate_segment_size(seg):
        raise FormatError(f"{label}: corrupt header (segment size {seg})")
    end = FIXED_HEADER_SIZE + name_len
    if len(data) < end + TAG_SIZE:
        raise FormatError(f"{label}: file is truncated inside its header")
    try:
        name = data[FIXED_HEADER_SIZE:end].decode()
    except UnicodeDecodeError:
        raise FormatError(f"{label}: corrupt header (model name is not UTF-8)") from None
    header = Header(Role(role), name, seg, length, kid, salt)
    return header, bytes(data[:end]), bytes(data[end : end + TAG_SIZE])


def read_header(f: IO[bytes], label: str) -> tuple[Header, bytes, bytes]:
    """Read and parse the header from the current position; leaves f at the first ciphertext byte."""
    head = _read_up_to(f, FIXED_HEADER_SIZE)
    if len(head) == FIXED_HEADER_SIZE and head[:8] == MAGIC:
        head += _read_up_to(f, head[11] + TAG_SIZE)
    return parse_header(head, label)


def matches_file_size(f: IO[bytes], header: Header, label: str) -> bool:
    """True for a real file whose size is the one its header implies (IntegrityError if it is not);
    False for a stream such as a file inside a zip, whose size cannot be checked up front."""
    fd = _fileno(f)
    if fd is None:
        return False
    check_file_size(header, os.fstat(fd).st_size, label)
    return True


def check_file_size(header: Header, actual: int, label: str) -> None:
    if actual < header.file_size:
        raise IntegrityError(f"{label}: file is truncated ({actual} of {header.file_size} bytes)")
    if actual > header.file_size:
        raise IntegrityError(f"{label}: {actual - header.file_size} unexpected bytes after the end of the file")


class SegmentCipher:
    """AES-256-GCM under one file's key, with that file's header as every segment's associated data."""

    __slots__ = ("_aad", "_file_key", "header", "label")

    def __init__(self, key: bytes, header: Header, label: str) -> None:
        self.header = header
        self.label = label
        self._aad = header.encode()
        self._file_key = hkdf(key, header.salt, _INFO_FILE_KEY)

    def __repr__(self) -> str:
        return f"SegmentCipher({self.label!r}, key_id={self.header.key_id_hex})"

    @classmethod
    def open(cls, key: bytes, header: Header, raw: bytes, tag: bytes, label: str) -> SegmentCipher:
        """Check the key id (key commitment), then authenticate the header under the file key."""
        if key_id(key) != header.key_id:
            raise WrongKeyError(
                f"{label}: key id {key_id(key).hex()} does not match the file's key id {header.key_id_hex}"
            )
        cipher = cls(key, header, label)
        if raw != cipher._aad:
            raise FormatError(f"{label}: header is not in canonical form")
        # The header tag is GCM over an empty plaintext with the header as associated data (a GMAC).
        verifier = gcm(cipher._file_key, HEADER_NONCE, tag).decryptor()
        verifier.authenticate_additional_data(cipher._aad)
        try:
            verifier.finalize()
        except _invalid_tag():
            raise IntegrityError(f"{label}: header failed authentication (the file was modified)") from None
        return cipher

    def header_tag(self) -> bytes:
        signer = gcm(self._file_key, HEADER_NONCE).encryptor()
        signer.authenticate_additional_data(self._aad)
        signer.finalize()
        return signer.tag

    def _gcm(self, index: int, tag: bytes | None = None) -> Cipher[modes.GCM]:
        last = index == self.header.segment_count - 1
        return gcm(self._file_key, segment_nonce(index, last), tag)

    def encrypt_segment(self, index: int, src: memoryview, dst: memoryview) -> bytes:
        encryptor = self._gcm(index).encryptor()
        encryptor.authenticate_additional_data(self._aad)
        if len(src):
            encryptor.update_into(src, dst)
        encryptor.finalize()
        return encryptor.tag

    def decrypt_segment(self, index: int, buf: memoryview, tag: bytes) -> None:
        """Decrypt in place. On failure the segment is wiped before the error is raised."""
        decryptor = self._gcm(index, tag).decryptor()
        decryptor.authenticate_additional_data(self._aad)
        if len(buf):
            decryptor.update_into(buf, buf)
        try:
            decryptor.finalize()
        except _invalid_tag():
            _wipe(buf)
            raise IntegrityError(
                f"{self.label}: segment {index} of {self.header.segment_count} failed authentication "
                "(the file was modified, truncated, reordered or belongs to another model or role)"
            ) from None


# --- plaintext sources for the writer ---------------------------------------------------------


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


# --- readers ----------------------------------------------------------------------------------


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
    succeeds. Other streams (a wheel opened as a zip) are read sequentially first. On any failure
    `out` is wiped.
    """
    if len(out) != header.plaintext_length:
        raise ValueError("output buffer has the wrong size")
    fd = _fileno(f)
    try:
        if fd is None:
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
            tags_view = memoryview(bytearray(TAG_SIZE * header.segment_count))
            tags = bytes(pread_exact(fd, tags_view, header.tags_offset, label))
            runs = _SegmentRuns(header, out, tags, (fd, direct), header.header_size, label)
            ahead = direct is not None if read_ahead is None else read_ahead  # by default: from the disk
            cipher = runs.unlock_while_reading(unlock, threads, read_ahead=ahead)
        finally:
            if direct is not None:
                os.close(direct)
        if direct is not None and hasattr(os, "posix_fadvise"):
            # Reading around the page cache left the file uncached: let the kernel cache it in the
            # background, so that the next start reads memory, as it would after a buffered read.
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        return cipher
    except BaseException:
        _wipe(out)
        raise


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

    def _reader(self, first: int, stop: int) -> RangeReader | None:
        """What reads the segments [first, stop) into place, or None when they are in place already."""
        if self.fds is None:
            return None
        lo, hi = self.header.segment_span(first)[0], self.header.segment_span(stop - 1)[1]
        return RangeReader(*self.fds, self.out, self.base, self.base + lo, self.base + hi, self.label)

    def _decrypt(self, cipher: SegmentCipher, index: int) -> None:
        start, end = self.header.segment_span(index)
        cipher.decrypt_segment(index, self.out[start:end], self.tags[index * TAG_SIZE : (index + 1) * TAG_SIZE])

    def _run(self, first: int, stop: int, read_ahead: bool) -> None:
        if not read_ahead:
            self._unlocked.wait()
        reader = self._reader(first, stop)

        def read_through(index: int) -> None:  # segments [first, index] in place
            if reader is not None:
                reader.read_to(self.base + self.header.segment_span(index)[1])

        read = decrypted = first  # segments [first, read) are in place, [first, decrypted) decrypted
        while read < stop:
            if not self._unlocked.is_set():
                read = min(read + _READ_AHEAD_SEGMENTS, stop)
                read_through(read - 1)
                continue
            cipher = self._cipher  # read only once _unlocked is set: it is final then
            if cipher is None:
                return
            for index in range(decrypted, read):  # what was read ahead while the key was being found
                self._decrypt(cipher, index)
            read_through(read)
            self._decrypt(cipher, read)
            read = decrypted = read + 1
        self._unlocked.wait()
        if (cipher := self._cipher) is not None:
            for index in range(decrypted, stop):
                self._decrypt(cipher, index)

    def unlock_while_reading(
        self, unlock: Callable[[], SegmentCipher], threads: int | None, *, read_ahead: bool
    ) -> SegmentCipher:
        count = self.header.segment_count
        workers = max(1, min(threads or default_threads(), count))
        if workers == 1:
            self._cipher = unlock()
            self._unlocked.set()
            self._run(0, count, False)
            return self._cipher
        bounds = [count * w // workers for w in range(workers + 1)]
        with ThreadPoolExecutor(workers, thread_name_prefix="ovcrypt") as pool:
            futures = [pool.submit(self._run, bounds[w], bounds[w + 1], read_ahead) for w in range(workers)]
            try:
                self._cipher = unlock()
            finally:
                self._unlocked.set()  # with no cipher the workers stop after their current read
            errors = [e for e in (fut.exception() for fut in futures) if e is not None]
        if errors:
            raise errors[0]
        return self._cipher


def default_threads() -> int:
    """Two workers per core, up to 8: from a cold page cache each worker waits on its reads, and more
    reads in flight load faster (512 MiB, 2 cores, 7 cold runs each: median 0.89 s with 2 workers, 0.72 s
    with 4); from a warm cache the extra workers cost little."""
    return max(2, min(2 * (os.cpu_count() or 1), 8))


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

_ZEROS = bytes(1 << 20)


def _wipe(view: memoryview) -> None:
    """Overwrite plaintext that failed authentication, so no caller can ever see it."""
    for start in range(0, len(view), len(_ZEROS)):
        chunk = view[start : start + len(_ZEROS)]
        chunk[:] = _ZEROS[: len(chunk)]


def _fileno(f: IO[bytes]) -> int | None:
    try:
        fd = f.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
    return fd if hasattr(os, "preadv") else None


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
