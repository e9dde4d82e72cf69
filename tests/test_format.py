"""The encrypted file format (ovcrypt_runtime/_format/spec.py, _format/writer.py, _format/reader.py) against its
specification, docs/FORMAT.md.

The test vectors are parsed out of FORMAT.md and checked twice: with this repository's code, and
with an independent implementation below made only of raw `cryptography` primitives (HKDF, HMAC,
AESGCM) and byte offsets taken from the document, so the document and the code cannot drift.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import random
import re
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import BinaryIO

import numpy as np
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ovcrypt_runtime._errors import FormatError, IntegrityError, OvcryptError, WrongKeyError
from ovcrypt_runtime._format import reader as _reader
from ovcrypt_runtime._format import spec as _spec
from ovcrypt_runtime._format.direct import positional_reads
from ovcrypt_runtime._format.into_file import decrypt_into_file
from ovcrypt_runtime._format.reader import decrypt_into, iter_plaintext, read_header
from ovcrypt_runtime._format.spec import MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, Header, Role, SegmentCipher, parse_header
from ovcrypt_runtime._format.writer import BufferSource, FileSource, encrypt
from tests.helpers import assert_no_plaintext_left

# Run on Linux, and on macOS and Windows as simulated (tests/platforms.py, issue 21).
pytestmark = pytest.mark.usefixtures("simulated_platform")

REPO = Path(__file__).resolve().parent.parent
FORMAT_MD = REPO / "docs" / "FORMAT.md"
SEG = MIN_SEGMENT_SIZE  # 1 MiB


# --- the document's test vectors ----------------------------------------------------------------


def doc_vectors() -> dict[str, dict[str, str]]:
    """Every ```text block of FORMAT.md that starts with `vector = <label>`, as {label: {field: value}}."""
    vectors: dict[str, dict[str, str]] = {}
    for block in re.findall(r"```text\n(.*?)```", FORMAT_MD.read_text("utf-8"), re.S):
        values: dict[str, str] = {}
        for line in block.splitlines():
            match = re.fullmatch(r"(\w+)\s*=\s*(\S*)", line.strip())
            if match:
                values[match[1]] = match[2]
        if "vector" in values:
            vectors[values["vector"]] = values
    return vectors


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_test_vector", REPO / "docs" / "make_test_vector.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def vector_plaintext(length: int) -> bytes:
    return bytes(i % 251 for i in range(length))


# --- an independent implementation, from FORMAT.md alone ----------------------------------------


def ind_hkdf(ikm: bytes, salt: bytes | None, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def ind_hmac(key: bytes, msg: bytes) -> bytes:
    mac = crypto_hmac.HMAC(key, hashes.SHA256())
    mac.update(msg)
    return mac.finalize()


def ind_header(role: int, name: bytes, seg: int, length: int, kid: bytes, salt: bytes) -> bytes:
    """Section 3.1 written out field by field, without struct."""
    return (
        b"OVCRYPT\x00" + bytes([1, role, 0, len(name)]) + seg.to_bytes(4, "big") + length.to_bytes(8, "big")
        + kid + salt + name
    )  # fmt: skip


def ind_nonce(index: int, count: int) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if index == count - 1 else b"\x00")


def ind_encrypt(master: bytes, role: int, name: bytes, seg: int, plaintext: bytes) -> dict[str, bytes]:
    kid = ind_hkdf(master, None, b"hatch-ovcrypt/v1/key-id", 16)
    fields = ind_header(role, name, seg, len(plaintext), kid, bytes(32))
    fingerprint_key = ind_hkdf(master, None, b"hatch-ovcrypt/v1/fingerprint-key")
    fingerprint = AESGCM(fingerprint_key).encrypt(bytes(12), b"", plaintext)  # GMAC: the tag alone
    salt_key = ind_hkdf(master, None, b"hatch-ovcrypt/v1/salt-key")
    salt = ind_hmac(salt_key, fields + fingerprint)
    file_key = ind_hkdf(master, salt, b"hatch-ovcrypt/v1/file-key")
    header = ind_header(role, name, seg, len(plaintext), kid, salt)
    aead = AESGCM(file_key)
    header_tag = aead.encrypt(b"\xff" * 11 + b"\x02", b"", header)
    count = max(1, -(-len(plaintext) // seg))
    cts, tags = [], []
    for i in range(count):
        sealed = aead.encrypt(ind_nonce(i, count), plaintext[i * seg : (i + 1) * seg], header)
        cts.append(sealed[:-16])
        tags.append(sealed[-16:])
    return {
        "key_id": kid, "fingerprint_key": fingerprint_key, "fingerprint": fingerprint, "salt_key": salt_key,
        "header_fields": fields, "salt": salt, "file_key": file_key,
        "header": header, "header_tag": header_tag, "file": header + header_tag + b"".join(cts) + b"".join(tags),
    }  # fmt: skip


def ind_decrypt(master: bytes, data: bytes) -> tuple[int, str, bytes]:
    """Read a file by the document: offsets, key id check, header tag, segments. Returns (role, name, plaintext)."""
    assert data[0:8] == b"OVCRYPT\x00" and data[8] == 1 and data[10] == 0
    role, n = data[9], data[11]
    seg = int.from_bytes(data[12:16], "big")
    length = int.from_bytes(data[16:24], "big")
    kid, salt = data[24:40], data[40:72]
    name = data[72 : 72 + n].decode("utf-8")
    header, header_tag = data[: 72 + n], data[72 + n : 88 + n]
    count = max(1, -(-length // seg))
    assert len(data) == 72 + n + 16 + length + 16 * count
    assert kid == ind_hkdf(master, None, b"hatch-ovcrypt/v1/key-id", 16)
    aead = AESGCM(ind_hkdf(master, salt, b"hatch-ovcrypt/v1/file-key"))
    assert aead.decrypt(b"\xff" * 11 + b"\x02", header_tag, header) == b""
    base, tags_at = 88 + n, 88 + n + length
    parts = []
    for i in range(count):
        ct = data[base + i * seg : base + min((i + 1) * seg, length)]
        parts.append(aead.decrypt(ind_nonce(i, count), ct + data[tags_at + 16 * i : tags_at + 16 * (i + 1)], header))
    return role, name, b"".join(parts)


# --- test vectors -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vectors() -> dict[str, dict[str, str]]:
    found = doc_vectors()
    assert set(found) == {"two-segments", "empty"}, "FORMAT.md lost its test vectors"
    return found


def check_vector(doc: dict[str, str], plaintext: bytes) -> None:
    master = bytes.fromhex(doc["master_key"])
    role, name, seg = int(doc["role"]), doc["name"], int(doc["segment_size"])
    assert master == bytes(range(32))
    assert int(doc["plaintext_length"]) == len(plaintext)
    assert doc["plaintext_sha256"] == hashlib.sha256(plaintext).hexdigest()

    # 1. this repository's code: the generator (the writer) reproduces the document exactly ...
    generated = {v["vector"]: v for v in load_generator().all_vectors()}
    assert generated[doc["vector"]] == doc
    # ... and the writer + reader round-trip it
    out = io.BytesIO()
    header = encrypt(master, BufferSource(plaintext), out, name=name, role=Role(role), segment_size=seg)
    data = out.getvalue()
    assert hashlib.sha256(data).hexdigest() == doc["file_sha256"]
    assert header.encode().hex() == doc["header"] and header.fields().hex() == doc["header_fields"]
    assert _spec.key_id(master).hex() == doc["key_id"] and header.salt.hex() == doc["salt"]
    assert header.file_size == len(data) == int(doc["file_size"])
    assert header.segment_count == int(doc["segment_count"])
    assert _spec.HEADER_NONCE.hex() == doc["header_nonce"]
    for i in range(header.segment_count):
        assert _spec.segment_nonce(i, i == header.segment_count - 1).hex() == doc[f"nonce_{i}"]
    parsed, raw, tag = parse_header(data, "vector")
    assert parsed == header and tag.hex() == doc["header_tag"]
    buf = memoryview(bytearray(len(plaintext)))
    decrypt_into(io.BytesIO(data[header.header_size :]), SegmentCipher.open(master, parsed, raw, tag, "v"), buf)
    assert buf == plaintext

    # 2. independently, from FORMAT.md alone
    ind = ind_encrypt(master, role, name.encode(), seg, plaintext)
    fields = ("key_id", "fingerprint_key", "fingerprint", "salt_key", "header_fields", "salt", "file_key", "header")
    for field in (*fields, "header_tag"):
        assert ind[field].hex() == doc[field], field
    assert ind["file"] == data
    assert hashlib.sha256(ind["file"]).hexdigest() == doc["file_sha256"]
    assert len(ind["file"]) == int(doc["file_size"])
    assert ind_decrypt(master, data) == (role, name, plaintext)
    base = 72 + len(name.encode()) + 16
    count = int(doc["segment_count"])
    for i in range(count):
        assert ind_nonce(i, count).hex() == doc[f"nonce_{i}"]
        start = base + i * seg
        assert data[start : start + min(32, max(0, len(plaintext) - i * seg))].hex() == doc[f"ciphertext_{i}_first32"]
        tag_at = base + len(plaintext) + 16 * i
        assert data[tag_at : tag_at + 16].hex() == doc[f"tag_{i}"]
    if "file" in doc:
        assert data.hex() == doc["file"]


def test_vector_two_segments(vectors: dict[str, dict[str, str]]) -> None:
    doc = vectors["two-segments"]
    assert doc["segment_count"] == "2" and doc["nonce_1"].endswith("01") and doc["nonce_0"].endswith("00")
    check_vector(doc, vector_plaintext((1 << 20) + 100))


def test_vector_empty(vectors: dict[str, dict[str, str]]) -> None:
    doc = vectors["empty"]
    assert doc["segment_count"] == "1" and len(bytes.fromhex(doc["file"])) == 112
    check_vector(doc, b"")


def test_vector_doc_header_layout_matches_struct() -> None:
    """Section 3.1's table (offsets and sizes) is the struct the code uses."""
    assert _spec._FIXED.format == ">8sBBBBIQ16s32s" and _spec.FIXED_HEADER_SIZE == 72
    text = FORMAT_MD.read_text("utf-8")
    rows = re.findall(r"^\| (\d+) \| (\d+|`n`) \| ([^|]+) \|", text, re.M)
    offsets = [(int(o), s) for o, s, _ in rows]
    assert offsets[:10] == [(0, "8"), (8, "1"), (9, "1"), (10, "1"), (11, "1"), (12, "4"), (16, "8"), (24, "16"),
                            (40, "32"), (72, "`n`")]  # fmt: skip


# --- round trips at segment boundaries ----------------------------------------------------------

SIZES = [0, 1, SEG - 1, SEG, SEG + 1, 5 * SEG + 3]


def write(tmp_path: Path, key: bytes, plaintext: bytes, *, name: str = "detector", role: Role = Role.BIN,
          segment_size: int = SEG) -> Path:  # fmt: skip
    path = tmp_path / f"{name}.{role.label}.ovc"
    with path.open("wb") as f:
        encrypt(key, BufferSource(plaintext), f, name=name, role=role, segment_size=segment_size)
    return path


def open_file(f: BinaryIO, key: bytes) -> SegmentCipher:
    header, raw, tag = read_header(f, "test")
    return SegmentCipher.open(key, header, raw, tag, "test")


def decrypt_to_file(f: BinaryIO, cipher: SegmentCipher, out: BinaryIO, mode: str) -> bytes:
    """decrypt_into_file (the memory folder's route) from `f` into the file `out`; what `out` then holds."""
    if not (positional_reads() and hasattr(os, "pwrite")):
        pytest.skip("decrypt_into_file reads and writes at offsets (pread, pwrite), which this platform lacks")
    os.ftruncate(out.fileno(), cipher.header.plaintext_length)
    try:
        decrypt_into_file(f.fileno(), cipher.header, "test", lambda: cipher, out.fileno(),
                          threads=4 if mode == "into-file-threads" else 1)  # fmt: skip
    finally:
        out.seek(0)
        left = out.read()
    return left


def decrypt_file(path: Path, key: bytes, mode: str) -> bytes:
    if mode.startswith("into-file"):
        with path.open("rb") as f, path.with_suffix(".out").open("w+b") as target:
            return decrypt_to_file(f, open_file(f, key), target, mode)
    if mode == "iter":
        with path.open("rb") as f:
            cipher = open_file(f, key)
            return b"".join(bytes(v) for v in iter_plaintext(f, cipher, os.fstat(f.fileno()).st_size))
    stream: BinaryIO = io.BytesIO(path.read_bytes()) if mode == "stream" else path.open("rb")
    with stream as f:
        cipher = open_file(f, key)
        if mode != "stream":
            # the pread path, where the platform reads at offsets; else (Windows) read in order like a stream
            assert (_reader.positional_fileno(f) is not None) == positional_reads()
        out = memoryview(bytearray(cipher.header.plaintext_length))
        decrypt_into(f, cipher, out, threads=4 if mode == "pread-threads" else 1)
        return bytes(out)


MODES = ["pread", "pread-threads", "stream", "iter", "into-file", "into-file-threads"]


@pytest.mark.parametrize("size", SIZES, ids=[f"{s}B" for s in SIZES])
@pytest.mark.parametrize("mode", MODES)
def test_round_trip_segment_boundaries(tmp_path: Path, key: bytes, size: int, mode: str) -> None:
    plaintext = random.Random(size).randbytes(size)
    path = write(tmp_path, key, plaintext)
    header, _, _ = read_header(io.BytesIO(path.read_bytes()), "t")
    assert header.segment_count == max(1, -(-size // SEG))
    assert path.stat().st_size == header.file_size == 72 + 8 + 16 + size + 16 * header.segment_count
    assert decrypt_file(path, key, mode) == plaintext
    assert ind_decrypt(key, path.read_bytes())[2] == plaintext


@pytest.mark.parametrize("segment_size", [MIN_SEGMENT_SIZE + 4096, MAX_SEGMENT_SIZE])
def test_round_trip_other_segment_sizes(tmp_path: Path, key: bytes, segment_size: int) -> None:
    plaintext = random.Random(segment_size).randbytes(2 * segment_size + 17)
    path = write(tmp_path, key, plaintext, segment_size=segment_size)
    for mode in MODES:
        assert decrypt_file(path, key, mode) == plaintext
    assert ind_decrypt(key, path.read_bytes())[2] == plaintext


# --- reading ahead while the key is found (read_and_decrypt) ---------------------------------------


def slow_unlock(f: BinaryIO, key: bytes, out: memoryview, seen: list[bytes], *,
                fail: Exception | None = None) -> tuple[Header, Callable[[], SegmentCipher]]:  # fmt: skip
    """A header and an unlock step that waits for the workers to read ahead, records what `out` then
    holds, and then opens the cipher (or raises `fail`), as a first load's key lookup and import do."""
    header, raw, tag = read_header(f, "test")

    def unlock() -> SegmentCipher:
        time.sleep(0.2)
        seen.append(bytes(out))
        if fail is not None:
            raise fail
        return SegmentCipher.open(key, header, raw, tag, "test")

    return header, unlock


NEEDS_PREAD = "workers read ahead only where the platform reads at offsets (pread); here the file is read in order"


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("size", [1, 3 * SEG, 21 * SEG + 5], ids=["1B", "3seg", "21seg"])
def test_workers_read_ahead_but_decrypt_only_once_unlocked(tmp_path: Path, key: bytes, size: int,
                                                           threads: int) -> None:  # fmt: skip
    """While unlock runs the workers only read: `out` then holds ciphertext (all of it, given time),
    never plaintext; afterwards every segment, read ahead or not, is decrypted exactly right."""
    if not positional_reads():
        pytest.skip(NEEDS_PREAD)
    plaintext = random.Random(size).randbytes(size)
    path = write(tmp_path, key, plaintext)
    data = path.read_bytes()
    with path.open("rb") as f:
        out = memoryview(bytearray(size))
        seen: list[bytes] = []
        header, unlock = slow_unlock(f, key, out, seen)
        cipher = _reader.read_and_decrypt(f, header, "test", unlock, out, threads=threads, read_ahead=True)
    assert cipher.header == header and bytes(out) == plaintext
    ciphertext = data[header.header_size : header.tags_offset]
    if min(threads, header.segment_count) == 1:  # no workers: nothing is read before the key is found
        assert seen == [bytes(size)]
    else:
        assert seen == [ciphertext]


@pytest.mark.parametrize("threads", [1, 4])
def test_failed_unlock_while_reading_ahead(tmp_path: Path, key: bytes, threads: int) -> None:
    """A wrong key found while the workers read: its error, not theirs, and `out` wiped."""
    size = 9 * SEG + 1
    path = write(tmp_path, key, random.Random(9).randbytes(size))
    with path.open("rb") as f:
        out = memoryview(bytearray(size))
        seen: list[bytes] = []
        header, unlock = slow_unlock(f, key, out, seen, fail=WrongKeyError("test: wrong key"))
        with pytest.raises(WrongKeyError, match="wrong key"):
            _reader.read_and_decrypt(f, header, "test", unlock, out, threads=threads, read_ahead=True)
    assert len(seen) == 1
    assert_no_plaintext_left(out, path.read_bytes())


def test_tampered_segment_read_ahead_still_fails(tmp_path: Path, key: bytes) -> None:
    """A segment read ahead (before the key was found) is authenticated like any other."""
    size = 6 * SEG
    path = write(tmp_path, key, random.Random(10).randbytes(size))
    data = bytearray(path.read_bytes())
    header = read_header(io.BytesIO(bytes(data)), "t")[0]
    data[header.header_size + 4 * SEG + 77] ^= 0x01
    path.write_bytes(bytes(data))
    with path.open("rb") as f:
        out = memoryview(bytearray(size))
        header, unlock = slow_unlock(f, key, out, [])
        with pytest.raises(IntegrityError, match="segment 4 of 6 failed authentication"):
            _reader.read_and_decrypt(f, header, "test", unlock, out, threads=2, read_ahead=True)
    assert_no_plaintext_left(out, bytes(data))


def test_no_read_ahead_from_memory(tmp_path: Path, key: bytes) -> None:
    """A file read buffered (from the page cache) is not read before the key is found."""
    if not positional_reads():
        pytest.skip(NEEDS_PREAD)
    size = 6 * SEG
    path = write(tmp_path, key, random.Random(12).randbytes(size))
    with path.open("rb") as f:
        out = memoryview(bytearray(size))
        seen: list[bytes] = []
        header, unlock = slow_unlock(f, key, out, seen)
        _reader.read_and_decrypt(f, header, "test", unlock, out, threads=4)
    assert seen == [bytes(size)]


def test_truncated_file_is_refused_before_reading_ahead(tmp_path: Path, key: bytes) -> None:
    path = write(tmp_path, key, random.Random(11).randbytes(3 * SEG))
    path.write_bytes(path.read_bytes()[:-1])
    with path.open("rb") as f:
        out = memoryview(bytearray(3 * SEG))
        seen: list[bytes] = []
        header, unlock = slow_unlock(f, key, out, seen)
        with pytest.raises(IntegrityError, match="truncated"):
            _reader.read_and_decrypt(f, header, "test", unlock, out, threads=2)
    assert seen == []  # neither read nor unlocked


def test_file_source_equals_buffer_source(tmp_path: Path, key: bytes) -> None:
    plaintext = random.Random(7).randbytes(2 * SEG + 5)
    src = tmp_path / "model.bin"
    src.write_bytes(plaintext)
    a, b = io.BytesIO(), io.BytesIO()
    encrypt(key, FileSource(src), a, name="m", role=Role.BIN)
    encrypt(key, BufferSource(plaintext), b, name="m", role=Role.BIN)
    assert a.getvalue() == b.getvalue()


# --- determinism --------------------------------------------------------------------------------


def enc(key: bytes, plaintext: bytes, *, name: str = "detector", role: Role = Role.BIN, seg: int = SEG,
        salt: bytes | None = None) -> tuple[Header, bytes]:  # fmt: skip
    out = io.BytesIO()
    header = encrypt(key, BufferSource(plaintext), out, name=name, role=role, segment_size=seg, salt=salt)
    return header, out.getvalue()


def test_deterministic_same_inputs_same_bytes(key: bytes) -> None:
    plaintext = random.Random(1).randbytes(SEG + 9)
    assert enc(key, plaintext)[1] == enc(key, plaintext)[1]


def test_deterministic_different_inputs_different_salt(key: bytes) -> None:
    plaintext = random.Random(2).randbytes(1000)
    base = enc(key, plaintext)[0].salt
    variants = {
        "name": enc(key, plaintext, name="detector2")[0].salt,
        "role": enc(key, plaintext, role=Role.XML)[0].salt,
        "plaintext": enc(key, plaintext[:-1] + bytes([plaintext[-1] ^ 1]))[0].salt,
        "length": enc(key, plaintext + b"\x00")[0].salt,
        "segment size": enc(key, plaintext, seg=SEG + 4096)[0].salt,
        "key": enc(bytes(32), plaintext)[0].salt,
    }
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants)


def test_salt_is_keyed_not_a_public_hash(key: bytes) -> None:
    plaintext = b"weights" * 100
    header = enc(key, plaintext)[0]
    assert header.salt != hashlib.sha256(plaintext).digest()
    assert header.salt != hashlib.sha256(header.fields() + hashlib.sha256(plaintext).digest()).digest()


def test_explicit_salt_is_used(key: bytes) -> None:
    header, data = enc(key, b"abc", salt=b"\x07" * 32)
    assert header.salt == b"\x07" * 32 and data[40:72] == b"\x07" * 32
    assert ind_decrypt(key, data)[2] == b"abc"


# --- keys ---------------------------------------------------------------------------------------


def test_wrong_key_is_rejected_before_any_decryption(tmp_path: Path, key: bytes) -> None:
    data = bytearray(enc(key, random.Random(3).randbytes(SEG + 1))[1])
    other = bytes(b ^ 0xFF for b in key)
    with pytest.raises(WrongKeyError, match="key id"):
        open_file(io.BytesIO(bytes(data)), other)
    # The key id is checked before the header tag and before any segment: with the header tag and a
    # segment corrupted, a wrong key still reports WrongKeyError, and the right key IntegrityError.
    data[88 + 8 - 1] ^= 1  # last byte of the header tag (name "detector" is 8 bytes)
    data[100] ^= 1
    with pytest.raises(WrongKeyError):
        open_file(io.BytesIO(bytes(data)), other)
    with pytest.raises(IntegrityError, match="header failed authentication"):
        open_file(io.BytesIO(bytes(data)), key)


def test_key_id_is_hkdf_prefix(key: bytes) -> None:
    assert _spec.key_id(key) == ind_hkdf(key, None, b"hatch-ovcrypt/v1/key-id", 32)[:16]


# RFC 5869 appendix A, test cases 1-3 (the SHA-256 ones): (IKM, salt, info, L, OKM).
RFC5869 = [
    ("0b" * 22, "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9", 42,
     "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"),
    (bytes(range(0x00, 0x50)).hex(), bytes(range(0x60, 0xB0)).hex(), bytes(range(0xB0, 0x100)).hex(), 82,
     "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09"
     "da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87"),
    ("0b" * 22, "", "", 42,
     "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"),
]  # fmt: skip


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "okm"), RFC5869)
def test_hkdf_rfc5869_vectors(ikm: str, salt: str, info: str, length: int, okm: str) -> None:
    """The format's HKDF is written on the standard library's HMAC; it must be RFC 5869's."""
    assert _spec.hkdf(bytes.fromhex(ikm), bytes.fromhex(salt), bytes.fromhex(info), length).hex() == okm


def test_hkdf_agrees_with_cryptography() -> None:
    rng = random.Random(5869)
    for length in (1, 16, 31, 32, 33, 64, 255, 8160):
        for salt in (None, b"", rng.randbytes(rng.randrange(1, 100))):
            ikm, info = rng.randbytes(rng.randrange(0, 80)), rng.randbytes(rng.randrange(0, 80))
            assert _spec.hkdf(ikm, salt, info, length) == ind_hkdf(ikm, salt, info, length), (length, salt)


@pytest.mark.parametrize("length", [0, -1, 8161])
def test_hkdf_refuses_impossible_lengths(length: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 8160"):
        _spec.hkdf(b"k", None, b"", length)


def test_reading_a_header_and_finding_a_key_need_no_cryptography() -> None:
    """A first load imports cryptography while it already reads the ciphertext: nothing before the
    first AES operation may import it (a fresh interpreter, as an installed product starts)."""
    code = (
        "import sys, io\n"
        "from ovcrypt_runtime._format import manifest as _manifest, reader as _reader, spec as _spec\n"
        "from ovcrypt_runtime._keys import sources as _keys\n"
        "from ovcrypt_runtime._loading import loader as _loader, runtime as _runtime\n"
        "k = bytes(32); _spec.key_id(k); _spec.hkdf(k, b's', b'i')\n"
        "assert not [m for m in sys.modules if m.startswith('cryptography')], sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --- validation ---------------------------------------------------------------------------------


BAD_SEGMENT_SIZES = [0, 4096, MIN_SEGMENT_SIZE - 4096, MIN_SEGMENT_SIZE + 1, MIN_SEGMENT_SIZE + 2048,
                     MAX_SEGMENT_SIZE + 4096, 8 << 20, -1]  # fmt: skip


@pytest.mark.parametrize("size", BAD_SEGMENT_SIZES)
def test_segment_size_out_of_range_rejected(key: bytes, size: int) -> None:
    assert _spec.validate_segment_size(size) is not None
    with pytest.raises(ValueError, match="segment size"):
        enc(key, b"x", seg=size)
    if 0 <= size < 1 << 32:  # and a reader rejects a header that claims it
        data = bytearray(enc(key, b"x")[1])
        data[12:16] = size.to_bytes(4, "big")
        with pytest.raises(FormatError, match="segment size"):
            parse_header(bytes(data), "t")


@pytest.mark.parametrize("size", [MIN_SEGMENT_SIZE, MIN_SEGMENT_SIZE + 4096, 3 << 20, MAX_SEGMENT_SIZE])
def test_segment_size_in_range_accepted(size: int) -> None:
    assert _spec.validate_segment_size(size) is None


def test_name_limits(key: bytes) -> None:
    assert enc(key, b"x", name="n" * 255)[0].header_size == 72 + 255 + 16
    assert enc(key, b"x", name="é" * 127)[0].name == "é" * 127  # 254 bytes of UTF-8
    for bad in ["", "n" * 256, "é" * 128]:
        with pytest.raises(ValueError, match="model name"):
            enc(key, b"x", name=bad)


def corrupt(offset: int, value: bytes) -> Callable[[bytearray], None]:
    def apply(data: bytearray) -> None:
        data[offset : offset + len(value)] = value

    return apply


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (corrupt(0, b"X"), "bad magic"),
        (corrupt(8, b"\x02"), "version 2"),
        (corrupt(9, b"\x00"), "corrupt header"),
        (corrupt(9, b"\x05"), "corrupt header"),
        (corrupt(10, b"\x01"), "corrupt header"),
        (corrupt(11, b"\x00"), "corrupt header"),
        (corrupt(72, b"\xff"), "not UTF-8"),
        (corrupt(72, b"\xed\xa0\x80"), "not UTF-8"),  # an encoded surrogate
    ],
)
def test_header_rejections(key: bytes, change: Callable[[bytearray], None], message: str) -> None:
    data = bytearray(enc(key, b"payload")[1])
    change(data)
    with pytest.raises(FormatError, match=message):
        parse_header(bytes(data), "t")


@pytest.mark.parametrize("cut", [0, 1, 71, 72, 79, 80, 95])
def test_truncated_header_rejected(key: bytes, cut: int) -> None:
    data = enc(key, b"payload")[1]
    with pytest.raises(FormatError, match="truncated"):
        read_header(io.BytesIO(data[:cut]), "t")


@pytest.mark.parametrize("mode", MODES)
def test_truncated_or_extended_file_rejected(tmp_path: Path, key: bytes, mode: str) -> None:
    plaintext = random.Random(4).randbytes(2 * SEG + 1)
    path = write(tmp_path, key, plaintext)
    good = path.read_bytes()
    for data in (good[:-1], good[:-16], good[:-17], good + b"\x00"):
        path.write_bytes(data)
        with pytest.raises(IntegrityError, match=r"truncated|unexpected bytes"):
            decrypt_file(path, key, mode)


def reorder_segments(data: bytes, header: Header) -> bytes:
    hs = header.header_size
    s0, s1 = data[hs : hs + SEG], data[hs + SEG : hs + 2 * SEG]
    t0, t1 = data[header.tags_offset : header.tags_offset + 16], data[header.tags_offset + 16 : header.tags_offset + 32]
    return data[:hs] + s1 + s0 + data[hs + 2 * SEG : header.tags_offset] + t1 + t0 + data[header.tags_offset + 32 :]


@pytest.mark.parametrize("mode", ["pread", "pread-threads", "stream", "into-file", "into-file-threads"])
def test_failure_wipes_all_plaintext(tmp_path: Path, key: bytes, mode: str) -> None:
    plaintext = random.Random(5).randbytes(3 * SEG + 3)
    path = write(tmp_path, key, plaintext)
    good = path.read_bytes()
    header = parse_header(good, "t")[0]
    flipped = bytearray(good)
    flipped[header.header_size + 3 * SEG + 1] ^= 0x80  # in the last, short segment
    for data in (bytes(flipped), reorder_segments(good, header)):
        path.write_bytes(data)
        if mode.startswith("into-file"):  # a file the worker threads write only authenticated segments to
            with path.open("rb") as f, (tmp_path / "out").open("w+b") as file:
                file.write(b"\xaa" * header.plaintext_length)
                with pytest.raises(IntegrityError, match="failed authentication"):
                    decrypt_to_file(f, open_file(f, key), file, mode)
                file.seek(0)
                assert_no_plaintext_left(file.read(), data, 0xAA)
            continue
        stream: BinaryIO = io.BytesIO(data) if mode == "stream" else path.open("rb")
        with stream as f:
            cipher = open_file(f, key)
            out = memoryview(bytearray(b"\xaa" * header.plaintext_length))
            with pytest.raises(IntegrityError, match="failed authentication"):
                decrypt_into(f, cipher, out, threads=4 if mode == "pread-threads" else 1)
            assert_no_plaintext_left(out, data, 0xAA)


def test_iter_plaintext_never_yields_a_failed_segment(tmp_path: Path, key: bytes) -> None:
    plaintext = random.Random(6).randbytes(2 * SEG + 3)
    path = write(tmp_path, key, plaintext)
    data = bytearray(path.read_bytes())
    data[72 + 8 + 16 + SEG + 5] ^= 1  # segment 1 of 3
    path.write_bytes(bytes(data))
    seen: list[bytes] = []
    with path.open("rb") as f, pytest.raises(IntegrityError, match="segment 1 of 3"):
        for view in iter_plaintext(f, open_file(f, key), len(data)):
            seen.append(bytes(view))
    assert seen == [plaintext[:SEG]]


@pytest.mark.parametrize(("name", "role"), [("other", Role.BIN), ("detector", Role.XML)])
def test_moving_a_file_to_another_model_or_role_fails(key: bytes, name: str, role: Role) -> None:
    """Rewriting the header's name or role breaks the header tag (and every segment's AAD)."""
    header, data = enc(key, b"weights" * 10)
    forged = Header(role, name, header.segment_size, header.plaintext_length, header.key_id, header.salt)
    moved = forged.encode() + data[72 + 8 :]
    with pytest.raises(IntegrityError, match="header failed authentication"):
        open_file(io.BytesIO(moved), key)
    with pytest.raises(InvalidTag):  # independently: the segment's AAD no longer matches
        AESGCM(ind_hkdf(key, header.salt, b"hatch-ovcrypt/v1/file-key")).decrypt(
            ind_nonce(0, 1), moved[-16 - 70 : -16] + moved[-16:], forged.encode()
        )


def test_errors_are_ovcrypt_errors() -> None:
    assert issubclass(FormatError, IntegrityError) and issubclass(IntegrityError, OvcryptError)
    assert issubclass(WrongKeyError, OvcryptError)


# --- no one-shot size limit ---------------------------------------------------------------------


@pytest.fixture
def segment_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[int]]]:
    """Record the length of every encrypt_segment / decrypt_segment call (the real methods still run)."""
    calls: dict[str, list[int]] = {"encrypt": [], "decrypt": []}
    real_enc, real_dec = SegmentCipher.encrypt_segment, SegmentCipher.decrypt_segment

    def encrypt_segment(self: SegmentCipher, index: int, src: memoryview, dst: memoryview) -> bytes:
        calls["encrypt"].append(len(src))
        return real_enc(self, index, src, dst)

    def decrypt_segment(self: SegmentCipher, index: int, buf: memoryview, tag: bytes) -> None:
        calls["decrypt"].append(len(buf))
        real_dec(self, index, buf, tag)

    monkeypatch.setattr(SegmentCipher, "encrypt_segment", encrypt_segment)
    monkeypatch.setattr(SegmentCipher, "decrypt_segment", decrypt_segment)
    yield calls


def test_crypto_runs_per_segment(key: bytes, segment_calls: dict[str, list[int]]) -> None:
    plaintext = random.Random(8).randbytes(5 * SEG + 3)
    data = enc(key, plaintext)[1]
    f = io.BytesIO(data)
    cipher = open_file(f, key)
    out = memoryview(bytearray(len(plaintext)))
    decrypt_into(f, cipher, out)
    assert sorted(segment_calls["encrypt"]) == sorted([SEG] * 5 + [3])  # workers run segments in any order
    assert sorted(segment_calls["decrypt"]) == sorted([SEG] * 5 + [3])  # workers run segments in any order


@pytest.mark.slow
def test_more_than_2_gib(tmp_path: Path, key: bytes, segment_calls: dict[str, list[int]]) -> None:
    """2 GiB + 1 byte (past OpenSSL's 2^31 - 1 one-shot int limit) round-trips; ~5 s here.

    4 GiB + 1 byte took 30-45 s on this machine (page cache writeback, not crypto), too slow for every run.
    """
    size = (2 << 30) + 1
    src = tmp_path / "big.bin"
    markers = {0: 1, (1 << 31) - 1: 2, 1 << 31: 3, size - 1: 4}
    with src.open("wb") as f:
        f.truncate(size)
        for offset, value in markers.items():
            f.seek(offset)
            f.write(bytes([value]))
    enc_path = tmp_path / "big.bin.ovc"
    with enc_path.open("wb") as f:
        header = encrypt(key, FileSource(src), f, name="big", role=Role.BIN)
    src.unlink()
    assert header.segment_count == 2049 and enc_path.stat().st_size == header.file_size
    assert sorted(segment_calls["encrypt"]) == [1] + [SEG] * 2048
    with enc_path.open("rb") as f:
        cipher = open_file(f, key)
        out = memoryview(bytearray(size))
        decrypt_into(f, cipher, out, threads=2)
    enc_path.unlink()
    assert sorted(segment_calls["decrypt"]) == [1] + [SEG] * 2048
    arr = np.frombuffer(out, np.uint8)
    assert int(np.count_nonzero(arr)) == len(markers)
    assert all(arr[offset] == value for offset, value in markers.items())


def test_struct_constant_matches_doc() -> None:
    assert struct.calcsize(">8sBBBBIQ16s32s") == 72
