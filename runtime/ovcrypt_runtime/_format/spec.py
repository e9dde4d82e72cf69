"""The hatch-ovcrypt file format, version 1: the one definition that the writer and every reader use.

This module mirrors docs/FORMAT.md section by section and holds nothing else: the primitives and key
derivations (§1-2), the header and its layout (§3.1), the header tag (§3.2) and the segment AEAD (§3.3),
and the checks a reader makes before decrypting (§4). In short::

    header      fixed 72 bytes + model name (authenticated by the header tag)
    header_tag  16 bytes: AES-256-GCM tag over the empty string, header as associated data
    ciphertext  exactly plaintext_length bytes, segment after segment
    tags        16 bytes per segment

Each segment's nonce binds its index and a last-segment flag (as in Tink's streaming AEAD and age's
STREAM) and its associated data is the whole header, so reordering, dropping, truncating, appending or
moving a file to another model or role all fail authentication. Every file is encrypted under its own
key, HKDF(master key, salt), so a (key, nonce) pair never protects two different plaintexts (§6).

The I/O around the format lives elsewhere: `_writer` (plaintext sources, encryption) and `_reader`
(reading ciphertext into place and decrypting segments in parallel).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import hashlib
import hmac
import inspect
import struct
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .._errors import FormatError, IntegrityError, WrongKeyError

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


_F = TypeVar("_F", bound=Callable[..., Any])


def forget_keys(fn: _F) -> _F:
    """Let no traceback of an error that leaves `fn` hold a key in its frames' locals.

    Error reporters record the locals of every frame of a traceback (Sentry, rich tracebacks, pytest
    --showlocals), and a function that takes, finds or derives keys holds them as locals. When an error
    leaves `fn`, the frames it went through below this wrapper (fn's own and those it called, all
    finished by then) have their locals cleared, as have those of the errors chained to it, and the
    wrapper drops its arguments before re-raising. The traceback keeps every file and line. Works for
    generator functions too. Callers that hold keys themselves must do the same.
    """
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            inner = fn(*args, **kwargs)
            del args, kwargs
            try:
                result = yield from inner
            except BaseException as exc:
                error = exc
            else:
                return result
            del inner
            raise _without_locals(error)

        return cast(_F, generator)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            error = exc
        del args, kwargs
        raise _without_locals(error)

    return cast(_F, wrapper)


def _without_locals(error: BaseException) -> BaseException:
    """`error` with the locals of the frames it went through below the catching wrapper cleared, and of
    the errors chained to it that were caught in one of those frames (errors caught further up belong
    to the caller and are left alone); the wrapper's own entry is dropped from its traceback, since
    re-raising adds it again."""
    inside: set[int] = set()

    def clear_below(tb: TracebackType | None) -> None:
        while tb is not None:
            inside.add(id(tb.tb_frame))
            with contextlib.suppress(RuntimeError):  # a frame still executing (on another thread) stays
                tb.tb_frame.clear()
            tb = tb.tb_next

    first = error.__traceback__
    clear_below(first.tb_next if first is not None else None)
    seen = {id(error)}
    todo = [error.__cause__, error.__context__]
    while todo:
        exc = todo.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        tb = exc.__traceback__
        if tb is None or id(tb.tb_frame) not in inside:
            continue
        clear_below(tb.tb_next)  # its first entry, the frame that caught it, is already cleared
        todo += [exc.__cause__, exc.__context__]
    return error.with_traceback(first.tb_next if first is not None else None)


class Role(enum.IntEnum):
    """What an encrypted file holds; bound into every segment's associated data."""

    XML = 1
    BIN = 2
    COMPILED = 3  # an exported compiled model in the warm-start cache
    DATA = 4  # any other file of a folder model (configs, tokenizer files, templates)

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
    @forget_keys
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
            wipe(buf)
            raise IntegrityError(
                f"{self.label}: segment {index} of {self.header.segment_count} failed authentication "
                "(the file was modified, truncated, reordered or belongs to another model or role)"
            ) from None




_ZEROS = bytes(1 << 20)


def wipe(view: memoryview) -> None:
    """Overwrite plaintext that failed authentication, so no caller can ever see it."""
    for start in range(0, len(view), len(_ZEROS)):
        chunk = view[start : start + len(_ZEROS)]
        chunk[:] = _ZEROS[: len(chunk)]


