"""Property-based fuzzing of everything that parses untrusted bytes: headers, encrypted files, manifests.

The contract under test: malformed input raises only the documented exceptions (OvcryptError
subclasses: FormatError, IntegrityError, WrongKeyError, ManifestError), never IndexError,
struct.error, UnicodeDecodeError, KeyError, RecursionError, ...; and whatever decrypts without an
error is exactly the original plaintext. Example counts go to the suite summary (suite_count).
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ovcrypt_runtime._errors import FormatError, IntegrityError, ManifestError, OvcryptError
from ovcrypt_runtime._format.manifest import FileEntry, Manifest, ModelEntry, file_identity, ir_files, parse_manifest
from ovcrypt_runtime._format.reader import decrypt_into, iter_plaintext, read_header
from ovcrypt_runtime._format.spec import MAGIC, MIN_SEGMENT_SIZE, Role, SegmentCipher, parse_header
from ovcrypt_runtime._format.writer import BufferSource, encrypt

Count = Callable[[str, int], None]
_BASE = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
FUZZ = settings(_BASE, max_examples=800)  # headers and encrypted files: ~2-3 ms an example
FUZZ_JSON = settings(_BASE, max_examples=250)  # manifests: ~10-17 ms an example (strategy generation)
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SEG = MIN_SEGMENT_SIZE


def encrypted(plaintext: bytes, *, name: str = "detector", role: Role = Role.BIN) -> bytes:
    out = io.BytesIO()
    encrypt(KEY, BufferSource(plaintext), out, name=name, role=role)
    return out.getvalue()


SMALL_FILE = encrypted(b"tiny weights " * 20)
EMPTY_FILE = encrypted(b"", role=Role.XML)
TWO_SEGMENT_PLAINTEXT = random.Random(0).randbytes(SEG + 50)
TWO_SEGMENT_FILE = encrypted(TWO_SEGMENT_PLAINTEXT)
PLAINTEXTS = {SMALL_FILE: b"tiny weights " * 20, EMPTY_FILE: b"", TWO_SEGMENT_FILE: TWO_SEGMENT_PLAINTEXT}


# --- mutations ----------------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, data: bytes, *, focus: int | None = None) -> bytes:
    """`data` with 1-4 mutations: flip, set, insert, delete, truncate, extend, or splice a field.

    `focus` makes most positions fall in the first `focus` bytes (the header) of a large file.
    """
    buf = bytearray(data)

    def position(extra: int = 0) -> int:
        limit = len(buf) + extra
        if focus is not None and limit > focus and draw(st.booleans()):
            limit = focus
        return draw(st.integers(0, max(0, limit - 1)))

    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "extend", "field"]))
        if kind == "flip" and buf:
            buf[position()] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and buf:
            buf[position()] = draw(st.integers(0, 255))
        elif kind == "insert":
            at = position(1)
            buf[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and buf:
            at = position()
            del buf[at : at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del buf[position(1) :]
        elif kind == "extend":
            buf += draw(st.binary(min_size=1, max_size=40))
        elif kind == "field":  # overwrite one header field with an extreme value
            offset, size = draw(st.sampled_from([(8, 1), (9, 1), (10, 1), (11, 1), (12, 4), (16, 8), (24, 16)]))
            value = draw(st.sampled_from([0, 1, 2, 3, (1 << (8 * size)) - 1, 1 << (8 * size - 1)]))
            buf[offset : offset + size] = value.to_bytes(size, "big")
    return bytes(buf)


@st.composite
def header_like(draw: st.DrawFn) -> bytes:
    """Bytes that follow the header layout with arbitrary field values: reaches deep into the parser."""
    name = draw(st.binary(max_size=20))
    fixed = (
        draw(st.sampled_from([MAGIC, MAGIC, MAGIC, b"OVCRYPT\x01", bytes(8)]))
        + bytes([draw(st.sampled_from([1, 1, 0, 2, 255])), draw(st.integers(0, 255)), draw(st.sampled_from([0, 0, 1])),
                 draw(st.sampled_from([len(name), len(name), 0, 255, draw(st.integers(0, 255))]))])
        + draw(st.sampled_from([SEG, SEG, 4 << 20, SEG + 4096, 0, SEG + 1, (1 << 32) - 1])).to_bytes(4, "big")
        + draw(st.integers(0, (1 << 64) - 1)).to_bytes(8, "big")
        + draw(st.binary(min_size=48, max_size=48))
    )  # fmt: skip
    return fixed + name + draw(st.binary(max_size=40))


def parse_both(data: bytes) -> None:
    """parse_header and read_header agree, and raise only FormatError."""
    try:
        parsed = parse_header(data, "fuzz")
    except FormatError:
        parsed = None
    try:
        read = read_header(io.BytesIO(data), "fuzz")
    except FormatError:
        read = None
    if parsed is not None:
        header, raw, tag = parsed
        assert read == parsed
        assert raw == header.encode() and len(tag) == 16  # a parsed header is canonical
        assert data[: len(raw) + 16] == raw + tag


def run_counted(fuzz: settings, strategy: st.SearchStrategy[Any], body: Callable[[Any], None]) -> int:
    """Run `body` on every example hypothesis draws from `strategy`; return how many examples ran."""
    count = 0

    @fuzz
    @given(strategy)
    def check(example: Any) -> None:
        nonlocal count
        count += 1
        body(example)

    check()
    return count


# --- headers ------------------------------------------------------------------------------------


def test_fuzz_header_random_bytes(suite_count: Count) -> None:
    strategy = st.binary(max_size=400) | st.binary(max_size=100).map(lambda b: MAGIC + b)
    suite_count("fuzz examples: header (random bytes)", run_counted(FUZZ, strategy, parse_both))


def test_fuzz_header_structured(suite_count: Count) -> None:
    suite_count("fuzz examples: header (structured fields)", run_counted(FUZZ, header_like(), parse_both))


def test_fuzz_header_mutated(suite_count: Count) -> None:
    strategy = st.sampled_from([SMALL_FILE, EMPTY_FILE]).flatmap(mutated)
    suite_count("fuzz examples: header (mutated valid files)", run_counted(FUZZ, strategy, parse_both))


# --- whole encrypted files ----------------------------------------------------------------------


def decrypt_all(data: bytes, key: bytes, how: str) -> bytes:
    """The runtime's path: read_header, SegmentCipher.open, allocate, decrypt_into (or iter_plaintext)."""
    if how == "file":
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.seek(0)
            return _decrypt_stream(f, key, how, len(data))
    return _decrypt_stream(io.BytesIO(data), key, how, len(data))


def _decrypt_stream(f: Any, key: bytes, how: str, size: int) -> bytes:
    header, raw, tag = read_header(f, "fuzz")
    cipher = SegmentCipher.open(key, header, raw, tag, "fuzz")
    if how == "iter":
        return b"".join(bytes(v) for v in iter_plaintext(f, cipher, size))
    out = memoryview(bytearray(header.plaintext_length))
    decrypt_into(f, cipher, out, threads=2)
    return bytes(out)


def test_fuzz_encrypted_file_mutated(suite_count: Count) -> None:
    outcomes: dict[str, int] = {}
    strategy = st.tuples(
        st.sampled_from([SMALL_FILE, EMPTY_FILE, TWO_SEGMENT_FILE]).flatmap(
            lambda d: st.tuples(st.just(d), mutated(d, focus=200))
        ),
        st.sampled_from(["stream", "file", "iter"]),
        st.sampled_from([KEY, KEY, KEY, OTHER_KEY]),
    )

    def check(example: tuple[tuple[bytes, bytes], str, bytes]) -> None:
        (original, data), how, key = example
        try:
            plaintext = decrypt_all(data, key, how)
        except OvcryptError as exc:
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
            return
        # Anything that authenticates is the original: the mutation was a no-op (e.g. set to the same byte).
        assert key == KEY and data == original and plaintext == PLAINTEXTS[original]
        outcomes["ok"] = outcomes.get("ok", 0) + 1

    suite_count("fuzz examples: encrypted file (mutated)", run_counted(FUZZ, strategy, check))
    assert outcomes.get("IntegrityError", 0) > 0 and outcomes.get("WrongKeyError", 0) > 0, outcomes


def test_fuzz_unmutated_files_decrypt(suite_count: Count) -> None:
    for data, plaintext in PLAINTEXTS.items():
        for how in ("stream", "file", "iter"):
            assert decrypt_all(data, KEY, how) == plaintext
    suite_count("fuzz examples: encrypted file (controls)", 3 * len(PLAINTEXTS))


# --- manifests ----------------------------------------------------------------------------------

IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,11}", fullmatch=True)
HEX32 = st.binary(min_size=16, max_size=16).map(bytes.hex)
HEX64 = st.binary(min_size=32, max_size=32).map(bytes.hex)


RELPATH = st.lists(st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True).filter(lambda s: s not in (".", "..")),
                   min_size=1, max_size=3).map("/".join)  # fmt: skip


@st.composite
def model_entries(draw: st.DrawFn, name: str) -> ModelEntry:
    kind = draw(st.sampled_from(["ir", "llm", "vlm", "text2image", "files"]))
    paths = list(ir_files(name)) if kind == "ir" else draw(st.lists(RELPATH, min_size=1, max_size=4, unique=True))
    files = {
        path: FileEntry(file_identity(name, kind, path).file, draw(st.integers(0, 1 << 40)), draw(HEX64), draw(HEX64))
        for path in paths
    }
    return ModelEntry(kind, files)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    names = draw(st.lists(IDENT, max_size=4, unique=True))
    models = {name: draw(model_entries(name)) for name in names}
    return Manifest(draw(st.text(max_size=30)), draw(HEX32), models)


def check_manifest_bytes(data: bytes) -> None:
    try:
        manifest = parse_manifest(data)
    except ManifestError:
        return
    assert isinstance(manifest, Manifest)
    assert parse_manifest(manifest.to_json()) == manifest  # whatever parses, re-serialises to itself


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def test_fuzz_manifest_random(suite_count: Count) -> None:
    strategy = st.binary(max_size=300) | JSON_VALUES.map(lambda v: json.dumps(v).encode())
    n = run_counted(FUZZ_JSON, strategy, check_manifest_bytes)
    for data in (b"[" * 100_000, b'{"a": 1' + b"0" * 5000 + b"}", b"\xff\xfe", b'"\\ud800"'):  # deep, huge, bad
        with pytest.raises(ManifestError):
            parse_manifest(data)
    suite_count("fuzz examples: manifest (random)", n + 4)


def _json_mutation(draw: st.DrawFn, doc: Any) -> Any:
    """Replace, delete or add one value somewhere in a JSON document."""
    if isinstance(doc, dict) and doc and draw(st.integers(0, 3)):
        key = draw(st.sampled_from(sorted(doc)))
        action = draw(st.sampled_from(["recurse", "recurse", "delete", "add"]))
        if action == "delete":
            return {k: v for k, v in doc.items() if k != key}
        if action == "add":
            return {**doc, draw(st.text(max_size=8)): draw(JSON_VALUES)}
        return {**doc, key: _json_mutation(draw, doc[key])}
    return draw(JSON_VALUES | st.sampled_from(["", "xml", "bin", "x.xml.ovc", "0" * 64, "0" * 32, -1, 1.5, True]))


@st.composite
def mutated_manifest(draw: st.DrawFn) -> bytes:
    text = draw(manifests()).signed(KEY).to_json()
    if draw(st.booleans()):
        return draw(mutated(text))
    return json.dumps(_json_mutation(draw, json.loads(text))).encode()


def test_fuzz_manifest_mutated(suite_count: Count) -> None:
    n = run_counted(FUZZ_JSON, mutated_manifest(), check_manifest_bytes)
    suite_count("fuzz examples: manifest (mutated)", n)


def test_fuzz_manifest_round_trip(suite_count: Count) -> None:
    def check(manifest: Manifest) -> None:
        signed = manifest.signed(KEY)
        parsed = parse_manifest(signed.to_json())
        assert parsed == signed
        parsed.verify(KEY)
        with pytest.raises(ManifestError):
            parsed.verify(OTHER_KEY)
        body = json.loads(signed.to_json())
        body["generator"] += "!"
        with pytest.raises(ManifestError):
            parse_manifest(json.dumps(body).encode()).verify(KEY)

    suite_count("fuzz examples: manifest (valid round trip)", run_counted(FUZZ_JSON, manifests(), check))


def _one_ir_manifest() -> Manifest:
    det = ModelEntry("ir", {path: FileEntry(file_identity("det", "ir", path).file, 10, "a" * 64, "b" * 64)
                            for path in ir_files("det")})  # fmt: skip
    return Manifest("gen", "0" * 32, {"det": det}).signed(KEY)


def test_fuzz_manifest_mac_covers_every_body_field() -> None:
    manifest = _one_ir_manifest()
    changed: list[dict[str, Any]] = [{"generator": "gen2"}, {"key_id": "1" * 32}, {"models": {}}]
    for change in changed:
        doc = {**json.loads(manifest.to_json()), **change}
        with pytest.raises(ManifestError):
            parse_manifest(json.dumps(doc).encode()).verify(KEY)
    doc = json.loads(manifest.to_json())
    doc["_generated"] = "anything"  # informational only: not covered by the MAC
    parse_manifest(json.dumps(doc).encode()).verify(KEY)
    assert issubclass(ManifestError, IntegrityError) and issubclass(IntegrityError, OvcryptError)


BAD_VALUES: list[Any] = [None, 0, -1, 1.5, True, "", "x", "0" * 63, "g" * 64, "A" * 64, [], {}, [1], {"a": 1}, 10**40]


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a JSON document, objects included."""
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    return out


def _replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    return {**doc, path[0]: _replaced(doc[path[0]], path[1:], value)}


def test_every_manifest_field_malformed_is_a_manifest_error(suite_count: Count) -> None:
    """Issue 9: each field of a manifest (v2 with a single IR and a folder model, and v1), set to each malformed
    value, gives ManifestError from parsing or from the MAC check, never a TypeError or any other exception."""
    folder = ModelEntry("llm", {p: FileEntry(file_identity("chat", "llm", p).file, 5, "c" * 64, "d" * 64)
                                for p in ("openvino_model.xml", "sub/tokenizer.json")})  # fmt: skip
    v2 = Manifest("gen", "0" * 32, {**_one_ir_manifest().models, "chat": folder}).signed(KEY)
    v1_body = {"format": "hatch-ovcrypt-manifest/1", "generator": "gen", "key_env": "OVCRYPT_KEY", "key_provider": None,
               "key_id": "0" * 32, "models": {"det": {r: {"file": f"det.{r}.ovc", "size": 1, "sha256": "a" * 64,
                                                           "salt": "b" * 64} for r in ("xml", "bin")}}}  # fmt: skip
    from ovcrypt_runtime._format.manifest import compute_mac

    tried = 0
    for doc in (json.loads(v2.to_json()), {**v1_body, "mac": compute_mac(KEY, v1_body)}):
        parse_manifest(json.dumps(doc).encode()).verify(KEY)  # the unmodified document is valid
        for path in _paths(doc):
            if path == ("_generated",):
                continue
            for value in BAD_VALUES:
                data = json.dumps(_replaced(doc, path, value)).encode()
                with contextlib.suppress(ManifestError):
                    parse_manifest(data).verify(KEY)
                tried += 1
    assert tried > 500
    suite_count("manifest fields malformed (field x value)", tried)
