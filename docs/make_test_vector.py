"""Print the test vectors of docs/FORMAT.md, computed with this repository's writer.

    .venv/bin/python docs/make_test_vector.py

The output is the two fenced blocks of the "Test vectors" section, pasted into FORMAT.md as they
are. tests/test_format.py parses them back out of FORMAT.md and checks them twice: against this
repository's code, and against an independent implementation made of raw `cryptography`
primitives, so the document, the code and the format can never drift apart.
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ovcrypt_runtime._format.spec import (
    _INFO_FILE_KEY,
    _INFO_FINGERPRINT_KEY,
    _INFO_SALT_KEY,
    HEADER_NONCE,
    TAG_SIZE,
    Header,
    Role,
    hkdf,
    key_id,
    segment_nonce,
)
from ovcrypt_runtime._format.writer import BufferSource, encrypt, plaintext_fingerprint

MASTER_KEY = bytes(range(32))
NAME = "detector"
SEGMENT_SIZE = 1 << 20
TWO_SEGMENT_LENGTH = SEGMENT_SIZE + 100


def vector_plaintext(length: int) -> bytes:
    """bytes(i % 251 for i in range(length)), built quickly."""
    return (bytes(range(251)) * (length // 251 + 1))[:length]


def vector(label: str, role: Role, plaintext: bytes, *, full_file: bool) -> dict[str, str]:
    """Every intermediate value of encrypting `plaintext`, as hex (or decimal for lengths)."""
    out = io.BytesIO()
    header: Header = encrypt(MASTER_KEY, BufferSource(plaintext), out, name=NAME, role=role, segment_size=SEGMENT_SIZE)
    data = out.getvalue()
    raw = header.encode()
    hs = header.header_size
    values: dict[str, str] = {
        "vector": label,
        "master_key": MASTER_KEY.hex(),
        "role": str(int(role)),
        "name": NAME,
        "segment_size": str(SEGMENT_SIZE),
        "plaintext_length": str(len(plaintext)),
        "plaintext_sha256": hashlib.sha256(plaintext).hexdigest(),
        "key_id": key_id(MASTER_KEY).hex(),
        "fingerprint_key": hkdf(MASTER_KEY, None, _INFO_FINGERPRINT_KEY).hex(),
        "fingerprint": plaintext_fingerprint(MASTER_KEY, BufferSource(plaintext), SEGMENT_SIZE).hex(),
        "salt_key": hkdf(MASTER_KEY, None, _INFO_SALT_KEY).hex(),
        "header_fields": header.fields().hex(),
        "salt": header.salt.hex(),
        "file_key": hkdf(MASTER_KEY, header.salt, _INFO_FILE_KEY).hex(),
        "header": raw.hex(),
        "header_nonce": HEADER_NONCE.hex(),
        "header_tag": data[len(raw) : hs].hex(),
        "segment_count": str(header.segment_count),
        "file_size": str(len(data)),
        "file_sha256": hashlib.sha256(data).hexdigest(),
    }
    for index in range(header.segment_count):
        start, end = header.segment_span(index)
        last = index == header.segment_count - 1
        tag_at = header.tags_offset + index * TAG_SIZE
        values[f"nonce_{index}"] = segment_nonce(index, last).hex()
        values[f"ciphertext_{index}_first32"] = data[hs + start : hs + min(end, start + 32)].hex()
        values[f"tag_{index}"] = data[tag_at : tag_at + TAG_SIZE].hex()
    if full_file:
        values["file"] = data.hex()
    return values


def all_vectors() -> list[dict[str, str]]:
    return [
        vector("two-segments", Role.BIN, vector_plaintext(TWO_SEGMENT_LENGTH), full_file=False),
        vector("empty", Role.XML, b"", full_file=True),
    ]


def render(values: dict[str, str]) -> str:
    width = max(len(k) for k in values)
    lines = [f"{k.ljust(width)} = {v}".rstrip() for k, v in values.items()]
    return "```text\n" + "\n".join(lines) + "\n```\n"


if __name__ == "__main__":
    print("\n".join(render(v) for v in all_vectors()))
