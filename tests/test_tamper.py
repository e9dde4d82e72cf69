"""Issue 5, tamper and corruption suite: every modification of an encrypted package is refused.

Three real IR models (1, 3 and 5 segments of 1 MiB for their .bin) are rendered into an `_ovcrypt` folder
exactly as the build hook does, then damaged in every way the issue lists. Each case must raise the runtime's
integrity or key error naming the model and the file; it must never return a model, never pass plaintext to
OpenVINO (the spy on model_from_memory never fires, and a failed decryption leaves its buffer zeroed) and never
crash the process (a few cases also go through a real built wheel in a subprocess).
"""

from __future__ import annotations

import importlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ovcrypt_runtime._errors import (
    FormatError,
    IntegrityError,
    KeyFormatError,
    KeyMissingError,
    ManifestError,
    OvcryptError,
    WrongKeyError,
)
from ovcrypt_runtime._format.layout import MANIFEST_NAME
from ovcrypt_runtime._format.reader import decrypt_into, read_header
from ovcrypt_runtime._format.spec import TAG_SIZE, Header, Role
from ovcrypt_runtime._loading.loader import read_locked
from tests.helpers import (
    assert_no_plaintext_left,
    build_wheel,
    encrypted_path,
    make_ir,
    only_wheel,
    render_folder,
    runtime_for,
    sample_input,
    unpack,
    write_product,
)

# (`from ovcrypt_runtime._loading import runtime as _runtime` would name the package's Runtime instance variable
# instead)
runtime_module = importlib.import_module("ovcrypt_runtime._loading.runtime")
SEGMENT = 1 << 20
# name -> (weight bytes, width): the .bin spans 1, 3 and 5 segments of 1 MiB.
MODELS = {"small": (64 << 10, 64), "medium": (int(2.5 * SEGMENT), 256), "large": (int(4.5 * SEGMENT), 256)}
ROLES = (Role.XML, Role.BIN)
Counter = Callable[[str, int], None]


@dataclass(frozen=True)
class Corpus:
    key: bytes
    folder: Path  # the package under test, under `key`
    other_key: bytes
    other_key_folder: Path  # the same models, built under another key
    same_key_folder: Path  # another build under the same key, with other weights
    sources: dict[str, Path]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("tamper")
    sources = {
        name: make_ir(root / "src" / f"{name}.xml", size, seed=i, width=width)
        for i, (name, (size, width)) in enumerate(MODELS.items())
    }
    others = {
        name: make_ir(root / "src2" / f"{name}.xml", size, seed=10 + i, width=width)
        for i, (name, (size, width)) in enumerate(MODELS.items())
    }
    key, other_key = os.urandom(32), os.urandom(32)
    folder = render_folder(root / "pkg" / "_ovcrypt", sources, key, segment_size=SEGMENT)
    other = render_folder(root / "other-key" / "_ovcrypt", sources, other_key, segment_size=SEGMENT)
    same = render_folder(root / "same-key" / "_ovcrypt", others, key, segment_size=SEGMENT)
    for name, (size, _) in MODELS.items():
        header = header_of(encrypted_path(folder, name, Role.BIN))
        assert header.segment_count == -(-size // SEGMENT) or name == "small", (name, header.segment_count)
    return Corpus(key, folder, other_key, other, same, sources)


@pytest.fixture
def keyed(corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> Corpus:
    monkeypatch.setenv("OVCRYPT_KEY", corpus.key.hex())
    return corpus


@pytest.fixture
def no_openvino_handoff(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every time the runtime hands decrypted bytes to OpenVINO (none may happen in a tamper case)."""
    calls: list[str] = []
    real = runtime_module.model_from_memory

    def spy(core: Any, xml: np.ndarray, weights: np.ndarray) -> Any:
        calls.append(f"{len(xml)}+{len(weights)}")
        return real(core, xml, weights)

    monkeypatch.setattr(runtime_module, "model_from_memory", spy)
    return calls


def header_of(path: Path) -> Header:
    with path.open("rb") as f:
        return read_header(f, str(path))[0]


@contextmanager
def modified(path: Path, data: bytes) -> Iterator[None]:
    """Replace a file's bytes for the duration of the block."""
    original = path.read_bytes()
    path.write_bytes(data)
    try:
        yield
    finally:
        path.write_bytes(original)


def flip(path: Path, offset: int, mask: int) -> None:
    """XOR one byte in place (applying it twice restores the file)."""
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


def label_of(model: str, role: Role) -> tuple[str, str]:
    return f"{model!r}", f"{model}.{role.label}.ovc"


def assert_refused(
    folder: Path, model: str, role: Role | None, handoffs: list[str], *, kinds: tuple[type[OvcryptError], ...] = (
        IntegrityError, WrongKeyError, KeyMissingError, KeyFormatError)
) -> OvcryptError:  # fmt: skip
    """read_model must raise one of `kinds`, naming the model and (given a role) the file, and hand OpenVINO nothing."""
    runtime = runtime_for(folder)
    with pytest.raises(OvcryptError) as info:
        runtime.read_model(model)
    error = info.value
    assert isinstance(error, kinds), f"{type(error).__name__}: {error}"
    message = str(error)
    if role is not None:
        for part in label_of(model, role):
            assert part in message, message
    assert not handoffs, f"plaintext reached OpenVINO: {handoffs}"
    return error


def assert_wiped_on_failure(folder: Path, model: str, role: Role) -> None:
    """Decrypt as the loader does, into a buffer we keep: on failure no segment of it may hold plaintext."""
    runtime = runtime_for(folder)
    path = encrypted_path(folder, model, role)
    label = f"model {model!r} file {path.name}"
    with path.open("rb") as f:
        cipher = read_locked(f, label, runtime.files.key_for, name=model, role=role).unlock()
        buf = np.full(cipher.header.plaintext_length, 0xA5, dtype=np.uint8)
        with pytest.raises(IntegrityError):
            decrypt_into(f, cipher, buf.data)
    assert_no_plaintext_left(buf, path.read_bytes(), 0xA5)


def all_files() -> list[tuple[str, Role]]:
    return [(model, role) for model in MODELS for role in ROLES]


# --- the package as built works ---------------------------------------------------------------


def test_untouched_package_loads(keyed: Corpus) -> None:
    runtime = runtime_for(keyed.folder)
    for model, (_, width) in MODELS.items():
        compiled = runtime.compile_model(model)
        assert compiled(sample_input(width))[0].shape == (1, width)
    counts = {m: header_of(encrypted_path(keyed.folder, m, Role.BIN)).segment_count for m in MODELS}
    assert counts == {"small": 1, "medium": 3, "large": 5}


def test_spy_sees_a_genuine_handoff(keyed: Corpus, no_openvino_handoff: list[str]) -> None:
    """Control for the tamper cases: the spy does see the runtime hand a genuine model to OpenVINO."""
    runtime_for(keyed.folder).read_model("small")
    assert len(no_openvino_handoff) == 1


# --- flipped bytes ------------------------------------------------------------------------------


def test_every_header_byte_flipped(keyed: Corpus, no_openvino_handoff: list[str], suite_count: Counter) -> None:
    tried = 0
    for model, role in all_files():
        path = encrypted_path(keyed.folder, model, role)
        header = header_of(path)
        for offset in range(header.header_size):  # fixed header, model name and header tag
            for mask in (1 << (offset % 8), 0xFF):
                flip(path, offset, mask)
                try:
                    assert_refused(keyed.folder, model, role, no_openvino_handoff)
                finally:
                    flip(path, offset, mask)
                tried += 1
    suite_count("tamper positions tried", tried)
    assert tried >= 2 * 6 * (72 + 16)


def test_segment_and_tag_bytes_flipped(keyed: Corpus, no_openvino_handoff: list[str], suite_count: Counter) -> None:
    rng = random.Random(5)
    tried = 0
    for model, role in all_files():
        path = encrypted_path(keyed.folder, model, role)
        header = header_of(path)
        for index in range(header.segment_count):
            start, end = header.segment_span(index)
            inside = {start, end - 1, (start + end) // 2, *(rng.randrange(start, end) for _ in range(5))}
            tag = header.tags_offset + index * TAG_SIZE
            positions = [header.header_size + p for p in sorted(inside)]
            positions += [tag, tag + TAG_SIZE - 1, *(tag + rng.randrange(1, TAG_SIZE - 1) for _ in range(2))]
            for offset in positions:
                mask = 1 << rng.randrange(8)
                flip(path, offset, mask)
                try:
                    error = assert_refused(keyed.folder, model, role, no_openvino_handoff)
                    assert f"segment {index} of {header.segment_count}" in str(error), error
                    assert_wiped_on_failure(keyed.folder, model, role)
                finally:
                    flip(path, offset, mask)
                tried += 1
    suite_count("tamper positions tried", tried)
    assert tried >= 12 * 10


# --- truncated, extended, reordered -------------------------------------------------------------


def truncation_points(header: Header) -> list[int]:
    points = {0, 1, 8, 71, 72, header.header_size - TAG_SIZE, header.header_size - 1, header.file_size - 1}
    for index in range(header.segment_count):
        start, end = header.segment_span(index)
        points |= {header.header_size + start, header.header_size + (start + end) // 2, header.header_size + end - 1}
        points |= {header.tags_offset + index * TAG_SIZE, header.tags_offset + index * TAG_SIZE + 7}
    return sorted(p for p in points if 0 <= p < header.file_size)


def test_truncated_everywhere(keyed: Corpus, no_openvino_handoff: list[str], suite_count: Counter) -> None:
    tried = 0
    for model, role in all_files():
        path = encrypted_path(keyed.folder, model, role)
        original = path.read_bytes()
        for length in truncation_points(header_of(path)):
            with modified(path, original[:length]):
                assert_refused(keyed.folder, model, role, no_openvino_handoff, kinds=(IntegrityError,))
            tried += 1
    suite_count("truncations tried", tried)


def test_bytes_appended(keyed: Corpus, no_openvino_handoff: list[str], suite_count: Counter) -> None:
    tried = 0
    for model, role in all_files():
        path = encrypted_path(keyed.folder, model, role)
        original = path.read_bytes()
        header = header_of(path)
        last_start, _ = header.segment_span(header.segment_count - 1)
        last_segment = original[header.header_size + last_start : header.tags_offset]
        for extra in (b"\x00", original[-TAG_SIZE:], last_segment + original[-TAG_SIZE:], os.urandom(SEGMENT)):
            with modified(path, original + extra):
                error = assert_refused(keyed.folder, model, role, no_openvino_handoff, kinds=(IntegrityError,))
                assert "after the end" in str(error)
            tried += 1
    suite_count("tamper positions tried", tried)


def _segments(data: bytes, header: Header) -> tuple[bytes, list[bytes], list[bytes]]:
    head = data[: header.header_size]
    body = [
        data[header.header_size + s : header.header_size + e]
        for s, e in map(header.segment_span, range(header.segment_count))
    ]
    tags = [data[header.tags_offset + i * TAG_SIZE : header.tags_offset + (i + 1) * TAG_SIZE]
            for i in range(header.segment_count)]  # fmt: skip
    return head, body, tags


@pytest.mark.parametrize("model", ["medium", "large"])
def test_segments_swapped_duplicated_dropped(keyed: Corpus, no_openvino_handoff: list[str], model: str) -> None:
    path = encrypted_path(keyed.folder, model, Role.BIN)
    original = path.read_bytes()
    header = header_of(path)
    head, body, tags = _segments(original, header)
    count = header.segment_count

    def assemble(order: list[int], *, move_tags: bool = True) -> bytes:
        return head + b"".join(body[i] for i in order) + b"".join(tags[i] if move_tags else tags[n]
                                                                  for n, i in enumerate(order))  # fmt: skip

    variants: dict[str, bytes] = {
        "segments 0 and 1 swapped, with their tags": assemble([1, 0, *range(2, count)]),
        "segments 0 and 1 swapped, tags left": assemble([1, 0, *range(2, count)], move_tags=False),
        "segment 0 duplicated over segment 1": assemble([0, 0, *range(2, count)]),
        "segment 0 duplicated over segment 1, tags left": assemble([0, 0, *range(2, count)], move_tags=False),
        "last segment swapped with the first": head + body[-1] + b"".join(body[1:-1]) + body[0] + b"".join(tags),
        "segment 1 dropped": assemble([0, *range(2, count)]),
        "last segment dropped": assemble(list(range(count - 1))),
        "first full segment repeated at the end": assemble([*range(count), 0]),
    }
    for what, data in variants.items():
        assert data != original, what
        with modified(path, data):
            assert_refused(keyed.folder, model, Role.BIN, no_openvino_handoff, kinds=(IntegrityError,))


# --- files moved between models, roles and builds --------------------------------------------------


def test_files_swapped_between_models_and_roles(keyed: Corpus, no_openvino_handoff: list[str]) -> None:
    cases = [
        (("medium", Role.BIN), ("large", Role.BIN)),  # another model's .bin
        (("large", Role.BIN), ("medium", Role.BIN)),
        (("small", Role.XML), ("medium", Role.XML)),  # another model's .xml
        (("medium", Role.XML), ("medium", Role.BIN)),  # its own other role
        (("medium", Role.BIN), ("medium", Role.XML)),
        (("small", Role.BIN), ("large", Role.XML)),  # another model's other role
    ]
    for (model, role), (source_model, source_role) in cases:
        path = encrypted_path(keyed.folder, model, role)
        with modified(path, encrypted_path(keyed.folder, source_model, source_role).read_bytes()):
            error = assert_refused(keyed.folder, model, role, no_openvino_handoff, kinds=(IntegrityError,))
            assert f"of model {source_model!r}" in str(error)
    # both roles of one model exchanged at once
    xml, bin_ = (encrypted_path(keyed.folder, "medium", r) for r in ROLES)
    with modified(xml, bin_.read_bytes()), modified(bin_, xml.read_bytes()):
        assert_refused(keyed.folder, "medium", Role.XML, no_openvino_handoff, kinds=(IntegrityError,))


@pytest.mark.parametrize("offer_both_keys", [False, True])
def test_file_from_another_build_under_another_key(
    keyed: Corpus, no_openvino_handoff: list[str], monkeypatch: pytest.MonkeyPatch, offer_both_keys: bool
) -> None:
    if offer_both_keys:  # even holding the other build's key, its files are not this package's
        monkeypatch.setenv("OVCRYPT_KEY", f"{keyed.key.hex()},{keyed.other_key.hex()}")
    for model, role in all_files():
        path = encrypted_path(keyed.folder, model, role)
        with modified(path, encrypted_path(keyed.other_key_folder, model, role).read_bytes()):
            error = assert_refused(keyed.folder, model, role, no_openvino_handoff, kinds=(IntegrityError,))
            assert "another build" in str(error)


def test_file_from_another_build_under_the_same_key(keyed: Corpus, no_openvino_handoff: list[str]) -> None:
    path = encrypted_path(keyed.folder, "medium", Role.BIN)
    with modified(path, encrypted_path(keyed.same_key_folder, "medium", Role.BIN).read_bytes()):
        assert_refused(keyed.folder, "medium", Role.BIN, no_openvino_handoff, kinds=(IntegrityError,))


# --- the manifest -------------------------------------------------------------------------------


def _edit(doc: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> bytes:
    copy = json.loads(json.dumps(doc))
    change(copy)
    return json.dumps(copy, indent=2).encode()


def manifest_edits(doc: dict[str, Any], other_key_id: str) -> dict[str, bytes]:
    def setter(*path_and_value: Any) -> Callable[[dict[str, Any]], None]:
        *path, value = path_and_value

        def change(d: dict[str, Any]) -> None:
            for part in path[:-1]:
                d = d[part]
            d[path[-1]] = value

        return change

    def drop(field: str) -> Callable[[dict[str, Any]], None]:
        return lambda d: d.pop(field)

    entry = doc["models"]["medium"]["files"]["medium.bin"]
    medium = ("models", "medium", "files", "medium.bin")
    return {
        "generator edited": _edit(doc, setter("generator", "hatch-ovcrypt 0.0.0")),
        "size edited": _edit(doc, setter(*medium, "size", entry["size"] + 1)),
        "sha256 edited": _edit(doc, setter(*medium, "sha256", "0" * 64)),
        "mac edited": _edit(doc, setter("mac", ("0" if doc["mac"][0] != "0" else "1") + doc["mac"][1:])),
        "mac removed": _edit(doc, drop("mac")),
        "key id of another key": _edit(doc, setter("key_id", other_key_id)),
        "kind changed": _edit(doc, setter("models", "medium", "kind", "files")),
        "key variable added (v1 field)": _edit(doc, setter("key_env", "OTHER_KEY")),
        "model removed": _edit(doc, lambda d: d["models"].pop("small")),
        "format changed": _edit(doc, setter("format", "hatch-ovcrypt-manifest/3")),
        "file ../ outside the package": _edit(doc, setter(*medium, "file", "../../medium.bin.ovc")),
        "file absolute path": _edit(doc, setter(*medium, "file", "/etc/passwd")),
        "file in a subfolder": _edit(doc, setter(*medium, "file", "sub/medium.bin.ovc")),
        "file of another model": _edit(doc, setter(*medium, "file", "large.bin.ovc")),
        "path ../ outside the model": _edit(doc, lambda d: d["models"]["medium"]["files"].update(
            {"../medium.bin": d["models"]["medium"]["files"].pop("medium.bin")})),
        "model name with ../": _edit(doc, lambda d: d["models"].update({"../medium": d["models"]["medium"]})),
        "not an object": b"[]",
        "not JSON": b"\x00\xff garbage",
    }


def test_manifest_edited_or_truncated(keyed: Corpus, monkeypatch: pytest.MonkeyPatch, no_openvino_handoff: list[str],
                                      suite_count: Counter) -> None:  # fmt: skip
    monkeypatch.setenv("OTHER_KEY", keyed.key.hex())
    manifest = keyed.folder / MANIFEST_NAME
    original = manifest.read_bytes()
    doc = json.loads(original)
    variants = manifest_edits(doc, os.urandom(16).hex())
    removed = variants.pop("model removed")
    variants |= {f"truncated to {n} bytes": original[:n] for n in (0, 1, len(original) // 2, len(original) - 2)}
    for what, data in variants.items():
        with modified(manifest, data):
            for model in MODELS:
                with pytest.raises(OvcryptError) as info:
                    runtime_for(keyed.folder).read_model(model)
                assert isinstance(info.value, (ManifestError, IntegrityError)), (what, info.value)
                if what != "key id of another key":  # refused as a file of another build
                    assert isinstance(info.value, ManifestError) or "another build" in str(info.value), (what, info)
        assert not no_openvino_handoff, what
    suite_count("manifest variants tried", len(variants) + 1)
    # a model the (edited) manifest no longer lists is simply unknown, never loaded
    with modified(manifest, removed):
        with pytest.raises(KeyError):
            runtime_for(keyed.folder).read_model("small")
        with pytest.raises(ManifestError):  # and the others fail the MAC
            runtime_for(keyed.folder).read_model("medium")
    assert manifest.read_bytes() == original


def symlinked_package(folder: Path, tmp_path: Path, what: str) -> Path:
    """A copy of `folder` whose medium.bin.ovc ("file") or whole models/ ("models folder") is a symlink to a
    genuine copy outside the package."""
    package = tmp_path / "pkg" / "_ovcrypt"
    shutil.copytree(folder, package)
    outside = tmp_path / "outside"
    shutil.copytree(folder / "models", outside)
    if what == "file":
        target = encrypted_path(package, "medium", Role.BIN)
        target.unlink()
        target.symlink_to(outside / target.name)
    else:
        shutil.rmtree(package / "models")
        (package / "models").symlink_to(outside, target_is_directory=True)
    return package


@pytest.mark.parametrize("what", ["file", "models folder"])
def test_symlinks_refused(keyed: Corpus, tmp_path: Path, no_openvino_handoff: list[str], what: str) -> None:
    """A symlink leading outside the package is refused, even to a genuine copy of the file."""
    package = symlinked_package(keyed.folder, tmp_path, what)
    error = assert_refused(package, "medium", Role.BIN, no_openvino_handoff)  # the weights are read first
    assert isinstance(error, ManifestError) and "symbolic link" in str(error)


def test_missing_file_and_manifest(keyed: Corpus, tmp_path: Path, no_openvino_handoff: list[str]) -> None:
    package = tmp_path / "_ovcrypt"
    shutil.copytree(keyed.folder, package)
    encrypted_path(package, "large", Role.BIN).unlink()
    error = assert_refused(package, "large", Role.BIN, no_openvino_handoff, kinds=(IntegrityError,))
    assert "missing" in str(error)
    (package / MANIFEST_NAME).unlink()
    with pytest.raises(ManifestError):
        runtime_for(package).read_model("small")


# --- keys ---------------------------------------------------------------------------------------


def key_cases(key: bytes) -> dict[str, tuple[str | None, type[OvcryptError]]]:
    good = key.hex()
    return {
        "wrong key": (os.urandom(32).hex(), WrongKeyError),
        "two wrong keys": (f"{os.urandom(32).hex()},{os.urandom(32).hex()}", WrongKeyError),
        "key too short (62 hex)": (good[:-2], KeyFormatError),
        "key too long (66 hex)": (good + "ab", KeyFormatError),
        "key of 32 hex (16 bytes)": (good[:32], KeyFormatError),
        "non-hex text": ("g" + good[1:], KeyFormatError),
        "a passphrase": ("correct horse battery staple", KeyFormatError),
        "empty variable": ("", KeyFormatError),
        "blank variable": ("  ", KeyFormatError),
        "good key then a broken one": (f"{os.urandom(32).hex()},{good[:10]}", KeyFormatError),
        "variable not set": (None, KeyMissingError),
    }


def test_bad_keys(corpus: Corpus, monkeypatch: pytest.MonkeyPatch, no_openvino_handoff: list[str],
                  suite_count: Counter) -> None:  # fmt: skip
    cases = key_cases(corpus.key)
    for what, (value, kind) in cases.items():
        if value is None:
            monkeypatch.delenv("OVCRYPT_KEY", raising=False)
        else:
            monkeypatch.setenv("OVCRYPT_KEY", value)
        for model in ("small", "large"):
            error = assert_refused(corpus.folder, model, Role.BIN, no_openvino_handoff, kinds=(kind,))
            message = str(error)
            assert corpus.key.hex() not in message.lower(), (what, message)
            assert value is None or not value.strip() or value.strip() not in message, (what, message)
            assert kind is WrongKeyError or "OVCRYPT_KEY" in message, (what, message)
    suite_count("key cases tried", len(cases))


def test_bad_key_files(corpus: Corpus, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                       no_openvino_handoff: list[str]) -> None:  # fmt: skip
    monkeypatch.delenv("OVCRYPT_KEY", raising=False)
    cases: dict[str, tuple[bytes | None, type[OvcryptError]]] = {
        "missing file": (None, KeyMissingError),
        "empty file": (b"", KeyFormatError),
        "binary garbage": (os.urandom(40), KeyFormatError),
        "wrong key": (os.urandom(32).hex().encode(), WrongKeyError),
    }
    for what, (content, kind) in cases.items():
        path = tmp_path / f"{what.replace(' ', '-')}.key"
        if content is not None:
            path.write_bytes(content)
        monkeypatch.setenv("OVCRYPT_KEY_FILE", str(path))
        error = assert_refused(corpus.folder, "medium", Role.BIN, no_openvino_handoff, kinds=(kind,))
        assert corpus.key.hex() not in str(error), what


def test_set_key_refuses_bad_keys(corpus: Corpus) -> None:
    runtime = runtime_for(corpus.folder)
    for bad in (b"\x00" * 31, b"\x00" * 33, "zz" * 32, "", corpus.key.hex()[:-1]):
        with pytest.raises(KeyFormatError) as info:
            runtime.keyring.add(bad)
        assert corpus.key.hex()[:-1] not in str(info.value)
    runtime.keyring.add(os.urandom(32))
    with pytest.raises(WrongKeyError):
        runtime.read_model("small")


# --- through a real wheel, in a fresh process ---------------------------------------------------


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    root = tmp_path_factory.mktemp("tamper-wheel")
    project = root / "project"
    for name in ("small", "medium"):
        size, width = MODELS[name]
        make_ir(project / "models" / f"{name}.xml", size, seed=20, width=width)
    write_product(project, {"small": "models/small.xml", "medium": "models/medium.xml"})
    key = os.urandom(32)
    build_wheel(project, {"OVCRYPT_KEY": key.hex()})
    return unpack(only_wheel(project / "dist"), root / "site"), key


LOAD = (
    "import sys; sys.path.insert(0, sys.argv[1]); import acme_vision, numpy as np; "
    "c = acme_vision.compile_model('medium'); print('OUTPUT', c(np.zeros((1, 256), np.float32))[0].shape)"
)


def _run_load(site: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OVCRYPT_")}
    return subprocess.run([sys.executable, "-c", LOAD, str(site)], env={**clean, **env}, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


WHEEL_CASES = ["genuine", "segment byte flipped", "truncated", "xml and bin swapped", "manifest edited",
               "wrong key", "empty key variable"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", WHEEL_CASES)
def test_tampered_wheel_in_a_fresh_process(unpacked_wheel: tuple[Path, bytes], tmp_path: Path, case: str) -> None:
    source, key = unpacked_wheel
    site = tmp_path / "site"
    shutil.copytree(source, site)
    folder = site / "acme_vision" / "_ovcrypt"
    env = {"OVCRYPT_KEY": key.hex()}
    bin_path, xml_path = encrypted_path(folder, "medium", Role.BIN), encrypted_path(folder, "medium", Role.XML)
    expected, file_name = "IntegrityError", bin_path.name  # the weights are read first
    if case == "segment byte flipped":
        flip(bin_path, header_of(bin_path).header_size + SEGMENT + 12345, 0x10)
    elif case == "truncated":
        bin_path.write_bytes(bin_path.read_bytes()[: header_of(bin_path).header_size + SEGMENT])
    elif case == "xml and bin swapped":
        xml, bin_ = xml_path.read_bytes(), bin_path.read_bytes()
        xml_path.write_bytes(bin_)
        bin_path.write_bytes(xml)
    elif case == "manifest edited":
        manifest = folder / MANIFEST_NAME
        manifest.write_text(manifest.read_text().replace('"generator": "hatch-ovcrypt', '"generator": "evil'))
        expected, file_name = "ManifestError", MANIFEST_NAME
    elif case == "wrong key":
        env["OVCRYPT_KEY"] = os.urandom(32).hex()
        expected = "WrongKeyError"
    elif case == "empty key variable":
        env["OVCRYPT_KEY"] = ""
        expected = "KeyFormatError"
    result = _run_load(site, env)
    if case == "genuine":
        assert result.returncode == 0 and "OUTPUT (1, 256)" in result.stdout, result.stderr
        return
    assert result.returncode == 1, f"the process crashed or succeeded ({result.returncode}):\n{result.stderr}"
    assert "OUTPUT" not in result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert expected in last and file_name in last, last
    assert key.hex() not in result.stderr
    if file_name != MANIFEST_NAME:
        assert "'medium'" in last, last


def test_format_error_is_an_integrity_error() -> None:
    assert issubclass(FormatError, IntegrityError) and issubclass(ManifestError, IntegrityError)
