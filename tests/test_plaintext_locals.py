"""Issue 17 item 5: no frame of a raised error holds decrypted model bytes or text.

An unknown property given to a GenAI builder once put the whole decrypted openvino_model.xml into the locals
that error reporters render. Here every builder fails in the ways that come after decryption (an option only
OpenVINO can judge, a file tampered after others were decrypted), and what a reporter would record (every
frame local, and the traceback rendered with its locals) is searched for every 32-byte window of every
plaintext file of the model (tests/leakscan.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ovcrypt_runtime._errors import IntegrityError
from ovcrypt_runtime._loading.runtime import Runtime
from ovcrypt_runtime._pipelines import genai as _genai
from tests.helpers import REPO, make_ir, render_folder, runtime_for
from tests.keyscan import traceback_blobs
from tests.leakscan import LeakScanner

FIXTURES = REPO / "tests" / "fixtures"
KEY = bytes(range(32))
SOURCES = {"chat": FIXTURES / "tiny_llm", "vision": FIXTURES / "tiny_vlm", "painter": FIXTURES / "tiny_sd"}
BUILT = {"tokenizer": "chat", "llm_pipeline": "chat", "vlm_pipeline": "vision", "text2image_pipeline": "painter"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    tmp = tmp_path_factory.mktemp("plain-locals")
    sources = {**SOURCES, "m": make_ir(tmp / "m.xml", 256 << 10)}
    return render_folder(tmp / "_ovcrypt", sources, KEY), sources


def _runtime(folder: Path) -> Runtime:
    runtime = runtime_for(folder)
    runtime.keyring.add(KEY)
    return runtime


def _plaintexts(source: Path) -> LeakScanner:
    files = [source, source.with_suffix(".bin")] if source.is_file() else source.rglob("*")
    return LeakScanner.of_files(p for p in files if p.is_file() and p.stat().st_size >= 32)


def _raised(fn: Callable[[], Any]) -> BaseException:
    try:
        fn()
    except Exception as exc:  # whatever OpenVINO or the runtime raises
        return exc
    raise AssertionError("no error raised")


def assert_no_plaintext_in_traceback(error: BaseException, scanner: LeakScanner) -> None:
    blobs = traceback_blobs(error)
    leaks = scanner.scan_blobs(blobs)
    assert not leaks, f"{type(error).__name__}: decrypted model text in traceback locals: {leaks[:5]}"
    assert len(blobs) > 1  # at least one frame, and the rendering


@pytest.mark.parametrize("builder", sorted(set(BUILT) - {"tokenizer"}))  # openvino-genai's Tokenizer ignores it
def test_an_unknown_property_leaves_no_plaintext_in_locals(
    models: tuple[Path, dict[str, Path]], builder: str
) -> None:
    folder, sources = models
    model = BUILT[builder]
    error = _raised(lambda: getattr(_genai, builder)(_runtime(folder), model, "CPU", {"NOT_A_PROPERTY": "1"}))
    assert "NOT_A_PROPERTY" in str(error)
    assert_no_plaintext_in_traceback(error, _plaintexts(sources[model]))


def test_compile_model_and_read_model_leave_no_plaintext_in_locals(
    models: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    folder, sources = models
    scanner = _plaintexts(sources["m"])
    error = _raised(lambda: _runtime(folder).compile_model("m", "CPU", {"NOT_A_PROPERTY": "1"}))
    assert_no_plaintext_in_traceback(error, scanner)
    # The weights are decrypted first: a tampered .xml fails once they are in memory.
    tampered = tmp_path / "_ovcrypt"
    shutil.copytree(folder, tampered)
    xml = tampered / "models" / "m.xml.ovc"
    data = bytearray(xml.read_bytes())
    data[-40] ^= 1
    xml.write_bytes(bytes(data))
    calls: list[Callable[[Runtime], object]] = [
        lambda rt: rt.read_model("m"), lambda rt: rt.compile_model("m"), lambda rt: rt.decrypt_ir("m", None)
    ]  # fmt: skip
    for call in calls:
        error = _raised(lambda: call(_runtime(tampered)))  # noqa: B023 - called at once
        assert isinstance(error, IntegrityError)
        assert_no_plaintext_in_traceback(error, scanner)


@pytest.mark.parametrize("builder", sorted(BUILT))
def test_a_file_tampered_mid_build_leaves_no_plaintext_in_locals(
    models: tuple[Path, dict[str, Path]], builder: str, tmp_path: Path
) -> None:
    """The last IR a builder decrypts is tampered: every file decrypted before it is in memory when it fails."""
    folder, sources = models
    model = BUILT[builder]
    tampered = tmp_path / "_ovcrypt"
    shutil.copytree(folder, tampered)
    last = {"chat": "openvino_detokenizer.xml" if builder == "tokenizer" else "openvino_model.xml",
            "vision": "openvino_vision_embeddings_model.xml", "painter": "unet/openvino_model.xml"}[model]  # fmt: skip
    path = tampered / "models" / model / f"{last}.ovc"
    data = bytearray(path.read_bytes())
    data[-40] ^= 1
    path.write_bytes(bytes(data))
    error = _raised(lambda: getattr(_genai, builder)(_runtime(tampered), model, "CPU", {}))
    assert isinstance(error, IntegrityError), error
    assert_no_plaintext_in_traceback(error, _plaintexts(sources[model]))
