"""Issue 9, item 5: no frame of a raised error's traceback holds a key or a derived key as a local.

Error reporters (Sentry, rich tracebacks, pytest --showlocals) record the locals of every frame. Each
error path of the format, the keys, the writer, the loader, the cache and the OpenSSL recipe that had
a key at hand is raised here and its traceback searched (tests/keyscan.py).
"""

from __future__ import annotations

import io
import os
import secrets
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ovcrypt_runtime._errors import IntegrityError, KeyFormatError, KeyMissingError, WrongKeyError
from ovcrypt_runtime._format.spec import MIN_SEGMENT_SIZE, Role, parse_header
from ovcrypt_runtime._format.writer import BufferSource, SourceChangedError, encrypt, plaintext_fingerprint
from ovcrypt_runtime._keys.sources import KeyRing, keys_from_environment, parse_key, parse_key_list, read_key_file
from ovcrypt_runtime._loading import cache as _cache
from ovcrypt_runtime._loading.loader import decrypt_file, read_locked
from ovcrypt_runtime._loading.openssl import (
    OpenSSLSource,
    decrypt_openssl_array,
    encrypt_openssl_stream,
    load_openssl_model,
    parse_hex16,
)
from tests.helpers import render_folder
from tests.keyscan import assert_no_key_in_locals, file_key

SEG = MIN_SEGMENT_SIZE


def write(path: Path, key: bytes, size: int = 2 * SEG + 7) -> Path:
    with path.open("wb") as f:
        encrypt(key, BufferSource(os.urandom(size)), f, name="m", role=Role.BIN)
    return path


def salt_of(path: Path) -> bytes:
    return parse_header(path.read_bytes()[:512], "t")[0].salt


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    path.write_bytes(bytes(data))


# --- the format and the loader ------------------------------------------------------------------


@pytest.mark.parametrize("through", ["unlock", "decrypt_file"])
def test_wrong_key(tmp_path: Path, key: bytes, through: str) -> None:
    path = write(tmp_path / "m.bin.ovc", key)
    wrong = secrets.token_bytes(32)
    with path.open("rb") as f, pytest.raises(WrongKeyError) as info:
        if through == "unlock":
            read_locked(f, "m", lambda kid, label: wrong).unlock()
        else:
            decrypt_file(f, "m", lambda kid, label: wrong, name="m", role=Role.BIN)
    assert_no_key_in_locals(info.value, wrong, key)


@pytest.mark.parametrize("threads", [1, 2])
def test_tampered_file_under_the_right_key(
    tmp_path: Path, key: bytes, threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A modified header (its tag fails under the file key), and a modified segment (on the workers)."""
    from ovcrypt_runtime._format import reader as _reader

    monkeypatch.setattr(_reader, "default_threads", lambda: threads)
    for offset in (80, 200 + SEG):
        path = write(tmp_path / "m.bin.ovc", key)
        salt = salt_of(path)
        flip(path, offset)
        with path.open("rb") as f, pytest.raises(IntegrityError) as info:
            decrypt_file(f, "m", lambda kid, label: key, name="m", role=Role.BIN)
        assert_no_key_in_locals(info.value, key, file_key(key, salt))


# --- keys ---------------------------------------------------------------------------------------


@pytest.fixture
def ring(monkeypatch: pytest.MonkeyPatch) -> KeyRing:
    monkeypatch.delenv("OVCRYPT_KEY", raising=False)
    monkeypatch.delenv("OVCRYPT_KEY_FILE", raising=False)
    return KeyRing("OVCRYPT_KEY")


def test_no_key_offered_matches(ring: KeyRing, monkeypatch: pytest.MonkeyPatch) -> None:
    offered = [secrets.token_bytes(32) for _ in range(3)]
    monkeypatch.setenv("OVCRYPT_KEY", f"{offered[0].hex()},{offered[1].hex()}")
    ring.add(offered[2])
    ring.set_provider(lambda wanted: None)
    with pytest.raises(WrongKeyError) as info:
        ring.key_for(bytes(16), "m")
    assert_no_key_in_locals(info.value, *offered)


def test_a_bad_key_among_good_ones(ring: KeyRing, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    good = secrets.token_bytes(32)
    monkeypatch.setenv("OVCRYPT_KEY", f"{good.hex()},{'z' * 64}")
    with pytest.raises(KeyFormatError) as info:
        ring.key_for(bytes(16), "m")
    assert_no_key_in_locals(info.value, good)
    with pytest.raises(KeyFormatError) as info:
        list(keys_from_environment("OVCRYPT_KEY"))
    assert_no_key_in_locals(info.value, good)
    # The same from a key file.
    monkeypatch.delenv("OVCRYPT_KEY")
    key_file = tmp_path / "key"
    key_file.write_text(f"{good.hex()}\n{'0' * 63}\n")
    monkeypatch.setenv("OVCRYPT_KEY_FILE", str(key_file))
    with pytest.raises(KeyFormatError) as info:
        ring.key_for(bytes(16), "m")
    assert_no_key_in_locals(info.value, good)
    with pytest.raises(KeyFormatError) as info:
        read_key_file(key_file, "key file")
    assert_no_key_in_locals(info.value, good)


def test_a_missing_key_file_next_to_a_good_key(ring: KeyRing, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    good = secrets.token_bytes(32)
    monkeypatch.setenv("OVCRYPT_KEY", good.hex())
    monkeypatch.setenv("OVCRYPT_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(KeyMissingError) as info:
        ring.key_for(bytes(16), "m")
    assert_no_key_in_locals(info.value, good)


def test_malformed_keys(ring: KeyRing) -> None:
    """A key with a typo is still (almost) the key: it must not show either."""
    key = secrets.token_bytes(32)
    for bad in (key.hex()[:-1], key.hex() + "0", key[:-1], key.hex()[:-1].encode()):
        with pytest.raises(KeyFormatError) as info:
            ring.add(bad)
        assert_no_key_in_locals(info.value, bad, key.hex()[:-1])
        with pytest.raises(KeyFormatError) as info:
            parse_key(bad, "test")
        assert_no_key_in_locals(info.value, bad, key.hex()[:-1])
    with pytest.raises(KeyFormatError) as info:
        parse_key_list(f"{key.hex()} {'x' * 64}", "test")
    assert_no_key_in_locals(info.value, key)


def test_a_provider_that_returns_a_malformed_key(ring: KeyRing) -> None:
    key = secrets.token_bytes(32)
    ring.set_provider(lambda wanted: key.hex()[:-1])
    with pytest.raises(KeyFormatError) as info:
        ring.key_for(bytes(16), "m")
    assert_no_key_in_locals(info.value, key.hex()[:-1])


# --- the writer ---------------------------------------------------------------------------------


class Changing:
    """A sequential source whose second read differs."""

    def __init__(self) -> None:
        self.length = SEG + 1
        self._reads = 0

    def chunks(self, size: int) -> Iterator[memoryview]:
        self._reads += 1
        data = bytes([self._reads]) * self.length
        for start in range(0, self.length, size):
            yield memoryview(data)[start : start + size]


class Broken:
    length = SEG + 1

    def chunks(self, size: int) -> Iterator[memoryview]:
        yield memoryview(bytes(size))
        raise OSError(5, "Input/output error")


class Full(io.RawIOBase):
    def write(self, data: Any) -> int:
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("case", ["source changed", "read error", "disk full"])
def test_writer_errors(key: bytes, case: str) -> None:
    source: Any = Changing() if case == "source changed" else Broken() if case == "read error" else BufferSource(b"x")
    dst = Full() if case == "disk full" else io.BytesIO()
    with pytest.raises((SourceChangedError, OSError)) as info:
        encrypt(key, source, dst, name="m", role=Role.BIN)
    assert_no_key_in_locals(info.value, key)
    if case == "read error":
        with pytest.raises(OSError) as info:
            plaintext_fingerprint(key, Broken(), SEG)
        assert_no_key_in_locals(info.value, key)
    if case == "disk full":  # frames lose their locals, not their place: the traceback still shows where
        names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
        assert "encrypt" in names and names[-1] == "write"


# --- the compiled-model cache -------------------------------------------------------------------


class Unexpected(Exception):
    """An error type the cache does not expect (a bug, or an OpenVINO surprise)."""


class FailingCore:
    def import_model(self, *args: object) -> object:
        raise Unexpected("import failed")


class FailingCompiled:
    def export_model(self) -> object:
        raise Unexpected("export failed")


def test_cache_errors(tmp_path: Path, key: bytes) -> None:
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    name = "ab" * 32
    path = folder / f"{name}.ovc"
    with path.open("wb") as f:
        encrypt(key, BufferSource(os.urandom(100)), f, name=name, role=Role.COMPILED)
    with pytest.raises(Unexpected) as info:
        _cache.load(path, key, name, FailingCore(), "CPU", {})
    assert_no_key_in_locals(info.value, key, file_key(key, salt_of(path)))
    with pytest.raises(Unexpected) as info:
        _cache.store(path, key, FailingCompiled())
    assert_no_key_in_locals(info.value, key)


# --- the OpenSSL recipe -------------------------------------------------------------------------


@pytest.fixture
def recipe(tmp_path: Path) -> tuple[Path, bytes, bytes]:
    key, iv = os.urandom(16), os.urandom(16)
    path = tmp_path / "m.xml"
    with path.open("wb") as f:
        encrypt_openssl_stream(io.BytesIO(b"<?xml version='1.0'?><net/>" * 10), f, key, iv)
    path.with_suffix(".bin").write_bytes(path.read_bytes())
    return path, key, iv


def test_recipe_errors(recipe: tuple[Path, bytes, bytes]) -> None:
    path, key, iv = recipe
    wrong = os.urandom(16)
    calls: list[Any] = [
        lambda: OpenSSLSource(path, wrong, iv, "m"),
        lambda: decrypt_openssl_array(path, wrong, iv, "m"),
        lambda: load_openssl_model(path, wrong, iv),
    ]
    for call in calls:
        with pytest.raises(IntegrityError) as info:
            call()
        assert_no_key_in_locals(info.value, wrong, key)
    text = key.hex()[:-1] + "z"
    with pytest.raises(KeyFormatError) as bad_text:
        parse_hex16(text, "key")
    assert_no_key_in_locals(bad_text.value, text[:-1])
    # A recipe file cut short while it is streamed.
    source = OpenSSLSource(path, key, iv, "m")
    path.write_bytes(path.read_bytes()[:16])
    with pytest.raises(IntegrityError) as info:
        np.concatenate([np.frombuffer(c, np.uint8) for c in source.chunks(64)])
    assert_no_key_in_locals(info.value, key)


# --- the runtime's own paths: package, manifest, compile, pipelines, the CLI's keys ------------------


def _raised(fn: Any) -> BaseException:
    try:
        fn()
    except Exception as exc:  # the error under test, whatever its class
        return exc
    raise AssertionError("no error raised")


def test_runtime_paths_hold_no_key(tmp_path: Path, key: bytes) -> None:
    """Through the runtime: a wrong key, an edited manifest under the right key, a tampered weights file, the
    compiled-model cache, a GenAI pipeline, and the CLI's key lookup."""
    import json
    import shutil

    from hatch_ovcrypt.cli.common import Keys
    from ovcrypt_runtime._pipelines import genai as _genai
    from tests.helpers import REPO, make_ir, render_folder, runtime_for

    folder = render_folder(tmp_path / "_ovcrypt", {"m": make_ir(tmp_path / "m.xml", 3 * SEG)}, key)
    other = secrets.token_bytes(32)

    wrong = runtime_for(folder)
    wrong.keyring.add(other)
    assert_no_key_in_locals(_raised(lambda: wrong.compile_model("m")), key, other)

    edited = tmp_path / "edited" / "_ovcrypt"
    shutil.copytree(folder, edited)
    doc = json.loads((edited / "manifest.json").read_text())
    doc["generator"] = "edited"
    (edited / "manifest.json").write_text(json.dumps(doc))
    runtime = runtime_for(edited)
    runtime.keyring.add(key)
    assert_no_key_in_locals(_raised(lambda: runtime.compile_model("m", cache_dir=tmp_path / "cache")), key)

    tampered = tmp_path / "tampered" / "_ovcrypt"
    shutil.copytree(folder, tampered)
    flip(tampered / "models" / "m.bin.ovc", 200)
    runtime = runtime_for(tampered)
    runtime.keyring.add(key)
    error = _raised(lambda: runtime.compile_model("m", cache_dir=tmp_path / "cache"))
    assert isinstance(error, IntegrityError)
    assert_no_key_in_locals(error, key, file_key(key, salt_of(tampered / "models" / "m.bin.ovc")))

    llm = render_folder(tmp_path / "llm" / "_ovcrypt", {"chat": REPO / "tests" / "fixtures" / "tiny_llm"}, key)
    runtime = runtime_for(llm)
    runtime.keyring.add(other)
    assert_no_key_in_locals(_raised(lambda: _genai.llm_pipeline(runtime, "chat", "CPU", {})), key, other)

    keys = Keys([other], "--key-file k")
    assert_no_key_in_locals(_raised(lambda: keys.key_for(bytes(16), "x")), other)


# --- the build hook and the CLI: every function that holds a key, found by tracing, failed where it holds it ---
# Issue 17 item 4: check_project kept the master key (and os.environ, which holds it) in plain locals. Rather
# than list the functions that hold keys, each build and CLI run below is traced (tests/keyscan.py KeyHolders):
# every function of hatch_ovcrypt whose locals ever hold the key must run under forget_keys, and each one is then
# made to fail at the first line where it holds the key, and the traceback (rendered with its locals) is searched.

NEW_KEY = bytes(range(100, 132))
RECIPE_KEY, RECIPE_IV = bytes(range(16)), bytes(range(16, 32))


def _run_cli(*argv: str) -> Callable[[], object]:
    from hatch_ovcrypt.cli import main

    def run() -> None:
        assert main(list(argv)) == 0, argv

    return run


def _build(project: Path, out: Path, version: str) -> Callable[[], object]:
    from hatchling.builders.wheel import WheelBuilder

    return lambda: list(WheelBuilder(str(project)).build(directory=str(out), versions=[version]))


def _setup(run: str, tmp: Path, key: bytes, monkeypatch: pytest.MonkeyPatch) -> Callable[[], object]:
    """A fresh folder for one run of `run`; returns the call. The key is in $OVCRYPT_KEY and in a key file."""
    from tests.helpers import make_ir, write_product

    tmp.mkdir()
    monkeypatch.setenv("OVCRYPT_KEY", key.hex())
    monkeypatch.chdir(tmp)
    (tmp / "k").write_text(key.hex())
    (tmp / "k2").write_text(NEW_KEY.hex())
    xml = make_ir(tmp / "m.xml", 2 * SEG)
    if run in ("build", "build editable", "check"):
        project = write_product(tmp / "proj", {"m": "models/m.xml"})
        make_ir(project / "models" / "m.xml", 2 * SEG)
        if run == "check":
            return _run_cli("check", str(project))
        return _build(project, tmp / "dist", "editable" if run == "build editable" else "standard")
    if run.startswith("openssl"):
        (tmp / "kh").write_text(RECIPE_KEY.hex())
        (tmp / "ivh").write_text(RECIPE_IV.hex())
        plain = tmp / "m.bin"
        if run == "openssl-decrypt":
            assert _run_cli("openssl-encrypt", str(plain), str(tmp / "enc.bin"), "--key-hex-file", "kh",
                            "--iv-hex-file", "ivh")() is None  # fmt: skip
            plain = tmp / "enc.bin"
        return _run_cli(run, str(plain), str(tmp / "out.bin"), "--key-hex-file", "kh", "--iv-hex-file", "ivh")
    _run_cli("encrypt", str(xml), "--out", "enc", "--key-file", "k")()  # not traced: the "encrypt" run is
    folder = render_folder(tmp / "_ovcrypt", {"m": xml}, key)
    files = [str(tmp / "enc" / "m.xml.ovc"), str(tmp / "enc" / "m.bin.ovc")]
    return {
        "encrypt": _run_cli("encrypt", str(xml), "--out", "enc2", "--key-file", "k"),
        "verify": _run_cli("verify", *files, str(folder), "--key-file", "k"),
        "decrypt": _run_cli("decrypt", *files, "--out", "plain", "--key-file", "k"),
        "rekey": _run_cli("rekey", *files, str(folder), "--key-file", "k", "--new-key-file", "k2"),
        "compile": _run_cli("compile", files[0], "--key-file", "k"),
        "compile folder": _run_cli("compile", str(folder), "--key-file", "k"),
    }[run]


RUNS = ["build", "build editable", "check", "encrypt", "verify", "decrypt", "rekey", "compile", "compile folder",
        "openssl-encrypt", "openssl-decrypt"]  # fmt: skip


@pytest.mark.parametrize("run", RUNS)
def test_every_function_holding_a_key_forgets_it(
    run: str, tmp_path: Path, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.keyscan import Injected, KeyHolders

    def secrets_in(folder: Path) -> tuple[bytes, ...]:
        keys = (key, NEW_KEY, RECIPE_KEY, RECIPE_IV)
        if run in ("decrypt", "compile", "compile folder"):  # verbs that decrypt: the IR's text is a secret too
            return (*keys, (folder / "m.xml").read_bytes())
        return keys

    call = _setup(run, tmp_path / "trace", key, monkeypatch)
    with KeyHolders(*secrets_in(tmp_path / "trace")) as found:
        call()
    assert found.holders, "the tracer saw no key at all, so it proved nothing"
    uncovered = found.uncovered()
    assert not uncovered, f"{run}: functions that hold a key or plaintext outside forget_keys: {uncovered}"
    failed = 0
    for i, code in enumerate(found.holders):
        call = _setup(run, tmp_path / f"inject{i}", key, monkeypatch)
        secrets_ = secrets_in(tmp_path / f"inject{i}")
        error: Injected | None = None
        with KeyHolders(*secrets_, inject=code) as injecting:
            try:
                call()
            except Injected as exc:
                error = exc
        if not injecting.injected:  # this time it ran on a worker thread only (the reader chooses per file)
            continue
        assert error is not None, f"{code.co_name} was failed, but the run went on"
        assert_no_key_in_locals(error, *secrets_)
        failed += 1
    assert failed >= len(found.holders) - 2, "most holders were not failed: the test proves little"


def test_keygen_leaves_no_key_in_locals(tmp_path: Path) -> None:
    """keygen's key is new, so it cannot be searched for: no frame may hold any 64-hex-character text."""
    import re

    from hatch_ovcrypt.cli import build_parser

    args = build_parser().parse_args(["keygen", "--out", str(tmp_path / "missing" / "key")])
    error = _raised(lambda: args.func(args))
    assert isinstance(error, OSError)
    hits = [f"{frame.f_code.co_name} {name}" for frame, _ in traceback.walk_tb(error.__traceback__)
            for name, value in frame.f_locals.items() if re.search(r"[0-9a-f]{64}", repr(value))]  # fmt: skip
    assert not hits, f"a new key in traceback locals: {hits}"
