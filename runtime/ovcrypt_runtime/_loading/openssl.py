"""The OpenSSL recipe (`openssl enc -aes-128-cbc -K <hex> -iv <hex>`), done right, for migration.

Models that were encrypted with the widely copied recipe can be loaded in memory (load_openssl_model)
and re-encrypted into this project's format at build time. CBC is unauthenticated, so the best this
can do is refuse what is certainly wrong: a length that is not whole blocks, bad PKCS#7 padding, or
an .xml that does not decrypt to XML (which is what a wrong key gives). The recipe cannot detect
a modified .bin; that is why this project's own format exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .._errors import IntegrityError, KeyFormatError
from .._format.spec import forget_keys

if TYPE_CHECKING:
    import numpy as np
    import openvino as ov

    from .._format.writer import Writable  # for typing only: products without the cache ship no writer

BLOCK = 16
RECIPE = "openssl-aes-128-cbc"
_CHUNK = 1 << 20


@forget_keys
def parse_hex16(text: str, source: str) -> bytes:
    """A 16-byte key or IV as 32 hex characters, as `openssl enc -K/-iv` takes them."""
    value = text.strip()
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != BLOCK or len(value) != 2 * BLOCK:
        raise KeyFormatError(
            f"{source}: expected 32 hex characters (16 bytes for AES-128-CBC), got {len(value)} characters"
        )
    return raw


def _cipher(key: bytes, iv: bytes) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(key), modes.CBC(iv))


@forget_keys
def _padding_length(f: BinaryIO, size: int, key: bytes, iv: bytes, label: str) -> int:
    """Decrypt just the last block to learn the PKCS#7 padding, so the plaintext length is known up front."""
    if size < BLOCK or size % BLOCK:
        raise IntegrityError(f"{label}: {size} bytes is not a whole number of AES blocks; not an `openssl enc` file")
    f.seek(size - 2 * BLOCK if size > BLOCK else 0)
    tail = f.read(2 * BLOCK if size > BLOCK else BLOCK)
    prev, last = (tail[:BLOCK], tail[BLOCK:]) if size > BLOCK else (iv, tail)
    block = _cipher(key, prev).decryptor().update(last)
    pad = block[-1]
    if not 1 <= pad <= BLOCK or block[-pad:] != bytes([pad]) * pad:
        raise IntegrityError(f"{label}: bad padding after AES-128-CBC decryption: wrong key or IV, or a modified file")
    return pad


class OpenSSLSource:
    """A recipe-encrypted file as a PlaintextSource: streamed CBC decryption, memory bounded by a chunk."""

    @forget_keys
    def __init__(self, path: Path, key: bytes, iv: bytes, label: str) -> None:
        self.path, self._key, self._iv, self._label = path, key, iv, label
        size = path.stat().st_size
        with path.open("rb") as f:
            self.length = size - _padding_length(f, size, key, iv, label)

    def chunks(self, size: int) -> Iterator[memoryview]:
        # Ciphertext is read in whole blocks; plaintext past `size` is carried to the next piece, so
        # any piece size works (a size that is not a multiple of 16 must not drop bytes).
        decryptor = _cipher(self._key, self._iv).decryptor()
        remaining = self.length
        carry = bytearray()
        with self.path.open("rb") as f:
            while remaining > 0:
                want = min(size, remaining)
                if len(carry) < want:
                    need = _round_up(want - len(carry))
                    data = f.read(need)
                    if len(data) != need:
                        raise IntegrityError(f"{self._label}: file shrank while it was read")
                    carry += decryptor.update(data)
                piece = bytes(carry[:want])
                del carry[:want]
                remaining -= want
                yield memoryview(piece)


def _round_up(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


@forget_keys
def decrypt_openssl_array(path: Path, key: bytes, iv: bytes, label: str) -> np.ndarray:
    """Decrypt a recipe file into one writable numpy buffer (the plaintext never touches the disk)."""
    from .loader import owned_buffer

    size = path.stat().st_size
    with path.open("rb") as f:
        pad = _padding_length(f, size, key, iv, label)
        out = owned_buffer(size + BLOCK - 1)  # cryptography wants block-1 bytes of room
        view = out.data
        decryptor = _cipher(key, iv).decryptor()
        f.seek(0)
        chunk = bytearray(_CHUNK)
        done = 0
        while done < size:
            n = f.readinto(memoryview(chunk)[: min(_CHUNK, size - done)])  # never past the size checked
            if not n:
                raise IntegrityError(f"{label}: file shrank while it was read")
            done += decryptor.update_into(memoryview(chunk)[:n], view[done : done + n + BLOCK - 1])
    return out[: size - pad]


def looks_like_xml(data: bytes | memoryview) -> bool:
    head = bytes(data[:64]).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith((b"<?xml", b"<net"))


def check_xml(data: bytes | memoryview, label: str) -> None:
    if not looks_like_xml(data):
        raise IntegrityError(f"{label}: does not decrypt to OpenVINO IR XML: wrong key or IV, or not a recipe file")


@forget_keys
def load_openssl_model(
    xml_path: str | Path, key: bytes, iv: bytes, *, core: ov.Core | None = None, bin_path: str | Path | None = None
) -> ov.Model:
    """Load a model encrypted with the OpenSSL recipe, in memory: the recipe's whole runtime, in Python.

    `key` and `iv` are 16 bytes each (parse_hex16 reads the hex form). The .bin defaults to the
    file beside the .xml with the same stem. Nothing is decrypted to disk.
    """
    import openvino as ov

    from .loader import model_from_memory

    xml_path = Path(xml_path)
    bin_path = Path(bin_path) if bin_path else xml_path.with_suffix(".bin")
    xml = decrypt_openssl_array(xml_path, key, iv, f"{xml_path.name}")
    check_xml(xml.data, xml_path.name)
    weights = decrypt_openssl_array(bin_path, key, iv, f"{bin_path.name}")
    return model_from_memory(core or ov.Core(), xml, weights)


@forget_keys
def encrypt_openssl_stream(src: BinaryIO, dst: Writable, key: bytes, iv: bytes) -> None:
    """Byte-identical to `openssl enc -aes-128-cbc -K <key> -iv <iv>` (PKCS#7, no salt header)."""
    from cryptography.hazmat.primitives import padding

    padder = padding.PKCS7(8 * BLOCK).padder()
    encryptor = _cipher(key, iv).encryptor()
    while data := src.read(_CHUNK):
        dst.write(encryptor.update(padder.update(data)))
    dst.write(encryptor.update(padder.finalize()) + encryptor.finalize())


@forget_keys
def decrypt_openssl_stream(src: Path, dst: Writable, key: bytes, iv: bytes) -> None:
    """Byte-identical to `openssl enc -d -aes-128-cbc -K <key> -iv <iv>`; refuses bad padding."""
    for chunk in OpenSSLSource(src, key, iv, src.name).chunks(_CHUNK):
        dst.write(chunk)
